"""Pruning at initialisation: scores against closed forms, finite differences and NumPy;
exact-count selection; SynFlow's schedule, monotone masks and float64 scoping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from east_jax.sparsity import saliency

KEY = jax.random.key(0)
LINEAR_NAMES = ("dense1/kernel", "dense2/kernel")
SEEN_DTYPES = []  # Input dtypes the SynFlow output functions were traced with.


def _linear_params(seed=0):
  rng = np.random.default_rng(seed)
  return {"dense1": {"kernel": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)},
          "dense2": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}}


def _linear(params, state, x):
  """f(x) = x W1 W2 (bias-free), times the state's scale when there is one."""
  SEEN_DTYPES.append(x.dtype)
  y = x @ params["dense1"]["kernel"] @ params["dense2"]["kernel"]
  return y if state is None else y * state["scale"]


def _top_set(flat, count):
  """Indices of the `count` largest (NumPy reference; scores here have no ties)."""
  return set(np.argsort(-np.asarray(flat, np.float64), kind="stable")[:count].tolist())


def _flat_true(masks, names):
  return set(np.flatnonzero(np.concatenate([np.asarray(masks[n]).ravel() for n in names])))


# SynFlow scores.


def test_synflow_scores_of_a_two_layer_linear_network_match_the_closed_form():
  params = _linear_params()
  rng = np.random.default_rng(1)
  layer_masks = {"dense1/kernel": rng.random((5, 4)) < 0.7,
                 "dense2/kernel": rng.random((4, 3)) < 0.7}
  scores = saliency.synflow_scores(_linear, params, None, (5,), LINEAR_NAMES, layer_masks)
  # With x = 1 and A = |W| * mask: dR/dW1[j, i] = (A2 1)[i], dR/dW2[i, k] = (1^T A1)[i].
  a1 = np.abs(np.asarray(params["dense1"]["kernel"], np.float64)) * layer_masks["dense1/kernel"]
  a2 = np.abs(np.asarray(params["dense2"]["kernel"], np.float64)) * layer_masks["dense2/kernel"]
  assert scores["dense1/kernel"].dtype == jnp.float64
  np.testing.assert_allclose(scores["dense1/kernel"], a1 * a2.sum(axis=1)[None, :], rtol=1e-12)
  np.testing.assert_allclose(scores["dense2/kernel"], a2 * a1.sum(axis=0)[:, None], rtol=1e-12)
  assert SEEN_DTYPES[-1] == jnp.float64


def test_synflow_scores_of_a_conv_network_match_numpy():
  rng = np.random.default_rng(2)
  params = {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)}}
  kernel = np.asarray(params["conv"]["kernel"], np.float64)
  state = {"scale": jnp.asarray(-2.0)}  # Linearised to |-2| = 2.

  def conv_sum(params, state, x):
    y = jax.lax.conv_general_dilated(x, params["conv"]["kernel"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(y, axis=(1, 2)) * state["scale"]

  scores = saliency.synflow_scores(conv_sum, params, state, (6, 7, 2), ["conv/kernel"])
  # dR/dK[a, b, c, o] = 2 * (number of output positions whose input at offset (a, b) is
  # inside the 6 x 7 image, 'SAME' padding of 1).
  expected = np.zeros_like(kernel)
  for a in range(3):
    for b in range(3):
      inside = sum(0 <= h + a - 1 < 6 and 0 <= w + b - 1 < 7 for h in range(6) for w in range(7))
      expected[a, b] = 2.0 * inside * np.abs(kernel[a, b])
  np.testing.assert_allclose(scores["conv/kernel"], expected, rtol=1e-12)


# SynFlow rounds.


def test_round_counts_follow_the_exponential_schedule():
  for size, keep, rounds in [(1000, 37, 10), (21_263_936, 10_632, 100), (50, 50, 4), (9, 0, 3)]:
    counts = saliency.synflow_round_counts(size, keep, rounds)
    exact = size * (keep / size) ** (np.arange(1, rounds + 1) / rounds)
    expected = np.round(exact).astype(np.int64)
    assert counts[:-1] == expected[:-1].tolist()
    assert counts[-1] == keep and len(counts) == rounds
    assert all(a >= b for a, b in zip(counts, counts[1:]))
  with pytest.raises(ValueError):
    saliency.synflow_round_counts(10, 11, 5)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_pruned_weights_never_return_and_each_round_keeps_its_count(scope):
  params = _linear_params(3)
  history = []
  kwargs = (dict(total=6) if scope == "global"
            else dict(counts={"dense1/kernel": 4, "dense2/kernel": 3}))
  final = saliency.synflow_masks(
      _linear, params, None, (5,), LINEAR_NAMES, key=KEY, rounds=5, scope=scope,
      on_round=lambda k, m: history.append((k, {n: np.asarray(v) for n, v in m.items()})),
      **kwargs)
  assert [k for k, _ in history] == [1, 2, 3, 4, 5]
  previous = {n: np.ones(s, bool) for n, s in (("dense1/kernel", (5, 4)),
                                               ("dense2/kernel", (4, 3)))}
  for k, masks in history:
    for n in LINEAR_NAMES:
      assert not (masks[n] & ~previous[n]).any()  # Subset of the previous round's.
    if scope == "global":
      expected = round(32 * (6 / 32) ** (k / 5)) if k < 5 else 6
      assert sum(int(m.sum()) for m in masks.values()) == expected
    else:
      for n, size, keep in (("dense1/kernel", 20, 4), ("dense2/kernel", 12, 3)):
        assert int(masks[n].sum()) == (round(size * (keep / size) ** (k / 5)) if k < 5 else keep)
    previous = masks
  for n in LINEAR_NAMES:
    np.testing.assert_array_equal(final[n], history[-1][1][n])


def test_a_pruned_weight_never_returns_when_kept_weights_drop_to_zero():
  # W2's row 0 is tiny, so round 1 prunes it (W2 keeps 24 of 32) and W1's two weakest
  # column-0 weights (W1 keeps 18 of 20). In round 2 the three kept column-0 weights of W1
  # lead nowhere and score 0, like the two pruned ones would; W1 keeps 17, 2 of those
  # zeros, which must be among the three still kept, whatever the tie-breaking key.
  rng = np.random.default_rng(11)
  w1 = rng.normal(size=(5, 4))
  w1[:, 0] = 100.0 + np.arange(5)
  w2 = rng.normal(size=(4, 8))
  w2[0] = 1e-6
  params = {"dense1": {"kernel": jnp.asarray(w1, jnp.float32)},
            "dense2": {"kernel": jnp.asarray(w2, jnp.float32)}}
  for seed in range(4):
    history = []
    saliency.synflow_masks(
        _linear, params, None, (5,), LINEAR_NAMES, key=jax.random.key(seed), rounds=2,
        scope="layerwise", counts={"dense1/kernel": 17, "dense2/kernel": 18},
        on_round=lambda k, m: history.append({n: np.asarray(v) for n, v in m.items()}))
    first, second = history
    assert not first["dense2/kernel"][0].any() and first["dense2/kernel"].sum() == 24
    np.testing.assert_array_equal(first["dense1/kernel"][:, 0], [False, False, True, True, True])
    assert second["dense1/kernel"][:, 0].sum() == 2
    for name in LINEAR_NAMES:
      assert not (second[name] & ~first[name]).any()


def test_synflow_keeps_the_top_scores_of_each_round():
  """Every round keeps the largest SynFlow scores at the previous round's masks."""
  params = _linear_params(4)
  history = []
  saliency.synflow_masks(_linear, params, None, (5,), LINEAR_NAMES, key=KEY, rounds=3,
                         total=7, on_round=lambda k, m: history.append(dict(m)))
  masks = {n: np.ones(s, bool) for n, s in (("dense1/kernel", (5, 4)), ("dense2/kernel", (4, 3)))}
  for kept in history:
    scores = saliency.synflow_scores(_linear, params, None, (5,), LINEAR_NAMES, masks)
    flat = np.concatenate([np.where(masks[n], np.asarray(scores[n]), -np.inf).ravel()
                           for n in LINEAR_NAMES])
    chosen = np.concatenate([np.asarray(kept[n]).ravel() for n in LINEAR_NAMES])
    # The kept scores are the largest ones (compared as values: zero scores may tie).
    np.testing.assert_array_equal(np.sort(flat[chosen]), np.sort(flat)[-chosen.sum():])
    assert np.isfinite(flat[chosen]).all()
    masks = {n: np.asarray(m) for n, m in kept.items()}


def test_synflow_leaves_params_and_state_untouched_and_x64_scoped():
  params = _linear_params(5)
  state = {"scale": jnp.asarray(-1.5, jnp.float32)}
  before = jax.tree.map(lambda a: np.asarray(a).copy(), (params, state))
  assert (before[0]["dense1"]["kernel"] < 0).any()  # Signs to restore.
  masks = saliency.synflow_masks(_linear, params, state, (5,), LINEAR_NAMES, key=KEY,
                                 rounds=4, total=9)
  after = jax.tree.map(np.asarray, (params, state))
  for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    assert new.dtype == np.float32
    np.testing.assert_array_equal(old.view(np.uint32), new.view(np.uint32))  # Bitwise.
  assert sum(int(np.asarray(m).sum()) for m in masks.values()) == 9
  assert all(np.asarray(m).dtype == np.bool_ for m in masks.values())
  assert not jax.config.jax_enable_x64
  assert jnp.ones(1).dtype == jnp.float32


def _chain(depth, width, seed=0):
  rng = np.random.default_rng(seed)
  return {f"dense{i}": {"kernel": jnp.asarray(rng.normal(0, np.sqrt(2 / width), (width, width)),
                                              jnp.float32)} for i in range(depth)}


def _chain_apply(params, state, x):
  del state
  for i in range(len(params)):
    x = x @ params[f"dense{i}"]["kernel"]
  return x


def test_a_deep_positive_chain_that_overflows_float32_gets_finite_exact_masks():
  depth, width = 48, 64
  params = _chain(depth, width)
  names = [f"dense{i}/kernel" for i in range(depth)]
  # The linearised forward pass overflows in float32 (each layer multiplies by ~9).
  signal = np.ones(width, np.float32)
  with np.errstate(over="ignore"):
    for i in range(depth):
      signal = signal @ np.abs(np.asarray(params[f"dense{i}"]["kernel"]))
  assert np.isinf(signal.sum())
  total = 2000
  masks = saliency.synflow_masks(_chain_apply, params, None, (width,), names, key=KEY,
                                 rounds=3, total=total, minimum={n: 8 for n in names})
  counts = [int(np.asarray(masks[n]).sum()) for n in names]
  assert sum(counts) == total and min(counts) >= 8
  dense = {n: np.ones((width, width), bool) for n in names}
  first = saliency.synflow_scores(_chain_apply, params, None, (width,), names, dense)
  last = saliency.synflow_scores(_chain_apply, params, None, (width,), names, masks)
  for scores in (first, last):
    assert all(np.isfinite(np.asarray(s)).all() for s in scores.values())
  # Round 1's scores lie beyond float32's range: float64 was needed.
  assert max(np.max(np.asarray(s)) for s in first.values()) > np.finfo(np.float32).max


def _overflowing_in_float32(params, state, x):
  """The linear network computed in float32 on a huge input: inf forward and backward."""
  params = jax.tree.map(lambda p: p.astype(jnp.float32), params)
  return _linear(params, state, x.astype(jnp.float32) * 3e38)


def test_non_finite_scores_raise_a_clear_error():
  with pytest.raises(ValueError, match="not finite .* round 1: output_fn must compute in "
                     "float64"):
    saliency.synflow_masks(_overflowing_in_float32, _linear_params(), None, (5,),
                           LINEAR_NAMES, key=KEY, rounds=2, total=6)


# SNIP and GraSP against NumPy.


def _mlp_numpy(params, x, y):
  """Loss and gradients of softmax(tanh(x W1 + b1) W2) cross-entropy, by hand."""
  w1, b1, w2 = params["hidden"]["kernel"], params["hidden"]["bias"], params["out"]["kernel"]
  h = np.tanh(x @ w1 + b1)
  z = h @ w2
  z = z - z.max(axis=1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
  loss = -np.mean(np.log(p[np.arange(len(y)), y]))
  dz = (p - np.eye(z.shape[1])[y]) / len(y)
  da = (dz @ w2.T) * (1 - h ** 2)
  return loss, {"hidden": {"kernel": x.T @ da, "bias": da.sum(axis=0)},
                "out": {"kernel": h.T @ dz}}


def _mlp_problem():
  rng = np.random.default_rng(6)
  params = {"hidden": {"kernel": rng.normal(size=(4, 5)), "bias": rng.normal(size=5)},
            "out": {"kernel": rng.normal(size=(5, 3))}}
  x, y = rng.normal(size=(8, 4)), rng.integers(0, 3, 8)

  def loss_fn(p):
    z = jnp.tanh(x @ p["hidden"]["kernel"] + p["hidden"]["bias"]) @ p["out"]["kernel"]
    return -jnp.mean(jax.nn.log_softmax(z)[jnp.arange(8), y])

  return params, x, y, loss_fn


MLP_NAMES = ["hidden/kernel", "out/kernel"]


def test_snip_matches_central_differences_of_the_loss():
  params, x, y, loss_fn = _mlp_problem()
  with jax.enable_x64(True):
    scores = saliency.snip_scores(loss_fn, jax.tree.map(jnp.asarray, params), MLP_NAMES)
  eps = 1e-6
  for name, (layer, leaf) in zip(MLP_NAMES, [("hidden", "kernel"), ("out", "kernel")]):
    grad = np.zeros_like(params[layer][leaf])
    for index in np.ndindex(grad.shape):
      for sign in (1, -1):
        moved = jax.tree.map(np.copy, params)
        moved[layer][leaf][index] += sign * eps
        grad[index] += sign * _mlp_numpy(moved, x, y)[0] / (2 * eps)
    np.testing.assert_allclose(scores[name], np.abs(grad * params[layer][leaf]), rtol=1e-5,
                               atol=1e-9)


def test_grasp_hessian_gradient_product_matches_numpy_and_keeps_the_smallest_s():
  params, x, y, loss_fn = _mlp_problem()
  with jax.enable_x64(True):
    scores = saliency.grasp_scores(loss_fn, jax.tree.map(jnp.asarray, params), MLP_NAMES)
  # H g restricted to the kernels: central differences of the hand-written gradient
  # along g (kernels only; the bias does not move).
  _, grads = _mlp_numpy(params, x, y)
  eps = 1e-5

  def moved(sign):
    p = jax.tree.map(np.copy, params)
    p["hidden"]["kernel"] += sign * eps * grads["hidden"]["kernel"]
    p["out"]["kernel"] += sign * eps * grads["out"]["kernel"]
    return _mlp_numpy(p, x, y)[1]

  plus, minus = moved(1), moved(-1)
  hg = {"hidden/kernel": (plus["hidden"]["kernel"] - minus["hidden"]["kernel"]) / (2 * eps),
        "out/kernel": (plus["out"]["kernel"] - minus["out"]["kernel"]) / (2 * eps)}
  theta = {"hidden/kernel": params["hidden"]["kernel"], "out/kernel": params["out"]["kernel"]}
  for name in MLP_NAMES:
    np.testing.assert_allclose(scores[name], theta[name] * hg[name], rtol=1e-6, atol=1e-9)
  # The full H g (the bias moving along its gradient too) differs: the restriction matters.
  p = jax.tree.map(lambda w, g: w + eps * g, params, grads)
  m = jax.tree.map(lambda w, g: w - eps * g, params, grads)
  full = (_mlp_numpy(p, x, y)[1]["out"]["kernel"] - _mlp_numpy(m, x, y)[1]["out"]["kernel"]) / (
      2 * eps)
  assert not np.allclose(full, hg["out/kernel"], rtol=1e-3)
  # GraSP's S = -theta * Hg: the kept weights are those of smallest S.
  s = np.concatenate([(-theta[n] * hg[n]).ravel() for n in MLP_NAMES])
  masks = saliency.scores_to_masks(
      {n: np.asarray(scores[n], np.float32) for n in MLP_NAMES}, scope="global", total=10,
      key=KEY)
  assert _flat_true(masks, MLP_NAMES) == set(np.argsort(s)[:10].tolist())


# Selection.

SCORES = {"a": np.random.default_rng(7).normal(size=(16, 8)).astype(np.float32),
          "b": np.random.default_rng(8).normal(size=(40,)).astype(np.float32) + 3.0,
          "c": np.random.default_rng(9).normal(size=(2, 3, 4)).astype(np.float32) - 5.0}
SCORES["a"][:2] = -np.inf  # Already pruned.
FLAT = np.concatenate([s.ravel() for s in SCORES.values()])
SIZES = {n: s.size for n, s in SCORES.items()}


def test_select_global_keeps_exactly_the_top_total():
  masks = saliency.select_global(SCORES, 50, KEY)
  assert {n: m.shape for n, m in masks.items()} == {n: s.shape for n, s in SCORES.items()}
  assert _flat_true(masks, SCORES) == _top_set(FLAT, 50)
  assert not np.asarray(masks["c"]).any()  # The lowest layer collapses without a minimum.


def test_select_global_with_minimum_reserves_each_layers_best_then_fills_globally():
  minimum = {"a": 3, "c": 5}
  masks = saliency.select_global(SCORES, 50, KEY, minimum)
  counts = {n: int(np.asarray(m).sum()) for n, m in masks.items()}
  assert sum(counts.values()) == 50 and counts["a"] >= 3 and counts["c"] >= 5
  offset_c = SIZES["a"] + SIZES["b"]
  reserved = _top_set(SCORES["a"].ravel(), 3) | {offset_c + i for i in
                                                 _top_set(SCORES["c"].ravel(), 5)}
  rest = FLAT.copy()
  rest[list(reserved)] = -np.inf
  assert _flat_true(masks, SCORES) == reserved | _top_set(rest, 42)
  assert counts["c"] == 5  # Without the reservation 'c' would keep none.


def test_minus_infinity_is_taken_only_when_unavoidable():
  finite = int(np.isfinite(FLAT).sum())
  masks = saliency.select_global(SCORES, finite, KEY)
  assert _flat_true(masks, SCORES) == set(np.flatnonzero(np.isfinite(FLAT)))
  masks = saliency.select_global(SCORES, finite + 3, KEY)
  # The total stays exact: the three lowest-index pruned positions fill it.
  assert _flat_true(masks, SCORES) == set(np.flatnonzero(np.isfinite(FLAT))) | {0, 1, 2}
  layer = saliency.select_layerwise(SCORES, {"a": 127, "b": 0, "c": 0}, KEY)
  assert set(np.flatnonzero(np.asarray(layer["a"]))) == set(range(15)) | set(range(16, 128))
  assert not np.asarray(layer["b"]).any() and not np.asarray(layer["c"]).any()


def test_select_layerwise_keeps_each_layers_top_count():
  counts = {"a": 7, "b": 40, "c": 1}
  masks = saliency.select_layerwise(SCORES, counts, KEY)
  for name, count in counts.items():
    assert set(np.flatnonzero(np.asarray(masks[name]))) == _top_set(SCORES[name].ravel(), count)
  same = saliency.scores_to_masks(SCORES, scope="layerwise", counts=counts, key=KEY)
  for name in counts:
    np.testing.assert_array_equal(same[name], masks[name])


def test_impossible_counts_raise():
  with pytest.raises(ValueError):
    saliency.select_global(SCORES, FLAT.size + 1, KEY)
  with pytest.raises(ValueError):
    saliency.select_global(SCORES, 10, KEY, {"a": 6, "c": 5})  # 11 reserved > 10.
  with pytest.raises(ValueError):
    saliency.select_global(SCORES, 100, KEY, {"c": 25})  # 'c' has 24 positions.
  with pytest.raises(ValueError):
    saliency.select_global(SCORES, 10, KEY, {"d": 1})
  with pytest.raises(ValueError):
    saliency.select_layerwise(SCORES, {"a": 1, "b": 41, "c": 0}, KEY)
  with pytest.raises(ValueError):
    saliency.scores_to_masks(SCORES, scope="global", counts={"a": 1}, key=KEY)
  with pytest.raises(ValueError):
    saliency.synflow_masks(_linear, _linear_params(), None, (5,), LINEAR_NAMES, key=KEY,
                           total=33)


def test_ties_are_broken_by_the_key_with_exact_counts():
  zeros = {"a": np.zeros((30, 10), np.float32), "b": np.zeros(200, np.float32)}
  picks = set()
  for seed in range(4):
    masks = saliency.select_global(zeros, 20, jax.random.key(seed))
    chosen = _flat_true(masks, zeros)
    assert len(chosen) == 20
    picks.add(tuple(sorted(chosen)))
  assert len(picks) == 4 and max(max(p) for p in picks) > 300  # Not by position.
  ties = {"a": np.full((30, 10), 1.0, np.float32), "b": np.full(200, 1.0, np.float32)}
  masks = saliency.select_layerwise(ties, {"a": 11, "b": 0}, KEY)  # Equal nonzero scores:
  assert set(np.flatnonzero(np.asarray(masks["a"]))) == set(range(11))  # lower index first.


def test_selection_is_identical_on_eight_devices_and_on_one():
  assert len(jax.devices()) == 8
  mesh = Mesh(np.array(jax.devices()), ("devices",))
  rng = np.random.default_rng(10)
  scores = {"x": rng.normal(size=(64, 24)).astype(np.float32),
            "y": np.round(rng.normal(size=(16, 9)), 1).astype(np.float32)}  # Many ties.
  sharded = {n: jax.device_put(s, NamedSharding(mesh, PartitionSpec("devices")))
             for n, s in scores.items()}
  single = {n: jax.device_put(s, jax.devices()[0]) for n, s in scores.items()}

  # The minimum's reservation is the per-layer (segmented) selection, the rest the global.
  select = jax.jit(lambda scores: saliency.select_global(scores, 300, KEY, {"y": 20}))
  spread, alone = select(sharded), select(single)
  for name in scores:
    assert len(spread[name].sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(spread[name]), np.asarray(alone[name]))
  assert sum(int(m.sum()) for m in spread.values()) == 300 and int(spread["y"].sum()) >= 20
