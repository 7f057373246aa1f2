"""The instruction-set levels the native kernels are built for, and the compiler flags.

One build per level of the machine's architecture (x86-64: the psABI levels v4 = AVX-512,
v3 = AVX2 + FMA, and the baseline; elsewhere: the architecture's baseline), never
`-march=native`: a build runs on every CPU of its level, and the loader picks the highest
level the CPU has. Imports nothing but the standard library: setup.py reads it too.
"""

import platform
from typing import NamedTuple

SOURCES = ("sparse_conv_cpu.cc", "python_module.cc")
COMMON_FLAGS = ("-O3", "-fopenmp-simd", "-std=c++17", "-fvisibility=hidden")


class Target(NamedTuple):
  """One build: its name, its compiler flags and the CPU flags (/proc/cpuinfo) it needs."""
  name: str
  flags: tuple[str, ...]
  needs: frozenset = frozenset()

  @property
  def module(self) -> str:
    """The extension module's name (east_jax.kernels.<module>)."""
    return f"_sparse_conv_cpu_{self.name}"


_X86_64 = (
    Target("x86_64_v4", ("-march=x86-64-v4",),
           frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2",
                      "fma", "bmi2"})),
    Target("x86_64_v3", ("-march=x86-64-v3",),
           frozenset({"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe"})),
    Target("x86_64", ("-march=x86-64",)),
)


# This CPU's own instruction set: not installed (a build would run on this CPU type only);
# EAST_JAX_KERNEL_TARGET=native builds it on first use, to compare (benchmarks/kernel_targets.py).
NATIVE = Target("native", ("-march=native",))


def for_machine(machine: str | None = None) -> tuple[Target, ...]:
  """Every build for the architecture `machine` (platform.machine()), best first."""
  machine = machine or platform.machine()
  if machine in ("x86_64", "AMD64"):
    return _X86_64
  return (Target(machine.lower().replace("-", "_") or "generic", ()),)


def cpu_flags() -> frozenset:
  """This CPU's instruction-set flags (empty where /proc/cpuinfo is not readable)."""
  try:
    with open("/proc/cpuinfo") as f:
      line = next((line for line in f if line.startswith("flags")), "")
  except OSError:
    return frozenset()
  return frozenset(line.partition(":")[2].split())


def supported(flags: frozenset | None = None) -> tuple[Target, ...]:
  """The builds this CPU can run, best first (the baseline always)."""
  flags = cpu_flags() if flags is None else flags
  return tuple(t for t in for_machine() if t.needs <= flags)
