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
