"""Faults a run must survive or refuse: a relaunch with another config, a damaged
checkpoint, masks that do not fit sparse compute's slots, configs that cannot train.

Each relaunch is checked against an uninterrupted run (same params, masks, metrics) or
against the documented one-line error, with the workdir's record left unchanged.
"""

import glob
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from east_jax import checkpointing, east, run_record, saved_run, train
from east_jax.errors import RunIntegrityError, UserInputError
from east_jax.sparsity import transform as sparse_transform
from tests.helpers import tiny_config, train_until_killed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RIGL = {"sparsity.method": "rigl", "sparsity.sparsity": 0.9, "sparsity.update_interval": 2,
        "num_train_steps": 6, "checkpoint_every_steps": 3, "eval_every_steps": 6,
        "keep_checkpoints": 3}


def _rigl(data_dir, **overrides):
  return tiny_config(data_dir, **{**RIGL, **overrides})


def _snapshot(workdir):
  """Every file of the workdir with its bytes (what a refused launch must not change)."""
  out = {}
  for path in sorted(glob.glob(os.path.join(workdir, "**"), recursive=True)):
    if os.path.isfile(path) and "tensorboard" not in path:
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = f.read()
  return out


def _assert_same_state(a, b):
  for x, y in zip(jax.tree.leaves(jax.device_get((a.params, a.batch_stats, a.opt_state))),
                  jax.tree.leaves(jax.device_get((b.params, b.batch_stats, b.opt_state))),
                  strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
  """A finished 6-step RigL run (checkpoints at 3 and 6) and its final state."""
  workdir = str(tmp_path_factory.mktemp("finished") / "run")
  return workdir, train.train_and_evaluate(_rigl(data_dir), workdir)


@pytest.fixture(scope="module")
def halfway(data_dir, tmp_path_factory):
  """The same run killed after its step-3 checkpoint (step 4's batch never came)."""
  workdir = str(tmp_path_factory.mktemp("halfway") / "run")
  train_until_killed(_rigl(data_dir), workdir, 5)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3"]
  return workdir


def _copy(workdir, tmp_path):
  target = str(tmp_path / "copy")
  shutil.copytree(workdir, target)
  return target


@pytest.mark.parametrize("overrides,field,old,new", [
    ({"sparsity.sparsity": 0.99}, "sparsity.sparsity", "0.9", "0.99"),
    ({"sparsity.method": "set"}, "sparsity.method", "'rigl'", "'set'"),
    ({"learning_rate": 0.05}, "learning_rate", "0.1", "0.05"),
    ({"seed": 1}, "seed", "0", "1"),
    ({"num_train_steps": 12}, "num_train_steps", "6", "12"),
    ({"model.width": 8}, "model.width", "4", "8"),  # Another shape, caught before orbax.
])
def test_a_relaunch_with_another_config_is_refused_and_changes_nothing(
    halfway, data_dir, tmp_path, overrides, field, old, new):
  workdir = _copy(halfway, tmp_path)
  before = _snapshot(workdir)
  with pytest.raises(UserInputError) as error:
    train.train_and_evaluate(_rigl(data_dir, **overrides), workdir)
  message = str(error.value)
  assert "\n" not in message
  assert f"{field}: {old} in the workdir, {new} now" in message
  assert "Relaunch it with its own config" in message and "new --workdir" in message
  assert _snapshot(workdir) == before


def test_a_relaunch_that_changes_only_how_the_run_is_observed_resumes_exactly(
    halfway, finished, data_dir, tmp_path):
  workdir = _copy(halfway, tmp_path)
  observed = {"log_every_steps": 1, "eval_every_steps": 2, "checkpoint_every_steps": 2,
              "keep_checkpoints": 2, "eval_batch_size": 40, "dataset.num_threads": 1}
  resumed = train.train_and_evaluate(_rigl(data_dir, **observed), workdir)
  _assert_same_state(resumed, finished[1])
  finals = [json.load(open(os.path.join(w, "final_metrics.json"))) for w in (workdir, finished[0])]
  assert finals[0]["test_accuracy"] == finals[1]["test_accuracy"]
  # The record holds the latest launch (data_dir may have moved), which computes the same.
  assert run_record.read(workdir)["log_every_steps"] == 1
  assert run_record.differences(run_record.read(workdir), _rigl(data_dir)) == []


def test_a_relaunch_keeps_the_record_of_a_run_that_predates_new_fields(halfway, data_dir,
                                                                       tmp_path):
  workdir = _copy(halfway, tmp_path)
  path = os.path.join(workdir, run_record.CONFIG_FILE)
  saved = run_record.read(workdir)
  del saved["sparsity"]["drop_fraction_final"]  # As if the run predates the field.
  with open(path, "w") as f:
    json.dump(saved, f, indent=2)
  before = open(path, "rb").read()
  run_record.write(_rigl(data_dir), workdir)  # What a relaunch writes: nothing here.
  assert open(path, "rb").read() == before
  run_record.write(_rigl(data_dir, log_every_steps=1), workdir)
  saved["log_every_steps"] = 1  # Only the field that may differ changes.
  assert run_record.read(workdir) == saved


def test_differences_compare_fields_added_since_the_run_with_their_defaults(data_dir):
  config = _rigl(data_dir)
  saved = json.loads(config.to_json_best_effort())
  del saved["sparsity"]["drop_fraction_final"]  # As if the run predates the field.
  assert run_record.differences(saved, config) == []
  config.sparsity.drop_fraction_final = 0.1
  assert run_record.differences(saved, config) == [("sparsity.drop_fraction_final", 0.005, 0.1)]
  saved["log_every_steps"] = 1000
  saved["distributed"]["num_processes"] = 64
  assert [d[0] for d in run_record.differences(saved, config)] == ["sparsity.drop_fraction_final"]
  assert run_record.is_free("distributed.coordinator_address")
  assert not run_record.is_free("dataset.name")


def _damage_newest(workdir, step):
  """Zeros the first 4 KiB of the largest data files of the checkpoint of `step` (orbax
  may keep two copies of one b-tree node); returns one of them."""
  files = [p for p in glob.glob(os.path.join(workdir, "checkpoints", str(step), "state", "**", "d",
                                             "*"), recursive=True) if os.path.isfile(p)]
  largest = max(map(os.path.getsize, files))
  targets = sorted(p for p in files if os.path.getsize(p) == largest)
  for target in targets:
    with open(target, "r+b") as f:
      f.write(b"\0" * 4096)
  return targets


def test_a_damaged_checkpoint_is_named_set_aside_and_the_run_resumes_exactly(
    finished, data_dir, tmp_path, capsys):
  workdir = _copy(finished[0], tmp_path)
  os.remove(os.path.join(workdir, "final_metrics.json"))
  damaged = _damage_newest(workdir, 6)
  with pytest.raises(checkpointing.DamagedCheckpoint, match="step 6 cannot be read"):
    saved_run.load(workdir)  # Reading a run moves nothing.
  assert all(os.path.isfile(f) for f in damaged)

  resumed = train.train_and_evaluate(_rigl(data_dir), workdir)
  warning = capsys.readouterr().err
  assert "warning: The checkpoint of step 6 cannot be read" in warning
  assert any(os.path.basename(f) in warning for f in damaged)
  kept = os.path.join(workdir, checkpointing.DAMAGED_DIR, "6")
  for f in damaged:  # Moved aside, never deleted.
    assert os.path.isfile(os.path.join(kept, os.path.relpath(f, os.path.join(workdir, "checkpoints",
                                                                            "6"))))
  _assert_same_state(resumed, finished[1])
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]


def test_a_data_file_that_still_parses_is_caught_by_its_checksum(finished, data_dir, tmp_path):
  workdir = _copy(finished[0], tmp_path)
  step_dir = os.path.join(workdir, "checkpoints", "6")
  sealed = json.load(open(os.path.join(step_dir, checkpointing.CHECKSUMS)))
  assert set(sealed) == {os.path.relpath(p, step_dir) for p in glob.glob(
      os.path.join(step_dir, "**"), recursive=True)
      if os.path.isfile(p) and not p.endswith(checkpointing.CHECKSUMS)}
  values = [p for p in glob.glob(os.path.join(step_dir, "state", "ocdbt.process_0", "d", "*"))]
  target = max(values, key=os.path.getsize)
  with open(target, "r+b") as f:  # Flip one byte in the middle of a value file.
    f.seek(os.path.getsize(target) // 2)
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 0xFF]))
  with pytest.raises(checkpointing.DamagedCheckpoint,
                     match=f"{os.path.basename(target)} is damaged \\(checksum mismatch\\)"):
    saved_run.load(workdir)


def test_no_readable_checkpoint_is_an_error_that_moves_nothing(halfway, data_dir, tmp_path):
  workdir = _copy(halfway, tmp_path)
  _damage_newest(workdir, 3)
  before = _snapshot(workdir)
  with pytest.raises(UserInputError, match="No checkpoint can be read: The checkpoint of step 3"):
    train.train_and_evaluate(_rigl(data_dir), workdir)
  assert _snapshot(workdir) == before


def test_cli_resumes_past_a_damaged_checkpoint_without_a_traceback(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  flags = [f"--config.dataset.data_dir={data_dir}", "--config.model.width=4",
           "--config.model.stage_sizes=(1, 1)", "--config.batch_size=32",
           "--config.eval_batch_size=64", "--config.num_train_steps=4",
           "--config.checkpoint_every_steps=2", "--config.eval_every_steps=4",
           "--config.log_every_steps=2"]
  cmd = [sys.executable, "-m", "east_jax.main",
         "--config=configs/fashion_mnist_r18.py:method=rigl,sparsity=0.9",
         f"--workdir={workdir}", *flags]
  first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert first.returncode == 0, first.stderr[-2000:]
  os.remove(os.path.join(workdir, "final_metrics.json"))
  _damage_newest(workdir, 4)
  second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert second.returncode == 0, second.stderr[-2000:]
  assert "warning: The checkpoint of step 4 cannot be read" in second.stderr
  assert "Traceback" not in second.stderr and "Event loop is closed" not in second.stderr
  refused = subprocess.run(cmd + ["--config.sparsity.sparsity=0.99"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
  assert refused.returncode == 2
  lines = refused.stderr.strip().splitlines()
  assert len(lines) == 1 and "sparsity.sparsity: 0.9 in the workdir, 0.99 now" in lines[0]


def test_masks_beyond_the_slots_stop_the_run_naming_the_layer(data_dir, tmp_path, monkeypatch):
  real = sparse_transform.kept_capacity
  monkeypatch.setattr(sparse_transform, "kept_capacity",
                      lambda *a, **k: {n: c - 1 for n, c in real(*a, **k).items()})
  workdir = str(tmp_path / "run")
  config = _rigl(data_dir, **{"model.sparse_compute": "on", "log_every_steps": 2})
  with pytest.raises(RunIntegrityError, match=r"stem_conv/kernel keeps (\d+) weights in \d+ slots"):
    train.train_and_evaluate(config, workdir)
  assert not os.path.exists(os.path.join(workdir, "checkpoints", "3"))  # Nothing more written.


def test_restored_masks_beyond_the_slots_stop_before_the_first_step(halfway, data_dir, tmp_path):
  # The original failure: a 90% checkpoint resumed by a 99% config, here with the record
  # removed so that only the slot check stands between them.
  workdir = _copy(halfway, tmp_path)
  os.remove(os.path.join(workdir, run_record.CONFIG_FILE))
  config = _rigl(data_dir, **{"sparsity.sparsity": 0.99, "model.sparse_compute": "on"})
  with pytest.raises(RunIntegrityError, match="At step 3, sparse compute would drop kept weights"):
    train.train_and_evaluate(config, workdir)
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["3"]


@pytest.mark.parametrize("overrides,message", [
    ({"sparsity.method": "east", "sparsity.sparsity": 0.9999999},
     r"keeps 0 of \d+ weights, fewer than the \d+ prunable layers: the largest usable sparsity "
     r"for this network is 0\.9\d+"),
    ({"sparsity.method": "east", "sparsity.sparsity": 0.99, "model.stage_sizes": (3, 3),
      "east.share_ratio": 3}, r"config.east.share_ratio=3 shares no kernel in stages of 3, 3"),
    ({"num_train_steps": -1, "num_epochs": 0.01}, "rounds to 0 train steps"),
])
def test_configs_that_cannot_train_stop_before_writing_anything(data_dir, tmp_path, overrides,
                                                                message):
  workdir = str(tmp_path / "run")
  with pytest.raises(UserInputError, match=message):
    train.train_and_evaluate(tiny_config(data_dir, **overrides), workdir)
  assert not os.path.exists(os.path.join(workdir, run_record.CONFIG_FILE))


def test_a_network_too_shallow_to_share_only_warns(data_dir):
  config = tiny_config(data_dir, **{"sparsity.method": "east", "sparsity.sparsity": 0.9})
  message, is_error = east.sharing_problem(config, (2, 2, 2, 2))
  assert not is_error and "sharing needs 3 or more" in message
  assert east.sharing_problem(config, (3, 4, 6, 3)) is None
  config.east.share_ratio = 0
  assert east.sharing_problem(config, (2, 2)) is None
