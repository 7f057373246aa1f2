"""A training workdir read back: its saved config and a checkpoint, on one device."""

import json
import os
from typing import Any, NamedTuple

import jax
import ml_collections

from east_jax import checkpointing
from east_jax import config_validation
from east_jax import parallel
from east_jax import train
from east_jax.data import pipeline
from east_jax.errors import UserInputError


class SavedRun(NamedTuple):
  config: ml_collections.ConfigDict
  ds: Any                 # The dataset the run trained on.
  run: train.Run
  state: train.TrainState  # On one device.
  mesh: Any               # That device.


def _tuples(tree):
  if isinstance(tree, dict):
    return {k: _tuples(v) for k, v in tree.items()}
  return tuple(_tuples(v) for v in tree) if isinstance(tree, list) else tree


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's `config.json`, with fields added to east_jax since the run at their
  defaults (when configs/default.py is importable)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise UserInputError(f"{workdir!r} has no config.json: pass the --workdir of a training "
                         "run (python -m east_jax.main ... --workdir=<dir>).")
  with open(path) as f:
    saved = _tuples(json.load(f))
  try:
    from configs import default
  except ImportError:
    return ml_collections.ConfigDict(saved)
  config = default.get_config()
  config.update(saved)
  return config


def load(workdir: str, step: int | None = None) -> SavedRun:
  """The run of `workdir` at checkpoint `step` (None: the latest)."""
  config = load_config(workdir)
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
    state, _ = checkpointer.restore(like, steps[-1] if step is None else step)
  finally:
    checkpointer.close()
  return SavedRun(config, ds, run, state, mesh)
