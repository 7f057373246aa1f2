"""Cyclic sparsity (docs/method.md section 4): the density target as a function of the step.

For the first `num_cycles` cycles (cycle k lasts length * total_steps *
length_multiplier**k steps) the density rises from the target d to
d_max = density_multiplier * d at mid-cycle and returns to d at the cycle's end;
afterwards it stays at d. With p in [0, 1] the position inside the cycle:
  cosine:     d + (d_max - d) * (1 - cos(2 pi p)) / 2
  triangular: d + (d_max - d) * (1 - |1 - 2p|)
Masks follow it at `update_interval` steps inside the cycles, and once more at the
end of the last cycle, where the density is back at d exactly.
"""

import dataclasses
import math

SHAPES = ("cosine", "triangular")


@dataclasses.dataclass(frozen=True)
class CycleSchedule:
  total_steps: int
  num_cycles: int = 2
  length: float = 0.2                # fraction of training per cycle
  length_multiplier: float = 1.0     # cycle k lasts length * multiplier**k
  density_multiplier: float = 3.0    # d_max = density_multiplier * d
  shape: str = "cosine"
  update_interval: int = 1000        # steps between mask updates inside the cycles

  def boundaries(self) -> list[float]:
    """Start of every cycle and end of the last one, in (fractional) steps."""
    edges = [0.0]
    for k in range(self.num_cycles):
      edges.append(edges[-1] + self.length * self.total_steps * self.length_multiplier**k)
    return edges

  @property
  def end_step(self) -> int:
    """The first step after the cycles (their final mask update happens here)."""
    return min(self.total_steps, round(self.boundaries()[-1]))

  def position(self, step: int) -> tuple[int, float] | None:
    """(cycle index, position p in [0, 1)) of `step`, or None outside the cycles."""
    if step >= self.end_step:
      return None
    edges = self.boundaries()
    for k in range(self.num_cycles):
      if step < edges[k + 1]:
        return k, (step - edges[k]) / (edges[k + 1] - edges[k])
    return None

  def density(self, step: int, density: float) -> float:
    """The density target at `step` for the final density `density`."""
    where = self.position(step)
    if where is None:
      return density
    p = where[1]
    rise = (0.5 * (1.0 - math.cos(2.0 * math.pi * p)) if self.shape == "cosine"
            else 1.0 - abs(1.0 - 2.0 * p))
    return density + (self.density_multiplier - 1.0) * density * rise

  def update_steps(self) -> list[int]:
    """Mask-update steps of the cyclic phase, the last one at `end_step`."""
    steps = list(range(self.update_interval, self.end_step, self.update_interval))
    return steps + [self.end_step] if self.end_step > 0 else steps
