"""A training workdir read back, on one device: its saved config and a checkpoint (whole, or
only what evaluation and export use, so that checkpoints of versions whose optimizer state
differed load)."""

from typing import Any, NamedTuple

import jax
import ml_collections

from east_jax import checkpointing
from east_jax import config_validation
from east_jax import parallel
from east_jax import run_record
from east_jax import train
from east_jax.data import pipeline
from east_jax.errors import UserInputError


class SavedRun(NamedTuple):
  config: ml_collections.ConfigDict
  ds: Any                 # The dataset the run trained on.
  run: train.Run
  state: train.TrainState  # On one device (model_only: optimizer state but the masks zero).
  mesh: Any               # That device.


def _used(leaf: str) -> bool:
  """Whether a leaf of the train state is one that evaluation and export read: the step,
  parameters, BatchNorm statistics and masks (the rest of the optimizer state is not)."""
  parts = leaf.split("/")
  return parts[0] in ("step", "params", "batch_stats") or "masks" in parts[1:]


def load(workdir: str, step: int | None = None, model_only: bool = False) -> SavedRun:
  """The run of `workdir` at checkpoint `step` (None: the latest); `model_only` restores only
  the step, parameters, BatchNorm statistics and masks."""
  config = run_record.load_config(workdir)
  config_validation.validate(config)
  ds = pipeline.load_dataset(config.dataset)
  run = train.build_run(config, ds)
  mesh = parallel.create_mesh(jax.devices()[:1])
  like = train.create_train_state(jax.random.key(config.seed), run.model, run.tx,
                                  ds.image_shape, mesh, abstract=True)
  checkpointer = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
  try:
    steps = checkpointer.all_steps()
    if not steps:
      raise UserInputError(f"{workdir!r} has no checkpoint yet: train first, or wait for the "
                           "run's first checkpoint (config.checkpoint_every_steps).")
    if step is not None and step not in steps:
      raise UserInputError(f"{workdir!r} has no checkpoint of step {step}; it has steps "
                           f"{', '.join(map(str, steps))}.")
    step = steps[-1] if step is None else step
    if model_only:
      state = checkpointer.restore_subset(like, step, _used)
    else:
      state, _ = checkpointer.restore(like, step)
  finally:
    checkpointer.close()
  return SavedRun(config, ds, run, state, mesh)
