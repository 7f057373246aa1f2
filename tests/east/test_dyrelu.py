"""DyReLU-B: ReLU at beta = 0, the formula at beta = 1 (NumPy reference), the phase
schedule, no hyper-network compute after the phase-out, never pruned, stripped for
inference, frozen on request."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from east_jax import optim
from east_jax.models import ReLU, create_model
from east_jax.models.dyrelu import (HYPERNET, DyReLU, beta_schedule, is_hypernet,
                                    strip_hypernetworks, zero_from_step)
from east_jax.sparsity import transform


def _init(x):
  module = DyReLU()
  return module, module.init(jax.random.key(0), x, 1.0)


def _numpy_dyrelu(x, params, beta):
  """DyReLU-B of docs/method.md section 3, written out in NumPy."""
  p = jax.tree.map(np.asarray, params["params"]["hypernet"])
  pooled = x.mean(axis=(1, 2))
  hidden = np.maximum(pooled @ p["fc1"]["kernel"] + p["fc1"]["bias"], 0.0)
  theta = 2.0 / (1.0 + np.exp(-(hidden @ p["fc2"]["kernel"] + p["fc2"]["bias"]))) - 1.0
  theta = theta.reshape(x.shape[0], x.shape[-1], 4)
  coef = theta * np.array([1.0, 1.0, 0.5, 0.5]) + np.array([1.0, 0.0, 0.0, 0.0])
  coef = beta * coef + (1.0 - beta) * np.array([1.0, 0.0, 0.0, 0.0])
  a1, a2, b1, b2 = (coef[:, None, None, :, k] for k in range(4))
  return np.maximum(a1 * x + b1, a2 * x + b2)


def test_beta_zero_and_none_are_exactly_relu():
  x = jax.random.normal(jax.random.key(1), (3, 5, 5, 8)) * 3.0
  module, params = _init(x)
  np.testing.assert_array_equal(module.apply(params, x, 0.0), jax.nn.relu(x))
  np.testing.assert_array_equal(module.apply(params, x, None), jax.nn.relu(x))


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_matches_the_numpy_formula(beta):
  x = np.asarray(jax.random.normal(jax.random.key(2), (2, 4, 4, 12)))
  module, params = _init(x)
  assert params["params"]["hypernet"]["fc1"]["kernel"].shape == (12, 3)
  assert params["params"]["hypernet"]["fc2"]["kernel"].shape == (3, 48)
  out = module.apply(params, x, beta)
  np.testing.assert_allclose(out, _numpy_dyrelu(x, params, beta), rtol=1e-5, atol=1e-6)
  assert not np.allclose(out, np.maximum(x, 0.0))


def test_phase_schedule_values():
  beta = lambda s: float(beta_schedule(s, total_steps=1000, phase_start=0.25, phase_end=0.5))
  assert [beta(s) for s in (0, 100, 250, 300, 375, 450, 499, 500, 999)] == pytest.approx(
      [1.0, 1.0, 1.0, 0.8, 0.5, 0.2, 0.004, 0.0, 0.0])
  assert zero_from_step(total_steps=1000, phase_start=0.25, phase_end=0.5) == 500
  step = lambda s: float(beta_schedule(s, total_steps=10, phase_start=0.5, phase_end=0.5))
  assert [step(4), step(5)] == [1.0, 0.0]
  assert zero_from_step(total_steps=10, phase_start=0.5, phase_end=0.5) == 5


def _dot_count(fn, *args):
  return str(jax.make_jaxpr(fn)(*args)).count("dot_general")


def test_no_hypernetwork_compute_once_beta_is_none():
  model = create_model("resnet18", num_classes=4, width=4, stage_sizes=(1,), act=DyReLU)
  x = jnp.ones((1, 8, 8, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  active = _dot_count(lambda v: model.apply(v, x, train=False, beta=jnp.float32(0.5)), variables)
  plain = _dot_count(lambda v: model.apply(v, x, train=False, beta=None), variables)
  assert plain == 1  # The classifier only.
  assert active == 1 + 2 * 3  # Plus fc1 and fc2 of 3 DyReLUs.


def test_hypernetworks_are_never_pruned_nor_in_the_budget():
  image = jnp.zeros((1, 8, 8, 3))
  dy = create_model("resnet18", num_classes=4, width=8, stage_sizes=(1, 1), act=DyReLU)
  plain = create_model("resnet18", num_classes=4, width=8, stage_sizes=(1, 1))
  spec = transform.SparsitySpec(method="rigl", sparsity=0.95, total_steps=1,
                                never_prune=(HYPERNET,))
  dy_params = jax.eval_shape(lambda: dy.init(jax.random.key(0), image, train=False))["params"]
  plain_params = jax.eval_shape(
      lambda: plain.init(jax.random.key(0), image, train=False))["params"]
  assert transform.prunable_shapes(spec, dy_params) == transform.prunable_shapes(spec,
                                                                                  plain_params)
  masks = transform.initial_masks(spec, dy_params)
  hyper = [m for p, m in jax.tree_util.tree_flatten_with_path(masks)[0]
           if is_hypernet("/".join(k.key for k in p))]
  assert len(hyper) == 5 * 4 and all(m.shape == () and bool(m) for m in hyper)


def test_stripped_params_run_the_plain_relu_resnet():
  x = jax.random.normal(jax.random.key(3), (2, 8, 8, 3))
  dy = create_model("resnet18", num_classes=4, width=4, stage_sizes=(1, 1), act=DyReLU)
  plain = create_model("resnet18", num_classes=4, width=4, stage_sizes=(1, 1), act=ReLU)
  variables = dy.init(jax.random.key(0), x, train=False)
  stripped = {**variables, "params": strip_hypernetworks(variables["params"])}
  reference = plain.init(jax.random.key(0), x, train=False)
  assert jax.tree.structure(stripped) == jax.tree.structure(reference)
  np.testing.assert_array_equal(plain.apply(stripped, x, train=False),
                                dy.apply(variables, x, train=False, beta=None))


def test_freeze_from_stops_only_the_named_leaves():
  params = {"act": {"hypernet": {"fc1": {"kernel": jnp.ones((2, 2))}}}, "conv": {"kernel": jnp.ones(3)}}
  tx = optax.chain(optax.sgd(0.1), optim.freeze_from(2, is_hypernet))
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  moved = []
  for _ in range(4):
    updates, state = tx.update(grads, state, params)
    moved.append((bool(jnp.any(updates["act"]["hypernet"]["fc1"]["kernel"] != 0)),
                  bool(jnp.any(updates["conv"]["kernel"] != 0))))
  assert moved == [(True, True), (True, True), (False, True), (False, True)]


def test_east_model_computes_in_bfloat16_close_to_float32():
  x = jax.random.normal(jax.random.key(4), (2, 16, 16, 3))
  kwargs = dict(num_classes=4, width=8, stage_sizes=(3,), share_ratio=2, act=DyReLU)
  fp32 = create_model("resnet18", **kwargs)
  bf16 = create_model("resnet18", dtype=jnp.bfloat16, **kwargs)
  variables = fp32.init(jax.random.key(0), x, train=False)
  out32 = fp32.apply(variables, x, train=False, beta=1.0)
  out16, inter = bf16.apply(variables, x, train=False, beta=1.0, capture_intermediates=True,
                            mutable=["intermediates"])
  acts = inter["intermediates"]["stage1_block2"]["act_out"]["__call__"]
  assert acts[0].dtype == jnp.bfloat16 and out16.dtype == jnp.float32
  np.testing.assert_allclose(out16, out32, rtol=0.1, atol=0.05)


def _static_init(x, layout="NHWC"):
  module = DyReLU(phase_out="static", layout=layout)
  variables = module.init(jax.random.key(0), x, 1.0)
  offset = jax.random.normal(jax.random.key(5), variables["params"]["static_offset"].shape)
  return module, {"params": {**variables["params"], "static_offset": 0.3 * offset}}


def test_static_phase_out_starts_as_relu_and_learns_per_channel_coefficients():
  x = np.asarray(jax.random.normal(jax.random.key(6), (2, 4, 4, 6))) * 2.0
  module = DyReLU(phase_out="static")
  fresh = module.init(jax.random.key(0), x, 1.0)
  assert fresh["params"]["static_offset"].shape == (6, 4)
  assert not is_hypernet("act/static_offset")
  np.testing.assert_array_equal(module.apply(fresh, x, None), jax.nn.relu(x))

  module, variables = _static_init(x)
  a1, a2, b1, b2 = (np.array([1.0, 0.0, 0.0, 0.0]) + np.asarray(
      variables["params"]["static_offset"])).T
  want = np.maximum(a1 * x + b1, a2 * x + b2)
  np.testing.assert_allclose(module.apply(variables, x, None), want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(module.apply(variables, x, 0.0), want, rtol=1e-6, atol=1e-6)
  # Channel-first: the same activation.
  first, _ = _static_init(x.transpose(3, 0, 1, 2), layout="CNHW")
  np.testing.assert_allclose(first.apply(variables, x.transpose(3, 0, 1, 2), None),
                             want.transpose(3, 0, 1, 2), rtol=1e-6, atol=1e-6)


def test_static_phase_out_blends_dyrelu_toward_its_coefficients():
  x = np.asarray(jax.random.normal(jax.random.key(7), (2, 4, 4, 8)))
  module, variables = _static_init(x)
  p = jax.tree.map(np.asarray, variables["params"]["hypernet"])
  pooled = x.mean(axis=(1, 2))
  hidden = np.maximum(pooled @ p["fc1"]["kernel"] + p["fc1"]["bias"], 0.0)
  theta = 2.0 / (1.0 + np.exp(-(hidden @ p["fc2"]["kernel"] + p["fc2"]["bias"]))) - 1.0
  target = np.array([1.0, 0.0, 0.0, 0.0]) + np.asarray(variables["params"]["static_offset"])
  coef = target + 0.4 * theta.reshape(2, 8, 4) * np.array([1.0, 1.0, 0.5, 0.5])
  a1, a2, b1, b2 = (coef[:, None, None, :, k] for k in range(4))
  np.testing.assert_allclose(module.apply(variables, x, 0.4),
                             np.maximum(a1 * x + b1, a2 * x + b2), rtol=1e-5, atol=1e-6)


def test_static_phase_out_has_no_hypernetwork_compute_and_keeps_its_coefficients():
  model = create_model("resnet18", num_classes=4, width=4, stage_sizes=(1,),
                       act=functools.partial(DyReLU, phase_out="static"))
  x = jnp.ones((1, 8, 8, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  plain = _dot_count(lambda v: model.apply(v, x, train=False, beta=None), variables)
  assert plain == 1  # The classifier only.
  stripped = strip_hypernetworks(variables["params"])
  assert stripped["stage1_block0"]["act1"]["static_offset"].shape == (4, 4)
  np.testing.assert_array_equal(
      model.apply({**variables, "params": stripped}, x, train=False, beta=None),
      model.apply(variables, x, train=False, beta=None))
