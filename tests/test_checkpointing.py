"""Interrupt-and-resume gives the uninterrupted result; a killed save loses nothing."""

import os

import jax
import numpy as np
import pytest

from east_jax import checkpointing, train
from east_jax.data import pipeline
from east_jax.errors import UserInputError
from tests.helpers import tiny_config, train_until_killed


def _assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))


def test_interrupted_run_resumes_to_the_same_parameters(data_dir, tmp_path):
  config = tiny_config(data_dir, num_train_steps=6, checkpoint_every_steps=3, eval_every_steps=6)
  uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"))

  workdir = str(tmp_path / "b")
  # Steps 1-4 run, the checkpoint of step 3 is written, the 5th batch never arrives:
  # step 4 is lost and must be redone with the same batch.
  train_until_killed(config, workdir, 5)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3"]

  resumed = train.train_and_evaluate(config, workdir)
  assert int(resumed.step) == 6
  _assert_trees_equal(resumed.params, uninterrupted.params)
  _assert_trees_equal(resumed.batch_stats, uninterrupted.batch_stats)
  _assert_trees_equal(resumed.opt_state, uninterrupted.opt_state)


def test_a_save_killed_halfway_leaves_the_previous_checkpoint(data_dir, tmp_path):
  config = tiny_config(data_dir, num_train_steps=6, checkpoint_every_steps=3, eval_every_steps=3)
  workdir = str(tmp_path / "run")
  train_until_killed(config, workdir, 4)
  # What a process killed during the save of step 6 leaves behind: a temporary folder.
  partial = os.path.join(workdir, "checkpoints", "6.orbax-checkpoint-tmp", "state")
  os.makedirs(partial)
  with open(os.path.join(partial, "garbage"), "wb") as f:
    f.write(b"\x00" * 100)

  checkpointer = checkpointing.Checkpointer(workdir, keep=3)
  assert checkpointer.latest_step() == 3
  like = train.create_train_state(jax.random.key(0), *_model_and_tx(config, data_dir))
  restored, data_state = checkpointer.restore_latest(like)
  checkpointer.close()
  assert int(restored.step) == 3
  assert data_state["iterator"] == {"next_index": 3}
  assert data_state["train_seconds"] > 0

  # Continuing the run on the same workdir resumes from step 3 and saves step 6.
  continued = train.train_and_evaluate(config, workdir)
  assert int(continued.step) == 6
  assert "6" in os.listdir(os.path.join(workdir, "checkpoints"))


def _model_and_tx(config, data_dir):
  from east_jax import parallel
  ds = pipeline.load_dataset(config.dataset)
  run = train.build_run(config, ds)
  return run.model, run.tx, ds.image_shape, parallel.create_mesh()


def test_resuming_with_a_different_model_is_a_clear_error(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(tiny_config(data_dir, num_train_steps=3, eval_every_steps=3), workdir)
  with pytest.raises(UserInputError, match="model.width: 4 in the workdir, 8 now"):
    train.train_and_evaluate(tiny_config(data_dir, num_train_steps=3, eval_every_steps=3,
                                         **{"model.width": 8}), workdir)
  # Without the record (a workdir from before it), orbax's restore names the first leaf.
  os.remove(os.path.join(workdir, "config.json"))
  with pytest.raises(UserInputError, match=r"does not match this config \(batch_stats/stage1_"
                     r"block0/bn1/mean: \(4,\) in the checkpoint, \(8,\) in this config\)"):
    train.train_and_evaluate(tiny_config(data_dir, num_train_steps=3, eval_every_steps=3,
                                         **{"model.width": 8}), workdir)


def test_resume_with_worker_processes_is_exact(data_dir, tmp_path):
  overrides = {"dataset.num_workers": 2, "dataset.num_threads": 1, "sparsity.method": "rigl",
               "sparsity.sparsity": 0.9, "sparsity.update_interval": 2, "eval_every_steps": 6}
  uninterrupted = train.train_and_evaluate(
      tiny_config(data_dir, **{**overrides, "dataset.num_workers": 0}), str(tmp_path / "threads"))
  workdir = str(tmp_path / "workers")
  train_until_killed(tiny_config(data_dir, **overrides), workdir, 5)
  resumed = train.train_and_evaluate(tiny_config(data_dir, **overrides), workdir)
  assert int(resumed.step) == 6
  _assert_trees_equal(resumed.params, uninterrupted.params)
  _assert_trees_equal(resumed.opt_state, uninterrupted.opt_state)
  with pytest.raises(UserInputError, match="dataset.num_workers: 2 in the workdir, 0 now"):
    train.train_and_evaluate(tiny_config(data_dir, num_train_steps=9, **{
        **overrides, "dataset.num_workers": 0}), workdir)
