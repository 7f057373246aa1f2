"""Prune/grow as one Optax transformation wrapping any inner optimizer.

    tx = sparse_training(optax.sgd(0.1, 0.9, nesterov=True), spec)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)   # pruned weights are now exactly 0

The state carries the masks, a step counter and the key of the random choices (a
runtime value, so runs that differ only in seed share one compiled step). On mask-update
steps (a pure schedule of the step, under `lax.cond`) each layer drops and grows with an exact,
constant count (SET, RigL), is pruned to the cubic schedule (GMP) or, during
cyclic sparsity (EAST), pruned or grown to its ERK count at the cycle's current
density; there, the inner
optimizer's moments are zeroed at every position that is not kept (grown weights
start with zero moments), found generically through `optax.tree_map_params`.
Gradients are masked before the inner optimizer, so moments stay zero off the mask;
ordinary steps cost two `where`s per parameter. The inner optimizer runs on every
step, so its own counts and schedules are never disturbed.
"""

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from east_jax.errors import UserInputError
from east_jax.sparsity import criteria, distributions, masks as masks_lib, schedules
from east_jax.sparsity.cycles import CycleSchedule

METHODS = ("static", "set", "rigl", "gmp", "granet")
SCOPES = ("global", "layerwise")
PRUNING_AT_INIT = ("snip", "grasp", "synflow")


@dataclasses.dataclass(frozen=True)
class SparsitySpec:
  """What a sparse run prunes and how its masks evolve (static settings).

  The names are those of `config.sparsity` (`methods.create_spec` builds this from it).

  The rule:
    method: "static" (masks drawn once), "set" (magnitude drop, random grow), "rigl"
      (magnitude drop, gradient grow), "gmp" (gradual magnitude pruning from dense) or
      "granet" (gradual global magnitude pruning from `init_sparsity` until `prune_end`,
      then RigL's drop / grow with per-layer counts read from the masks).
    sparsity: the fraction of the prunable weights removed (0.999 keeps 1 in 1000).
    total_steps: length of training (the drop fraction's cosine decays over it).
    seed: seeds the random masks and the random choices of every update.
  The layers:
    distribution: "erk" or "uniform": how the budget is split among layers.
    layer_density_overrides: ((layer name, density), ...) fixed inside the budget.
    min_kept_per_layer: the fewest weights any layer keeps (the collapse guard).
    keep_connected: layers (2-D kernels, e.g. the classifier) whose every output column
      keeps at least one weight.
    prunable: (leaf name, shape) -> whether the leaf is pruned; default: conv and dense
      kernels (`masks.is_kernel`).
    never_prune: param scopes (path components) whose leaves are never pruned and not in
      the budget, e.g. a model's auxiliary networks.
    keep_dense: leaf names left dense and outside the budget (e.g. the first layer).
  The updates:
    update_interval / update_start_step / update_end_step: mask updates at
      start + k * interval for start <= step < end (None: the end of training); GMP prunes
      at these steps, the last one at the end.
    drop_fraction / drop_fraction_final: the fraction of each layer's kept weights
      dropped and regrown, decayed by a cosine from the first to the second.
    prune_at_init: "" or the scoring ("snip", "grasp", "synflow") whose masks the caller
      puts in the state before the first step (`saliency`); the initial masks keep every
      weight so that the scoring sees the dense initialisation; method "static" then keeps
      them fixed.
    scope: for pruning at initialisation, "layerwise" (each layer keeps its distribution's
      count) or "global" (one top-k over all layers).
    init_sparsity / prune_end: GraNet's starting sparsity and the fraction of training at
      which its cubic pruning schedule (from update_start_step) ends.
  Additions, usable with any method (EAST uses both):
    cycles: cyclic sparsity before the constant-density updates (set / rigl), or None.
    kernel_uses: ((kernel name, uses), ...) for kernels that weight sharing reuses: the
      budget is round((1 - sparsity) * N_full), N_full counting every use.
  """
  method: str
  sparsity: float
  total_steps: int
  seed: int = 0
  distribution: str = "erk"
  layer_density_overrides: tuple = ()
  min_kept_per_layer: int = 0
  keep_connected: tuple = ()
  prunable: Callable[[str, tuple], bool] = masks_lib.is_kernel
  never_prune: tuple = ()
  keep_dense: tuple = ()
  update_interval: int = 100
  update_start_step: int = 0
  update_end_step: int | None = None
  drop_fraction: float = 0.5
  drop_fraction_final: float = 0.005
  prune_at_init: str = ""
  scope: str = "layerwise"
  init_sparsity: float = 0.0
  prune_end: float = 1.0
  cycles: CycleSchedule | None = None
  kernel_uses: tuple = ()

  def __post_init__(self):
    checks = [
        (self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}"),
        (0.0 <= self.sparsity < 1.0, f"sparsity must be in [0, 1), got {self.sparsity}"),
        (self.total_steps > 0, f"total_steps must be positive, got {self.total_steps}"),
        (self.update_interval > 0,
         f"update_interval must be positive, got {self.update_interval}"),
        (self.prune_at_init in ("", *PRUNING_AT_INIT),
         f"prune_at_init must be '' or one of {PRUNING_AT_INIT}, got {self.prune_at_init!r}"),
        (self.scope in SCOPES, f"scope must be one of {SCOPES}, got {self.scope!r}"),
    ]
    for ok, message in checks:
      if not ok:
        raise ValueError(f"SparsitySpec: {message}.")

  @property
  def density(self) -> float:
    """The kept fraction, 1 - sparsity."""
    return 1.0 - self.sparsity

  @property
  def end(self) -> int:
    """The step at which mask updates stop."""
    return self.total_steps if self.update_end_step is None else self.update_end_step

  @property
  def prune_end_step(self) -> int:
    """GraNet's last pruning step (at most)."""
    return round(self.prune_end * self.total_steps)


class SparseTrainingState(NamedTuple):
  """The state of `sparse_training`: the inner optimizer's, the masks (a pytree like the
  params: boolean arrays at pruned leaves, scalar True elsewhere), the step count and
  `rng_key`, the data (`jax.random.key_data`) of the key seeded by `spec.seed` from which
  every update draws its random choices."""
  inner_state: Any
  masks: Any
  step: jax.Array
  rng_key: jax.Array


def get_masks(opt_state):
  """The masks inside an optimizer state, however `sparse_training` is wrapped.

  Args:
    opt_state: the state of an optimizer holding one `sparse_training` (alone, or inside
      `optax.chain`, `optax.MultiSteps`, `optax.inject_hyperparams`, ...).

  Returns:
    The mask pytree: the params' structure, boolean arrays at pruned leaves, the scalar
    True elsewhere.

  Raises:
    ValueError: when the state holds no `sparse_training` state, or more than one.
  """
  found = optax.tree_utils.tree_get_all_with_path(opt_state, SparseTrainingState.__name__)
  if len(found) != 1:
    raise ValueError(f"Expected one {SparseTrainingState.__name__} in the optimizer state, "
                     f"found {len(found)}: build the optimizer with sparse_training(...).")
  return found[0][1].masks


def masked_params(params, opt_state):
  """`params` with every pruned weight set to exactly 0 (call it after `tx.init`).

  Args:
    params: the model's parameters.
    opt_state: an optimizer state holding one `sparse_training` state (`get_masks`).

  Returns:
    The params, zero outside the masks.
  """
  return masks_lib.apply(params, get_masks(opt_state))


def prunable_shapes(spec: SparsitySpec, params) -> dict[str, tuple]:
  return masks_lib.prunable_shapes(params, spec.prunable, spec.never_prune, spec.keep_dense)


def reference_size(spec: SparsitySpec, shapes) -> int:
  """N_full: the prunable size of the unshared network (each kernel times its uses)."""
  uses = dict(spec.kernel_uses)
  return sum(math.prod(s) * uses.get(n, 1) for n, s in shapes.items())


def check_budget(spec: SparsitySpec, shapes) -> None:
  """Raises UserInputError when the budget keeps fewer weights than there are prunable
  layers (some layer would be cut off whatever the distribution), naming the largest
  usable sparsity."""
  full = reference_size(spec, shapes)
  budget = round(spec.density * full)
  if budget < len(shapes):
    raise UserInputError(
        f"Sparsity {1.0 - spec.density:.10g} keeps {budget} of {full} weights, fewer than the "
        f"{len(shapes)} prunable layers: the largest usable sparsity for this network is "
        f"{math.floor((1.0 - len(shapes) / full) * 1e7) / 1e7:.7f} (config.sparsity.sparsity).")


def target_counts(spec: SparsitySpec, shapes, density: float | None = None) -> dict[str, int]:
  """Per-layer kept counts at `density` (default: the spec's)."""
  minimum = dict.fromkeys(shapes, spec.min_kept_per_layer)
  for name, shape in shapes.items():
    if _guarded(spec, name):
      minimum[name] = max(minimum[name], shape[1])
  return distributions.kept_counts(shapes, spec.density if density is None else density,
                                   spec.distribution, dict(spec.layer_density_overrides), minimum,
                                   reference_size(spec, shapes))


def initial_density(spec: SparsitySpec) -> float:
  """The density of the masks at step 0 (GraNet starts above its target)."""
  return 1.0 - spec.init_sparsity if spec.method == "granet" else spec.density


def counts_from_masks(spec: SparsitySpec) -> bool:
  """Whether the per-layer counts are known only from the masks (global scoring, GraNet's
  global pruning), not from the spec."""
  return spec.method == "granet" or (spec.prune_at_init and spec.scope == "global")


def granet_prune_table(spec: SparsitySpec, shapes) -> tuple[list[int], list[int]]:
  """GraNet's pruning steps (the update steps up to prune_end) and the exact total kept
  count after each: the cubic schedule from init_sparsity to the target sparsity,
  reached at the last of them."""
  steps = [s for s in range(max(1, spec.update_start_step), spec.prune_end_step + 1)
           if (s - spec.update_start_step) % spec.update_interval == 0 and s < spec.end]
  full = reference_size(spec, shapes)
  if not steps:
    return [], []
  last = steps[-1]
  start, final = 1.0 - initial_density(spec), 1.0 - spec.density
  totals = []
  for s in steps:
    progress = (1.0 if s == last else
                (s - spec.update_start_step) / max(1, last - spec.update_start_step))
    sparsity = final + (start - final) * (1.0 - progress) ** 3
    totals.append(round((1.0 - sparsity) * full))
  return steps, totals


def _count_table(spec, shapes, densities) -> np.ndarray:
  return np.asarray([list(target_counts(spec, shapes, d).values()) for d in densities], np.int32)


def gmp_count_table(spec: SparsitySpec, shapes) -> tuple[list[int], np.ndarray]:
  """GMP's pruning steps and the kept count of every layer at each of them."""
  steps = schedules.gmp_update_steps(interval=spec.update_interval, start=spec.update_start_step,
                                     end=spec.end)
  return steps, _count_table(spec, shapes, [1.0 - schedules.gmp_sparsity(
      s, final_sparsity=1.0 - spec.density, start=spec.update_start_step, end=spec.end)
                                            for s in steps])


def cycle_count_table(spec: SparsitySpec, shapes) -> tuple[list[int], np.ndarray]:
  """The cyclic phase's update steps and every layer's ERK count at each of them."""
  steps = spec.cycles.update_steps()
  return steps, _count_table(spec, shapes, [spec.cycles.density(s, spec.density) for s in steps])


def kept_capacity(spec: SparsitySpec, params, from_step: int = 0) -> dict[str, int]:
  """Every prunable layer's largest kept count at train steps >= `from_step`: the static
  number of slots a computation over the kept weights needs there (the cycles peak above
  the target until their last update, at `cycles.end_step`; GMP starts dense)."""
  shapes = prunable_shapes(spec, params)
  if spec.method == "gmp" or (spec.prune_at_init and spec.scope == "global"):
    return {n: math.prod(s) for n, s in shapes.items()}
  if spec.method == "granet":  # Counts only fall from the initial ones.
    return target_counts(spec, shapes, initial_density(spec))
  counts = target_counts(spec, shapes)
  if spec.cycles is not None and from_step <= spec.cycles.end_step:
    peaks = cycle_count_table(spec, shapes)[1].max(axis=0, initial=0)
    counts = {n: max(c, int(p)) for (n, c), p in zip(counts.items(), peaks)}
  return counts


def settled_step(spec: SparsitySpec | None, params=None) -> int | None:
  """The first train step whose masks keep their final counts for good (the step after
  the cycles' last update, or GraNet's last pruning), or None when that holds from the
  start."""
  if spec is None:
    return None
  if spec.method == "granet":
    steps, _ = granet_prune_table(spec, prunable_shapes(spec, params))
    return steps[-1] + 1 if steps else None
  return None if spec.cycles is None else spec.cycles.end_step + 1


def dense_gradient_steps(spec: SparsitySpec) -> frozenset[int]:
  """The steps (transformation step counts) whose mask update reads the gradient at
  pruned positions (RigL's growth); every other step needs it at kept positions only."""
  if spec.method not in ("rigl", "granet"):
    return frozenset()
  steps = np.arange(spec.total_steps)
  return frozenset(int(s) for s in steps[np.asarray(is_update_step(spec, steps))])


def _guarded(spec: SparsitySpec, name: str) -> bool:
  """Whether the collapse guard keeps every column of this layer connected."""
  return name in spec.keep_connected


def _layer_key(key, step, layer_index: int):
  return jax.random.fold_in(jax.random.fold_in(key, step), layer_index)


def initial_masks(spec: SparsitySpec, params):
  """Random masks with the exact per-layer counts (drawn from `spec.seed`); all dense for
  GMP, and for pruning at initialisation, whose scoring must see every weight of the
  initialisation."""
  shapes = prunable_shapes(spec, params)
  if spec.method == "gmp" or spec.prune_at_init:
    counts = {n: math.prod(s) for n, s in shapes.items()}
  else:
    counts = target_counts(spec, shapes, initial_density(spec))
  key = jax.random.key(spec.seed)
  layer_masks = {
      name: criteria.random_mask(_layer_key(key, 0, i), shapes[name], counts[name],
                                 _guarded(spec, name))
      for i, name in enumerate(shapes)}
  return masks_lib.build(params, layer_masks)


def updated_masks(spec: SparsitySpec, params, grads, masks, step, key):
  """The masks after this step's update (call only on update steps); `key` seeds its
  random choices (tie-breaks, SET's growth)."""
  shapes = prunable_shapes(spec, params)
  weights = masks_lib.layers(params, shapes)
  gradients = masks_lib.layers(grads, shapes)
  current = masks_lib.layers(masks, shapes)
  new = {}
  if spec.method == "gmp":
    steps, table = gmp_count_table(spec, shapes)
    table = jnp.asarray(table)
    event = jnp.searchsorted(jnp.asarray(steps, jnp.int32), step)
    for i, name in enumerate(shapes):
      new[name] = criteria.prune_to(_layer_key(key, step, i), weights[name], current[name],
                                    table[event, i])
    return masks_lib.replace_layers(masks, new)
  if spec.method == "granet":
    return _granet_masks(spec, shapes, weights, gradients, masks, current, step, key)
  grow = gradients if spec.method == "rigl" else dict.fromkeys(shapes)
  counts = target_counts(spec, shapes)

  def constant_density():
    new = {}
    fraction = schedules.drop_fraction(step, spec.total_steps, spec.drop_fraction,
                                       spec.drop_fraction_final)
    for i, name in enumerate(shapes):
      count = counts[name]
      protect = (criteria.column_anchor(weights[name], current[name])
                 if _guarded(spec, name) else None)
      new[name] = criteria.drop_and_grow(
          _layer_key(key, step, i), weights[name], current[name], grow[name], count=count,
          max_change=schedules.max_to_move(max(spec.drop_fraction, spec.drop_fraction_final),
                                           count),
          num_drop=schedules.num_to_move(fraction, count), protect=protect)
    return masks_lib.replace_layers(masks, new)

  if spec.cycles is None:
    return constant_density()

  def cyclic():
    new = {}
    steps, table = cycle_count_table(spec, shapes)
    event = jnp.searchsorted(jnp.asarray(steps, jnp.int32), step)
    for i, name in enumerate(shapes):
      protect = (criteria.column_anchor(weights[name], current[name])
                 if _guarded(spec, name) else None)
      new[name] = criteria.resize(_layer_key(key, step, i), weights[name], current[name],
                                  grow[name], target=jnp.asarray(table[:, i])[event],
                                  max_count=max(counts[name], int(table[:, i].max())),
                                  protect=protect)
    return masks_lib.replace_layers(masks, new)

  return jax.lax.cond(step <= spec.cycles.end_step, cyclic, constant_density)


def _granet_masks(spec, shapes, weights, gradients, masks, current, step, key):
  """GraNet's update: global magnitude pruning to the schedule's exact total while the
  pruning window lasts, then in every layer RigL's drop / regrow of ceil(f(t) * kept)."""
  steps, totals = granet_prune_table(spec, shapes)
  names = list(shapes)
  if steps:
    event = jnp.searchsorted(jnp.asarray(steps, jnp.int32), step)
    pruned = criteria.prune_global_to(
        _layer_key(key, step, len(names)), [weights[n] for n in names],
        [current[n] for n in names], jnp.asarray(totals, jnp.int32)[jnp.minimum(event, len(steps) - 1)],
        minimum=spec.min_kept_per_layer)
    current = jax.lax.cond(step <= steps[-1], lambda: dict(zip(names, pruned)), lambda: current)
  fraction = schedules.drop_fraction(step, spec.total_steps, spec.drop_fraction,
                                     spec.drop_fraction_final)
  new = {}
  for i, name in enumerate(names):
    kept = jnp.sum(current[name], dtype=jnp.int32)
    new[name] = criteria.drop_and_grow_any(
        _layer_key(key, step, i), weights[name], current[name], gradients[name],
        num_drop=schedules.num_to_move(fraction, kept))
  return masks_lib.replace_layers(masks, new)


def is_update_step(spec: SparsitySpec, step):
  """Whether `step` updates the masks (for every method but "static")."""
  if spec.method == "gmp":
    steps = schedules.gmp_update_steps(interval=spec.update_interval,
                                       start=spec.update_start_step, end=spec.end)
    return jnp.isin(step, jnp.asarray(steps or [-1], jnp.int32))
  constant = schedules.is_update_step(step, interval=spec.update_interval,
                                      start=spec.update_start_step, end=spec.end)
  if spec.cycles is None:
    return constant
  cyclic = jnp.isin(step, jnp.asarray(spec.cycles.update_steps() or [-1], jnp.int32))
  return cyclic | (constant & (step > spec.cycles.end_step))


def sparse_training(inner: optax.GradientTransformation,
                    spec: SparsitySpec) -> optax.GradientTransformationExtraArgs:
  """Wraps `inner` so that only kept weights train and masks evolve per `spec`.

  Args:
    inner: the optimizer of the kept weights (any Optax transformation); it runs on every
      step, on gradients that are zero outside the masks.
    spec: what is pruned and how the masks evolve.

  Returns:
    A transformation whose `init(params)` draws the initial masks (`get_masks` reads them;
    `masked_params` applies them) and whose `update(grads, state, params)` must be given
    the params; its updates set every pruned weight to exactly 0.
  """
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return SparseTrainingState(inner_state=inner.init(params),
                               masks=initial_masks(spec, params),
                               step=jnp.zeros((), jnp.int32),
                               rng_key=jax.random.key_data(jax.random.key(spec.seed)))

  def update_fn(grads, state, params=None, **extra_args):
    if params is None:
      raise ValueError("sparse_training needs params: call tx.update(grads, state, params).")
    old = state.masks
    if spec.method == "static":
      new = kept = old
    else:
      is_update = is_update_step(spec, state.step)

      def update_masks():
        new = updated_masks(spec, params, grads, old, state.step,
                            jax.random.wrap_key_data(state.rng_key))
        return new, jax.tree.map(jnp.logical_and, old, new)  # Kept: neither grown nor dropped.

      new, kept = jax.lax.cond(is_update, update_masks, lambda: (old, old))
    # Only kept weights get gradients, so off the mask the moments stay 0.
    updates, inner_state = inner.update(masks_lib.apply(grads, kept), state.inner_state, params,
                                        **extra_args)
    if spec.method != "static":
      # After a mask update, grown and dropped positions restart with zero moments.
      inner_state = jax.lax.cond(is_update, lambda s: optax.tree_map_params(
          inner, lambda x, m: jnp.where(m, x, jnp.zeros_like(x)), s, kept,
          transform_non_params=lambda x: x), lambda s: s, inner_state)
    # Kept weights move by the inner update; every other weight is set to exactly 0
    # (dropped ones become 0, pruned and newly grown ones stay 0), whatever `inner` does.
    updates = jax.tree.map(lambda u, p, m: jnp.where(m, u, -p), updates, params, kept)
    return updates, state._replace(inner_state=inner_state, masks=new, step=state.step + 1)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
