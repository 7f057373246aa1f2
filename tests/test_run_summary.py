"""run_summary: the lines a finished run ends with, read from its own files, and its curves."""

import json
import os

import pytest

from east_jax import run_summary, train
from tests.helpers import tiny_config


def test_the_step_time_is_the_median_of_the_intervals_after_the_first():
  metrics = [{"step": 1, "images_per_second": 1.0}, {"step": 2, "test_accuracy": 0.5},
             {"step": 3, "images_per_second": 64.0}, {"step": 4, "images_per_second": 16.0},
             {"step": 5, "images_per_second": 32.0}]
  assert run_summary.sparse_step_seconds(metrics, batch_size=32) == pytest.approx(1.0)
  assert run_summary.sparse_step_seconds(metrics[:1], batch_size=32) is None


def test_summary_of_a_finished_run(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  config = tiny_config(data_dir, **{"sparsity.method": "rigl", "sparsity.sparsity": 0.9,
                                    "log_every_steps": 1, "sparsity.update_interval": 2})
  train.train_and_evaluate(config, workdir)
  final = json.load(open(os.path.join(workdir, "final_metrics.json")))
  lines = run_summary.summary_lines(workdir, dense_steps=1)
  assert lines[0].startswith(f"test accuracy: {100 * final['test_accuracy']:.2f}% after 6 steps")
  assert lines[1].startswith(f"kept weights: {final['sparsity/kept']:,} of "
                             f"{final['sparsity/prunable']:,} (90.00% sparse")
  assert lines[2].startswith("train step: ") and "for a dense step of the same network" in lines[2]
  assert lines[3].startswith(f"files: {workdir}")
  assert os.path.getsize(os.path.join(workdir, "training.png")) > 0
