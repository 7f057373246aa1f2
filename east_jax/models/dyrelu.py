"""DyReLU-B (Chen et al. 2020) with EAST's phasing toward ReLU (docs/method.md section 3).

Per channel c, a hyper-network on the spatially pooled input gives
theta = 2 * sigmoid(fc2(relu(fc1(mean_hw(x))))) - 1 (fc1: C -> C/4, fc2: C/4 -> 4C),
the coefficients (a1, a2, b1, b2) = [1, 0, 0, 0] + beta * theta * [1, 1, 0.5, 0.5]
(DyReLU's coefficients blended toward ReLU's by beta) and y = max(a1 x + b1, a2 x + b2).

`beta` comes from the step through `beta_schedule`; `beta=None` skips the
hyper-network (after the phase-out, and in inference models) and is plain ReLU.

`phase_out="static"` phases out into a learned per-channel two-piece activation
instead of ReLU: the target [1, 0, 0, 0] becomes [1, 0, 0, 0] + `static_offset`
(a (C, 4) param, zero at init, outside the hyper-network so that it is deployed), and
`beta=None` computes max(a1 x + b1, a2 x + b2) with those per-channel coefficients.
"""

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

HYPERNET = "hypernet"  # Scope of the hyper-network params: never pruned, never in the budget.
_SCALE = np.array([1.0, 1.0, 0.5, 0.5], np.float32)
_RELU = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
PHASE_OUTS = ("relu", "static")


class HyperNet(nn.Module):
  """theta in (-1, 1)^(C x 4) from the pooled input."""

  channels: int
  reduction: int = 4
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, pooled):
    h = nn.relu(nn.Dense(max(1, self.channels // self.reduction), dtype=self.dtype,
                         name="fc1")(pooled))
    theta = 2.0 * nn.sigmoid(nn.Dense(4 * self.channels, dtype=self.dtype, name="fc2")(h)) - 1.0
    return theta.reshape(*theta.shape[:-1], self.channels, 4)


class DyReLU(nn.Module):
  """DyReLU-B over NHWC (or, with layout="CNHW", channel-first) inputs; `beta` in
  [0, 1] blends it with ReLU."""

  reduction: int = 4
  layout: str = "NHWC"
  phase_out: str = "relu"  # What beta -> 0 leads to: relu | static (learned per channel)

  @nn.compact
  def __call__(self, x, beta=None):
    """Computes in x's dtype (the model's compute dtype)."""
    first = self.layout == "CNHW"
    channels = x.shape[0 if first else -1]
    hyper = HyperNet(channels, self.reduction, x.dtype, name=HYPERNET)
    target = jnp.asarray(_RELU, x.dtype)
    if self.phase_out == "static":
      offset = self.param("static_offset", nn.initializers.zeros, (channels, 4), jnp.float32)
      target = target + offset.astype(x.dtype)  # (C, 4)

    def pooled():  # (N, C)
      return jnp.mean(x, axis=(2, 3)).T if first else jnp.mean(x, axis=(1, 2))

    if beta is None:
      if self.is_initializing():
        hyper(pooled())  # Create the params so that every phase has them.
      if self.phase_out == "relu":
        return nn.relu(x)
      # (C, 1, 1, 1, 4) or (C, 4): per channel, shared over examples and space.
      coef = target[:, None, None, None] if first else target
    else:
      theta = hyper(pooled())  # (N, C, 4)
      coef = target + jnp.asarray(beta, x.dtype) * theta * jnp.asarray(_SCALE, x.dtype)
      # (C, N, 1, 1, 4) or (N, 1, 1, C, 4): shared over space.
      coef = coef.transpose(1, 0, 2)[:, :, None, None] if first else coef[:, None, None]
    return jnp.maximum(coef[..., 0] * x + coef[..., 2], coef[..., 1] * x + coef[..., 3])


def beta_schedule(step, *, total_steps: int, phase_start: float, phase_end: float):
  """1 before phase_start, linear to 0 at phase_end, 0 after (fractions of training)."""
  start, end = phase_start * total_steps, phase_end * total_steps
  if end <= start:
    return jnp.where(step < start, 1.0, 0.0)
  return jnp.clip((end - jnp.asarray(step, jnp.float32)) / (end - start), 0.0, 1.0)


def zero_from_step(*, total_steps: int, phase_start: float, phase_end: float) -> int:
  """The first step at which beta is 0: from there on DyReLU is exactly ReLU."""
  return math.ceil((phase_end if phase_end > phase_start else phase_start) * total_steps)


def is_hypernet(name: str) -> bool:
  """Whether a param leaf name ('stage1_block0/act1/hypernet/fc1/kernel') is DyReLU's."""
  return HYPERNET in name.split("/")


def strip_hypernetworks(params: dict) -> dict:
  """The params without any hyper-network: what a plain ReLU ResNet takes."""
  stripped = {}
  for key, value in params.items():
    if key == HYPERNET:
      continue
    if isinstance(value, dict):
      value = strip_hypernetworks(value)
      if not value:
        continue
    stripped[key] = value
  return stripped
