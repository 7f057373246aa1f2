"""The Optax transformation: exact zeros, moment resets, counts, schedules undisturbed."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from east_jax.errors import UserInputError
from east_jax.sparsity import masks as masks_lib
from east_jax.sparsity import methods
from east_jax.sparsity import transform

PARAMS = {
    "stem_conv": {"kernel": jnp.ones((3, 3, 3, 8))},
    "block": {"conv": {"kernel": jnp.ones((3, 3, 8, 16))}, "bn": {"scale": jnp.ones((16,)),
                                                                 "bias": jnp.zeros((16,))}},
    "classifier": {"kernel": jnp.ones((16, 10))},
}


def _params(key):
  leaves, treedef = jax.tree.flatten(PARAMS)
  keys = jax.random.split(key, len(leaves))
  return treedef.unflatten([jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def _spec(rule="rigl", **kw):
  kw = dict(dict(method=rule, sparsity=0.9, total_steps=20, update_interval=2), **kw)
  return transform.SparsitySpec(**kw)


def _moment_values_outside(inner, inner_state, kept):
  """Values of every parameter-shaped leaf of the inner state (found by optax itself)
  at positions that are not kept; also how many such leaves there are."""
  outside, leaves = [], []

  def visit(x, k):
    leaves.append(x)
    outside.append(np.asarray(x)[~np.broadcast_to(np.asarray(k), x.shape)])
    return x

  optax.tree_map_params(inner, visit, inner_state, kept, transform_non_params=lambda x: x)
  return np.concatenate(outside), len(leaves)


INNERS = {
    "sgd_nesterov": lambda: optax.sgd(0.1, momentum=0.9, nesterov=True),
    "adam": lambda: optax.adam(1e-2),
    "inject_hyperparams": lambda: optax.inject_hyperparams(optax.sgd)(learning_rate=0.1,
                                                                     momentum=0.9),
    "chain": lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.add_decayed_weights(1e-4),
                                 optax.sgd(optax.piecewise_constant_schedule(0.1, {5: 0.1}),
                                           momentum=0.9, nesterov=True)),
}


@pytest.mark.parametrize("inner_name", list(INNERS))
@pytest.mark.parametrize("rule", ["rigl", "set", "static"])
def test_pruned_weights_are_zero_and_grown_moments_reset(inner_name, rule):
  inner = INNERS[inner_name]()
  spec = _spec(rule)
  tx = transform.sparse_training(inner, spec)
  params = _params(jax.random.key(0))
  state = tx.init(params)
  params = masks_lib.apply(params, state.masks)
  names = list(transform.prunable_shapes(spec, params))
  counts = transform.target_counts(spec, transform.prunable_shapes(spec, params))
  step = jax.jit(lambda g, s, p: tx.update(g, s, p))
  changed = 0
  for i in range(8):
    grads = _params(jax.random.key(100 + i))
    old = state.masks
    updates, state = step(grads, state, params)
    params = optax.apply_updates(params, updates)
    new = state.masks
    assert masks_lib.kept_counts(new, names) == counts
    for name in names:
      p, m = masks_lib.layers(params, [name])[name], masks_lib.layers(new, [name])[name]
      assert not np.any(np.asarray(p)[~np.asarray(m)])  # Exactly 0 where pruned.
      grown = np.asarray(m) & ~np.asarray(masks_lib.layers(old, [name])[name])
      changed += grown.sum()
      assert not np.any(np.asarray(p)[grown])  # New weights start at 0.
    kept = jax.tree.map(jnp.logical_and, old, new)
    outside, num_leaves = _moment_values_outside(inner, state.inner_state, kept)
    assert num_leaves >= len(jax.tree.leaves(params))  # Momentum, or Adam's mu and nu.
    assert not np.any(outside)  # Zero for grown, dropped and pruned positions.
  assert (changed > 0) == (rule != "static")
  assert int(state.step) == 8


def test_inner_schedule_counts_every_step():
  inner = optax.inject_hyperparams(optax.sgd)(
      learning_rate=optax.piecewise_constant_schedule(1.0, {3: 0.5}))
  tx = transform.sparse_training(inner, _spec(update_interval=1))
  params = _params(jax.random.key(0))
  state = tx.init(params)
  update = jax.jit(tx.update)
  for _ in range(5):
    _, state = update(params, state, params)
  assert int(state.inner_state.count) == 5
  assert float(state.inner_state.hyperparams["learning_rate"]) == 0.5


def test_updates_happen_only_on_schedule():
  tx = transform.sparse_training(optax.sgd(0.1), _spec(update_interval=3, total_steps=20))
  params = _params(jax.random.key(0))
  state = tx.init(params)
  update = jax.jit(tx.update)
  changed_at = []
  for step in range(10):
    old = state.masks
    updates, state = update(_params(jax.random.key(step)), state, params)
    params = optax.apply_updates(params, updates)
    if any(bool(jnp.any(a != b)) for a, b in zip(jax.tree.leaves(old),
                                                 jax.tree.leaves(state.masks))):
      changed_at.append(step)
  assert changed_at == [3, 6, 9]


def test_keep_stem_and_classifier_dense():
  config = ml_collections.ConfigDict({"method": "rigl", "sparsity": 0.9, "distribution": "erk",
                                      "keep_stem_dense": True, "keep_classifier_dense": True,
                                      "layer_density_overrides": (), "min_kept_per_layer": 0,
                                      "connect_all_classes": False, "update_interval": 2,
                                      "update_start_step": 0, "update_end_step": -1,
                                      "drop_fraction": 0.5, "drop_fraction_final": 0.0})
  made = methods.create_spec(config, total_steps=20, seed=0, stem="stem_conv/kernel",
                             classifier="classifier/kernel")
  assert made.keep_dense == ("stem_conv/kernel", "classifier/kernel")
  with pytest.raises(UserInputError, match="keep_stem_dense needs the model's stem"):
    methods.create_spec(config, total_steps=20, seed=0)
  spec = _spec(keep_dense=("stem_conv/kernel", "classifier/kernel"))
  assert list(transform.prunable_shapes(spec, PARAMS)) == ["block/conv/kernel"]
  state = transform.sparse_training(optax.sgd(0.1), spec).init(PARAMS)
  assert state.masks["stem_conv"]["kernel"].shape == ()
  assert bool(state.masks["classifier"]["kernel"])
  assert int(state.masks["block"]["conv"]["kernel"].sum()) == round(0.1 * 3 * 3 * 8 * 16)


def test_gmp_prunes_from_dense_to_the_target():
  spec = _spec("gmp", update_interval=2, update_end_step=8, total_steps=10)
  tx = transform.sparse_training(optax.sgd(0.01), spec)
  params = _params(jax.random.key(0))
  state = jax.jit(tx.init)(params)
  update = jax.jit(tx.update)
  names = list(transform.prunable_shapes(spec, params))
  total = sum(int(np.prod(s)) for s in transform.prunable_shapes(spec, params).values())
  kept = []
  for step in range(10):
    updates, state = update(_params(jax.random.key(step)), state, params)
    params = optax.apply_updates(params, updates)
    kept.append(sum(masks_lib.kept_counts(state.masks, names).values()))
  assert kept[0] == total  # Dense until the first pruning step.
  assert all(a >= b for a, b in zip(kept, kept[1:]))  # Monotone.
  assert kept[-1] == round(0.1 * total)  # Exactly the target from the end step on.


def test_collapse_guard_keeps_every_class_connected():
  spec = _spec(sparsity=0.98, keep_connected=("classifier/kernel",),
               min_kept_per_layer=3, update_interval=1)
  tx = transform.sparse_training(optax.sgd(0.1), spec)
  params = _params(jax.random.key(0))
  state = tx.init(params)
  update = jax.jit(tx.update)
  for step in range(6):
    updates, state = update(_params(jax.random.key(step)), state, params)
    params = optax.apply_updates(params, updates)
    assert bool(state.masks["classifier"]["kernel"].any(axis=0).all())
    assert int(state.masks["stem_conv"]["kernel"].sum()) >= 3
