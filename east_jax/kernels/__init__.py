"""Native CPU kernels, built when the package is installed and registered with XLA's FFI.

`pip install` (setup.py) compiles `sparse_conv_cpu.cc` with `python_module.cc` into one
extension module per instruction-set level of the machine's architecture (`targets.py`:
x86-64-v4, -v3 and the baseline; never -march=native), against the FFI headers of the
jaxlib it installs; `status()` loads the highest level this CPU runs and registers its
handlers for the CPU platform. Only if no installed build is usable (no compiler at install
time, another jaxlib since, a source tree run without installing) does it compile that level
on first use with $CXX / g++ into ~/.cache/east_jax/kernels (EAST_JAX_KERNEL_DIR overrides),
and it says so. Without either, or with EAST_JAX_NATIVE_KERNELS=0, `available()` is False,
`status()` says why, and callers keep their XLA implementation (a run prints and records
which path it took). EAST_JAX_KERNEL_TARGET=<name> picks a level (benchmarks compare them).
"""

import functools
import hashlib
import importlib
import importlib.util
import os
import shutil
import subprocess
import sysconfig
import tempfile

import jax
import jaxlib

from east_jax.kernels import targets

FOLDER = os.path.dirname(__file__)
FORWARD = "east_sparse_conv_forward"
BACKWARD = "east_sparse_conv_backward"


def compiler() -> str | None:
  """The C++ compiler for a first-use build, or None."""
  return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def target() -> targets.Target:
  """The build this CPU runs: the best it supports, or EAST_JAX_KERNEL_TARGET's."""
  supported = targets.supported()
  name = os.environ.get("EAST_JAX_KERNEL_TARGET")
  if not name:
    return supported[0]
  if name == targets.NATIVE.name:
    return targets.NATIVE
  for t in targets.for_machine():
    if t.name == name:
      if t not in supported:
        raise RuntimeError(f"EAST_JAX_KERNEL_TARGET={name} needs CPU flags "
                           f"{sorted(t.needs - targets.cpu_flags())} that this CPU lacks")
      return t
  raise RuntimeError(f"EAST_JAX_KERNEL_TARGET={name} is not one of "
                     f"{[t.name for t in targets.for_machine()]}")


def compile_command(t: targets.Target, output: str, cxx: str = "c++") -> list[str]:
  """The compiler command that builds target `t`'s extension module into `output`."""
  return [cxx, *targets.COMMON_FLAGS, *t.flags, "-shared", "-fPIC",
          f"-DEAST_KERNELS_MODULE={t.module}", f"-DEAST_JAXLIB_VERSION={jaxlib.__version__}",
          "-I", jax.ffi.include_dir(), "-I", sysconfig.get_paths()["include"],
          *[os.path.join(FOLDER, s) for s in targets.SOURCES], "-o", output]


def library_path(t: targets.Target) -> str:
  """Where a first-use build of `t` for these sources and this jaxlib lives."""
  key = hashlib.sha256(" ".join(compile_command(t, "")).encode())
  for source in targets.SOURCES:
    with open(os.path.join(FOLDER, source), "rb") as f:
      key.update(f.read())
  folder = os.environ.get("EAST_JAX_KERNEL_DIR") or os.path.expanduser("~/.cache/east_jax/kernels")
  suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
  return os.path.join(folder, key.hexdigest()[:16], t.module + suffix)


def build(t: targets.Target) -> str:
  """Compiles target `t` on first use if it is not cached yet; returns the library's path.

  Raises RuntimeError with the compiler's message when there is no compiler or the build
  fails. Concurrent builds are safe (each writes a temporary file, then renames).
  """
  path = library_path(t)
  if os.path.exists(path):
    return path
  cxx = compiler()
  if cxx is None:
    raise RuntimeError("no C++ compiler found (install g++, or set CXX)")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
  os.close(fd)
  command = compile_command(t, tmp, cxx)
  result = subprocess.run(command, capture_output=True, text=True)
  if result.returncode != 0:
    os.unlink(tmp)
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
  os.replace(tmp, path)
  return path


def _load(name: str, path: str):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _installed(t: targets.Target):
  """(the module installed for `t`, None) or (None, why it is not usable)."""
  try:
    module = importlib.import_module(f"east_jax.kernels.{t.module}")
  except ImportError:
    return None, "the install built none"
  if module.jaxlib_version != jaxlib.__version__:
    return None, f"the install built it for jaxlib {module.jaxlib_version}"
  return module, None


@functools.cache
def status() -> str:
  """'native (<target>, installed)' or 'native (<target>, built on first use ...)' when the
  kernels are loaded and registered for the CPU platform; otherwise one line saying why
  not (callers keep their XLA implementation)."""
  if os.environ.get("EAST_JAX_NATIVE_KERNELS", "1") == "0":
    return "off (EAST_JAX_NATIVE_KERNELS=0)"
  try:
    t = target()
    module, why = _installed(t)
    how = "installed"
    if module is None:
      path = build(t)
      module = _load(t.module, path)
      how = f"built on first use into {os.path.dirname(path)}: {why}"
  except (ImportError, OSError, RuntimeError) as e:
    return f"unavailable ({str(e).strip().splitlines()[0]})"
  jax.ffi.register_ffi_target(FORWARD, module.forward, platform="cpu")
  jax.ffi.register_ffi_target(BACKWARD, module.backward, platform="cpu")
  return f"native ({t.name}, {how})"


def available() -> bool:
  """Whether the native kernels are loaded and registered (`status`)."""
  return status().startswith("native")

