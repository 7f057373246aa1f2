"""east_jax keeps freed host memory in the process unless the environment says otherwise."""

import os
import platform
import subprocess
import sys

import pytest

from east_jax import host_memory

PROBE = "from east_jax import host_memory; print(host_memory.keep_freed_memory())"


def _probe(**env):
  clean = {k: v for k, v in os.environ.items() if not host_memory.is_malloc_setting(k)}
  out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, check=True,
                       capture_output=True, text=True)
  return out.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_malloc_is_set():
  assert _probe() == "True"


def test_an_explicit_malloc_setting_wins():
  assert _probe(MALLOC_ARENA_MAX="8") == "False"
  assert _probe(GLIBC_TUNABLES="glibc.malloc.arena_max=8") == "False"


IMPORT_PROBE = """
import ctypes, os, sys
calls = []
real = ctypes.CDLL
ctypes.CDLL = lambda *a, **k: calls.append(a) or real(*a, **k)
before = os.environ.get("XLA_FLAGS")
import east_jax, east_jax.sparsity, east_jax.sparsity.transform, east_jax.train
import east_jax.models.sparse_conv
assert os.environ.get("XLA_FLAGS") == before, os.environ.get("XLA_FLAGS")
assert not [c for c in calls if "libc" in str(c)], calls
from east_jax import process_settings
applied = process_settings.apply(announce=False)
assert process_settings.SCHEDULER_FLAG + "=false" in os.environ["XLA_FLAGS"]
assert process_settings.apply() is applied  # Once per process.
print(len(applied))
"""


def test_importing_east_jax_changes_no_process_setting_until_asked():
  clean = {k: v for k, v in os.environ.items()
           if not host_memory.is_malloc_setting(k) and k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], env=clean, capture_output=True,
                       text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == ("2" if platform.libc_ver()[0] == "glibc" else "1")
