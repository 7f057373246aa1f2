"""ResNet-18/34/50 (post-activation, v1.5) with CIFAR and ImageNet stems.

`conv` and `act` are injected module factories (EAST swaps in DyReLU);
`share_ratio` turns on EAST's weight sharing inside each stage; `sparse_capacity` makes the
named layers compute over their kept weights only (models/layers.py), with the masks passed
to `apply` as the `masks` collection. Convolutions have no bias, the classifier has no bias,
projection shortcuts are 1x1 conv + BatchNorm.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from east_jax.errors import UserInputError
from east_jax.models import conv as conv_lib
from east_jax.models import layers

STEM, CLASSIFIER = "stem_conv", "classifier"  # Module names of the first and output layers.
STEM_KERNEL, CLASSIFIER_KERNEL = f"{STEM}/kernel", f"{CLASSIFIER}/kernel"

ModuleDef = Any

class ReLU(nn.Module):
  """Plain ReLU as a module, so that activations are injectable like convs."""

  layout: str = "NHWC"  # Elementwise: any layout.

  @nn.compact
  def __call__(self, x, beta=None):
    del beta  # Only DyReLU uses it.
    return nn.relu(x)


class _Block(nn.Module):
  """Shared plumbing of the residual blocks: conv by name, own or reused kernel."""

  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: ModuleDef
  dtype: Any = jnp.float32
  conv_general_dilated: Callable = jax.lax.conv_general_dilated
  capacity: Any = None  # {conv name: kept-weight slots} of the convs computed sparsely
  layout: str = "NHWC"
  dense_kernel_grad: bool = False  # for the sparse convs (layers.py)

  def _capacity(self, name):
    return (self.capacity or {}).get(name, 0)

  def _conv(self, features, kernel_size, strides, name, shared):
    if shared is None:
      return self.conv(features, kernel_size, strides, name=name, capacity=self._capacity(name))
    conv = layers.SharedConv(strides, capacity=self._capacity(name), dtype=self.dtype,
                             layout=self.layout, conv_general_dilated=self.conv_general_dilated,
                             dense_kernel_grad=self.dense_kernel_grad, name=name)
    kernel, mask = shared[name]
    return lambda x: conv(x, kernel, mask)

  def _shortcut(self, residual, y):
    if residual.shape == y.shape:
      return residual
    residual = self.conv(self.filters * self.expansion, (1, 1), self.strides, name="shortcut_conv",
                         capacity=self._capacity("shortcut_conv"))(residual)
    return self.norm(name="shortcut_bn")(residual)


class BasicBlock(_Block):
  """Two 3x3 convolutions (ResNet-18/34)."""

  expansion = 1
  main_convs = ("conv1", "conv2")

  @nn.compact
  def __call__(self, x, beta=None, shared=None):
    """`shared`: {conv name: (kernel, mask)} reused from another block (weight sharing)."""
    y = self._conv(self.filters, (3, 3), self.strides, "conv1", shared)(x)
    y = self.act(name="act1")(self.norm(name="bn1")(y), beta)
    y = self._conv(self.filters, (3, 3), 1, "conv2", shared)(y)
    y = self.norm(name="bn2")(y)
    return self.act(name="act_out")(self._shortcut(x, y) + y, beta)


class Bottleneck(_Block):
  """1x1 -> 3x3 (strided) -> 1x1 x4 (ResNet-50, torchvision v1.5)."""

  expansion = 4
  main_convs = ("conv1", "conv2", "conv3")

  @nn.compact
  def __call__(self, x, beta=None, shared=None):
    """`shared`: {conv name: (kernel, mask)} reused from another block (weight sharing)."""
    y = self._conv(self.filters, (1, 1), 1, "conv1", shared)(x)
    y = self.act(name="act1")(self.norm(name="bn1")(y), beta)
    y = self._conv(self.filters, (3, 3), self.strides, "conv2", shared)(y)
    y = self.act(name="act2")(self.norm(name="bn2")(y), beta)
    y = self._conv(self.filters * self.expansion, (1, 1), 1, "conv3", shared)(y)
    y = self.norm(name="bn3")(y)
    return self.act(name="act_out")(self._shortcut(x, y) + y, beta)


class ResNet(nn.Module):
  """ResNet over NHWC images.

  Attributes:
    stage_sizes: blocks per stage, e.g. (3, 4, 6, 3).
    block_cls: BasicBlock or Bottleneck.
    num_classes: classifier outputs.
    width: channels of the first stage (64 in the paper); stage i has width * 2**i.
    stem: "cifar" (3x3 stride 1, no max-pool) or "imagenet" (7x7 stride 2 + max-pool).
    conv: convolution factory, called as conv(features, kernel_size, strides, name=...,
      capacity=...) (capacity: kept-weight slots, 0 = dense).
    act: activation module factory, called as act(name=...)(x, beta).
    share_ratio: weight sharing (docs/method.md section 2): in each stage, blocks with
      index >= share_ratio reuse the conv kernels of block share_ratio - 1, each
      times its own learnable scalar; 0 = no sharing.
    bn_axis_name: mesh axis over which BatchNorm statistics are averaged (None: local).
    dtype: computation dtype.
    kernel_grad: how convolution kernel gradients are computed: "xla", "matmul"
      (models/conv.py, much faster on XLA's CPU backend) or "auto" (matmul on CPU).
    sparse_capacity: ((kernel leaf name, slots), ...): layers computed over their kept
      weights only, in that many slots (at least the layer's largest kept count); their
      masks must be passed to `apply` as the `masks` collection. () = all dense.
    layout: activations inside the network, "NHWC" or "CNHW" (channel first, what the
      computation over kept weights needs); inputs and logits are NHWC / (N, classes)
      either way, and the params are the same.
    dense_kernel_grad: the layers in sparse_capacity also give the kernel gradient at
      pruned positions (mask-update steps of RigL); forward and input gradients stay
      over the kept weights.
  """

  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  num_classes: int
  width: int = 64
  stem: str = "cifar"
  conv: Callable[..., nn.Module] | None = None
  act: ModuleDef = ReLU
  share_ratio: int = 0
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32
  kernel_grad: str = "auto"
  sparse_capacity: tuple = ()
  layout: str = "NHWC"
  dense_kernel_grad: bool = False

  def shared_convs(self) -> dict[str, str]:
    """{path of each conv that reuses a kernel: the kernel leaf it reuses}."""
    shared = {}
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(self.share_ratio or num_blocks, num_blocks):
        for conv in self.block_cls.main_convs:
          shared[f"stage{i + 1}_block{j}/{conv}"] = (
              f"stage{i + 1}_block{self.share_ratio - 1}/{conv}/kernel")
    return shared

  @nn.compact
  def __call__(self, x, train: bool = True, beta=None):
    """Logits of NHWC images; `beta` is DyReLU's blend (None: plain ReLU)."""
    conv_fn = (conv_lib.conv_general_dilated if conv_lib.uses_matmul(self.kernel_grad)
               else jax.lax.conv_general_dilated)
    first = self.layout == "CNHW"
    conv = self.conv or functools.partial(layers.Conv, dtype=self.dtype, layout=self.layout,
                                          conv_general_dilated=conv_fn,
                                          dense_kernel_grad=self.dense_kernel_grad)
    act = functools.partial(self.act, layout=self.layout) if first else self.act
    capacity = dict(self.sparse_capacity)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype, axis_name=self.bn_axis_name,
                             axis=layers.channel_axis(self.layout))
    x = x.astype(self.dtype)
    if first:
      x = x.transpose(3, 0, 1, 2)
    kernel, stride = ((3, 3), 1) if self.stem == "cifar" else ((7, 7), 2)
    x = conv(self.width, kernel, stride, name=STEM,
             capacity=capacity.get(STEM_KERNEL, 0))(x)
    x = norm(name="stem_bn")(x)
    x = act(name="stem_act")(x, beta)
    if self.stem == "imagenet":
      window, pad = ((1, 1, 3, 3), (1, 1, 2, 2)) if first else ((1, 3, 3, 1), (1, 2, 2, 1))
      x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, pad,
                                [(0, 0), (0, 0), (1, 1), (1, 1)] if first
                                else [(0, 0), (1, 1), (1, 1), (0, 0)])
    for i, num_blocks in enumerate(self.stage_sizes):
      source = None
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        name = f"stage{i + 1}_block{j}"
        shared = None
        if self.share_ratio and j >= self.share_ratio:
          masks = source.variables.get(layers.MASKS, {})
          shared = {c: (source.variables["params"][c]["kernel"], masks.get(c, {}).get("kernel"))
                    for c in self.block_cls.main_convs}
        owner = source.name if shared else name  # Shared kernels keep their owner's slots.
        block_capacity = {c: capacity[f"{owner}/{c}/kernel"] for c in self.block_cls.main_convs
                          if f"{owner}/{c}/kernel" in capacity}
        if f"{name}/shortcut_conv/kernel" in capacity:
          block_capacity["shortcut_conv"] = capacity[f"{name}/shortcut_conv/kernel"]
        block = self.block_cls(self.width * 2**i, strides, conv=conv, norm=norm, act=act,
                               dtype=self.dtype, conv_general_dilated=conv_fn,
                               capacity=block_capacity, layout=self.layout,
                               dense_kernel_grad=self.dense_kernel_grad, name=name)
        x = block(x, beta, shared)
        if self.share_ratio and j == self.share_ratio - 1:
          source = block
    x = jnp.mean(x, axis=(2, 3)).T if first else jnp.mean(x, axis=(1, 2))
    x = layers.Dense(self.num_classes, capacity=capacity.get(CLASSIFIER_KERNEL, 0),
                     dtype=self.dtype, dense_kernel_grad=self.dense_kernel_grad,
                     name=CLASSIFIER)(x)
    return x.astype(jnp.float32)


_ARCHS = {
    "resnet18": ((2, 2, 2, 2), BasicBlock),
    "resnet34": ((3, 4, 6, 3), BasicBlock),
    "resnet50": ((3, 4, 6, 3), Bottleneck),
}
MODEL_NAMES = tuple(_ARCHS)


def create_model(name: str, *, num_classes: int, width: int = 64, stem: str = "cifar",
                 stage_sizes: Sequence[int] | None = None, **kwargs) -> ResNet:
  """Builds a ResNet by name; `stage_sizes` overrides the depth (tiny variants)."""
  if name not in _ARCHS:
    raise UserInputError(f"Unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)} "
                         "(config.model.name).")
  if stem not in ("cifar", "imagenet"):
    raise UserInputError(f"Unknown stem {stem!r}: use 'cifar' or 'imagenet' (config.model.stem).")
  if width < 1:
    raise UserInputError(f"config.model.width must be >= 1, got {width}.")
  default_sizes, block_cls = _ARCHS[name]
  sizes = tuple(stage_sizes) if stage_sizes else default_sizes
  if not sizes or min(sizes) < 1:
    raise UserInputError(f"config.model.stage_sizes must be positive block counts, got {sizes}.")
  kernel_grad = kwargs.get("kernel_grad", "auto")
  if kernel_grad not in conv_lib.KERNEL_GRADS:
    raise UserInputError(f"Unknown kernel_grad {kernel_grad!r}: choose one of "
                         f"{', '.join(conv_lib.KERNEL_GRADS)} (config.model.kernel_grad).")
  if kwargs.get("layout", "NHWC") not in layers.LAYOUTS:
    raise UserInputError(f"Unknown layout {kwargs['layout']!r}: use one of {layers.LAYOUTS}.")
  share_ratio = kwargs.get("share_ratio", 0)
  if share_ratio != 0 and share_ratio < 2:
    raise UserInputError(f"share_ratio must be 0 (no sharing) or >= 2 (block share_ratio - 1 "
                         f"lends its kernels; block 0 cannot), got {share_ratio} "
                         "(config.east.share_ratio).")
  return ResNet(stage_sizes=sizes, block_cls=block_cls, num_classes=num_classes, width=width,
                stem=stem, **kwargs)
