"""Pure functions of the step that drive mask updates.

`step` is the number of gradient steps taken before the current one (the sparse
transformation's own counter, 0 at the first step).
"""

import math

import jax.numpy as jnp


def drop_fraction(step, total_steps: int, initial: float = 0.5, final: float = 0.005):
  """Cosine decay from `initial` at step 0 to `final` at `total_steps` (docs/method.md section 1)."""
  progress = jnp.clip(step / total_steps, 0.0, 1.0)
  return final + 0.5 * (initial - final) * (1.0 + jnp.cos(jnp.pi * progress))


def is_update_step(step, *, interval: int, start: int, end: int):
  """True at start + k * interval (k >= 0) for start <= step < end, never at step 0."""
  return (step >= start) & (step < end) & (step > 0) & ((step - start) % interval == 0)


def gmp_update_steps(*, interval: int, start: int, end: int) -> list[int]:
  """The steps at which gradual magnitude pruning prunes (its last one at `end`)."""
  return [s for s in range(start, end + 1, interval) if s > 0]


def gmp_sparsity(step: int, *, final_sparsity: float, start: int, end: int) -> float:
  """Zhu & Gupta's cubic schedule: 0 at `start`, `final_sparsity` from `end` on."""
  progress = min(1.0, max(0.0, (step - start) / max(1, end - start)))
  return final_sparsity * (1.0 - (1.0 - progress) ** 3)


def num_to_move(fraction, count: int):
  """ceil(fraction * count) as an int32, the number of weights a layer drops and grows."""
  return jnp.ceil(fraction * count).astype(jnp.int32)


def max_to_move(max_fraction: float, count: int) -> int:
  """Static upper bound of num_to_move over the schedule."""
  return max(1, min(count, math.ceil(max_fraction * count)))
