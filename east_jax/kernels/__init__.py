"""Native CPU kernels, compiled on first use and registered with XLA's FFI.

`sparse_conv_cpu.cc` (next to this file) is compiled with the system's C++ compiler
($CXX, else g++ or c++) against the installed jaxlib's FFI headers into
~/.cache/east_jax/kernels (EAST_JAX_KERNEL_DIR overrides), once per source, jaxlib and
CPU: about 2 s, then the cached library is loaded. Without a compiler, or with
EAST_JAX_NATIVE_KERNELS=0, `available()` is False, `status()` says why, and callers keep
their XLA implementation (a training run prints and records which path it took).
"""

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile

import jax
import jaxlib

SOURCE = os.path.join(os.path.dirname(__file__), "sparse_conv_cpu.cc")
FORWARD = "east_sparse_conv_forward"
BACKWARD = "east_sparse_conv_backward"
_SYMBOLS = {FORWARD: "EastSparseConvForward", BACKWARD: "EastSparseConvBackward"}
_FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC")


def compiler() -> str | None:
  """The C++ compiler to build with, or None."""
  return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def library_path() -> str:
  """Where the compiled library for this source, jaxlib and CPU lives."""
  with open(SOURCE, "rb") as f:
    key = hashlib.sha256(f.read())
  key.update(" ".join((jaxlib.__version__, platform.machine(), _cpu_flags(), *_FLAGS)).encode())
  folder = os.environ.get("EAST_JAX_KERNEL_DIR") or os.path.expanduser("~/.cache/east_jax/kernels")
  return os.path.join(folder, f"sparse_conv_cpu-{key.hexdigest()[:16]}.so")


def _cpu_flags() -> str:
  """The CPU's instruction-set flags (the build uses -march=native)."""
  try:
    with open("/proc/cpuinfo") as f:
      return next((line for line in f if line.startswith("flags")), "")
  except OSError:
    return platform.processor()


def build() -> str:
  """Compiles the kernels if the cached library is missing; returns its path.

  Raises RuntimeError with the compiler's message when there is no compiler or the
  build fails. Concurrent builds are safe (each writes a temporary file, then renames).
  """
  path = library_path()
  if os.path.exists(path):
    return path
  cxx = compiler()
  if cxx is None:
    raise RuntimeError("no C++ compiler found (install g++, or set CXX)")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
  os.close(fd)
  command = [cxx, *_FLAGS, "-I", jax.ffi.include_dir(), SOURCE, "-o", tmp]
  result = subprocess.run(command, capture_output=True, text=True)
  if result.returncode != 0:
    os.unlink(tmp)
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
  os.replace(tmp, path)
  return path


@functools.cache
def status() -> str:
  """"native" when the kernels are built, loaded and registered for the CPU platform;
  otherwise one line saying why not (callers keep their XLA implementation)."""
  if os.environ.get("EAST_JAX_NATIVE_KERNELS", "1") == "0":
    return "off (EAST_JAX_NATIVE_KERNELS=0)"
  try:
    library = ctypes.CDLL(build())
  except (OSError, RuntimeError) as e:
    return f"unavailable ({str(e).strip().splitlines()[0]})"
  for target, symbol in _SYMBOLS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                platform="cpu")
  return "native"


def available() -> bool:
  """Whether the native kernels are built, loaded and registered (`status`)."""
  return status() == "native"
