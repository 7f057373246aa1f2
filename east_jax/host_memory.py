"""Keeps freed host memory inside the process (glibc's malloc), so that XLA's CPU
buffers are not page-faulted in afresh on every step.

XLA's CPU backend allocates each step's large buffers (activations, gradients,
temporaries) when the step starts and frees them when it ends. By default glibc serves
every allocation above its mmap threshold (128 KiB, growing to at most 32 MiB) with new
pages from the kernel and unmaps them on free, and the threads' own arenas return memory
too: the next step touches every page again, a page fault each. For the sparse
convolutions, which stream over big activation planes, that is most of the cost
(`python -m benchmarks.host_memory`): one 32x32x64 layer at batch 128 took 43.6 ms with
26,690 page faults per call, 17.8 ms with 5,549 once freed memory stays in the process.

`keep_freed_memory()` (applied by the command lines through `process_settings`) makes
glibc use one arena, never mmap and never trim; the process's resident memory then stays
at its high-water mark instead of shrinking between steps. An explicit MALLOC_* or
GLIBC_TUNABLES setting in the environment wins, as does any C library other than glibc.
"""

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_NEVER_TRIM = 2**31 - 1  # The largest value mallopt takes (an int): 2 GiB.


def is_malloc_setting(name: str) -> bool:
  """Whether the environment variable `name` configures glibc's malloc (then it wins)."""
  return name.startswith("MALLOC_") or name == "GLIBC_TUNABLES"


def keep_freed_memory() -> bool:
  """Sets glibc's malloc to keep freed memory; False where it was left as it is."""
  if any(is_malloc_setting(k) for k in os.environ):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # Not glibc (macOS, musl): nothing to do.
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return all(mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM)))
