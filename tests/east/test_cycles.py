"""Cyclic sparsity: the density schedule's values, and masks that hit the ERK count
of the schedule exactly at every update, going up and coming back down."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from east_jax.sparsity import masks as masks_lib
from east_jax.sparsity import transform
from east_jax.sparsity.cycles import CycleSchedule


def test_cosine_cycle_density_values():
  c = CycleSchedule(total_steps=1000, num_cycles=2, length=0.2, density_multiplier=3.0)
  d = 0.01
  assert c.boundaries() == [0.0, 200.0, 400.0]
  assert c.end_step == 400
  assert [c.density(s, d) for s in (0, 50, 100, 150, 200, 300, 399, 400, 900)] == pytest.approx(
      [d, 2 * d, 3 * d, 2 * d, d, 3 * d, d + 2 * d * math.sin(math.pi / 200) ** 2, d, d])
  assert c.position(250) == (1, 0.25) and c.position(400) is None


def test_triangular_cycles_with_a_length_multiplier():
  c = CycleSchedule(total_steps=1000, num_cycles=2, length=0.1, length_multiplier=2.0,
                    density_multiplier=2.0, shape="triangular", update_interval=30)
  assert c.boundaries() == [0.0, 100.0, 300.0]
  assert [c.density(s, 0.1) for s in (25, 50, 75, 150, 200, 250)] == pytest.approx(
      [0.15, 0.2, 0.15, 0.15, 0.2, 0.15])
  assert c.update_steps() == list(range(30, 300, 30)) + [300]


PARAMS = {
    "stem_conv": {"kernel": jnp.ones((3, 3, 3, 16))},
    "block": {"conv": {"kernel": jnp.ones((3, 3, 16, 32))}, "bn": {"scale": jnp.ones((32,))}},
    "classifier": {"kernel": jnp.ones((32, 10))},
}


@pytest.mark.parametrize("rule", ["rigl", "set"])
def test_masks_follow_the_cycle_exactly_then_rigl_keeps_the_count(rule):
  cycles = CycleSchedule(total_steps=60, num_cycles=2, length=0.25, update_interval=3)
  spec = transform.SparsitySpec(method=rule, sparsity=0.95, total_steps=60,
                                update_interval=4, cycles=cycles,
                                kernel_uses=(("block/conv/kernel", 2),))
  leaves, treedef = jax.tree.flatten(PARAMS)
  keys = jax.random.split(jax.random.key(0), len(leaves))
  params = treedef.unflatten([jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
  tx = transform.sparse_training(optax.sgd(0.05, momentum=0.9), spec)
  state = tx.init(params)
  params = masks_lib.apply(params, state.masks)
  shapes = transform.prunable_shapes(spec, params)
  full = transform.reference_size(spec, shapes)
  assert full == math.prod((3, 3, 3, 16)) + 2 * math.prod((3, 3, 16, 32)) + 320

  @jax.jit
  def step(params, state, key):
    grads = jax.tree.map(lambda p: jax.random.normal(key, p.shape), params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  # The slots sparse compute gets: cycle peaks until the cycles' last update, then the
  # final counts exactly.
  settled = transform.settled_step(spec)
  assert settled == cycles.end_step + 1
  during, after = (transform.kept_capacity(spec, params, k) for k in (0, settled))
  assert after == transform.target_counts(spec, shapes)
  assert all(during[n] >= after[n] for n in after) and during != after
  totals, rigl_steps = [], []
  for s in range(60):
    params, state = step(params, state, jax.random.key(s + 1))
    counts = masks_lib.kept_counts(state.masks, shapes)  # The masks steps >= s + 1 train.
    capacity = after if s + 1 >= settled else during
    assert all(counts[n] <= capacity[n] for n in counts), s
    is_update = bool(transform.is_update_step(spec, s))
    if s in cycles.update_steps():
      assert is_update
      density = cycles.density(s, spec.density)
      assert counts == transform.target_counts(spec, shapes, density)  # Each layer: its ERK count.
      assert sum(counts.values()) == round(density * full)
      totals.append(sum(counts.values()))
    else:
      assert sum(counts.values()) == round(spec.density * full) or s < cycles.end_step
      if is_update:
        rigl_steps.append(s)
    for name, mask in masks_lib.layers(state.masks, shapes).items():  # Pruned weights are 0.
      assert not np.any(np.asarray(masks_lib.layers(params, [name])[name])[~np.asarray(mask)])
  assert rigl_steps == [s for s in range(31, 60) if s % 4 == 0]
  assert counts == transform.target_counts(spec, shapes)
  rises = [b > a for a, b in zip(totals, totals[1:])]
  falls = [b < a for a, b in zip(totals, totals[1:])]
  assert any(rises) and any(falls) and totals[-1] == round(spec.density * full)
