"""Mask updates with exact counts: random initial masks, drop/grow, magnitude pruning.

Per-layer counts are static Python ints, so every selection is a `lax.top_k` whose
size is known at trace time: at extreme sparsity that is a few thousand entries per
layer, never a sort of the whole tensor (only GMP, which starts dense, sorts).
Ties are broken by uniform noise far below any real score difference, drawn from
a key that the caller derives from (seed, step, layer): every device and every
host computes the same masks.
"""

import jax
import jax.numpy as jnp

_TIE_NOISE = 1e-30  # Only decides between exactly equal scores (e.g. zero gradients).


def _select(scores, count, take=None):
  """Boolean mask (flat) of the `count` largest scores; `take` (dynamic, <= count)
  keeps only the first `take` of them."""
  _, index = jax.lax.top_k(scores, count)
  chosen = jnp.ones((count,), jnp.int32) if take is None else (
      jnp.arange(count) < take).astype(jnp.int32)
  return jnp.zeros(scores.shape, jnp.int32).at[index].max(chosen) > 0


def _with_noise(key, scores):
  return scores + _TIE_NOISE * jax.random.uniform(key, scores.shape, scores.dtype)


def random_mask(key, shape, count: int, connect_columns: bool = False):
  """Exactly `count` kept positions, uniformly at random.

  `connect_columns` (2-D kernels): one random weight of every output column is kept
  first, inside the same count, so that no output unit is disconnected.
  """
  key_scores, key_rows = jax.random.split(key)
  scores = jax.random.uniform(key_scores, shape)
  if connect_columns:
    rows = jax.random.randint(key_rows, (shape[1],), 0, shape[0])
    scores = scores.at[rows, jnp.arange(shape[1])].set(2.0)
  return _select(scores.ravel(), count).reshape(shape)


def column_anchor(weights, mask):
  """The largest-magnitude kept weight of every column (2-D): never dropped when
  all classifier outputs must stay connected."""
  scores = jnp.where(mask, jnp.abs(weights), -1.0)
  best = jnp.argmax(scores, axis=0)
  return jnp.zeros(mask.shape, bool).at[best, jnp.arange(mask.shape[1])].set(True) & mask


def drop_and_grow(key, weights, mask, grow_scores, *, count: int, max_change: int, num_drop,
                  protect=None):
  """Drops the `num_drop` smallest |w| among the `count` kept weights, then grows
  as many at the largest `grow_scores` among the positions left inactive.

  Args:
    key: tie-breaking / random-growth key of this (seed, step, layer).
    weights, mask: the layer's weights and current mask (exactly `count` True).
    grow_scores: |dense gradient| (RigL) or None for uniform random growth (SET).
    count: the static kept count of the layer.
    max_change: static upper bound on num_drop.
    num_drop: dynamic number of weights to move (<= max_change).
    protect: optional mask of kept weights that may not be dropped.

  Returns the new mask, again with exactly `count` True entries. A weight dropped
  now may be grown back at once (then it keeps its value, as in RigL).
  """
  key_drop, key_grow = jax.random.split(key)
  flat_mask = mask.ravel()
  magnitude = jnp.abs(weights.ravel()).astype(jnp.float32)
  if protect is not None:
    magnitude = jnp.where(protect.ravel(), jnp.inf, magnitude)
    num_drop = jnp.minimum(num_drop, count - jnp.sum(protect))
  keep_scores = jnp.where(flat_mask, _with_noise(key_drop, magnitude), -jnp.inf)
  kept = _select(keep_scores, count, take=count - num_drop)
  if grow_scores is None:
    candidates = jax.random.uniform(key_grow, flat_mask.shape)
  else:
    candidates = _with_noise(key_grow, jnp.abs(grow_scores.ravel()).astype(jnp.float32))
  candidates = jnp.where(kept, -jnp.inf, candidates)
  grown = _select(candidates, max_change, take=num_drop) & ~kept
  return (kept | grown).reshape(mask.shape)


def prune_to(key, weights, mask, target):
  """Keeps the `target` (dynamic) largest |w| among the kept weights (GMP)."""
  scores = jnp.where(mask.ravel(), _with_noise(key, jnp.abs(weights.ravel()).astype(jnp.float32)),
                     -jnp.inf)
  order = jnp.argsort(-scores)
  keep = jnp.zeros(scores.shape, bool).at[order].set(jnp.arange(scores.size) < target)
  return (keep & mask.ravel()).reshape(mask.shape)


def resize(key, weights, mask, grow_scores, *, target, max_count: int, protect=None):
  """Moves a layer to `target` (dynamic) kept weights: above it, keeps the largest
  |w| (and every `protect`ed weight); below it, keeps every weight and grows the
  inactive positions with the largest `grow_scores` (None: at random). `max_count`
  (static) bounds both the current count and `target` (cyclic sparsity, docs/method.md
  section 4)."""
  key_drop, key_grow = jax.random.split(key)
  flat_mask = mask.ravel()
  current = jnp.sum(flat_mask)
  magnitude = _with_noise(key_drop, jnp.abs(weights.ravel()).astype(jnp.float32))
  if protect is not None:
    magnitude = jnp.where(protect.ravel(), jnp.inf, magnitude)
  kept = _select(jnp.where(flat_mask, magnitude, -jnp.inf), max_count,
                 take=jnp.minimum(current, target))
  if grow_scores is None:
    candidates = jax.random.uniform(key_grow, flat_mask.shape)
  else:
    candidates = _with_noise(key_grow, jnp.abs(grow_scores.ravel()).astype(jnp.float32))
  candidates = jnp.where(flat_mask, -jnp.inf, candidates)
  grown = _select(candidates, max_count, take=jnp.maximum(target - current, 0)) & ~flat_mask
  return (kept | grown).reshape(mask.shape)


def _ranked(scores, take):
  """Boolean mask (flat) of the `take` (dynamic) largest scores, by a full sort: for
  counts known only at run time (GraNet's global pruning)."""
  order = jnp.argsort(-scores)
  return jnp.zeros(scores.shape, bool).at[order].set(jnp.arange(scores.size) < take)


def prune_global_to(key, weights: list, masks: list, total, minimum: int = 0) -> list:
  """Keeps exactly `total` (dynamic, at most the kept count) of the kept weights of all
  layers together, those with the largest |w|; each layer first keeps its `minimum`
  largest (the collapse guard, inside the same total)."""
  keys = jax.random.split(key, len(weights))
  scores = []
  for k, w, m in zip(keys, weights, masks):
    s = jnp.where(m.ravel(), _with_noise(k, jnp.abs(w.ravel()).astype(jnp.float32)), -jnp.inf)
    if minimum:
      reserved = _select(s, min(minimum, s.size)) & m.ravel()
      s = jnp.where(reserved, jnp.inf, s)
    scores.append(s)
  keep = _ranked(jnp.concatenate(scores), total)
  out, start = [], 0
  for m in masks:
    out.append(keep[start:start + m.size].reshape(m.shape) & m)
    start += m.size
  return out


def drop_and_grow_any(key, weights, mask, grow_scores, *, num_drop):
  """`drop_and_grow` for a layer whose kept count is known only at run time: drops the
  `num_drop` (dynamic) smallest |w| among the kept weights and grows as many at the
  largest |grow_scores| among the positions left inactive; the count is unchanged."""
  key_drop, key_grow = jax.random.split(key)
  flat_mask = mask.ravel()
  count = jnp.sum(flat_mask, dtype=jnp.int32)
  keep_scores = jnp.where(flat_mask, _with_noise(key_drop, jnp.abs(weights.ravel()).astype(
      jnp.float32)), -jnp.inf)
  kept = _ranked(keep_scores, count - num_drop)
  candidates = jnp.where(kept, -jnp.inf, _with_noise(
      key_grow, jnp.abs(grow_scores.ravel()).astype(jnp.float32)))
  grown = _ranked(candidates, num_drop) & ~kept
  return (kept | grown).reshape(mask.shape)
