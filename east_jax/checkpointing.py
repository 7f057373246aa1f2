"""Orbax checkpoints of the train state plus the input iterator's position.

Each save writes a new step folder atomically (orbax finalises a temporary folder
by renaming it), so a save killed halfway leaves every earlier checkpoint intact and
`restore_latest` skips it. `keep` bounds how many are kept.
"""

import os

import jax
import orbax.checkpoint as ocp

from east_jax.errors import UserInputError


class Checkpointer:
  """Saves and restores {state, data} under `<workdir>/checkpoints/<step>`."""

  def __init__(self, workdir: str, *, keep: int):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self._manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                          options=options, item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, data_state: dict) -> None:
    """Starts an asynchronous save; `wait()` blocks until it is on disk."""
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     data=ocp.args.JsonSave(data_state)),
                       force=True)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore_latest(self, like_state):
    """(state, data_state) of the latest checkpoint shaped and sharded like `like_state`,
    or None when there is none."""
    step = self._manager.latest_step()
    return None if step is None else self.restore(like_state, step)

  def restore(self, like_state, step: int):
    """(state, data_state) of the checkpoint of `step`, shaped and sharded like `like_state`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise UserInputError(
          f"The checkpoint of step {step} in {self._manager.directory} does not match this "
          f"config (model, optimizer or sparsity method changed?): {str(e)[:300]}. Resume with "
          "the config it was written with, or pass a new --workdir.") from None
    return restored.state, restored.data

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
