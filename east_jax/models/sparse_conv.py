"""Convolution over the kept weights only: cost follows the kept count, not the kernel.

At 99.9%+ sparsity a 3x3x512x512 kernel keeps tens to hundreds of weights. Each kept
weight k at (i, j, c_in, c_out) adds v_k times one input plane (channel c_in, shifted by
(i, j), strided) to one output plane (channel c_out). With activations laid out channel
first, a plane is a contiguous window, so

  forward        y[c_out_k] += v_k * x[c_in_k, window_k]       a gather and a scatter-add
  input grad     dx[c_in_k, window_k] += v_k * dy[c_out_k]     a gather and a scatter-add
  kernel grad    g_k = sum(x[c_in_k, window_k] * dy[c_out_k])  at kept positions only

each costing about kept x output positions, plus a layout change per tensor. Strides are
handled by splitting the padded input into its s x s phases (space-to-depth), inside which
every window is contiguous. The kept positions come from the mask inside the jitted step
as a static-size index list (`kept_taps`), so changing masks never recompiles; unused
slots carry weight 0.

The kernel gradient exists only at kept positions: a train step that needs the dense
gradient (RigL's growth) must use the dense convolution (train.py compiles that step
separately).
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp

SPARSE_COMPUTE = ("auto", "on", "off")
# "auto" on XLA's CPU backend computes a layer over its kept weights when it keeps at most
# this fraction of its kernel (crossover measured by benchmarks/sparse_compute.py --layers).
# Other backends keep their dense convolutions under "auto" (not measured here yet).
CPU_MAX_DENSITY = 0.01


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
    capacity = {n: c for n, c in capacity.items() if c <= CPU_MAX_DENSITY * sizes[n]}
  return tuple((n, max(1, c)) for n, c in capacity.items())


def kept_taps(mask, capacity: int):
  """(indices, valid): the flat indices of `mask`'s kept positions padded to `capacity`
  slots (static), and which slots are real. Works on traced masks under jit."""
  flat = mask.reshape(-1)
  indices = jnp.nonzero(flat, size=capacity, fill_value=0)[0].astype(jnp.int32)
  valid = jnp.arange(capacity) < jnp.sum(flat, dtype=jnp.int32)
  return indices, valid


def kept_values(kernel, indices, valid):
  """The kernel's values at the kept slots (0 in unused slots); differentiable."""
  return jnp.where(valid, kernel.reshape(-1)[indices], jnp.zeros((), kernel.dtype))


def conv(x, kernel, mask, capacity: int, strides, padding, scale=None):
  """NHWC x HWIO convolution of `x` with `kernel * mask` (times `scale`, weight sharing)
  computed over the kept weights only; the kernel gradient is 0 off the mask."""
  indices, valid = kept_taps(mask, capacity)
  values = kept_values(kernel, indices, valid)
  if scale is not None:
    values = values * scale
  x, values = _same_variance(x, values.astype(x.dtype))
  return sparse_conv(x, values, indices, tuple(kernel.shape), tuple(strides),
                     tuple(tuple(p) for p in padding))


def _same_variance(*arrays):
  """Inside shard_map: marks every array as varying over the mesh axes any of them varies
  over (a custom_vjp's cotangents must match its inputs'; the pcast's transpose then
  sums the kept-value gradients over the mesh)."""
  varying = [jax.typeof(a).mat.varying for a in arrays]
  axes = frozenset().union(*varying)
  return tuple(lax.pcast(a, tuple(sorted(axes - v)), to="varying") if axes - v else a
               for a, v in zip(arrays, varying))


class _Geometry:
  """Index arithmetic of one convolution: kernel shape, strides, padding, input shape."""

  def __init__(self, x_shape, kernel_shape, strides, padding):
    self.batch, self.height, self.width, self.cin = x_shape
    self.kh, self.kw, _, self.cout = kernel_shape
    self.sh, self.sw = strides
    (self.pt, self.pb), (self.pl, self.pr) = padding
    self.ho = (self.height + self.pt + self.pb - self.kh) // self.sh + 1
    self.wo = (self.width + self.pl + self.pr - self.kw) // self.sw + 1
    # Phase grid: every phase holds ceil(padded / s) rows, enough for every window.
    self.hq = max(-(-(self.height + self.pt + self.pb) // self.sh),
                  (self.kh - 1) // self.sh + self.ho)
    self.wq = max(-(-(self.width + self.pl + self.pr) // self.sw),
                  (self.kw - 1) // self.sw + self.wo)

  def taps(self, indices):
    """Flat HWIO indices -> (c_in, phase_h, phase_w, row, col) window starts, c_out."""
    i, rest = jnp.divmod(indices, self.kw * self.cin * self.cout)
    j, rest = jnp.divmod(rest, self.cin * self.cout)
    ci, co = jnp.divmod(rest, self.cout)
    starts = jnp.stack([ci, i % self.sh, j % self.sw, i // self.sh, j // self.sw], axis=1)
    return starts, co

  def to_phases(self, x):
    """NHWC -> (C, sh, sw, B, hq, wq): padded, split into stride phases, channel first."""
    hp, wp = self.hq * self.sh, self.wq * self.sw
    x = jnp.pad(x, ((0, 0), (self.pt, hp - self.height - self.pt),
                    (self.pl, wp - self.width - self.pl), (0, 0)))
    x = x.reshape(self.batch, self.hq, self.sh, self.wq, self.sw, self.cin)
    return x.transpose(5, 2, 4, 0, 1, 3)

  def from_phases(self, xq):
    """Inverse of `to_phases` (the padding is cropped)."""
    x = xq.transpose(3, 4, 1, 5, 2, 0).reshape(self.batch, self.hq * self.sh,
                                                 self.wq * self.sw, self.cin)
    return x[:, self.pt:self.pt + self.height, self.pl:self.pl + self.width]

  @property
  def window(self):
    return (1, 1, 1, self.batch, self.ho, self.wo)


_PLANES = lax.GatherDimensionNumbers(offset_dims=(1, 2, 3), collapsed_slice_dims=(0, 1, 2),
                                     start_index_map=(0, 1, 2, 4, 5))
_ADD_PLANES = lax.ScatterDimensionNumbers(update_window_dims=(1, 2, 3),
                                          inserted_window_dims=(0, 1, 2),
                                          scatter_dims_to_operand_dims=(0, 1, 2, 4, 5))


def _planes(xq, starts, g):
  """(K, B, ho, wo): the input window of every kept tap."""
  return lax.gather(xq, starts, _PLANES, g.window, mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)


def _forward(x, values, indices, g):
  starts, co = g.taps(indices)
  planes = _planes(g.to_phases(x), starts, g) * values[:, None, None, None]
  # Sums accumulate in float32 (as XLA's convolutions do), whatever the compute dtype.
  y = jnp.zeros((g.cout, g.batch, g.ho, g.wo), jnp.float32).at[co].add(
      planes.astype(jnp.float32), mode="promise_in_bounds")
  return y.astype(x.dtype).transpose(1, 2, 3, 0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def sparse_conv(x, values, indices, kernel_shape, strides, padding):
  """NHWC convolution with the kernel of `kernel_shape` (HWIO) that is `values` at the
  flat `indices` and 0 elsewhere; gradients for `x` and `values` only."""
  return _forward(x, values, indices, _Geometry(x.shape, kernel_shape, strides, padding))


def _sparse_conv_fwd(x, values, indices, kernel_shape, strides, padding):
  y = sparse_conv(x, values, indices, kernel_shape, strides, padding)
  return y, (x, values, indices)


def _sparse_conv_bwd(kernel_shape, strides, padding, residuals, dy):
  x, values, indices = residuals
  g = _Geometry(x.shape, kernel_shape, strides, padding)
  starts, co = g.taps(indices)
  dy_planes = dy.transpose(3, 0, 1, 2)[co]  # (K, B, ho, wo)
  planes = _planes(g.to_phases(x), starts, g)
  values_grad = jnp.einsum("kbhw,kbhw->k", planes, dy_planes,
                           preferred_element_type=jnp.float32).astype(values.dtype)
  xq_grad = jnp.zeros((g.cin, g.sh, g.sw, g.batch, g.hq, g.wq), jnp.float32)
  xq_grad = lax.scatter_add(xq_grad, starts,
                            (dy_planes * values[:, None, None, None]).astype(jnp.float32),
                            _ADD_PLANES, mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)
  return g.from_phases(xq_grad).astype(x.dtype), values_grad, None


sparse_conv.defvjp(_sparse_conv_fwd, _sparse_conv_bwd)
