"""Process-wide settings that east_jax's command lines apply at start-up.

Importing east_jax changes nothing in the user's process. The commands (`east_jax.main`,
`.study`, `.evaluate`, `.export`, `.data.prepare`) and the benchmarks call `apply()`
first; a library user who wants the same behaviour calls it once, before JAX runs
anything:

    from east_jax import process_settings
    process_settings.apply()

Each setting is measured to be worth it (benchmarks/RESULTS.md) and each yields to an
explicit choice in the environment:
- XLA's CPU concurrency-optimised scheduler off
  (`--xla_cpu_enable_concurrency_optimized_scheduler=false` appended to XLA_FLAGS): for the
  gathers and scatters of sparse compute the scheduler doubles peak memory and costs 1.5x
  time. A setting of that flag already in XLA_FLAGS wins.
- glibc's malloc keeps freed memory in the process (`host_memory.keep_freed_memory`): XLA's
  per-step buffers are not page-faulted in afresh every step. Any MALLOC_* or
  GLIBC_TUNABLES variable wins.
"""

import os

from east_jax import host_memory

SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
_applied: list[str] | None = None


def apply(announce: bool = True) -> list[str]:
  """Applies the settings this process has not chosen itself (once; later calls do
  nothing); returns what it applied. `announce` prints one line saying so."""
  global _applied
  if _applied is not None:
    return _applied
  _applied = []
  if SCHEDULER_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {SCHEDULER_FLAG}=false".strip()
    _applied.append(f"XLA_FLAGS {SCHEDULER_FLAG}=false")
  if host_memory.keep_freed_memory():
    _applied.append("glibc malloc keeps freed memory")
  if announce and _applied:
    print(f"east_jax process settings: {'; '.join(_applied)} (set XLA_FLAGS or MALLOC_* "
          "yourself to choose otherwise)", flush=True)
  return _applied
