"""east_jax: Extreme Adaptive Sparse Training (EAST) of ResNets in JAX/Flax."""

import os as _os

# XLA's CPU backend schedules independent operations to run concurrently by default; for
# the gathers and scatters of sparse compute that doubles peak memory and costs 1.5x
# time (benchmarks/RESULTS.md, sparse compute). Set before JAX starts its backend;
# an explicit setting in XLA_FLAGS wins.
_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
if _FLAG not in _os.environ.get("XLA_FLAGS", ""):
  _os.environ["XLA_FLAGS"] = f"{_os.environ.get('XLA_FLAGS', '')} {_FLAG}=false".strip()

from east_jax import host_memory as _host_memory

_host_memory.keep_freed_memory()
