"""The ResNets' prunable layers: convolutions and the classifier, dense or over kept weights.

Each layer owns (or, for weight sharing, borrows) a `kernel` param. With `capacity` > 0
it reads its mask from the `masks` variable collection (the sparsity engine's masks,
passed to `apply` as `{"masks": masks}`) and computes over the kept weights only
(`sparse_conv`), in at most `capacity` slots; with `capacity` 0 it runs the dense
convolution or matmul. Both give the same outputs and the same kernel gradient at kept
positions; the gradient at pruned positions (RigL's growth) comes from the dense layer,
or from a sparse one with `dense_kernel_grad` (forward and input gradient stay sparse).
Convolutions take activations in the model's `layout`: NHWC, or CNHW (channel first),
the layout in which the sparse computation needs no transposes.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from east_jax.models import sparse_conv

# Kaiming-normal (fan_out), as torchvision initialises ResNet convolutions.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
MASKS = "masks"  # Variable collection holding the masks of the sparse layers.
LAYOUTS = ("NHWC", "CNHW")


def channel_axis(layout: str) -> int:
  return 0 if layout == "CNHW" else -1


def _padding(kernel_shape):
  """torch-style 'same' padding of an odd kernel."""
  return tuple((k // 2, k // 2) for k in kernel_shape[:2])


def _conv(x, kernel, mask, strides, *, capacity, dtype, layout, conv_general_dilated,
          dense_kernel_grad, scale=None):
  x = x.astype(dtype)
  strides = (strides, strides)
  if capacity:
    if layout != "CNHW":
      raise ValueError("Convolutions over kept weights need the CNHW layout.")
    return sparse_conv.conv(x, kernel.astype(dtype), mask, capacity, strides,
                            _padding(kernel.shape), scale=scale,
                            dense_kernel_grad=dense_kernel_grad)
  if scale is not None:
    kernel = scale * kernel
  def dense(x):
    return conv_general_dilated(x, kernel.astype(dtype), strides, _padding(kernel.shape),
                                dimension_numbers=("NHWC", "HWIO", "NHWC"))

  if layout == "CNHW":  # A dense layer of a sparse network: NHWC for XLA's convolution.
    return dense(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
  return dense(x)


class Conv(nn.Module):
  """Bias-free convolution with torch-compatible 'same' padding."""

  features: int
  kernel_size: tuple
  strides: int = 1
  capacity: int = 0
  dtype: Any = jnp.float32
  layout: str = "NHWC"
  conv_general_dilated: Callable = jax.lax.conv_general_dilated
  dense_kernel_grad: bool = False

  @nn.compact
  def __call__(self, x):
    cin = x.shape[channel_axis(self.layout)]
    kernel = self.param("kernel", conv_kernel_init, (*self.kernel_size, cin, self.features),
                        jnp.float32)
    mask = self.get_variable(MASKS, "kernel") if self.capacity else None
    return _conv(x, kernel, mask, self.strides, capacity=self.capacity, dtype=self.dtype,
                 layout=self.layout, conv_general_dilated=self.conv_general_dilated,
                 dense_kernel_grad=self.dense_kernel_grad)


class SharedConv(nn.Module):
  """A convolution with a kernel (and mask) owned by another block, times a learnable
  scalar (one per reusing conv, initialised U(0, 1)): EAST's weight sharing."""

  strides: int
  capacity: int = 0
  dtype: Any = jnp.float32
  layout: str = "NHWC"
  conv_general_dilated: Callable = jax.lax.conv_general_dilated
  dense_kernel_grad: bool = False

  @nn.compact
  def __call__(self, x, kernel, mask=None):
    scale = self.param("scale", nn.initializers.uniform(1.0), ())
    return _conv(x, kernel, mask, self.strides, capacity=self.capacity, dtype=self.dtype,
                 layout=self.layout, conv_general_dilated=self.conv_general_dilated,
                 dense_kernel_grad=self.dense_kernel_grad, scale=scale.astype(self.dtype))


class Dense(nn.Module):
  """Bias-free classifier; over kept weights it is a 1x1 convolution of the features."""

  features: int
  capacity: int = 0
  dtype: Any = jnp.float32
  dense_kernel_grad: bool = False

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features),
                        jnp.float32)
    x = x.astype(self.dtype)
    if not self.capacity:
      return x @ kernel.astype(self.dtype)
    mask = self.get_variable(MASKS, "kernel")
    y = sparse_conv.conv(x.T[:, :, None, None], kernel.astype(self.dtype)[None, None],
                         mask[None, None], self.capacity, (1, 1), ((0, 0), (0, 0)),
                         dense_kernel_grad=self.dense_kernel_grad)
    return y[:, :, 0, 0].T
