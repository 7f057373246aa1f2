"""GraNet: exact totals on the cubic schedule, RigL's drop / regrow at the cosine rate, and
bit-identical masks on 8 devices."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from east_jax.sparsity import transform
from east_jax.sparsity import masks as masks_lib
from tests.helpers import mask_history

PARAMS = {
    "stem_conv": {"kernel": jnp.ones((3, 3, 3, 8))},
    "block": {"conv": {"kernel": jnp.ones((3, 3, 8, 16))}, "bn": {"scale": jnp.ones((16,))}},
    "classifier": {"kernel": jnp.ones((16, 10))},
}


def _random_like(tree, key):
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  return treedef.unflatten([jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def _expected_total(step, n, *, init_density, density, start, last):
  """BASELINES' cubic schedule, s_t = s_i + (s_f - s_i)(1 - (1 - (t - t0)/(t1 - t0))^3)."""
  s_i, s_f = 1.0 - init_density, 1.0 - density
  s_t = s_i + (s_f - s_i) * (1.0 - (1.0 - (step - start) / (last - start)) ** 3)
  return round((1.0 - s_t) * n)


def _cosine(step, total, initial=0.5, final=0.005):
  return final + 0.5 * (initial - final) * (1.0 + math.cos(math.pi * min(1.0, step / total)))


def test_granet_prunes_to_the_cubic_schedule_and_regrows_at_the_cosine_rate():
  spec = transform.SparsitySpec(method="granet", sparsity=0.95, init_sparsity=0.5,
                                total_steps=14, update_interval=2, prune_end=8 / 14)
  params = _random_like(PARAMS, jax.random.key(0))
  shapes = transform.prunable_shapes(spec, params)
  names, n = list(shapes), sum(math.prod(s) for s in shapes.values())
  tx = transform.sparse_training(optax.sgd(0.01), spec)
  state = jax.jit(tx.init)(params)
  update = jax.jit(tx.update)
  old = masks_lib.kept_counts(state.masks, names)
  assert sum(old.values()) == round(0.5 * n)  # ERK random masks at the initial density.
  for step in range(14):
    before = {k: np.asarray(m) for k, m in masks_lib.layers(state.masks, names).items()}
    # Gradients only off the current masks: every grown weight is a new position.
    grads = jax.tree.map(lambda g, m: jnp.where(m, 0.0, jnp.abs(g) + 1.0),
                         _random_like(params, jax.random.key(100 + step)), state.masks)
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    after = {k: np.asarray(m) for k, m in masks_lib.layers(state.masks, names).items()}
    total = sum(int(m.sum()) for m in after.values())
    if step % 2 or step == 0:  # Not an update step: nothing moves.
      assert all((after[k] == before[k]).all() for k in names), step
      continue
    if step <= 8:
      assert total == _expected_total(step, n, init_density=0.5, density=0.05, start=0, last=8)
    else:
      assert total == round(0.05 * n)
    for k in names:  # Drop / regrow: ceil(f(t) * kept) grown in every layer, at new
      # positions while there are any (a dense layer has none).
      grown = int((after[k] & ~before[k]).sum())
      moved = math.ceil(_cosine(step, 14) * after[k].sum())
      assert grown == min(moved, int((~before[k]).sum())), (step, k)
      assert moved > 0
    # Pruned weights are exactly zero.
    for k, w in masks_lib.layers(params, names).items():
      assert not np.asarray(w)[~after[k]].any()


def test_granet_keeps_the_collapse_guard_inside_the_exact_total():
  spec = transform.SparsitySpec(method="granet", sparsity=0.99, init_sparsity=0.7,
                                total_steps=6, update_interval=2, prune_end=2 / 6,
                                min_kept_per_layer=5)
  params = _random_like(PARAMS, jax.random.key(1))
  shapes = transform.prunable_shapes(spec, params)
  n = sum(math.prod(s) for s in shapes.values())
  tx = transform.sparse_training(optax.sgd(0.01), spec)
  state = tx.init(params)
  for step in range(3):
    _, state = tx.update(_random_like(params, jax.random.key(step)), state, params)
  counts = masks_lib.kept_counts(state.masks, list(shapes))
  assert sum(counts.values()) == round(0.01 * n)
  assert min(counts.values()) >= 5


def _granet_history(data_dir, devices, steps=4):
  return mask_history(data_dir, devices, steps, method="granet", sparsity=0.95,
                      total_steps=6, nesterov=False, **{"sparsity.prune_end": 0.5})[0]


def test_granet_masks_are_bit_identical_on_eight_devices_and_one(data_dir):
  single, multi = _granet_history(data_dir, jax.devices()[:1]), _granet_history(data_dir,
                                                                               jax.devices())
  for masks_1, masks_8 in zip(single, multi):
    for (leaf_1,), shards in zip(masks_1, masks_8):
      assert len(shards) == 8
      for shard in shards:
        np.testing.assert_array_equal(shard, leaf_1)
  kept = [sum(int(leaf[0].sum()) for leaf in masks if leaf[0].ndim) for masks in single]
  assert kept[0] > kept[-1]  # The pruning window did prune.
