"""Sparse-training methods by name, built from `config.sparsity`.

  dense   no masks (the plain optimizer)
  static  ERK/uniform masks drawn once, never updated
  set     magnitude drop, random grow (Mocanu et al. 2018)
  rigl    magnitude drop, gradient grow (Evci et al. 2020)
  gmp     gradual magnitude pruning from dense, cubic schedule (Zhu & Gupta 2017)
  east    RigL with cyclic sparsity (Li et al. 2025; the model-side tricks, weight
          sharing and DyReLU, are the caller's: east_jax.east)
  snip    masks scored once at initialisation by |g * w| on one batch (Lee et al. 2019)
  grasp   ... by -w * Hg, gradient-flow preservation (Wang et al. 2020)
  synflow ... by iterative, data-free synaptic flow (Tanaka et al. 2020)
  granet  gradual global magnitude pruning + RigL's drop / regrow (Liu et al. 2021)

The pruning-at-initialisation methods train their scored masks as static ones; the
scoring itself needs the model and data, so the caller runs it (`saliency`).
"""

from east_jax.errors import UserInputError
from east_jax.sparsity import distributions
from east_jax.sparsity import masks
from east_jax.sparsity import transform
from east_jax.sparsity.cycles import CycleSchedule
from east_jax.sparsity.transform import SparsitySpec

# Every config.sparsity.method and the transformation's method it runs (None: none).
CONFIG_METHODS = {"dense": None, "static": "static", "set": "set", "rigl": "rigl",
                  "gmp": "gmp", "east": "rigl", "snip": "static", "grasp": "static",
                  "synflow": "static", "granet": "granet"}


def _parse_overrides(entries) -> tuple:
  overrides = []
  for entry in entries:
    name, sep, value = str(entry).partition("=")
    try:
      density = float(value)
    except ValueError:
      density = -1.0
    if not sep or not 0.0 <= density <= 1.0:
      raise UserInputError(f"config.sparsity.layer_density_overrides entry {entry!r}: use "
                           "'<layer>=<density in [0, 1]>', e.g. 'conv1/kernel=1.0'.")
    overrides.append((name.strip(), density))
  return tuple(overrides)


def validate(sparsity_config) -> None:
  """Checks config.sparsity; raises UserInputError with what to change."""
  method = sparsity_config.method
  if method not in CONFIG_METHODS:
    raise UserInputError(f"Unknown sparsity method {method!r}: choose one of "
                         f"{', '.join(CONFIG_METHODS)} (config.sparsity.method).")
  if method == "dense":
    return
  sparsity = sparsity_config.sparsity
  if not 0.0 <= sparsity < 1.0:
    raise UserInputError(f"config.sparsity.sparsity must be in [0, 1) (the fraction of weights "
                         f"removed, e.g. 0.999), got {sparsity}.")
  if sparsity_config.distribution not in distributions.DISTRIBUTIONS:
    raise UserInputError(f"Unknown config.sparsity.distribution {sparsity_config.distribution!r}: "
                         f"use one of {distributions.DISTRIBUTIONS}.")
  if sparsity_config.update_interval <= 0:
    raise UserInputError("config.sparsity.update_interval must be a positive number of steps, "
                         f"got {sparsity_config.update_interval}.")
  if not 0.0 <= sparsity_config.drop_fraction <= 1.0:
    raise UserInputError(f"config.sparsity.drop_fraction must be in [0, 1], got "
                         f"{sparsity_config.drop_fraction}.")
  if sparsity_config.min_kept_per_layer < 0:
    raise UserInputError("config.sparsity.min_kept_per_layer must be >= 0.")
  if method in transform.PRUNING_AT_INIT and sparsity_config.scope not in transform.SCOPES:
    raise UserInputError(f"config.sparsity.scope must be one of {transform.SCOPES}, got "
                         f"{sparsity_config.scope!r}.")
  if method == "synflow" and sparsity_config.synflow_rounds < 1:
    raise UserInputError("config.sparsity.synflow_rounds must be >= 1, got "
                         f"{sparsity_config.synflow_rounds}.")
  if method == "grasp" and not (sparsity_config.grasp_samples_per_class >= 1
                                and sparsity_config.grasp_temperature > 0):
    raise UserInputError("config.sparsity.grasp_samples_per_class must be >= 1 and "
                         "grasp_temperature > 0.")
  if method == "granet" and not (0.0 <= sparsity_config.init_sparsity <= sparsity
                                 and 0.0 < sparsity_config.prune_end <= 1.0):
    raise UserInputError(
        "config.sparsity.init_sparsity must be in [0, sparsity] (GraNet prunes from it to "
        f"`sparsity`), got {sparsity_config.init_sparsity}, and prune_end a fraction of "
        f"training in (0, 1], got {sparsity_config.prune_end}.")
  _parse_overrides(sparsity_config.layer_density_overrides)


def create_spec(sparsity_config, *, total_steps: int, seed: int, kernel_uses: tuple = (),
                cycles: CycleSchedule | None = None, prunable=masks.is_kernel,
                never_prune: tuple = (), stem: str = "",
                classifier: str = "") -> SparsitySpec | None:
  """The SparsitySpec of `config.sparsity` (checked first).

  Args:
    sparsity_config: the `config.sparsity` section (configs/default.py lists its fields).
    total_steps: the run's length in steps.
    seed: seeds the masks.
    kernel_uses: weight sharing's kernel uses, for the budget (see SparsitySpec).
    cycles: cyclic sparsity, or None.
    prunable / never_prune: which leaves can be pruned (see SparsitySpec).
    stem / classifier: the model's first and output kernels, needed by keep_stem_dense,
      keep_classifier_dense and connect_all_classes.

  Returns:
    The spec, or None for method "dense".

  Raises:
    UserInputError: a config value that cannot work, saying what to change.
  """
  validate(sparsity_config)
  method = sparsity_config.method
  rule = CONFIG_METHODS[method]
  if rule is None:
    return None
  layers = (("keep_stem_dense", "stem", stem), ("keep_classifier_dense", "classifier", classifier),
            ("connect_all_classes", "classifier", classifier))
  for field, role, name in layers:
    if sparsity_config[field] and not name:
      raise UserInputError(f"config.sparsity.{field} needs the model's {role} kernel name "
                           f"(create_spec({role}=...)).")
  keep_dense = tuple(name for field, _, name in layers[:2] if sparsity_config[field])
  update_end = sparsity_config.update_end_step
  return SparsitySpec(
      method=rule, sparsity=sparsity_config.sparsity, total_steps=total_steps, seed=seed,
      distribution=sparsity_config.distribution,
      layer_density_overrides=_parse_overrides(sparsity_config.layer_density_overrides),
      min_kept_per_layer=sparsity_config.min_kept_per_layer,
      keep_connected=(classifier,) if sparsity_config.connect_all_classes else (),
      prunable=prunable, never_prune=tuple(never_prune), keep_dense=keep_dense,
      update_interval=sparsity_config.update_interval,
      update_start_step=sparsity_config.update_start_step,
      update_end_step=None if update_end < 0 else update_end,
      drop_fraction=sparsity_config.drop_fraction,
      drop_fraction_final=sparsity_config.drop_fraction_final,
      prune_at_init=method if method in transform.PRUNING_AT_INIT else "",
      scope=sparsity_config.scope if method in transform.PRUNING_AT_INIT else "layerwise",
      init_sparsity=sparsity_config.init_sparsity if method == "granet" else 0.0,
      prune_end=sparsity_config.prune_end if method == "granet" else 1.0,
      cycles=cycles, kernel_uses=kernel_uses)
