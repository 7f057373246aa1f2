"""Test set-up: 8 simulated CPU devices, a temporary compilation cache, and a small real
Fashion-MNIST prepared locally.

The device count and the cache must be set before JAX initialises, hence here.
"""

import atexit
import gzip
import os
import shutil
import tempfile

# LLVM optimisation level 0 for every program (train.compiler_options yields to it): the
# tests' tiny networks spend most of their time compiling, and level 0 takes ~30% less CPU
# time over the suite than the commands' level 1. Subprocesses inherit it.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_backend_optimization_level=0").strip()
# One compilation cache and one native-kernel build for the whole test run: the first
# process (pytest-xdist's controller, or the only one) makes the folder and its workers and
# the processes tests start inherit it (JAX's own setting wins over
# config.compilation_cache_dir). A program compiled in one worker is reused by the other,
# nothing is written to the user's ~/.cache, and every run starts empty. JAX treats an
# entry it cannot read (one being written) as a miss.
_CACHE_DIR = os.environ.get("EAST_JAX_TEST_RUN_DIR")
if _CACHE_DIR is None:
  _CACHE_DIR = tempfile.mkdtemp(prefix="east_jax_tests_")
  os.environ["EAST_JAX_TEST_RUN_DIR"] = _CACHE_DIR
  atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(_CACHE_DIR, "jax")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"
os.environ["EAST_JAX_KERNEL_DIR"] = os.path.join(_CACHE_DIR, "kernels")

from east_jax import process_settings  # noqa: E402

process_settings.apply(announce=False)  # What the command lines run with.

import chex  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from east_jax.data import builders  # noqa: E402
from tests.helpers import built_once  # noqa: E402

chex.set_n_cpu_devices(8)

NUM_TRAIN, NUM_TEST = 640, 200


def write_idx(path, array):
  """Writes a uint8 array as a gzipped IDX file."""
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


@pytest.fixture(scope="session")
def fmnist_arrays():
  """The first images of the real Fashion-MNIST (Debian's dataset-fashion-mnist)."""
  src = builders.FASHION_MNIST_DIR
  if not os.path.isdir(src):
    pytest.fail(f"{src} is missing: `apt-get install dataset-fashion-mnist` (.ci/run does it).")
  out = {}
  for split, (images, labels) in builders._IDX_FILES.items():
    n = NUM_TRAIN if split == "train" else NUM_TEST
    out[split] = (builders.read_idx(os.path.join(src, images))[:n],
                  builders.read_idx(os.path.join(src, labels))[:n])
  return out


@pytest.fixture(scope="session")
def fmnist_idx_dir(tmp_path_factory, fmnist_arrays):
  """IDX files holding a real Fashion-MNIST subset."""
  idx_dir = tmp_path_factory.mktemp("idx")
  for split, (images_file, labels_file) in builders._IDX_FILES.items():
    write_idx(idx_dir / images_file, fmnist_arrays[split][0])
    write_idx(idx_dir / labels_file, fmnist_arrays[split][1])
  return str(idx_dir)


@pytest.fixture(scope="session")
def data_dir(fmnist_idx_dir):
  """A tfds data_dir with `fashion_mnist` prepared by our IDX builder (one for the test
  run; tests only read it)."""
  return built_once("tfds", lambda folder: builders.prepare_fashion_mnist_idx(folder,
                                                                               fmnist_idx_dir))
