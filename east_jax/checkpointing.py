"""Orbax checkpoints of the train state plus the input iterator's position.

Each save writes a new step folder atomically (orbax finalises a temporary folder
by renaming it), so a save killed halfway leaves every earlier checkpoint intact and
`restore_latest` skips it. `keep` bounds how many are kept. A checkpoint whose files
cannot be read (damaged on disk, as opposed to one of another model) is named, moved to
`<workdir>/damaged_checkpoints/` (never deleted) and the run resumes from the newest
readable one.
"""

import hashlib
import json
import os
import re
import shutil
import sys

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import tensorstore as ts

from east_jax.errors import UserInputError

DAMAGED_DIR = "damaged_checkpoints"
CHECKSUMS = "east_jax_checksums.json"  # SHA-256 of each file, written once the save is done.


class DamagedCheckpoint(UserInputError):
  """A checkpoint whose files cannot be read back."""

  def __init__(self, step: int, path: str, reason: str):
    self.step, self.path = step, path
    super().__init__(f"The checkpoint of step {step} cannot be read: {path} is damaged "
                     f"({reason}).")


def _unreadable_file(error: Exception, step_dir: str) -> str:
  """The file named last in a tensorstore error (the innermost one), else the step folder."""
  files = re.findall(r'local file "([^"]+)"', str(error))
  return files[-1] if files else step_dir


def _status(error: Exception) -> str:
  """The error's status code (e.g. DATA_LOSS) or its type."""
  match = re.match(r"\s*([A-Z_]{4,}):", str(error))
  return match.group(1) if match else type(error).__name__


def _file_digests(step_dir: str) -> dict[str, str]:
  """{path relative to the step folder: SHA-256} of every file of a checkpoint."""
  digests = {}
  for root, _, files in os.walk(step_dir):
    for name in sorted(files):
      path = os.path.join(root, name)
      if os.path.relpath(path, step_dir) in (CHECKSUMS, CHECKSUMS + ".tmp"):
        continue
      digest = hashlib.sha256()
      with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
          digest.update(chunk)
      digests[os.path.relpath(path, step_dir)] = digest.hexdigest()
  return digests


def _seal(step_dir: str) -> None:
  """Writes the checksums of a finished checkpoint's files into it (atomically)."""
  target = os.path.join(step_dir, CHECKSUMS)
  if os.path.exists(target):
    return
  digests = _file_digests(step_dir)
  with open(target + ".tmp", "w") as f:
    json.dump(digests, f, indent=0)
  os.replace(target + ".tmp", target)


def _verify(step: int, step_dir: str) -> None:
  """Raises DamagedCheckpoint naming the first file of a checkpoint that differs from its
  checksum (bytes that still parse but are wrong) or cannot be read: every stored value of
  the state is read one at a time (orbax reads them concurrently, and a failed read there
  leaves others in flight that print tracebacks when they finish)."""
  sealed = os.path.join(step_dir, CHECKSUMS)
  if os.path.exists(sealed):
    try:
      with open(sealed) as f:
        expected = json.load(f)
    except (OSError, ValueError):
      raise DamagedCheckpoint(step, sealed, "unreadable checksums") from None
    actual = _file_digests(step_dir)
    for name, digest in expected.items():
      if actual.get(name) != digest:
        raise DamagedCheckpoint(step, os.path.join(step_dir, name),
                                "missing" if name not in actual else "checksum mismatch")
  try:
    store = ts.KvStore.open({"driver": "ocdbt",
                             "base": f"file://{os.path.join(step_dir, 'state')}/"}).result()
    for key in store.list().result():
      store.read(key).result()
  except Exception as e:  # noqa: BLE001 - tensorstore reports damage as ValueError and others.
    raise DamagedCheckpoint(step, _unreadable_file(e, step_dir), _status(e)) from None


def _leaf_name(path) -> str:
  """'params/conv/kernel' for a pytree path (attributes, keys and indices alike)."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _shapes(tree) -> dict[str, tuple]:
  """{'params/conv/kernel': shape} of a pytree."""
  return {_leaf_name(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def nested(flat: dict) -> dict:
  """{'a/b': x} -> {'a': {'b': x}}."""
  tree = {}
  for name, value in flat.items():
    *parents, leaf = name.split("/")
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return tree


class Checkpointer:
  """Saves and restores {state, data} under `<workdir>/checkpoints/<step>`."""

  def __init__(self, workdir: str, *, keep: int):
    self.workdir = os.path.abspath(workdir)
    self._unsealed = []  # Steps saved by this process whose checksums are not written yet.
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self._manager = ocp.CheckpointManager(os.path.join(self.workdir, "checkpoints"),
                                          options=options, item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, data_state: dict) -> None:
    """Starts an asynchronous save (after sealing the previous one); `wait()` blocks until
    it is on disk and sealed."""
    self.wait()
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     data=ocp.args.JsonSave(data_state)),
                       force=True)
    self._unsealed.append(step)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore_latest(self, like_state):
    """(state, data_state) of the newest readable checkpoint shaped and sharded like
    `like_state`, or None when there is none. Newer damaged checkpoints are moved to
    `<workdir>/damaged_checkpoints/` with a warning; if none is readable, nothing moves
    and a DamagedCheckpoint names them all."""
    damaged = []
    for step in reversed(self.all_steps()):
      try:
        restored = self.restore(like_state, step)
      except DamagedCheckpoint as e:
        damaged.append(e)
        continue
      for e in damaged:
        self._set_aside(e)
      return restored
    if damaged:
      raise UserInputError(
          "No checkpoint can be read: " + " ".join(str(e) for e in damaged) + " Nothing was "
          f"moved or deleted; move {self._manager.directory} away to train from step 0, or pass "
          "a new --workdir.")
    return None

  def restore(self, like_state, step: int):
    """(state, data_state) of the checkpoint of `step`, shaped and sharded like `like_state`.
    Raises DamagedCheckpoint when its files cannot be read, UserInputError when it holds
    another model's state."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    step_dir = os.path.join(str(self._manager.directory), str(step))
    _verify(step, step_dir)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many types.
      mismatch = self._mismatch(abstract, step_dir)
      if mismatch is None:
        raise DamagedCheckpoint(step, _unreadable_file(e, step_dir), _status(e)) from None
      raise UserInputError(
          f"The checkpoint of step {step} in {self._manager.directory} does not match this "
          f"config ({mismatch}). Resume with the config (and the east_jax version) it was "
          "written with, or pass a new --workdir.") from None
    return restored.state, restored.data

  def restore_subset(self, like_state, step: int, wanted):
    """The state of checkpoint `step` shaped and sharded like `like_state`, where only the
    leaves whose names (e.g. 'params/conv/kernel') satisfy `wanted` are restored; the others
    are zeros. Every file is still verified. A checkpoint written by a version whose state had
    other leaves elsewhere still restores. Raises like `restore` when a wanted leaf is missing
    or of another shape."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    leaves = {_leaf_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(abstract)[0]}
    item = {name: x for name, x in leaves.items() if wanted(name)}
    step_dir = os.path.join(str(self._manager.directory), str(step))
    _verify(step, step_dir)
    target = nested(item)
    mismatch = self._mismatch(target, step_dir, only_wanted=True)
    if mismatch is not None:
      raise UserInputError(f"The checkpoint of step {step} in {self._manager.directory} does "
                           f"not match this config ({mismatch}).")
    checkpointer = ocp.PyTreeCheckpointer()
    try:  # The files passed _verify: a failure here is the tree's structure, not damage.
      restored = checkpointer.restore(os.path.join(step_dir, "state"), args=ocp.args.PyTreeRestore(
          target, ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many types.
      raise UserInputError(f"The checkpoint of step {step} in {self._manager.directory} cannot "
                           f"be read into this config's state ({_status(e)}).") from None
    finally:
      checkpointer.close()
    values = {_leaf_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(restored)[0]}
    return jax.tree_util.tree_map_with_path(
        lambda p, x: values[_leaf_name(p)] if wanted(_leaf_name(p))
        else jax.device_put(jnp.zeros(x.shape, x.dtype), x.sharding), abstract)

  @staticmethod
  def _mismatch(abstract, step_dir: str, only_wanted: bool = False) -> str | None:
    """What differs between the checkpoint's saved tree and `abstract` (leaf paths and
    shapes), or None when they agree or the saved tree cannot be read (then the data is
    what is damaged)."""
    try:
      saved = ocp.StandardCheckpointer().metadata(os.path.join(step_dir, "state")).item_metadata
    except Exception:  # noqa: BLE001 - unreadable metadata: a damaged checkpoint.
      return None
    saved, wanted = _shapes(saved), _shapes(abstract)
    if not saved:
      return None
    for path in sorted(set(wanted) if only_wanted else set(saved) | set(wanted)):
      if saved.get(path) != wanted.get(path):
        return (f"{path}: {saved.get(path, 'absent')} in the checkpoint, "
                f"{wanted.get(path, 'absent')} in this config")
    return None

  def _set_aside(self, damaged: DamagedCheckpoint) -> None:
    """Moves a damaged checkpoint out of the manager's folder (process 0; all wait)."""
    target = os.path.join(self.workdir, DAMAGED_DIR, str(damaged.step))
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(os.path.join(str(self._manager.directory), str(damaged.step)), target)
      print(f"warning: {damaged} Moved it to {target}; resuming from an earlier checkpoint.",
            file=sys.stderr, flush=True)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"set aside checkpoint {damaged.step}")
    self._manager.reload()

  def wait(self) -> None:
    """Blocks until every save is on disk, then writes the checksums of each (process 0)."""
    self._manager.wait_until_finished()
    saved = set(self._manager.all_steps())
    if jax.process_index() == 0:
      for step in self._unsealed:
        if step in saved:  # Not yet removed by `keep`.
          _seal(os.path.join(str(self._manager.directory), str(step)))
    self._unsealed = []

  def close(self) -> None:
    self._manager.close()
