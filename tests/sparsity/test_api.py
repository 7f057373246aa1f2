"""The public names of east_jax.sparsity: masks out of any wrapped optimizer state, masked
params, per-layer counts, the config's vocabulary, documented names."""

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from east_jax import sparsity
from east_jax.sparsity import transform

PARAMS = {"conv": {"kernel": jnp.ones((3, 3, 4, 8)), "bias": jnp.zeros((8,))},
          "dense": {"kernel": jnp.ones((8, 10))}}
SPEC = sparsity.SparsitySpec(method="rigl", sparsity=0.9, total_steps=8, update_interval=2)


def _params(seed):
  return jax.tree.map(lambda x: jax.random.normal(jax.random.key(seed), x.shape), PARAMS)


def _train(tx, steps=6):
  params = _params(0)
  state = tx.init(params)
  params = sparsity.masked_params(params, state)
  update = jax.jit(tx.update)
  for step in range(steps):
    updates, state = update(_params(100 + step), state, params)
    params = optax.apply_updates(params, updates)
  return params, state


@pytest.mark.parametrize("wrap", [
    lambda tx: optax.chain(optax.identity(), tx),
    lambda tx: optax.MultiSteps(tx, every_k_schedule=1),
    lambda tx: optax.inject_hyperparams(
        lambda learning_rate: sparsity.sparse_training(optax.sgd(learning_rate), SPEC))(
            learning_rate=0.1),
])
def test_masks_are_found_in_a_wrapped_state_and_evolve_as_unwrapped(wrap):
  bare_params, bare_state = _train(sparsity.sparse_training(optax.sgd(0.1), SPEC))
  params, state = _train(wrap(sparsity.sparse_training(optax.sgd(0.1), SPEC)))
  for got, want in zip(jax.tree.leaves(sparsity.get_masks(state)),
                       jax.tree.leaves(bare_state.masks), strict=True):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(bare_params), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-6)
  # Three RigL updates happened: the masks moved away from the initial ones.
  initial = transform.initial_masks(SPEC, PARAMS)
  assert not np.array_equal(sparsity.get_masks(state)["conv"]["kernel"],
                            initial["conv"]["kernel"])


@pytest.mark.parametrize("method", ["set", "rigl", "gmp", "granet"])
def test_seeds_share_one_compiled_update_and_still_draw_different_masks(method):
  """The seed is state, not a constant: the update lowers to the same program for every
  seed (JAX's persistent cache serves a study's later seeds), while the random masks
  (SET, RigL) differ."""
  spec = {s: dataclasses.replace(SPEC, method=method, seed=s) for s in (0, 1)}
  txs = {s: sparsity.sparse_training(optax.sgd(0.1), spec[s]) for s in spec}
  states = {s: txs[s].init(_params(0)) for s in spec}
  np.testing.assert_array_equal(states[1].rng_key,
                                jax.random.key_data(jax.random.key(1)))
  lowered = {s: jax.jit(txs[s].update).lower(_params(1), states[s], _params(0)).as_text()
             for s in spec}
  assert lowered[0] == lowered[1]
  if method in ("gmp", "granet"):  # Start dense: only magnitudes choose.
    return
  masks = {s: _train(txs[s])[1].masks for s in spec}
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(masks[0]),
                                                      jax.tree.leaves(masks[1])))


def test_get_masks_says_when_there_is_no_or_more_than_one_sparse_state():
  with pytest.raises(ValueError, match="found 0"):
    sparsity.get_masks(optax.sgd(0.1).init(PARAMS))
  two = optax.chain(sparsity.sparse_training(optax.sgd(0.1), SPEC),
                    sparsity.sparse_training(optax.sgd(0.1), SPEC))
  with pytest.raises(ValueError, match="found 2"):
    sparsity.get_masks(two.init(PARAMS))


def test_masked_params_zero_exactly_the_pruned_weights():
  params = _params(1)
  state = sparsity.sparse_training(optax.sgd(0.1), SPEC).init(params)
  masked = sparsity.masked_params(params, state)
  for p, m, q in zip(jax.tree.leaves(params), jax.tree.leaves(state.masks),
                     jax.tree.leaves(masked)):
    np.testing.assert_array_equal(q, np.where(m, p, 0.0))
  assert np.count_nonzero(masked["conv"]["bias"]) == 8  # Not pruned.


def test_layer_counts_are_the_exact_per_layer_budgets():
  _, state = _train(sparsity.sparse_training(optax.sgd(0.1), SPEC))
  counts = sparsity.layer_counts(sparsity.get_masks(state))
  shapes = transform.prunable_shapes(SPEC, PARAMS)
  assert list(counts.layers) == list(shapes) == ["conv/kernel", "dense/kernel"]
  target = transform.target_counts(SPEC, shapes)
  assert {n: kept for n, (kept, _) in counts.layers.items()} == target
  assert counts.layers["conv/kernel"][1] == 288 and counts.size == 288 + 80
  assert counts.kept == sum(target.values()) == round(0.1 * 368)
  assert counts.density == pytest.approx(counts.kept / 368)
  assert counts.sparsity == pytest.approx(1 - counts.kept / 368)


def test_the_config_builds_the_spec_the_api_builds():
  config = default.get_config().sparsity
  config.method, config.sparsity, config.update_interval = "granet", 0.95, 4
  config.update_end_step, config.connect_all_classes = 90, True
  config.layer_density_overrides = ["stem/kernel=1.0"]
  made = sparsity.create_spec(config, total_steps=100, seed=3, classifier="dense/kernel")
  assert made == sparsity.SparsitySpec(
      method="granet", sparsity=0.95, total_steps=100, seed=3,
      layer_density_overrides=(("stem/kernel", 1.0),), keep_connected=("dense/kernel",),
      update_interval=4, update_end_step=90, init_sparsity=config.init_sparsity,
      prune_end=config.prune_end)
  config.method, config.update_end_step = "snip", -1  # -1 in the config: the end.
  made = sparsity.create_spec(config, total_steps=100, seed=3, classifier="dense/kernel")
  assert (made.method, made.prune_at_init, made.update_end_step, made.end) == (
      "static", "snip", None, 100)
  assert set(sparsity.CONFIG_METHODS.values()) - {None} == set(sparsity.METHODS)


def test_a_bad_spec_says_which_field():
  with pytest.raises(ValueError, match="method must be one of"):
    sparsity.SparsitySpec(method="none", sparsity=0.9, total_steps=10)
  with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
    sparsity.SparsitySpec(method="rigl", sparsity=1.0, total_steps=10)


def test_every_public_name_is_documented():
  for name in sparsity.__all__:
    obj = getattr(sparsity, name)
    if inspect.isfunction(obj):
      doc = inspect.getdoc(obj)
      assert "Args:" in doc and "Returns:" in doc, name
    elif inspect.isclass(obj):
      assert inspect.getdoc(obj), name
