"""2-D convolution whose kernel gradient is computed with matrix products.

XLA's CPU backend computes a convolution's kernel gradient as another convolution
whose window is the whole output feature map; for ResNet's 32x32x64 3x3 convolutions
that runs at ~3.5 GFLOP/s, 15x slower than the forward pass (benchmarks/RESULTS.md,
the XLA CPU gap). Written as one matrix product per kernel offset, sum over (batch,
height, width) of input x shifted output gradient (or, strided, input patch x output
gradient), the same gradient runs about 6x faster there; a whole dense ResNet-34 train
step, 1.15x (benchmarks/RESULTS.md). The input gradient and the forward pass stay XLA's
own. GPUs and TPUs keep XLA's convolution gradients (`kernel_grad="auto"`).
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp

KERNEL_GRADS = ("auto", "xla", "matmul")
_NHWC = ("NHWC", "HWIO", "NHWC")
# Below this many rows of the kernel (kh * kw * in_channels) one im2col product beats
# one product per offset (too thin to use the cores well).
_IM2COL_MAX_ROWS = 256


def uses_matmul(kernel_grad: str) -> bool:
  """Whether `kernel_grad` (one of KERNEL_GRADS, checked by create_model) means the matmul
  kernel gradient on this backend."""
  return kernel_grad == "matmul" or (kernel_grad == "auto" and jax.default_backend() == "cpu")


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated` with the matmul kernel gradient for plain NHWC/HWIO
  convolutions (no dilation, no groups); anything else is passed to lax unchanged."""
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  plain = (lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc
           and _is_one(lhs_dilation) and _is_one(rhs_dilation))
  if not plain or feature_group_count != 1 or precision or preferred_element_type:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  lhs, rhs = same_variance(lhs, rhs)
  return conv_nhwc(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding))


def same_variance(*arrays):
  """Inside shard_map: marks every array as varying over the mesh axes any of them varies
  over (what lax does implicitly for its own ops; a custom_vjp's gradient must match)."""
  varying = [jax.typeof(a).mat.varying for a in arrays]
  axes = frozenset().union(*varying)
  return tuple(lax.pcast(a, tuple(sorted(axes - v)), to="varying") if axes - v else a
               for a, v in zip(arrays, varying))


def _is_one(dilation):
  return dilation is None or all(d == 1 for d in dilation)


def _conv(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_nhwc(x, kernel, strides, padding):
  """NHWC x HWIO convolution; strides (sh, sw), padding ((lo, hi), (lo, hi))."""
  return _conv(x, kernel, strides, padding)


def _conv_fwd(x, kernel, strides, padding):
  return _conv(x, kernel, strides, padding), (x, kernel)


def _conv_bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x: _conv(x, kernel, strides, padding), x)
  grad = kernel_grad(x, dy, kernel.shape, strides, padding)
  return input_vjp(dy)[0], grad.astype(kernel.dtype)


conv_nhwc.defvjp(_conv_fwd, _conv_bwd)


def kernel_grad(x, dy, kernel_shape, strides, padding, layout: str = "NHWC"):
  """d loss / d kernel (float32) of an NHWC (or CNHW: `layout`) x HWIO convolution from its
  input and the gradient of its output.

  kernel[i, j] = sum over b, h, w of x_padded[b, h*sh + i, w*sw + j, :] (outer) dy[b, h, w, :].
  At stride 1 the windows are taken of the (padded) output gradient instead, the input
  staying as it is: x_padded[h + i] dy[h] = x[h'] dy_padded[h' + kh - 1 - i]. Windows of
  x would only depend on x, and XLA then computes them (a padded copy of each layer's
  input) in the forward pass and keeps them alive until the backward pass.
  """
  kh, kw, cin, cout = kernel_shape
  first = layout == "CNHW"
  rows = 2 if first else 1  # the height axis (width follows it)
  features = 0 if first else -1
  product = functools.partial(jnp.einsum, "cbhw,obhw->co" if first else "bhwc,bhwo->co",
                              preferred_element_type=jnp.float32)
  if tuple(strides) == (1, 1):
    (pt, pb), (pl, pr) = padding
    gp = _pad_spatial(dy, rows, ((kh - 1 - pt, x.shape[rows] + pt - dy.shape[rows]),
                                 (kw - 1 - pl, x.shape[rows + 1] + pl - dy.shape[rows + 1])))
    windows = [_window(gp, rows, (kh - 1 - i, kw - 1 - j), x.shape[rows:rows + 2], (1, 1))
               for i in range(kh) for j in range(kw)]
    if kh * kw * cout <= _IM2COL_MAX_ROWS:  # (cin, kh * kw * cout), offsets major
      grad = product(x, jnp.concatenate(windows, axis=features))
      return grad.reshape(cin, kh, kw, cout).transpose(1, 2, 0, 3)
    return jnp.stack([product(x, w) for w in windows]).reshape(kernel_shape)
  xp = _pad_spatial(x, rows, padding)
  patches = [_window(xp, rows, (i, j), dy.shape[rows:rows + 2], strides)
             for i in range(kh) for j in range(kw)]
  if kh * kw * cin <= _IM2COL_MAX_ROWS:
    grad = product(jnp.concatenate(patches, axis=features), dy)
  else:
    grad = jnp.stack([product(p, dy) for p in patches])
  return grad.reshape(kernel_shape)


def _pad_spatial(a, rows, padding):
  spatial = [(0, 0)] * a.ndim
  spatial[rows:rows + 2] = padding
  return jnp.pad(a, spatial)


def _window(a, rows, start, size, strides):
  """The (size) window of `a`'s spatial axes (from `rows` on) at `start`, strided."""
  begin, limit, step = [0] * a.ndim, list(a.shape), [1] * a.ndim
  for axis, (s, n, k) in enumerate(zip(start, size, strides)):
    begin[rows + axis], limit[rows + axis], step[rows + axis] = s, s + k * (n - 1) + 1, k
  return lax.slice(a, begin, limit, step)
