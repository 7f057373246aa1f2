"""The native kernels: built at install for each instruction-set level, the best one this
CPU runs loaded, and built on first use only when no installed build is usable."""

import os
import subprocess
import sys

import pytest

from east_jax import kernels
from east_jax.kernels import targets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_install_built_the_kernels_and_the_best_level_is_loaded():
  best = targets.supported()[0]
  assert kernels.status() == f"native ({best.name}, installed)", (
      "pip install -e . (setup.sh) builds the kernels; without g++ they fall back")


def test_the_levels_this_cpu_runs(monkeypatch):
  monkeypatch.setattr(targets.platform, "machine", lambda: "x86_64")
  v4, v3, base = targets.for_machine()
  assert targets.supported(frozenset()) == (base,)
  avx2 = frozenset({"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "sse4_2"})
  assert targets.supported(avx2) == (v3, base)
  assert targets.supported(avx2 | {"avx512f", "avx512bw", "avx512cd", "avx512dq",
                                   "avx512vl"}) == (v4, v3, base)
  assert all("-march=native" not in t.flags for t in targets.for_machine())
  monkeypatch.setattr(targets.platform, "machine", lambda: "aarch64")
  assert targets.for_machine() == (targets.Target("aarch64", ()),)


def test_a_target_the_cpu_lacks_is_refused(monkeypatch):
  monkeypatch.setattr(targets, "cpu_flags", frozenset)
  monkeypatch.setenv("EAST_JAX_KERNEL_TARGET", targets.for_machine()[0].name)
  if targets.for_machine()[0].needs:
    with pytest.raises(RuntimeError, match="needs CPU flags"):
      kernels.target()
  monkeypatch.setenv("EAST_JAX_KERNEL_TARGET", "no_such_level")
  with pytest.raises(RuntimeError, match="is not one of"):
    kernels.target()


_FALLBACK = """
import jax, jax.numpy as jnp, numpy as np
from east_jax import kernels
from east_jax.models import sparse_conv
kernels._installed = lambda t: (None, "the install built none")  # As without a compiler.
print(kernels.status())
x = jax.random.normal(jax.random.key(0), (3, 2, 6, 6))
mask = jax.random.bernoulli(jax.random.key(1), 0.2, (3, 3, 3, 4))
kernel = jax.random.normal(jax.random.key(2), (3, 3, 3, 4)) * mask
conv = lambda: sparse_conv.conv(x, kernel, mask, 30, (1, 1), ((1, 1), (1, 1)))
native = conv()
with sparse_conv.xla_only():
  np.testing.assert_allclose(native, conv(), rtol=1e-5, atol=1e-5)
"""


def test_without_an_installed_build_the_kernels_are_built_on_first_use(tmp_path):
  env = {**os.environ, "EAST_JAX_KERNEL_DIR": str(tmp_path)}
  proc = subprocess.run([sys.executable, "-c", _FALLBACK], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  best = targets.supported()[0]
  assert proc.stdout.startswith(f"native ({best.name}, built on first use into {tmp_path}/")
  assert proc.stdout.strip().endswith(": the install built none)")
  assert len(list(tmp_path.glob(f"*/{best.module}*.so"))) == 1


def test_a_failed_build_says_what_ran(monkeypatch, tmp_path):
  monkeypatch.setenv("EAST_JAX_KERNEL_DIR", str(tmp_path))
  monkeypatch.setenv("CXX", "false")
  with pytest.raises(RuntimeError, match="false .*sparse_conv_cpu.cc"):
    kernels.build(kernels.target())
  assert not list(tmp_path.rglob("*.so"))  # No partial library left behind.


def test_the_build_uses_the_pinned_jax():
  import tomllib
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    build = set(tomllib.load(f)["build-system"]["requires"])
  with open(os.path.join(REPO, "requirements.txt")) as f:
    pins = {line.split("#")[0].strip() for line in f}
  assert {"jax==", "jaxlib=="} <= {r[:r.index("==") + 2] for r in build if "==" in r}
  assert {r for r in build if r.startswith("jax")} <= pins  # Headers of the jaxlib that runs.
