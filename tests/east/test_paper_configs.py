"""The paper configs: selectable method and sparsity, valid, and documented."""

import importlib

import pytest

from east_jax import config_validation, east

PAPER_CONFIGS = ["cifar10_r34", "cifar10_r50", "cifar100_r34", "cifar100_r50", "imagenet_r50"]


@pytest.mark.parametrize("name", PAPER_CONFIGS)
@pytest.mark.parametrize("method", ["east", "rigl", "set"])
@pytest.mark.parametrize("sparsity", [0.999, 0.9995, 0.9999])
def test_every_method_and_sparsity_is_a_valid_config(name, method, sparsity):
  config = importlib.import_module(f"configs.{name}").get_config(
      f"method={method},sparsity={sparsity}")
  config_validation.validate(config)
  assert (config.sparsity.method, config.sparsity.sparsity) == (method, sparsity)
  assert east.is_east(config) == (method == "east")


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_defaults_to_east_and_states_the_launch_command_and_what_to_expect(name):
  module = importlib.import_module(f"configs.{name}")
  config = module.get_config()
  assert (config.sparsity.method, config.sparsity.sparsity) == ("east", 0.999)
  doc = module.__doc__
  assert f"python -m east_jax.main --config=configs/{name}.py" in doc
  # The paper's number to expect, or the plain statement that its table was not available.
  expected = doc[doc.index("Expected"):]
  assert "99.99%" in expected or "not available" in expected


def test_the_first_run_is_east_at_99_9_with_sparse_compute_and_takes_overrides():
  module = importlib.import_module("configs.first_run")
  config = module.get_config()
  config_validation.validate(config)
  assert (config.sparsity.method, config.sparsity.sparsity) == ("east", 0.999)
  assert config.model.sparse_compute == "auto" and config.num_train_steps == 300
  assert "python -m east_jax.main --config=configs/first_run.py" in module.__doc__
  static = module.get_config("east.phase_out=static")
  assert static.east.phase_out == "static" and static.model.width == config.model.width
