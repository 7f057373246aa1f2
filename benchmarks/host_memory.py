"""One sparse convolution with glibc keeping freed memory (east_jax's default) and without.

  python -m benchmarks.host_memory

Runs the same forward call of a 32x32x64 -> 64 layer keeping 170 weights (ResNet-34 at
99.9%, batch 128) in two child processes, the second with MALLOC_ARENA_MAX=8 (any MALLOC_*
variable leaves glibc as it is), and prints milliseconds and page faults per call.
"""

import os
import subprocess
import sys

from east_jax import host_memory

CALLS = 10
_CHILD = "--child"


def _measure(label: str):
  import resource
  import time

  import jax
  import jax.numpy as jnp
  import numpy as np

  from east_jax.models import sparse_conv

  rng = np.random.default_rng(0)
  shape = (3, 3, 64, 64)
  indices = jnp.asarray(np.sort(rng.choice(np.prod(shape), 170, replace=False)), jnp.int32)
  values = jnp.asarray(rng.standard_normal(170), jnp.float32)
  x = jnp.asarray(rng.standard_normal((64, 128, 32, 32)), jnp.float32)  # CNHW
  conv = jax.jit(lambda x: sparse_conv.sparse_conv(x, values, indices, 170, shape, (1, 1),
                                                   ((1, 1), (1, 1))))
  with sparse_conv.xla_only():  # XLA's own buffers are what glibc's settings act on.
    jax.block_until_ready(conv(x))
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  times = []
  for _ in range(CALLS):
    start = time.perf_counter()
    jax.block_until_ready(conv(x))
    times.append(time.perf_counter() - start)
  faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / CALLS
  print(f"| {label} | {1e3 * np.median(times):.1f} | {faults:.0f} |")


def main():
  if _CHILD in sys.argv:
    _measure(sys.argv[-1])
    return
  print("| glibc malloc | ms per call (median) | page faults per call |")
  print("|---|---|---|", flush=True)
  clean = {k: v for k, v in os.environ.items() if not host_memory.is_malloc_setting(k)}
  for label, env in (("kept in the process", {}), ("glibc default", {"MALLOC_ARENA_MAX": "8"})):
    subprocess.run([sys.executable, "-m", "benchmarks.host_memory", _CHILD, label],
                   env={**clean, **env}, check=True)


if __name__ == "__main__":
  main()
