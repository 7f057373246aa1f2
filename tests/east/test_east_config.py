"""EAST's config: its fields on the command line, its ablation switches and its phase-out.
A whole EAST run's logs are checked in tests/test_sparse_compute.py."""

import pytest

from configs import fashion_mnist_r18
from east_jax import east
from east_jax.errors import UserInputError
from east_jax.models import ReLU
from east_jax.models.dyrelu import DyReLU


def test_config_argument_sets_method_sparsity_and_fields():
  config = fashion_mnist_r18.get_config("method=east,sparsity=0.9999,seed=2,east.num_cycles=1")
  assert (config.sparsity.method, config.sparsity.sparsity, config.seed,
          config.east.num_cycles) == ("east", 0.9999, 2, 1)
  with pytest.raises(ValueError, match="Config argument 'nope=1'"):
    fashion_mnist_r18.get_config("nope=1")


@pytest.mark.parametrize("arg,share,act,cycles,beta", [
    ("method=east", 2, DyReLU, True, True),
    ("method=east,east.share_ratio=0", 0, DyReLU, True, True),
    ("method=east,east.dyrelu=False", 2, ReLU, True, False),
    ("method=east,east.num_cycles=0", 2, DyReLU, False, True),
    ("method=rigl", 0, ReLU, False, False),
])
def test_each_trick_has_a_switch(arg, share, act, cycles, beta):
  config = fashion_mnist_r18.get_config(arg + ",sparsity=0.99")
  plan = east.plan(config, 100)
  assert plan.model_options == {"share_ratio": share, "act": act}
  assert (plan.cycles is not None) == cycles
  assert (plan.beta_fn is not None) == beta
  assert plan.relu_from == (50 if beta else 0)


def test_phase_out_picks_the_activation_that_dyrelu_blends_toward():
  config = fashion_mnist_r18.get_config("method=east,sparsity=0.99,east.phase_out=static")
  plan = east.plan(config, 100)
  act = plan.model_options["act"]
  assert act.func is DyReLU and act.keywords == {"phase_out": "static"}
  assert plan.beta_fn is not None and plan.relu_from == 50 and plan.hypernet_freeze_step is None
  config.east.freeze_hypernet = True
  assert east.plan(config, 100).hypernet_freeze_step == 25
  config.east.phase_out = "linear"
  with pytest.raises(UserInputError, match="config.east.phase_out must be one of"):
    east.validate(config)
