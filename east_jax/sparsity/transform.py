"""Prune/grow as one Optax transformation wrapping any inner optimizer.

    tx = sparse_training(optax.sgd(0.1, 0.9, nesterov=True), spec)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)   # pruned weights are now exactly 0

The state carries the masks and a step counter. On mask-update steps (a pure
schedule of the step, under `lax.cond`) each layer drops and grows with an exact,
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

UPDATE_RULES = ("none", "set", "rigl", "gmp", "granet")
SCOPES = ("global", "layerwise")


@dataclasses.dataclass(frozen=True)
class SparsitySpec:
  """Static settings of a sparse run (built from the config by `methods.create_spec`).

  update_rule: "none" (static masks), "set" (magnitude drop, random grow), "rigl"
    (magnitude drop, gradient grow), "gmp" (gradual magnitude pruning from dense) or
    "granet" (gradual global magnitude pruning from `initial_density` until `prune_end`,
    and RigL's drop / grow at every update, with per-layer counts read from the masks).
  density: the overall kept fraction (1 - sparsity) over the prunable tensors.
  overrides: ((layer name, density), ...) fixed layer densities inside the budget.
  min_kept_per_layer / connect_all_classes: the collapse guard (docs/method.md section 7).
  update_interval / update_start / update_end: mask updates at start + k * interval
    for start <= step < end (GMP: its pruning steps, the last one at end).
  total_steps: length of training (the drop-fraction cosine decays over it).
  kernel_uses: ((kernel name, uses), ...) for kernels reused by weight sharing: the
    budget is round(density * N_full), N_full counting every use.
  cycles: cyclic sparsity before the constant-density updates (set/rigl), or None.
  prunable: (leaf name, shape) -> whether the leaf is pruned; default: conv and dense
    kernels (`masks.is_kernel`).
  never_prune: param scopes (path components) whose leaves are never pruned and not in
    the budget, e.g. a model's auxiliary networks.
  keep_dense: leaf names left dense and outside the budget (e.g. the first layer).
  classifier: the output layer's kernel, whose every column connect_all_classes keeps
    connected.
  prune_at_init: "" or the scoring ("snip", "grasp", "synflow") whose masks the caller
    puts in the state before the first step (`saliency`), scored on the dense
    initialisation (the transformation's initial masks keep every weight); they then stay
    fixed.
  scope: "layerwise" (each layer keeps its distribution's count) or "global" (one top-k
    over all layers: per-layer counts are known only from the masks).
  initial_density / prune_end: GraNet's starting density and the step of its last
    pruning (its cubic schedule runs from update_start to prune_end).
  """
  update_rule: str
  density: float
  total_steps: int
  distribution: str = "erk"
  overrides: tuple = ()
  min_kept_per_layer: int = 0
  connect_all_classes: bool = False
  update_interval: int = 100
  update_start: int = 0
  update_end: int = -1
  drop_fraction: float = 0.5
  drop_fraction_final: float = 0.005
  kernel_uses: tuple = ()
  cycles: CycleSchedule | None = None
  prunable: Callable[[str, tuple], bool] = masks_lib.is_kernel
  never_prune: tuple = ()
  keep_dense: tuple = ()
  classifier: str = ""
  seed: int = 0
  prune_at_init: str = ""
  scope: str = "layerwise"
  initial_density: float = 1.0
  prune_end: int = -1

  @property
  def end(self) -> int:
    return self.total_steps if self.update_end < 0 else self.update_end


class SparseTrainingState(NamedTuple):
  inner_state: Any
  masks: Any
  step: jax.Array


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
                                   spec.distribution, dict(spec.overrides), minimum,
                                   reference_size(spec, shapes))


def initial_density(spec: SparsitySpec) -> float:
  """The density of the masks at step 0 (GraNet starts above its target)."""
  return spec.initial_density if spec.update_rule == "granet" else spec.density


def counts_from_masks(spec: SparsitySpec) -> bool:
  """Whether the per-layer counts are known only from the masks (global scoring, GraNet's
  global pruning), not from the spec."""
  return spec.update_rule == "granet" or (spec.prune_at_init and spec.scope == "global")


def granet_prune_table(spec: SparsitySpec, shapes) -> tuple[list[int], list[int]]:
  """GraNet's pruning steps (the update steps up to prune_end) and the exact total kept
  count after each: the cubic schedule from 1 - initial_density to the target sparsity,
  reached at the last of them."""
  steps = [s for s in range(max(1, spec.update_start), spec.prune_end + 1)
           if (s - spec.update_start) % spec.update_interval == 0 and s < spec.end]
  full = reference_size(spec, shapes)
  if not steps:
    return [], []
  last = steps[-1]
  start, final = 1.0 - spec.initial_density, 1.0 - spec.density
  totals = []
  for s in steps:
    progress = 1.0 if s == last else (s - spec.update_start) / max(1, last - spec.update_start)
    sparsity = final + (start - final) * (1.0 - progress) ** 3
    totals.append(round((1.0 - sparsity) * full))
  return steps, totals


def _count_table(spec, shapes, densities) -> np.ndarray:
  return np.asarray([list(target_counts(spec, shapes, d).values()) for d in densities], np.int32)


def gmp_count_table(spec: SparsitySpec, shapes) -> tuple[list[int], np.ndarray]:
  """GMP's pruning steps and the kept count of every layer at each of them."""
  steps = schedules.gmp_update_steps(interval=spec.update_interval, start=spec.update_start,
                                     end=spec.end)
  return steps, _count_table(spec, shapes, [1.0 - schedules.gmp_sparsity(
      s, final_sparsity=1.0 - spec.density, start=spec.update_start, end=spec.end)
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
  if spec.update_rule == "gmp" or (spec.prune_at_init and spec.scope == "global"):
    return {n: math.prod(s) for n, s in shapes.items()}
  if spec.update_rule == "granet":  # Counts only fall from the initial ones.
    return target_counts(spec, shapes, spec.initial_density)
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
  if spec.update_rule == "granet":
    steps, _ = granet_prune_table(spec, prunable_shapes(spec, params))
    return steps[-1] + 1 if steps else None
  return None if spec.cycles is None else spec.cycles.end_step + 1


def dense_gradient_steps(spec: SparsitySpec) -> frozenset[int]:
  """The steps (transformation step counts) whose mask update reads the gradient at
  pruned positions (RigL's growth); every other step needs it at kept positions only."""
  if spec.update_rule not in ("rigl", "granet"):
    return frozenset()
  steps = np.arange(spec.total_steps)
  return frozenset(int(s) for s in steps[np.asarray(is_update_step(spec, steps))])


def _guarded(spec: SparsitySpec, name: str) -> bool:
  """Whether the collapse guard keeps every column of this layer connected."""
  return spec.connect_all_classes and name == spec.classifier


def _layer_key(seed: int, step, layer_index: int):
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), step), layer_index)


def initial_masks(spec: SparsitySpec, params):
  """Random masks with the exact per-layer counts; all dense for GMP, and for pruning at
  initialisation, whose scoring must see every weight of the initialisation."""
  shapes = prunable_shapes(spec, params)
  if spec.update_rule == "gmp" or spec.prune_at_init:
    counts = {n: math.prod(s) for n, s in shapes.items()}
  else:
    counts = target_counts(spec, shapes, initial_density(spec))
  layer_masks = {
      name: criteria.random_mask(_layer_key(spec.seed, 0, i), shapes[name], counts[name],
                                 _guarded(spec, name))
      for i, name in enumerate(shapes)}
  return masks_lib.build(params, layer_masks)


def updated_masks(spec: SparsitySpec, params, grads, masks, step):
  """The masks after this step's update (call only on update steps)."""
  shapes = prunable_shapes(spec, params)
  weights = masks_lib.layers(params, shapes)
  gradients = masks_lib.layers(grads, shapes)
  current = masks_lib.layers(masks, shapes)
  new = {}
  if spec.update_rule == "gmp":
    steps, table = gmp_count_table(spec, shapes)
    table = jnp.asarray(table)
    event = jnp.searchsorted(jnp.asarray(steps, jnp.int32), step)
    for i, name in enumerate(shapes):
      new[name] = criteria.prune_to(_layer_key(spec.seed, step, i), weights[name], current[name],
                                    table[event, i])
    return masks_lib.replace_layers(masks, new)
  if spec.update_rule == "granet":
    return _granet_masks(spec, shapes, weights, gradients, masks, current, step)
  grow = gradients if spec.update_rule == "rigl" else dict.fromkeys(shapes)
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
          _layer_key(spec.seed, step, i), weights[name], current[name], grow[name], count=count,
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
      new[name] = criteria.resize(_layer_key(spec.seed, step, i), weights[name], current[name],
                                  grow[name], target=jnp.asarray(table[:, i])[event],
                                  max_count=max(counts[name], int(table[:, i].max())),
                                  protect=protect)
    return masks_lib.replace_layers(masks, new)

  return jax.lax.cond(step <= spec.cycles.end_step, cyclic, constant_density)


def _granet_masks(spec, shapes, weights, gradients, masks, current, step):
  """GraNet's update: global magnitude pruning to the schedule's exact total while the
  pruning window lasts, then in every layer RigL's drop / regrow of ceil(f(t) * kept)."""
  steps, totals = granet_prune_table(spec, shapes)
  names = list(shapes)
  if steps:
    event = jnp.searchsorted(jnp.asarray(steps, jnp.int32), step)
    pruned = criteria.prune_global_to(
        _layer_key(spec.seed, step, len(names)), [weights[n] for n in names],
        [current[n] for n in names], jnp.asarray(totals, jnp.int32)[jnp.minimum(event, len(steps) - 1)],
        minimum=spec.min_kept_per_layer)
    current = jax.lax.cond(step <= steps[-1], lambda: dict(zip(names, pruned)), lambda: current)
  fraction = schedules.drop_fraction(step, spec.total_steps, spec.drop_fraction,
                                     spec.drop_fraction_final)
  new = {}
  for i, name in enumerate(names):
    kept = jnp.sum(current[name], dtype=jnp.int32)
    new[name] = criteria.drop_and_grow_any(
        _layer_key(spec.seed, step, i), weights[name], current[name], gradients[name],
        num_drop=schedules.num_to_move(fraction, kept))
  return masks_lib.replace_layers(masks, new)


def is_update_step(spec: SparsitySpec, step):
  """Whether `step` updates the masks (spec.update_rule is not "none")."""
  if spec.update_rule == "gmp":
    steps = schedules.gmp_update_steps(interval=spec.update_interval, start=spec.update_start,
                                       end=spec.end)
    return jnp.isin(step, jnp.asarray(steps or [-1], jnp.int32))
  constant = schedules.is_update_step(step, interval=spec.update_interval,
                                      start=spec.update_start, end=spec.end)
  if spec.cycles is None:
    return constant
  cyclic = jnp.isin(step, jnp.asarray(spec.cycles.update_steps() or [-1], jnp.int32))
  return cyclic | (constant & (step > spec.cycles.end_step))


def sparse_training(inner: optax.GradientTransformation,
                    spec: SparsitySpec) -> optax.GradientTransformationExtraArgs:
  """Wraps `inner` so that only kept weights train and masks evolve per `spec`."""
  if spec.update_rule not in UPDATE_RULES:
    raise ValueError(f"update_rule must be one of {UPDATE_RULES}, got {spec.update_rule!r}")
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return SparseTrainingState(inner_state=inner.init(params),
                               masks=initial_masks(spec, params),
                               step=jnp.zeros((), jnp.int32))

  def update_fn(grads, state, params=None, **extra_args):
    if params is None:
      raise ValueError("sparse_training needs params: call tx.update(grads, state, params).")
    old = state.masks
    if spec.update_rule == "none":
      new = kept = old
    else:
      is_update = is_update_step(spec, state.step)

      def update_masks():
        new = updated_masks(spec, params, grads, old, state.step)
        return new, jax.tree.map(jnp.logical_and, old, new)  # Kept: neither grown nor dropped.

      new, kept = jax.lax.cond(is_update, update_masks, lambda: (old, old))
    # Only kept weights get gradients, so off the mask the moments stay 0.
    updates, inner_state = inner.update(masks_lib.apply(grads, kept), state.inner_state, params,
                                        **extra_args)
    if spec.update_rule != "none":
      # After a mask update, grown and dropped positions restart with zero moments.
      inner_state = jax.lax.cond(is_update, lambda s: optax.tree_map_params(
          inner, lambda x, m: jnp.where(m, x, jnp.zeros_like(x)), s, kept,
          transform_non_params=lambda x: x), lambda s: s, inner_state)
    # Kept weights move by the inner update; every other weight is set to exactly 0
    # (dropped ones become 0, pruned and newly grown ones stay 0), whatever `inner` does.
    updates = jax.tree.map(lambda u, p, m: jnp.where(m, u, -p), updates, params, kept)
    return updates, SparseTrainingState(inner_state=inner_state, masks=new, step=state.step + 1)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
