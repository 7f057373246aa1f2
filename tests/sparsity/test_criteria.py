"""Drop/grow with exact counts: known small cases and invariants under jit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from east_jax.sparsity import criteria

WEIGHTS = jnp.array([0.9, -0.1, 0.5, 0.0, 0.0, 0.0, 0.0, 0.3])
MASK = jnp.array([True, True, True, False, False, False, False, True])
GRADS = jnp.array([0.0, 0.0, 0.0, 0.2, -0.7, 0.1, 0.05, 0.0])


def test_rigl_small_case():
  # Drop the 2 smallest |w| of the 4 kept (-0.1, 0.3); grow the 2 largest |g| (-0.7, 0.2).
  new = criteria.drop_and_grow(jax.random.key(0), WEIGHTS, MASK, GRADS, count=4, max_change=2,
                               num_drop=2)
  assert new.tolist() == [True, False, True, True, True, False, False, False]


def test_rigl_regrows_a_just_dropped_weight_when_its_gradient_is_largest():
  grads = GRADS.at[1].set(5.0)
  new = criteria.drop_and_grow(jax.random.key(0), WEIGHTS, MASK, grads, count=4, max_change=2,
                               num_drop=2)
  assert new.tolist() == [True, True, True, False, True, False, False, False]


def test_set_small_case():
  # The same drop; the 2 grown positions are random among the 6 not kept.
  grown_sets = set()
  for seed in range(20):
    new = np.asarray(criteria.drop_and_grow(jax.random.key(seed), WEIGHTS, MASK, None, count=4,
                                            max_change=2, num_drop=2))
    assert new[[0, 2]].all() and new.sum() == 4
    grown_sets.add(tuple(np.flatnonzero(new & ~np.isin(np.arange(8), [0, 2]))))
  assert len(grown_sets) > 3  # Random growth really varies with the key.


def test_ties_are_broken_by_the_key_not_by_position():
  weights = jnp.zeros((1000,))
  mask = jnp.zeros((1000,), bool).at[:10].set(True)
  picks = {tuple(np.flatnonzero(criteria.drop_and_grow(
      jax.random.key(s), weights, mask, jnp.zeros((1000,)), count=10, max_change=5,
      num_drop=5))) for s in range(5)}
  assert len(picks) == 5
  assert all(min(p) < 1000 and len(p) == 10 for p in picks)


def test_protected_weights_are_never_dropped():
  protect = jnp.zeros((8,), bool).at[1].set(True)
  new = criteria.drop_and_grow(jax.random.key(0), WEIGHTS, MASK, GRADS, count=4, max_change=2,
                               num_drop=2, protect=protect)
  assert bool(new[1]) and int(new.sum()) == 4


SHAPES = [(20000,), (200, 300), (10, 40, 50), (3, 3, 64, 128)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.999, 0.9999])
def test_counts_are_preserved_under_jit(shape, sparsity):
  count = max(1, round((1 - sparsity) * math.prod(shape)))
  max_change = math.ceil(0.5 * count)
  mask = criteria.random_mask(jax.random.key(1), shape, count)
  assert int(mask.sum()) == count

  @jax.jit
  def update(key, weights, mask, grads, num_drop):
    return criteria.drop_and_grow(key, weights, mask, grads, count=count, max_change=max_change,
                                  num_drop=num_drop)

  for step in range(3):
    keys = jax.random.split(jax.random.key(step), 2)
    weights = jax.random.normal(keys[0], shape) * mask
    grads = jax.random.normal(keys[1], shape)
    num_drop = jnp.int32(max(1, max_change - step))
    new = update(jax.random.key(10 + step), weights, mask, grads, num_drop)
    assert int(new.sum()) == count
    assert int((mask & ~new).sum()) <= int(num_drop)  # At most num_drop moved.
    mask = new


def test_random_mask_connects_every_column():
  mask = criteria.random_mask(jax.random.key(0), (512, 100), 120, connect_columns=True)
  assert int(mask.sum()) == 120 and bool(mask.any(axis=0).all())


def test_column_anchor_is_the_largest_kept_weight_per_column():
  weights = jnp.array([[0.1, -3.0], [-0.5, 0.2], [0.4, 9.0]])
  mask = jnp.array([[True, True], [True, True], [False, False]])
  assert criteria.column_anchor(weights, mask).tolist() == [[False, True], [True, False],
                                                            [False, False]]


def test_prune_to_keeps_the_largest_magnitudes():
  new = criteria.prune_to(jax.random.key(0), WEIGHTS, MASK, jnp.int32(2))
  assert new.tolist() == [True, False, True, False, False, False, False, False]
