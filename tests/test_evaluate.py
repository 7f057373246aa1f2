"""python -m east_jax.evaluate: a checkpoint's metrics with the run's own config."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from east_jax import evaluate, saved_run, train
from east_jax.errors import UserInputError
from tests.helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def rigl_run(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("rigl"))
  config = tiny_config(data_dir, **{"sparsity.method": "rigl", "sparsity.sparsity": 0.95,
                                    "sparsity.update_interval": 2, "eval_splits": ("test",)})
  train.train_and_evaluate(config, workdir)
  return workdir


def test_evaluate_reproduces_the_final_metrics_and_exact_counts(rigl_run):
  metrics, table = evaluate.evaluate(rigl_run, "test")
  final = json.load(open(os.path.join(rigl_run, "final_metrics.json")))
  assert metrics["step"] == 6
  for key in ("test_accuracy", "sparsity/kept", "sparsity/density", "flops/inference_x_dense"):
    assert metrics[key] == pytest.approx(final[key], rel=1e-6), key
  assert metrics["test_loss"] == pytest.approx(final["test_loss"], rel=1e-5)
  masks = saved_run.load(rigl_run).state.opt_state.masks
  kept = sum(int(np.sum(m)) for m in jax.tree.leaves(masks) if np.ndim(m))
  assert metrics["sparsity/kept"] == kept and f"{kept}" in table.splitlines()[-1]
  # An earlier checkpoint is a different model.
  early, _ = evaluate.evaluate(rigl_run, "test", step=3)
  assert early["step"] == 3


def test_evaluate_command_and_its_errors(rigl_run, tmp_path):
  out = tmp_path / "m.json"
  proc = subprocess.run([sys.executable, "-m", "east_jax.evaluate", f"--workdir={rigl_run}",
                         f"--json={out}"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.load(open(out))["test_accuracy"] == pytest.approx(
      json.load(open(os.path.join(rigl_run, "final_metrics.json")))["test_accuracy"])
  with pytest.raises(UserInputError, match="no checkpoint of step 4; it has steps 3, 6"):
    evaluate.evaluate(rigl_run, step=4)
  with pytest.raises(UserInputError, match="--split must be"):
    evaluate.evaluate(rigl_run, split="tset")
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "config.json").write_text(open(os.path.join(rigl_run, "config.json")).read())
  proc = subprocess.run([sys.executable, "-m", "east_jax.evaluate", f"--workdir={empty}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and "has no checkpoint yet" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_batch_norm_recalibration_forgets_the_checkpoint_statistics(rigl_run):
  config, ds, run, state, mesh = saved_run.load(rigl_run)
  p_stats_step = train.make_batch_stats_step(run.model, mesh)
  stale = state.replace(batch_stats=jax.tree.map(lambda s: s + 3.0, state.batch_stats))
  fresh = evaluate.recalibrate_batch_norm(p_stats_step, state, ds, config, mesh, 4)
  from_stale = evaluate.recalibrate_batch_norm(p_stats_step, stale, ds, config, mesh, 4)
  # Training-mode statistics do not read the running ones: the offset decays by the
  # momentum (0.9) once per batch, the rest is the same for both.
  for a, b in zip(jax.tree.leaves(fresh.batch_stats), jax.tree.leaves(from_stale.batch_stats)):
    np.testing.assert_allclose(np.asarray(b) - np.asarray(a), 3.0 * 0.9**4, rtol=1e-4, atol=1e-4)
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(fresh.batch_stats),
                                                       jax.tree.leaves(state.batch_stats)))
  for a, b in zip(jax.tree.leaves(fresh.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)


def test_evaluate_command_recalibrates_batch_norm(rigl_run, tmp_path):
  out = tmp_path / "m.json"
  proc = subprocess.run([sys.executable, "-m", "east_jax.evaluate", f"--workdir={rigl_run}",
                         "--recalibrate_bn=2", f"--json={out}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  metrics = json.load(open(out))
  assert metrics["recalibrated_bn_batches"] == 2 and metrics["test_examples"] > 0
  # The recalibrated statistics are the ones evaluated (the checkpoint's give another loss).
  assert metrics["test_loss"] != pytest.approx(
      json.load(open(os.path.join(rigl_run, "final_metrics.json")))["test_loss"], rel=1e-6)
  with pytest.raises(UserInputError, match="--recalibrate_bn is a number of training batches"):
    evaluate.evaluate(rigl_run, recalibrate_bn=-1)


def test_evaluate_reads_checkpoints_whose_optimizer_state_differs(rigl_run, tmp_path):
  """A checkpoint written before the optimizer state gained a leaf (here: without the
  sparsity engine's rng_key) still evaluates; one missing a parameter is a clear error."""
  from east_jax import checkpointing
  state = saved_run.load(rigl_run).state
  opt = state.opt_state
  older = state.replace(opt_state={"inner_state": opt.inner_state, "masks": opt.masks,
                                   "step": opt.step})
  broken = state.replace(params={k: v for k, v in state.params.items() if k != "classifier"})
  for name, tree in (("older", older), ("broken", broken)):
    workdir = tmp_path / name
    workdir.mkdir()
    (workdir / "config.json").write_text(open(os.path.join(rigl_run, "config.json")).read())
    checkpointer = checkpointing.Checkpointer(str(workdir), keep=1)
    checkpointer.save(6, tree, {})
    checkpointer.wait()
    checkpointer.close()
  with pytest.raises(UserInputError, match="opt_state/rng_key: absent in the checkpoint"):
    checkpointing.Checkpointer(str(tmp_path / "older"), keep=1).restore(state, 6)  # To resume.
  metrics, _ = evaluate.evaluate(str(tmp_path / "older"))
  expected, _ = evaluate.evaluate(rigl_run)
  assert metrics == expected
  with pytest.raises(UserInputError, match="params/classifier/.*absent in the checkpoint"):
    evaluate.evaluate(str(tmp_path / "broken"))
