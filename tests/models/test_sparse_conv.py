"""Convolution over kept weights (models/sparse_conv.py) against XLA's dense convolution.

sparse_conv takes channel-first (CNHW) activations; XLA's reference gets the same layout."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from east_jax.models import sparse_conv

_CNHW = ("CNHW", "HWIO", "CNHW")


@pytest.fixture(params=["native", "xla"])
def kernel_path(request):
  """Runs the test with the native CPU kernels, then with XLA's gather / scatter path."""
  with sparse_conv.xla_only() if request.param == "xla" else contextlib.nullcontext():
    yield request.param


def _problem(seed, batch, size, cin, cout, k, kept, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((cin, batch, size, size)), dtype)
  flat = np.zeros(k * k * cin * cout, bool)
  flat[rng.choice(flat.size, kept, replace=False)] = True
  mask = jnp.asarray(flat.reshape(k, k, cin, cout))
  kernel = jnp.asarray(rng.standard_normal(mask.shape), jnp.float32) * mask
  return x, kernel, mask


def _value_and_grads(fn, x, kernel, dy):
  out, vjp = jax.vjp(fn, x, kernel)
  return (out, *vjp(dy))


# (batch, size, cin, cout, kernel, stride, kept): every kernel shape and stride the ResNets
# use (3x3 s1/s2, 1x1 s1/s2 shortcuts and bottlenecks, the 7x7 s2 ImageNet stem), odd sizes.
# The two 64-channel cases are large enough for the native kernels to split the batch into
# blocks (30x30: blocks that end in a partial segment).
CASES = [(4, 8, 5, 6, 3, 1, 40), (4, 9, 5, 6, 3, 2, 40), (3, 8, 6, 4, 1, 1, 9),
         (3, 9, 6, 4, 1, 2, 9), (2, 13, 3, 5, 7, 2, 60), (2, 7, 4, 4, 3, 1, 1),
         (3, 30, 64, 64, 3, 1, 300), (3, 31, 64, 64, 3, 2, 200), (2, 16, 8, 8, 1, 1, 20)]


@pytest.mark.parametrize("batch,size,cin,cout,k,stride,kept", CASES)
@pytest.mark.parametrize("scale", [None, 0.37])
def test_forward_and_gradients_equal_the_masked_dense_convolution(batch, size, cin, cout, k,
                                                                  stride, kept, scale,
                                                                  kernel_path):
  x, kernel, mask = _problem(0, batch, size, cin, cout, k, kept)
  pad = ((k // 2, k // 2),) * 2
  s = 1.0 if scale is None else scale

  def dense(x, kernel):
    return jax.lax.conv_general_dilated(x, s * kernel, (stride, stride), pad,
                                        dimension_numbers=_CNHW)

  def sparse(x, kernel):
    return sparse_conv.conv(x, kernel, mask, kept + 3, (stride, stride), pad, scale=scale)

  dy = jnp.asarray(np.random.default_rng(1).standard_normal(
      jax.eval_shape(dense, x, kernel).shape), jnp.float32)
  want = jax.jit(lambda x, k: _value_and_grads(dense, x, k, dy))(x, kernel)
  got = jax.jit(lambda x, k: _value_and_grads(sparse, x, k, dy))(x, kernel)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)   # outputs
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)   # input gradient
  np.testing.assert_allclose(got[2], want[2] * mask, rtol=1e-5, atol=1e-4)  # kept positions
  assert not np.any(np.asarray(got[2])[~np.asarray(mask)])  # and nothing elsewhere


@pytest.mark.parametrize("batch,size,cin,cout,k,stride,kept", CASES)
def test_dense_kernel_grad_equals_the_dense_convolution_gradient(batch, size, cin, cout, k,
                                                                 stride, kept, kernel_path):
  # Mask-update steps: forward and input gradient over kept weights, kernel gradient at
  # every position, weight sharing's scale included.
  x, kernel, mask = _problem(6, batch, size, cin, cout, k, kept)
  pad = ((k // 2, k // 2),) * 2

  def dense(x, kernel, s):
    return jax.lax.conv_general_dilated(x, s * kernel, (stride, stride), pad,
                                        dimension_numbers=_CNHW)

  def sparse(x, kernel, s):
    return sparse_conv.conv(x, kernel, mask, kept + 2, (stride, stride), pad, scale=s,
                            dense_kernel_grad=True)

  dy = jnp.asarray(np.random.default_rng(7).standard_normal(
      jax.eval_shape(dense, x, kernel, 0.5).shape), jnp.float32)
  def run(fn):
    def value_and_grads(*args):
      out, vjp = jax.vjp(fn, *args)
      return (out, *vjp(dy))
    return jax.jit(value_and_grads)(x, kernel, 0.5)

  got, want = run(sparse), run(dense)
  assert np.count_nonzero(np.asarray(got[2])[~np.asarray(mask)]) > 0  # pruned positions too
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("pad", [((0, 0), (0, 0)), ((0, 1), (1, 0)), ((2, 1), (1, 2))])
def test_paddings_other_than_same(stride, pad, kernel_path):
  # Outputs smaller or larger than the input take the phase layout even at stride 1.
  x, kernel, mask = _problem(7, 3, 9, 5, 6, 3, 50)
  dense = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
      x, k, (stride, stride), pad, dimension_numbers=_CNHW)
  dy = jnp.asarray(np.random.default_rng(2).standard_normal(
      jax.eval_shape(dense, x, kernel).shape), jnp.float32)
  got = jax.jit(lambda x, k: _value_and_grads(
      lambda x, k: sparse_conv.conv(x, k, mask, 50, (stride, stride), pad), x, k, dy))(x, kernel)
  want = _value_and_grads(dense, x, kernel, dy)
  for g, w, m in zip(got, want, (1, 1, mask)):
    np.testing.assert_allclose(g, w * m, rtol=1e-5, atol=1e-4)


def test_kept_weights_at_zero_get_their_gradient(kernel_path):
  # RigL grows weights at 0; their gradient must still be computed.
  x, kernel, mask = _problem(5, 2, 6, 3, 4, 3, 12)
  kernel = kernel.at[np.nonzero(np.asarray(mask))].set(0.0)
  pad = ((1, 1), (1, 1))
  dy = jnp.ones((4, 2, 6, 6), jnp.float32)
  got = _value_and_grads(lambda x, k: sparse_conv.conv(x, k, mask, 15, (1, 1), pad),
                         x, kernel, dy)
  want = _value_and_grads(lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), pad, dimension_numbers=_CNHW), x, kernel, dy)
  assert not np.any(np.asarray(got[0])) and np.all(np.asarray(got[2])[np.asarray(mask)] != 0)
  np.testing.assert_allclose(got[2], want[2] * mask, rtol=1e-5, atol=1e-4)


def test_the_scale_gets_the_weight_sharing_gradient(kernel_path):
  x, kernel, mask = _problem(2, 2, 6, 3, 4, 3, 12)
  pad = ((1, 1), (1, 1))

  def loss(conv):
    return lambda s: jnp.sum(conv(s) ** 2)

  dense = loss(lambda s: jax.lax.conv_general_dilated(x, s * kernel, (1, 1), pad,
                                                      dimension_numbers=_CNHW))
  sparse = loss(lambda s: sparse_conv.conv(x, kernel, mask, 12, (1, 1), pad, scale=s))
  np.testing.assert_allclose(jax.grad(sparse)(0.6), jax.grad(dense)(0.6), rtol=1e-5)


def test_bfloat16_stays_bfloat16_and_close_to_float32(kernel_path):
  x, kernel, mask = _problem(3, 4, 8, 8, 8, 3, 30)
  pad = ((1, 1), (1, 1))

  def run(x, kernel):
    return jax.jit(lambda x, k: _value_and_grads(
        lambda x, k: sparse_conv.conv(x, k.astype(x.dtype), mask, 30, (1, 1), pad),
        x, k, jnp.ones((8, 4, 8, 8), x.dtype)))(x, kernel)

  got, want = run(x.astype(jnp.bfloat16), kernel), run(x, kernel)
  assert got[0].dtype == got[1].dtype == jnp.bfloat16 and got[2].dtype == jnp.float32
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g, np.float32), w, rtol=0.05, atol=0.1)


def test_mask_changes_reuse_the_compiled_program(kernel_path):
  x, kernel, mask = _problem(4, 2, 6, 3, 4, 3, 10)
  pad = ((1, 1), (1, 1))
  fn = jax.jit(lambda x, k, m: sparse_conv.conv(x, k, m, 16, (1, 1), pad))
  fn(x, kernel, mask)
  other = jnp.roll(mask, 1)
  got = fn(x, kernel * other, other)
  want = jax.lax.conv_general_dilated(x, kernel * other, (1, 1), pad, dimension_numbers=_CNHW)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert fn._cache_size() == 1


def test_kept_taps_lists_the_mask_and_pads_with_invalid_slots():
  mask = jnp.zeros((3, 3, 2, 2), bool).at[0, 1, 1, 0].set(True).at[2, 2, 0, 1].set(True)
  indices, valid = jax.jit(sparse_conv.kept_taps, static_argnums=1)(mask, 4)
  flat = np.flatnonzero(np.asarray(mask))
  assert indices[:2].tolist() == flat.tolist() and valid.tolist() == [True, True, False, False]


def test_select_by_mode_density_and_backend():
  capacity = {"a": 5, "b": 500, "c": 0}
  sizes = {"a": 10_000, "b": 1_000, "c": 100}
  assert sparse_conv.select(capacity, sizes, "off", "cpu") == ()
  assert sparse_conv.select(capacity, sizes, "on", "gpu") == (("a", 5), ("b", 500), ("c", 1))
  assert sparse_conv.select(capacity, sizes, "auto", "cpu") == (("a", 5), ("c", 1))
  assert sparse_conv.select(capacity, sizes, "auto", "gpu") == ()


@pytest.mark.parametrize("size,kept,capacity", [(36, 36, 36), (1000, 1, 1), (4096, 37, 40),
                                                (50_000, 700, 700), (50_000, 3, 64)])
def test_kept_taps_equals_flatnonzero(size, kept, capacity):
  rng = np.random.default_rng(size + kept)
  flat = np.zeros(size, bool)
  flat[rng.choice(size, kept, replace=False)] = True
  flat[0] = True  # An occupied first row: padding rows repeat row 0.
  count = int(flat.sum())
  indices, valid = jax.jit(sparse_conv.kept_taps, static_argnums=1)(jnp.asarray(flat), capacity)
  assert np.asarray(indices)[:count].tolist() == np.flatnonzero(flat)[:capacity].tolist()
  assert np.asarray(valid).tolist() == [i < count for i in range(capacity)]
  assert np.all((np.asarray(indices) >= 0) & (np.asarray(indices) < size))
