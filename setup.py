"""Builds the native CPU kernels at install (`pip install -e .` or a wheel): one extension
module per instruction-set level of this architecture (east_jax/kernels/targets.py),
compiled against the FFI headers of the jaxlib in the build requirements. Each module is
optional: without a C++ compiler the install goes on, and the kernels are built on first
use, or XLA's path runs (east_jax/kernels/__init__.py says which).
"""

import importlib.util
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = os.path.join("east_jax", "kernels")
_spec = importlib.util.spec_from_file_location("targets", os.path.join(KERNELS, "targets.py"))
targets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(targets)


class BuildKernels(build_ext):
  """build_ext with jaxlib's FFI headers and version (known only once it is installed),
  and a folder of object files per module (they compile the same sources)."""

  def build_extension(self, extension):
    shared = self.build_temp
    self.build_temp = os.path.join(shared, extension.name)
    try:
      super().build_extension(extension)
    finally:
      self.build_temp = shared

  def build_extensions(self):
    import jaxlib
    from jax import ffi
    for extension in self.extensions:
      extension.include_dirs.append(ffi.include_dir())
      extension.define_macros.append(("EAST_JAXLIB_VERSION", jaxlib.__version__))
    super().build_extensions()


setup(
    ext_modules=[
        Extension(f"east_jax.kernels.{t.module}",
                  sources=[os.path.join(KERNELS, s) for s in targets.SOURCES],
                  define_macros=[("EAST_KERNELS_MODULE", t.module)],
                  extra_compile_args=[*targets.COMMON_FLAGS, *t.flags],
                  language="c++", optional=True)
        for t in targets.for_machine()],
    cmdclass={"build_ext": BuildKernels},
)
