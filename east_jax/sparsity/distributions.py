"""Per-layer kept counts: ERK (iterative), uniform, overrides, collapse guard.

All counts are integers that add up to exactly round(density * N), N being the
prunable tensors' total size, or with weight sharing the size of the unshared
network (a reused kernel counts once per use, docs/method.md section 2).
"""

import math
from typing import Mapping

from east_jax.errors import UserInputError

DISTRIBUTIONS = ("erk", "uniform")


def erk_scores(shapes: Mapping[str, tuple]) -> dict[str, float]:
  """ERK raw density score sum(shape) / prod(shape) of each layer."""
  return {n: sum(s) / math.prod(s) for n, s in shapes.items()}


def kept_counts(shapes: Mapping[str, tuple], density: float, distribution: str = "erk",
                overrides: Mapping[str, float] | None = None,
                minimum: Mapping[str, int] | None = None,
                reference_size: int | None = None) -> dict[str, int]:
  """Integer kept counts per layer summing to exactly round(density * N).

  Args:
    shapes: {layer: shape} of the prunable tensors.
    density: overall fraction of weights kept, in (0, 1].
    distribution: "erk" (density_l proportional to sum(shape)/prod(shape)) or "uniform".
    overrides: {layer: density} fixed for those layers, taken from the same budget.
    minimum: {layer: count} lower bounds (the collapse guard), inside the same budget.
    reference_size: N (default: the layers' total size).

  Layers whose share would exceed their size become dense and the rest are re-solved
  (the iterative ERK); layers below their minimum are raised to it likewise.
  """
  if distribution not in DISTRIBUTIONS:
    raise UserInputError(f"Unknown distribution {distribution!r}: use one of {DISTRIBUTIONS}.")
  sizes = {n: math.prod(s) for n, s in shapes.items()}
  budget = round(density * (reference_size or sum(sizes.values())))
  if budget > sum(sizes.values()):
    raise UserInputError(f"Density {density} of {reference_size} weights keeps more than the "
                         f"{sum(sizes.values())} prunable weights there are; lower the density.")
  weights = erk_scores(shapes) if distribution == "erk" else dict.fromkeys(shapes, 1.0)
  lower = {n: min(sizes[n], (minimum or {}).get(n, 0)) for n in shapes}
  upper = dict(sizes)
  for name, layer_density in (overrides or {}).items():
    if name not in shapes:
      raise UserInputError(f"Density override for unknown layer {name!r}; prunable layers: "
                           f"{', '.join(shapes)}.")
    lower[name] = upper[name] = round(layer_density * sizes[name])
  if sum(lower.values()) > budget:
    raise UserInputError(f"The budget of {budget} weights (density {density}) is smaller than the "
                         f"{sum(lower.values())} that the minimum counts and overrides require.")
  real = _solve(sizes, weights, lower, upper, budget)
  return _round_exact(real, lower, upper, budget)


def _solve(sizes, weights, lower, upper, budget) -> dict[str, float]:
  """Real counts clip(eps * w_l * n_l, lower_l, upper_l) summing to the budget.

  The total is monotone in eps, so eps is found by bisection (on a log scale);
  the result is the fixed point of the iterative 'make dense and re-solve' rule.
  """
  raw = {n: weights[n] * sizes[n] for n in sizes}

  def total(eps):
    return sum(min(upper[n], max(lower[n], eps * raw[n])) for n in sizes)

  lo, hi = 0.0, 1.0
  while total(hi) < budget and hi < 1e300:
    hi *= 2.0
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if total(mid) < budget else (lo, mid)
  return {n: min(upper[n], max(lower[n], hi * raw[n])) for n in sizes}


def _round_exact(real, lower, upper, budget) -> dict[str, int]:
  """Largest-remainder rounding within [lower, upper] that hits the budget exactly."""
  counts = {n: int(min(upper[n], max(lower[n], math.floor(v)))) for n, v in real.items()}
  missing = budget - sum(counts.values())
  order = sorted(real, key=lambda n: (-(real[n] - math.floor(real[n])), n))
  step = 1 if missing > 0 else -1
  while missing:
    moved = False
    for n in order:
      if missing and lower[n] <= counts[n] + step <= upper[n]:
        counts[n] += step
        missing -= step
        moved = True
    if not moved:
      raise UserInputError("No per-layer counts fit the requested density and bounds.")
  return counts
