"""A workdir's record of what it runs: `<workdir>/config.json`.

The first launch writes the config there; every relaunch compares its config with it
before anything is restored or written, and then updates only the fields that may differ. A field that changes what the run computes must
match; only the fields of `HOW_IT_RUNS` (how the run is observed, stored or executed,
not what it computes) may differ between launches of one run.
"""

import json
import os

import ml_collections

from east_jax.errors import UserInputError

CONFIG_FILE = "config.json"

# Fields (dotted names; a name covers every field under it) that may differ between the
# launches of one run. The model's `kernel_grad` and `sparse_compute` choose how the same
# convolutions are computed (XLA's or matrix-product kernel gradients; dense or over the
# kept weights only), which is tested to give the same results up to float rounding.
HOW_IT_RUNS = (
    "log_every_steps", "eval_every_steps", "eval_splits", "eval_batch_size",
    "checkpoint_every_steps", "keep_checkpoints", "compilation_cache_dir",
    "dataset.data_dir", "dataset.num_threads", "distributed",
    "model.kernel_grad", "model.sparse_compute",
)


def _tuples(tree):
  if isinstance(tree, dict):
    return {k: _tuples(v) for k, v in tree.items()}
  return tuple(_tuples(v) for v in tree) if isinstance(tree, list) else tree


def flat_fields(tree: dict, prefix: str = "") -> dict:
  """{dotted field: value} of a config's JSON tree, lists as tuples (hashable, and equal
  to the config's own tuples)."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flat_fields(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = _tuples(value)
  return out


def _defaults() -> dict | None:
  """configs/default.py's config as plain JSON values, when it is importable."""
  try:
    from configs import default
  except ImportError:
    return None
  return json.loads(default.get_config().to_json_best_effort())


def read(workdir: str) -> dict | None:
  """The saved config of `workdir` as plain JSON values, or None when it has none."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise UserInputError(f"{path} cannot be read ({e}): restore it from the run's records, or "
                         "pass a new --workdir.") from None


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's saved config, with fields added to east_jax since the run at their
  defaults (when configs/default.py is importable)."""
  saved = read(workdir)
  if saved is None:
    raise UserInputError(f"{workdir!r} has no {CONFIG_FILE}: pass the --workdir of a training "
                         "run (python -m east_jax.main ... --workdir=<dir>).")
  saved = _tuples(saved)
  try:
    from configs import default
  except ImportError:
    return ml_collections.ConfigDict(saved)
  config = default.get_config()
  config.update(saved)
  return config


def is_free(field: str) -> bool:
  """Whether `field` (dotted) only changes how a run is observed or executed."""
  return any(field == name or field.startswith(name + ".") for name in HOW_IT_RUNS)


def differences(saved: dict, config: ml_collections.ConfigDict) -> list[tuple[str, object, object]]:
  """(field, saved value, new value) of every field outside `HOW_IT_RUNS` that differs.

  A field the saved config lacks (added to east_jax after the run) is compared with its
  default; a field only the saved config has (since removed) is ignored.
  """
  old, new = flat_fields(saved), flat_fields(json.loads(config.to_json_best_effort()))
  defaults = flat_fields(_defaults() or {})
  out = []
  for field, value in new.items():
    if is_free(field):
      continue
    if field in old:
      before = old[field]
    elif field in defaults:
      before = defaults[field]
    else:
      continue
    if before != value:
      out.append((field, before, value))
  return out


def has_history(workdir: str) -> bool:
  """Whether a launch of `workdir` got as far as training (metrics or checkpoints)."""
  checkpoints = os.path.join(workdir, "checkpoints")
  return (os.path.exists(os.path.join(workdir, "metrics.jsonl"))
          or (os.path.isdir(checkpoints) and bool(os.listdir(checkpoints))))


def check_relaunch(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises UserInputError, naming each differing field with both values, when
  `workdir` holds a run of another config. Reads only; writes nothing."""
  saved = read(workdir)
  if saved is None or not has_history(workdir):
    return
  changed = differences(saved, config)
  if changed:
    fields = "; ".join(f"{f}: {old!r} in the workdir, {new!r} now" for f, old, new in changed)
    raise UserInputError(
        f"{workdir} holds a run of another config ({fields}). Relaunch it with its own config "
        f"({os.path.join(workdir, CONFIG_FILE)}), or pass a new --workdir. Nothing was changed.")


def write(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the record of a run's first launch. A relaunch of a run that has trained
  (after `check_relaunch`) keeps that record and updates only the `HOW_IT_RUNS` fields it
  holds (a moved data_dir, another log interval); nothing else is added or changed."""
  path = os.path.join(workdir, CONFIG_FILE)
  saved = read(workdir)
  if saved is None or not has_history(workdir):
    with open(path, "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    return
  latest = flat_fields(json.loads(config.to_json_best_effort()))
  updated = json.loads(json.dumps(saved))
  for field, value in flat_fields(saved).items():
    if is_free(field) and field in latest and latest[field] != value:
      *parents, name = field.split(".")
      node = updated
      for key in parents:
        node = node[key]
      node[name] = latest[field]
  if updated != saved:
    with open(path, "w") as f:
      json.dump(updated, f, indent=2)
