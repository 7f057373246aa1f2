"""Pruning at initialisation: SNIP, GraSP and SynFlow scores, and exact-count selection.

Everything works on any params pytree and any caller-supplied loss or output function;
`names` are the prunable leaf names (`masks.prunable_shapes`). Selection keeps the
largest scores, exactly as many as asked, by a radix select over the scores' bits: 16-bit
digit histograms, two passes for float32, four for float64, all layers at once for
per-layer counts. Its cost does not depend on the count, unlike `lax.top_k` on XLA's CPU
backend, fast only for float32 and a small k (21M entries, 2 cores: top_k 0.12 s for
k = 20k but 29 s for k = 93%, and 8 s for float64 at any k; argsort 10 s; this select
0.1 s in float32, 0.5 s in float64, plus 0.3 s to draw the tie-breaking noise). Counts
are int32 (fewer than 2^31 entries). Ties are broken first by uniform noise far below
any real score difference, drawn from the caller's key, then by the lower flat index:
every device computes the same masks.
"""
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from east_jax.sparsity import masks as masks_lib

SCOPES = ("global", "layerwise")
_TIE_NOISE = 1e-30  # Only decides between (nearly) equal scores, e.g. zero gradients.
_DIGIT_BITS = 16


# Selection.


def _ordered_bits(scores):
  """Unsigned ints in the order of the float scores (NaN counts as -inf)."""
  scores = jnp.where(jnp.isnan(scores), -jnp.inf, scores)
  unsigned = {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[scores.dtype.itemsize]
  bits = jax.lax.bitcast_convert_type(scores, unsigned)
  sign = jnp.asarray(1, unsigned) << (8 * scores.dtype.itemsize - 1)
  return jnp.where((bits & sign) != 0, ~bits, bits | sign)


def _per_entry(values, segments):
  """values[segment] at every flat position (one segment: segments is None)."""
  return values[0] if segments is None else values[segments]


def _digit_reaching(histogram, remaining):
  """Per row of a (rows, 2^16) histogram: the largest digit v whose count from v up
  reaches `remaining`, and the count above v (first over blocks of 256 digits, then
  inside the block found)."""
  rows, side = histogram.shape[0], 1 << (_DIGIT_BITS // 2)
  digits = jnp.arange(side, dtype=jnp.int32)
  upper = (digits[:, None] >= digits[None, :]).astype(jnp.int32)  # Suffix sums as a matmul.

  def largest_reaching(counts, offset):  # counts (rows, side); offset: counted above them.
    from_up = jnp.dot(counts, upper, preferred_element_type=jnp.int32) + offset[:, None]
    at = jnp.clip(jnp.sum(from_up >= remaining[:, None], axis=1, dtype=jnp.int32) - 1, 0,
                  side - 1)
    pick = lambda a: jnp.take_along_axis(a, at[:, None], axis=1)[:, 0]
    return at, pick(from_up) - pick(counts)

  blocks = histogram.reshape(rows, side, side)
  block, above_block = largest_reaching(jnp.sum(blocks, axis=2, dtype=jnp.int32),
                                        jnp.zeros(rows, jnp.int32))
  inner, above = largest_reaching(
      jnp.take_along_axis(blocks, block[:, None, None], axis=1)[:, 0], above_block)
  return block * side + inner, above


def _radix_threshold(bits, takes, segments, num_segments, eligible):
  """Radix select: per segment, the value of its takes-th largest eligible `bits` (the
  dtype's maximum, which no entry has, where it takes none), how many entries equal to it
  are kept, and how many there are. Each pass histograms the next 16-bit digit of the
  entries that share the threshold's higher digits."""
  width, bins = 8 * bits.dtype.itemsize, 1 << _DIGIT_BITS
  candidate = jnp.ones(bits.shape, bool) if eligible is None else eligible
  threshold = jnp.zeros((num_segments,), bits.dtype)
  slot = 0 if segments is None else segments * bins
  for shift in range(width - _DIGIT_BITS, -1, -_DIGIT_BITS):
    if shift < width - _DIGIT_BITS:
      candidate &= (bits >> (shift + _DIGIT_BITS)) == _per_entry(threshold, segments)
    digit = ((bits >> shift) & (bins - 1)).astype(jnp.int32)
    histogram = jnp.zeros(num_segments * bins, jnp.int32).at[slot + digit].add(
        candidate.astype(jnp.int32)).reshape(num_segments, bins)
    if shift == width - _DIGIT_BITS:
      take = jnp.clip(takes, 0, jnp.sum(histogram, axis=1, dtype=jnp.int32))
      remaining = jnp.maximum(take, 1)  # Of the entries equal to the threshold.
    value, above = _digit_reaching(histogram, remaining)
    remaining -= above
    threshold = (threshold << _DIGIT_BITS) | value.astype(bits.dtype)
  tied = jnp.take_along_axis(histogram, value[:, None], axis=1)[:, 0]
  none = take == 0
  return (jnp.where(none, ~jnp.zeros((), bits.dtype), threshold), remaining,
          jnp.where(none, 0, tied))


def _select(bits, takes, segments=None, eligible=None):
  """Flat mask keeping, in each segment (segments: the segment of every entry, None for
  one), its takes[segment] largest eligible `bits`, equal ones by lower index; the takes
  (static or traced) are clamped to [0, eligible entries of the segment]."""
  takes = jnp.atleast_1d(jnp.asarray(takes, jnp.int32))
  threshold, remaining, tied_count = _radix_threshold(bits, takes, segments, takes.size,
                                                      eligible)
  cut = _per_entry(threshold, segments)
  above, tied = bits > cut, bits == cut
  if eligible is not None:
    above, tied = above & eligible, tied & eligible

  def lowest_indices():  # The lower index wins: a second radix select, on ~index.
    index_bits = ~jax.lax.iota(jnp.uint32, bits.size)
    index_cut, _, _ = _radix_threshold(index_bits, remaining, segments, takes.size, tied)
    return above | (tied & (index_bits >= _per_entry(index_cut, segments)))

  return jax.lax.cond(jnp.any(tied_count > remaining), lowest_indices, lambda: above | tied)


def _is_static(count) -> bool:
  return isinstance(count, (int, np.integer))


def _check_count(what: str, count, size: int):
  if _is_static(count) and not 0 <= count <= size:
    raise ValueError(f"Cannot keep {count} of the {size} positions of {what}.")


def _check_global(sizes: dict, total, minimum: dict):
  unknown = set(minimum) - set(sizes)
  if unknown:
    raise ValueError(f"minimum names layers without scores: {sorted(unknown)}.")
  _check_count("all layers together", total, sum(sizes.values()))
  for name, count in minimum.items():
    _check_count(name, count, sizes[name])
  if _is_static(total) and sum(minimum.values()) > total:
    raise ValueError(f"The per-layer minimums add up to {sum(minimum.values())}, more than "
                     f"the {total} weights to keep.")


def _tie_noise(key, size: int):
  """The tie-breaking noise of `size` flat scores."""
  return _TIE_NOISE * jax.random.uniform(key, (size,), jnp.float32)


def _flat_bits(scores: dict, noise):
  """The ordered bits of all scores (flat, in dict order) plus the tie-breaking noise, and
  the layer (segment) of every entry."""
  flat = jnp.concatenate([jnp.ravel(s) for s in scores.values()])
  flat = flat + noise.astype(flat.dtype)
  segments = jnp.concatenate([jnp.full((jnp.size(s),), i, jnp.int32)
                              for i, s in enumerate(scores.values())])
  return _ordered_bits(flat), segments


def _split(flat_mask, scores: dict) -> dict:
  offsets = np.cumsum([0, *(jnp.size(s) for s in scores.values())])
  return {name: flat_mask[offsets[i]:offsets[i + 1]].reshape(jnp.shape(s))
          for i, (name, s) in enumerate(scores.items())}


@jax.jit
def _layerwise_masks(scores: dict, takes, noise) -> dict:
  bits, segments = _flat_bits(scores, noise)
  return _split(_select(bits, takes, segments), scores)


@functools.partial(jax.jit, static_argnames="minimum")
def _global_masks(scores: dict, total, noise, minimum: tuple) -> dict:
  bits, segments = _flat_bits(scores, noise)
  if not any(minimum):
    return _split(_select(bits, total), scores)
  reserved = _select(bits, jnp.asarray(minimum, jnp.int32), segments)
  return _split(reserved | _select(bits, total - sum(minimum), eligible=~reserved), scores)


def select_layerwise(scores: dict, counts: dict, key) -> dict:
  """{name: bool mask} keeping exactly counts[name] of the largest scores in each layer.

  -inf (or NaN) scores, e.g. already pruned positions, are kept only when a layer has
  fewer other positions than its count, the lowest flat indices first. Counts are static
  ints checked here (ValueError when outside [0, size]); traced counts are clamped.
  """
  for name, s in scores.items():
    _check_count(name, counts[name], math.prod(jnp.shape(s)))
  takes = jnp.stack([jnp.asarray(counts[name], jnp.int32) for name in scores])
  return _layerwise_masks(scores, takes, _tie_noise(key, sum(map(jnp.size, scores.values()))))


def select_global(scores: dict, total, key, minimum: dict | None = None) -> dict:
  """{name: bool mask} keeping exactly `total` of the largest scores over all layers.

  `minimum` (the collapse guard) first reserves each layer's minimum[name] best positions;
  the rest of the budget goes to the largest remaining scores of all layers. -inf (or NaN)
  scores are kept only when fewer other positions remain, the lowest flat indices (layer
  order, then row-major) first, so the total is always exact. ValueError when static
  counts are impossible: total above the total size, a minimum above its layer's size,
  or minimums adding up to more than total. A traced total is clamped instead.
  """
  minimum = dict(minimum or {})
  sizes = {name: math.prod(jnp.shape(s)) for name, s in scores.items()}
  _check_global(sizes, total, minimum)
  return _global_masks(scores, total, _tie_noise(key, sum(sizes.values())),
                       tuple(int(minimum.get(name, 0)) for name in scores))


def scores_to_masks(scores: dict, *, scope: str, key, total=None, counts=None,
                    minimum: dict | None = None) -> dict:
  """Keeps the largest scores: `total` over all layers (scope "global", optionally with
  per-layer `minimum`s) or counts[name] in each layer (scope "layerwise")."""
  if scope == "global":
    if total is None or counts is not None:
      raise ValueError("The global scope takes `total` (and optionally `minimum`), not counts.")
    return select_global(scores, total, key, minimum)
  if scope == "layerwise":
    if counts is None or total is not None or minimum:
      raise ValueError("The layerwise scope takes `counts` only (each layer's exact count).")
    return select_layerwise(scores, counts, key)
  raise ValueError(f"Unknown scope {scope!r}: use one of {SCOPES}.")


# Scores from the data: SNIP and GraSP.


def snip_scores(loss_fn: Callable[[Any], jax.Array], params, names) -> dict:
  """SNIP (Lee et al., 2019): {name: |g * theta|}, g = grad of loss_fn(params), the
  caller's loss on one training batch."""
  grads = jax.jit(jax.grad(loss_fn))(params)
  weights, gradients = masks_lib.layers(params, names), masks_lib.layers(grads, names)
  return {name: jnp.abs(weights[name] * gradients[name]) for name in names}


def grasp_scores(loss_fn: Callable[[Any], jax.Array], params, names) -> dict:
  """GraSP (Wang et al., 2020) with its sign flipped: {name: theta * Hg}.

  g is the gradient of loss_fn (the caller's loss on a batch, logits already divided by
  the temperature) at the named leaves, a constant; Hg is the Hessian of the loss times g,
  restricted to the named leaves as in the paper (forward-over-reverse: jvp of the
  gradient along g, zero along every other leaf). GraSP's score is S = -theta * Hg and it
  keeps the smallest S; the returned -S lets the selection functions keep the largest.
  """
  def hessian_times_gradient(params):
    grads = jax.grad(loss_fn)(params)
    prunable = set(names)
    tangent = jax.tree_util.tree_map_with_path(
        lambda path, g: jax.lax.stop_gradient(g) if masks_lib.leaf_name(path) in prunable
        else jnp.zeros_like(g), grads)
    return jax.jvp(jax.grad(loss_fn), (params,), (tangent,))[1]

  hg = masks_lib.layers(jax.jit(hessian_times_gradient)(params), names)
  weights = masks_lib.layers(params, names)
  return {name: weights[name] * hg[name] for name in names}


# SynFlow: data-free and iterative.


def synflow_round_counts(size: int, keep: int, rounds: int) -> list[int]:
  """The kept count after each of SynFlow's rounds: round(size * (keep / size)^(k /
  rounds)) for k = 1..rounds (nearest, half to even), exactly `keep` in the last."""
  if rounds < 1 or not 0 <= keep <= size:
    raise ValueError(f"SynFlow needs rounds >= 1 and 0 <= keep <= size, got rounds={rounds}, "
                     f"keep={keep}, size={size}.")
  if size == 0:
    return [0] * rounds
  return [round(size * (keep / size) ** (k / rounds)) for k in range(1, rounds)] + [keep]


def _linearised(params, state, input_shape):
  """|params|, |state| (float leaves as float64) and the all-ones input (call under x64)."""
  def absolute(x):
    x = jnp.asarray(x)
    return jnp.abs(x.astype(jnp.float64)) if jnp.issubdtype(x.dtype, jnp.floating) else x
  return (jax.tree.map(absolute, params), jax.tree.map(absolute, state),
          jnp.ones((1, *input_shape), jnp.float64))


def _raw_synflow_scores(output_fn, names, params, state, x, layer_masks):
  """{name: |theta * dR/dtheta|} at the masked linearised params, R = sum(outputs)."""
  masked = masks_lib.apply(params, masks_lib.build(params, layer_masks))
  grads = jax.grad(lambda p: jnp.sum(output_fn(p, state, x)))(masked)
  weights, gradients = masks_lib.layers(masked, names), masks_lib.layers(grads, names)
  return {name: jnp.abs(weights[name] * gradients[name]) for name in names}


_jit_synflow_scores = jax.jit(_raw_synflow_scores, static_argnums=(0, 1))


@functools.partial(jax.jit, static_argnames=("output_fn", "names", "scope", "reserve"))
def _synflow_round(lin_params, lin_state, x, layer_masks, count, noise, *, output_fn, names,
                   scope, reserve):
  """One round: the scores at the current masks, whether all are finite, the new masks.
  Compiled once per (output_fn, names, scope, reserve) and shapes; `count` is traced."""
  scores = _raw_synflow_scores(output_fn, names, lin_params, lin_state, x, layer_masks)
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(s)) for s in scores.values()]))
  live = {name: jnp.where(layer_masks[name], scores[name], -jnp.inf) for name in names}
  if scope == "global":
    return _global_masks(live, count, noise, reserve), finite
  return _layerwise_masks(live, count, noise), finite


def synflow_scores(output_fn: Callable, params, state, input_shape, names,
                   layer_masks: dict | None = None) -> dict:
  """SynFlow's {name: |theta * dR/dtheta|} (float64 arrays) of the linearised network.

  The params and state (float leaves) are replaced by their absolute values in float64,
  the weights outside `layer_masks` ({name: bool mask}, default all kept) are zeroed and
  output_fn(params, state, x) is summed into R for the all-ones x of shape (1,
  *input_shape). Computed inside `jax.enable_x64(True)` (scoped: the process-wide setting
  is unchanged); select float64 scores inside it too, JAX demotes them outside.
  """
  with jax.enable_x64(True):
    lin_params, lin_state, x = _linearised(params, state, input_shape)
    return _jit_synflow_scores(output_fn, tuple(names), lin_params, lin_state, x,
                               layer_masks or {})


def synflow_masks(output_fn: Callable, params, state, input_shape, names, *, key,
                  rounds: int = 100, scope: str = "global", total: int | None = None,
                  counts: dict | None = None, minimum: dict | None = None,
                  on_round: Callable[[int, dict], None] | None = None) -> dict:
  """SynFlow (Tanaka et al., 2020): {name: bool mask} after `rounds` rounds of
  re-scoring the linearised network and pruning to an exponential schedule.

  Args:
    output_fn: (params, state, x) -> outputs (e.g. logits) of the caller's model in
      inference mode (BatchNorm from its running statistics). It must compute in its
      inputs' dtype, float64 here: a module whose dtype is float32 casts the signal down,
      and with every parameter positive each layer multiplies it by about sqrt(fan_in),
      which overflows float32 in deep networks (a final cast of the outputs alone is
      harmless: R's value is not used, only its gradient).
    params: the model's params; never modified (the linearised copy is internal).
    state: any other variables output_fn reads (e.g. BatchNorm statistics), or None.
    input_shape: one example's shape; x is all ones of shape (1, *input_shape).
    names: the prunable leaves (masks.prunable_shapes); the other leaves stay dense.
    key: the tie-breaking key (one draw of noise serves every round).
    rounds: number of pruning rounds.
    scope: "global" (`total` kept over all layers, optionally with per-layer `minimum`s
      reserved in every round) or "layerwise" (counts[name] kept in each layer).
    on_round: called as on_round(k, masks) after round k = 1..rounds (e.g. to log).

  Round k keeps synflow_round_counts(N, total, rounds)[k - 1] weights (global, N the
  prunable size) or synflow_round_counts(n_l, c_l, rounds)[k - 1] in each layer, chosen
  among the weights still kept, by the scores with the current masks applied: a pruned
  weight never returns. One round (score and select) is compiled once per output_fn and
  shapes, the count a traced argument. Raises ValueError when a score is inf or NaN
  (output_fn overflowed).
  """
  weights = masks_lib.layers(params, names)
  sizes = {name: math.prod(w.shape) for name, w in weights.items()}
  if scope == "global":
    if total is None or counts is not None:
      raise ValueError("SynFlow's global scope takes `total` (and optionally `minimum`).")
    _check_global(sizes, total, dict(minimum or {}))
    schedule = np.asarray(synflow_round_counts(sum(sizes.values()), total, rounds))
  elif scope == "layerwise":
    if counts is None or total is not None or minimum:
      raise ValueError("SynFlow's layerwise scope takes `counts` only.")
    for name in names:
      _check_count(name, counts[name], sizes[name])
    schedule = np.stack([np.asarray(synflow_round_counts(sizes[name], counts[name], rounds))
                         for name in names], axis=1)
  else:
    raise ValueError(f"Unknown scope {scope!r}: use one of {SCOPES}.")

  step = functools.partial(
      _synflow_round, output_fn=output_fn, names=tuple(names), scope=scope,
      reserve=tuple(int(dict(minimum or {}).get(name, 0)) for name in names))
  with jax.enable_x64(True):
    lin_params, lin_state, x = _linearised(params, state, input_shape)
    noise = _tie_noise(key, sum(sizes.values()))
    layer_masks = {name: jnp.ones(w.shape, bool) for name, w in weights.items()}
    for k in range(1, rounds + 1):
      layer_masks, finite = step(lin_params, lin_state, x, layer_masks,
                                 jnp.asarray(schedule[k - 1], jnp.int32), noise)
      if not bool(finite):
        raise ValueError(
            f"SynFlow scores are not finite (inf or NaN) in round {k}: output_fn must "
            "compute in float64 throughout, forward and backward (a float32 layer or "
            "gradient overflows on the positive, linearised network).")
      if on_round is not None:
        on_round(k, layer_masks)
  return layer_masks
