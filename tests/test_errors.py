"""Bad input fails early with a message that says what to do, never a JAX stack trace."""

import os
import re
import subprocess
import sys

import pytest

from east_jax import train
from east_jax.errors import UserInputError
from tests.helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("overrides,message", [
    ({"dataset.name": "no_such_data"}, "Unknown dataset 'no_such_data'"),
    ({"model.name": "resnet99"}, "Unknown model 'resnet99'"),
    ({"batch_size": 0}, "config.batch_size must be a positive integer"),
    ({"batch_size": -32}, "config.batch_size must be a positive integer"),
    ({"eval_batch_size": 0}, "config.eval_batch_size must be a positive integer"),
    ({"batch_size": 12}, "config.batch_size=12 is not divisible by the 8 devices"),
    ({"eval_splits": ("train",)}, "config.eval_splits: unknown split"),
    ({"dataset.validation_fraction": 1.5}, "validation_fraction must be in"),
    ({"checkpoint_every_steps": 0}, "config.checkpoint_every_steps must be > 0"),
])
def test_bad_config_values(data_dir, tmp_path, overrides, message):
  with pytest.raises(UserInputError, match=message):
    train.train_and_evaluate(tiny_config(data_dir, **overrides), str(tmp_path / "run"))


def test_unprepared_dataset(tmp_path):
  config = tiny_config(str(tmp_path / "empty"), **{"dataset.name": "cifar10"})
  with pytest.raises(UserInputError, match="'cifar10' is not prepared.*east_jax.data.prepare"):
    train.train_and_evaluate(config, str(tmp_path / "run"))


def test_workdir_under_a_file(data_dir, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(UserInputError, match="Cannot create workdir"):
    train.train_and_evaluate(tiny_config(data_dir), str(blocker / "run"))


def test_cli_prints_one_line_error_without_traceback(data_dir, tmp_path):
  cmd = [sys.executable, "-m", "east_jax.main", "--config=configs/fashion_mnist_r18.py",
         f"--workdir={tmp_path / 'run'}", f"--config.dataset.data_dir={data_dir}",
         "--config.batch_size=0"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert "error: config.batch_size must be a positive integer" in proc.stderr
  assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("config,message", [
    ("configs/cifar10_r34.py:methd=east", "Config argument 'methd=east'"),
    ("configs/cifar10_r34.py:sparsity=high", "'high' is not a float"),
    ("configs/no_such_config.py", "cannot load --config.*no_such_config.py"),
])
def test_cli_config_file_errors_are_one_line(tmp_path, config, message):
  proc = subprocess.run([sys.executable, "-m", "east_jax.main", f"--config={config}",
                         f"--workdir={tmp_path / 'run'}"], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 2
  assert re.search(message, proc.stderr), proc.stderr
  assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("override,message", [
    ("--config.model.widht=16", "--config.model.widht: config.model has no field 'widht'; "
                                "did you mean width?"),
    ("--config.modle.width=16", "config has no field 'modle'; did you mean model?"),
    ("--config.model.width.x=1", "config.model.width is not a group"),
])
def test_a_misspelled_override_names_the_field_and_the_nearest_ones(tmp_path, override, message):
  proc = subprocess.run([sys.executable, "-m", "east_jax.main",
                         "--config=configs/fashion_mnist_r18.py", f"--workdir={tmp_path / 'run'}",
                         override], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  first = proc.stderr.splitlines()[0]
  assert first.startswith("error: --config.") and message in first, proc.stderr
  assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("module", ["east_jax.main", "east_jax.evaluate", "east_jax.export",
                                    "east_jax.data.prepare", "east_jax.report", "east_jax.study",
                                    "east_jax.run_summary"])
def test_every_command_answers_help_with_status_0(module):
  proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert "--workdir" in proc.stdout or module in ("east_jax.data.prepare", "east_jax.report")
  if module == "east_jax.main":
    assert "configs/default.py" in proc.stdout and "--config.<field>" in proc.stdout


def test_a_missing_required_flag_is_one_line(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "east_jax.evaluate"], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and proc.stderr.startswith("error: --workdir is required.")
