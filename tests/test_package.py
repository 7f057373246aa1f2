"""The installed package: console scripts next to the interpreter, usable from any folder."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["east-jax-train", "east-jax-prepare", "east-jax-evaluate", "east-jax-export",
           "east-jax-report", "east-jax-study"]


def _script(name):
  path = os.path.join(os.path.dirname(sys.executable), name)
  assert os.path.exists(path), f'{name} missing: pip install -e ".[test]" (setup.sh does)'
  return path


@pytest.mark.parametrize("name", SCRIPTS)
def test_console_script_answers_help(name, tmp_path):
  proc = subprocess.run([_script(name), "--help"], cwd=tmp_path, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip()


def test_train_script_runs_a_config_from_another_folder(data_dir, tmp_path):
  workdir = tmp_path / "run"
  proc = subprocess.run([
      _script("east-jax-train"), f"--config={REPO}/configs/fashion_mnist_r18.py",
      f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}", "--config.model.width=4",
      "--config.model.stage_sizes=(1,)", "--config.num_train_steps=2", "--config.batch_size=32",
      "--config.eval_batch_size=40", "--config.eval_splits=('test',)",
      "--config.dataset.num_threads=2"], cwd=tmp_path, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (workdir / "final_metrics.json").is_file()
