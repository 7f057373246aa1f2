"""Convolution over the kept weights only: cost follows the kept count, not the kernel.

At 99.9%+ sparsity a 3x3x512x512 kernel keeps tens to hundreds of weights. Each kept
weight k at (i, j, c_in, c_out) adds v_k times one input plane (channel c_in, shifted by
(i, j), strided) to one output plane (channel c_out). With activations laid out channel
first, a plane is a contiguous window, so

  forward        y[c_out_k] += v_k * x[c_in_k, window_k]       a gather and a scatter-add
  input grad     dx[c_in_k, window_k] += v_k * dy[c_out_k]     a gather and a scatter-add
  kernel grad    g_k = sum(x[c_in_k, window_k] * dy[c_out_k])  at kept positions only

each costing about kept x output positions. Activations are channel first (CNHW: the
model runs in that layout when it computes sparsely), so there is no layout change per
convolution; strides are handled by viewing the padded input as (C, B, H/s, s, W/s, s),
in which every window is a plain slice. The kept positions come from the mask inside the
jitted step as a static-size index list (`kept_taps`), so changing masks never
recompiles; unused slots carry weight 0.

On the CPU the three run as native kernels (east_jax/kernels: one pass over each
image's planes while every kept weight visits them, about 10x faster than XLA's
gather / scatter at ResNet-34's 32x32 stage); elsewhere, or without a C++ compiler, as
XLA gathers and scatter-adds over chunks of taps.

By default the kernel gradient exists only at kept positions. A step that needs it at
every position (RigL's growth, on mask-update steps) asks for `dense_kernel_grad`: the
forward pass and the input gradient stay over the kept weights, and the kernel gradient
is one matrix product per kernel offset, (c_in, B*H*W) x (B*H*W, c_out) in this layout,
a third of a dense convolution's work.
"""

import contextlib
import functools
import math

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from east_jax import kernels
from east_jax.models import conv as conv_lib
from east_jax.models.conv import same_variance

SPARSE_COMPUTE = ("auto", "on", "off")
# "auto" on XLA's CPU backend computes a layer over its kept weights when it keeps at most
# this fraction of its kernel. `python -m benchmarks.sparse_compute --layers` (2 cores,
# 2026-12-02; forward + both gradients, batch 128): the native kernels beat the dense
# convolution up to about 10% kept at 4x4 (at 5%: 1.7x faster) and well beyond it at
# 8x8 to 32x32; XLA's gather / scatter path (no C++ compiler; 2026-12-01) only to
# 0.5-0.7% at 4x4, 1-1.5% at 8x8 and 16x16. Other backends keep their dense
# convolutions under "auto" (not measured yet).
CPU_MAX_DENSITY = 0.05
XLA_CPU_MAX_DENSITY = 0.005
# Largest planes buffer of one chunk of taps (16 MiB in float32). 4 MiB lowered the peak
# at 99.9% (ResNet-34 RigL, batch 128: 1508 -> 1411 MB) but raised it at 99.99% (1014 ->
# 1207 MB) and slowed batch-128 inference there 2-3x (benchmarks/RESULTS.md, 2026-12-01).
_CHUNK_ELEMENTS = 1 << 22
_native_allowed = True


@contextlib.contextmanager
def xla_only():
  """Within this block, programs traced use XLA's gather / scatter path even on the CPU
  (benchmarks and tests compare the two)."""
  global _native_allowed
  previous, _native_allowed = _native_allowed, False
  try:
    yield
  finally:
    _native_allowed = previous


def _native() -> bool:
  return _native_allowed and jax.default_backend() == "cpu" and kernels.available()


def kernel_path() -> str:
  """Which implementation computes over the kept weights here, in one line."""
  if jax.default_backend() != "cpu":
    return f"XLA gather / scatter on {jax.default_backend()}"
  if _native():
    return "native CPU kernels" + kernels.status().removeprefix("native")
  reason = kernels.status() if _native_allowed else "not used in this block"
  return f"XLA gather / scatter (native CPU kernels {reason})"


def select(capacity: dict[str, int], sizes: dict[str, int], mode: str,
           backend: str) -> tuple[tuple[str, int], ...]:
  """((layer, slots), ...) of the layers to compute over their kept weights.

  capacity: each masked layer's largest kept count; sizes: its kernel size;
  mode: "on" (every masked layer), "off" (none) or "auto" (by density and backend).
  """
  if mode not in SPARSE_COMPUTE:
    raise ValueError(f"sparse_compute must be one of {SPARSE_COMPUTE}, got {mode!r}")
  if mode == "off" or (mode == "auto" and backend != "cpu"):
    return ()
  if mode == "auto":
    limit = CPU_MAX_DENSITY if _native_allowed and kernels.available() else XLA_CPU_MAX_DENSITY
    capacity = {n: c for n, c in capacity.items() if c <= limit * sizes[n]}
  return tuple((n, max(1, c)) for n, c in capacity.items())


def kept_taps(mask, capacity: int):
  """(indices, valid): the flat indices of `mask`'s kept positions in increasing order,
  padded to `capacity` slots (static), and which slots are real. Works on traced masks.

  Two passes of `nonzero` on a (rows, width) view: first the rows holding any kept
  position (at most `capacity` of them), then the positions inside those rows; a
  single `nonzero` over a large kernel costs ~10x more on XLA's CPU backend.
  """
  flat = mask.reshape(-1)
  width = _row_width(flat.size, capacity)
  rows = -(-flat.size // width)
  grid = jnp.pad(flat, (0, rows * width - flat.size)).reshape(rows, width)
  occupied = jnp.any(grid, axis=1)
  num_rows = min(capacity, rows)
  row_ids = jnp.nonzero(occupied, size=num_rows, fill_value=0)[0]
  real_rows = jnp.arange(num_rows) < jnp.sum(occupied, dtype=jnp.int32)
  inner = jnp.nonzero((grid[row_ids] & real_rows[:, None]).reshape(-1), size=capacity,
                      fill_value=0)[0]
  indices = (row_ids[inner // width] * width + inner % width).astype(jnp.int32)
  valid = jnp.arange(capacity) < jnp.sum(flat, dtype=jnp.int32)
  return indices, valid


def _row_width(size: int, capacity: int) -> int:
  """A power of two near sqrt(size / capacity): balances the two `nonzero` passes."""
  return 1 << max(0, round(0.5 * math.log2(max(1.0, size / max(1, capacity)))))


def kept_values(kernel, indices, valid):
  """The kernel's values at the kept slots (0 in unused slots); differentiable."""
  return jnp.where(valid, kernel.reshape(-1)[indices], jnp.zeros((), kernel.dtype))


def conv(x, kernel, mask, capacity: int, strides, padding, scale=None,
         dense_kernel_grad: bool = False):
  """CNHW (channel-first) x HWIO convolution of `x` with `kernel * mask` (times `scale`,
  weight sharing) over the kept weights only. The kernel gradient is 0 off the mask, or,
  with `dense_kernel_grad`, that of `kernel` at every position (then `kernel` must be 0
  off the mask, as the sparsity engine keeps it)."""
  indices, valid = kept_taps(mask, capacity)
  count = jnp.sum(valid, dtype=jnp.int32)
  geometry = (tuple(kernel.shape), tuple(strides), tuple(tuple(p) for p in padding))
  if dense_kernel_grad:
    if scale is not None:
      kernel = kernel * scale
    x, kernel = same_variance(x, kernel.astype(x.dtype))
    return sparse_conv_dense_grad(x, kernel, indices, count, *geometry)
  values = kept_values(kernel, indices, valid)
  if scale is not None:
    values = values * scale
  x, values = same_variance(x, values.astype(x.dtype))
  return sparse_conv(x, values, indices, count, *geometry)


class _Geometry:
  """Index arithmetic of one convolution: CNHW input shape, HWIO kernel, strides, padding."""

  def __init__(self, x_shape, kernel_shape, strides, padding):
    self.cin, self.batch, self.height, self.width = x_shape
    self.kh, self.kw, _, self.cout = kernel_shape
    self.sh, self.sw = strides
    (self.pt, self.pb), (self.pl, self.pr) = padding
    self.ho = (self.height + self.pt + self.pb - self.kh) // self.sh + 1
    self.wo = (self.width + self.pl + self.pr - self.kw) // self.sw + 1
    # Rows / columns of each stride phase: enough for the padded input and every window.
    self.hq = max(-(-(self.height + self.pt + self.pb) // self.sh),
                  (self.kh - 1) // self.sh + self.ho)
    self.wq = max(-(-(self.width + self.pl + self.pr) // self.sw),
                  (self.kw - 1) // self.sw + self.wo)

  def taps(self, indices):
    """Flat HWIO indices -> window starts in the phase view, and output channels."""
    i, rest = jnp.divmod(indices, self.kw * self.cin * self.cout)
    j, rest = jnp.divmod(rest, self.cin * self.cout)
    ci, co = jnp.divmod(rest, self.cout)
    starts = jnp.stack([ci, i // self.sh, i % self.sh, j // self.sw, j % self.sw], axis=1)
    return starts, co

  def to_phases(self, x):
    """(C, B, H, W) -> (C, B, hq, sh, wq, sw): padded, strides split off (a reshape)."""
    hp, wp = self.hq * self.sh, self.wq * self.sw
    x = jnp.pad(x, ((0, 0), (0, 0), (self.pt, hp - self.height - self.pt),
                    (self.pl, wp - self.width - self.pl)))
    return x.reshape(self.cin, self.batch, self.hq, self.sh, self.wq, self.sw)

  def from_phases(self, xq):
    """Inverse of `to_phases` (the padding is cropped)."""
    x = xq.reshape(self.cin, self.batch, self.hq * self.sh, self.wq * self.sw)
    return x[:, :, self.pt:self.pt + self.height, self.pl:self.pl + self.width]

  @property
  def window(self):
    return (1, self.batch, self.ho, 1, self.wo, 1)


_PLANES = lax.GatherDimensionNumbers(offset_dims=(1, 2, 3), collapsed_slice_dims=(0, 3, 5),
                                     start_index_map=(0, 2, 3, 4, 5))
_ADD_PLANES = lax.ScatterDimensionNumbers(update_window_dims=(1, 2, 3),
                                          inserted_window_dims=(0, 3, 5),
                                          scatter_dims_to_operand_dims=(0, 2, 3, 4, 5))
_IN_BOUNDS = lax.GatherScatterMode.PROMISE_IN_BOUNDS


def _planes(xq, starts, g):
  """(K, B, ho, wo): the input window of every kept tap."""
  return lax.gather(xq, starts, _PLANES, g.window, mode=_IN_BOUNDS)


def _chunked_taps(g, indices, values):
  """(starts, c_out, values) of the kept taps split into chunks along a leading axis, so
  that the planes of one chunk hold at most _CHUNK_ELEMENTS values; padding taps repeat
  tap 0 with weight 0."""
  size = max(1, min(len(indices), _CHUNK_ELEMENTS // (g.batch * g.ho * g.wo)))
  pad = -len(indices) % size
  starts, co = g.taps(jnp.concatenate([indices, jnp.broadcast_to(indices[:1], (pad,))]))
  values = jnp.concatenate([values, jnp.zeros(pad, values.dtype)])
  return tuple(a.reshape(-1, size, *a.shape[1:]) for a in (starts, co, values))


def _forward(xq, values, indices, g):
  def add_chunk(y, chunk):
    starts, co, values = chunk
    planes = _planes(xq, starts, g) * values[:, None, None, None]
    return y.at[co].add(planes.astype(jnp.float32), mode="promise_in_bounds"), None

  # Sums accumulate in float32 (as XLA's convolutions do), whatever the compute dtype.
  y = same_variance(jnp.zeros((g.cout, g.batch, g.ho, g.wo), jnp.float32), xq, values)[0]
  y, _ = lax.scan(add_chunk, y, _chunked_taps(g, indices, values))
  return y.astype(xq.dtype)


def _native_call(target, results, g, *args):
  """A native kernel on float32 copies of `args` (integer arguments as they are)."""
  args = [a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a
          for a in args]
  geometry = {name: np.int64(value) for name, value in
              (("kh", g.kh), ("kw", g.kw), ("sh", g.sh), ("sw", g.sw), ("pt", g.pt),
               ("pl", g.pl))}
  out = jax.ffi.ffi_call(target, results)(*args, **geometry)
  # Inside shard_map the results vary over the mesh axes their arguments vary over.
  if isinstance(out, (tuple, list)):
    return same_variance(*out, *args)[:len(out)]
  return same_variance(out, *args)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def sparse_conv(x, values, indices, count, kernel_shape, strides, padding):
  """CNHW convolution with the kernel of `kernel_shape` (HWIO) that is `values` at the
  flat `indices` and 0 elsewhere; only the first `count` slots are real. Gradients for
  `x` and `values` only.

  The XLA path processes taps in chunks (a `scan`), so that no buffer larger than about
  _CHUNK_ELEMENTS values per chunk is ever live, however many weights a layer keeps.
  """
  g = _Geometry(x.shape, kernel_shape, strides, padding)
  if _native():
    y = jax.ShapeDtypeStruct((g.cout, g.batch, g.ho, g.wo), jnp.float32)
    return _native_call(kernels.FORWARD, y, g, x, values, indices, count).astype(x.dtype)
  return _forward(g.to_phases(x), values, indices, g)


def _sparse_conv_fwd(x, values, indices, count, kernel_shape, strides, padding):
  y = sparse_conv(x, values, indices, count, kernel_shape, strides, padding)
  return y, (x, values, indices, count)


def _sparse_conv_bwd(kernel_shape, strides, padding, residuals, dy):
  return (*_input_and_values_grads(kernel_shape, strides, padding, residuals, dy), None, None)


def _input_and_values_grads(kernel_shape, strides, padding, residuals, dy, after=None):
  """(x gradient, values gradient); on the native path computed only once `after` exists."""
  x, values, indices, count = residuals
  g = _Geometry(x.shape, kernel_shape, strides, padding)
  if _native():
    results = (jax.ShapeDtypeStruct(x.shape, jnp.float32),
               jax.ShapeDtypeStruct(values.shape, jnp.float32))
    x_grad, values_grad = _native_call(kernels.BACKWARD, results, g, x, values, indices,
                                       count, dy, count if after is None else after)
    return x_grad.astype(x.dtype), values_grad.astype(values.dtype)
  xq = g.to_phases(x)

  def chunk_grads(xq_grad, chunk):
    starts, co, values = chunk
    dy_planes = dy[co]  # (size, B, ho, wo)
    values_grad = jnp.einsum("kbhw,kbhw->k", _planes(xq, starts, g), dy_planes,
                             preferred_element_type=jnp.float32)
    xq_grad = lax.scatter_add(xq_grad, starts,
                              (dy_planes * values[:, None, None, None]).astype(jnp.float32),
                              _ADD_PLANES, mode=_IN_BOUNDS)
    return xq_grad, values_grad

  zeros = same_variance(jnp.zeros(xq.shape, jnp.float32), xq, dy, values)[0]
  xq_grad, values_grad = lax.scan(chunk_grads, zeros, _chunked_taps(g, indices, values))
  values_grad = values_grad.reshape(-1)[:len(values)].astype(values.dtype)
  return g.from_phases(xq_grad).astype(xq.dtype), values_grad


sparse_conv.defvjp(_sparse_conv_fwd, _sparse_conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def sparse_conv_dense_grad(x, kernel, indices, count, kernel_shape, strides, padding):
  """`sparse_conv` with the kernel's values at the first `count` of the flat `indices`,
  whose kernel gradient is at every position (conv.kernel_grad in this layout)."""
  return _dense_grad_fwd(x, kernel, indices, count, kernel_shape, strides, padding)[0]


def _dense_grad_fwd(x, kernel, indices, count, kernel_shape, strides, padding):
  values = kept_values(kernel, indices, jnp.arange(len(indices)) < count)
  y = sparse_conv(x, values, indices, count, kernel_shape, strides, padding)
  return y, (x, values, indices, count)


def _dense_grad_bwd(kernel_shape, strides, padding, residuals, dy):
  kernel_grad = conv_lib.kernel_grad(residuals[0], dy, kernel_shape, strides, padding,
                                     layout="CNHW")
  # The input gradient only after the kernel's: XLA would otherwise leave every layer's
  # kernel gradient to the end of the backward pass, keeping all their output gradients
  # alive until then.
  x_grad = _input_and_values_grads(kernel_shape, strides, padding, residuals, dy,
                                   after=kernel_grad)[0]
  return x_grad, kernel_grad.astype(residuals[1].dtype), None, None


sparse_conv_dense_grad.defvjp(_dense_grad_fwd, _dense_grad_bwd)
