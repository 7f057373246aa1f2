"""What the step benchmarks share: a synthetic global batch and median step times."""

import time

import numpy as np

from east_jax import parallel


def synthetic_batch(mesh, batch_size, image_shape, num_classes) -> dict:
  """Normal images, uniform labels and an all-ones eval mask, sharded over `mesh`."""
  rng = np.random.default_rng(0)
  return parallel.global_batch({
      "image": rng.standard_normal((batch_size, *image_shape), np.float32),
      "label": rng.integers(0, num_classes, batch_size).astype(np.int32),
      "mask": np.ones(batch_size, np.float32)}, mesh)


def median_times(run_step, kinds) -> dict:
  """Calls `run_step()` once as a warm-up, then once per entry of `kinds`; returns
  {kind: median seconds}. `run_step` must block until its results are ready."""
  run_step()
  times = {}
  for kind in kinds:
    start = time.perf_counter()
    run_step()
    times.setdefault(kind, []).append(time.perf_counter() - start)
  return {kind: float(np.median(t)) for kind, t in times.items()}
