"""Small configs shared by the tests."""

import fcntl
import os
import shutil

import jax
import ml_collections
import numpy as np
import optax
import pytest

from configs import default
from east_jax import parallel, study, train
from east_jax.data import pipeline
from east_jax.models import create_model
from east_jax.sparsity import methods, transform


def tiny_config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
  """A few-second Fashion-MNIST run: a 2-stage ResNet of width 4."""
  config = default.get_config()
  config.model.name = "resnet18"
  config.model.width = 4
  config.model.stage_sizes = (1, 1)
  config.dataset.name = "fashion_mnist"
  config.dataset.data_dir = data_dir
  config.dataset.num_threads = 2
  config.batch_size = 32
  config.eval_batch_size = 64
  config.num_train_steps = 6
  config.log_every_steps = 2
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 3
  return study.set_fields(config, overrides)


def built_once(name: str, build) -> str:
  """The folder `build(folder)` filled, built once per test run: the first pytest-xdist
  worker to ask builds it while the others wait, then all of them read it."""
  folder = os.path.join(os.environ["EAST_JAX_TEST_RUN_DIR"], "built", name)
  os.makedirs(os.path.dirname(folder), exist_ok=True)
  with open(folder + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(folder + ".done"):
      shutil.rmtree(folder, ignore_errors=True)
      os.makedirs(folder)
      build(folder)
      open(folder + ".done", "w").close()
  return folder


# An 8-step EAST run on 8 devices at 90%: weight sharing, DyReLU and its phase-out, two
# cycles, RigL's updates. lr 0.02: at 0.1 these 4-examples-per-device nets amplify float
# rounding ~10x per step (a 1e-7 change of the initial params alone flips a mask by step 4).
# XLA's convolution gradients sum in the same order as the sparse kernels; the matmul kernel
# gradient (as accurate against float64) sums in another, which in this run flips a cycle
# update's choice by step 4.
EAST_RUN = {"sparsity.method": "east", "sparsity.sparsity": 0.9, "model.stage_sizes": (3, 1),
            "num_train_steps": 8, "sparsity.update_interval": 2,
            "east.cycle_update_interval": 1, "learning_rate": 0.02, "log_every_steps": 1,
            "model.kernel_grad": "xla"}


def east_masked_run(data_dir: str) -> str:
  """The workdir of the EAST_RUN with masks (no sparse compute), trained once per test run."""
  config = tiny_config(data_dir, **{**EAST_RUN, "model.sparse_compute": "off"})
  return built_once("east_masked", lambda workdir: train.train_and_evaluate(config, workdir))


class TamperedIterator:
  """A train iterator whose n-th batch (1-based) passes through `tamper(n, batch)`."""

  def __init__(self, inner, tamper):
    self._inner, self._tamper, self._calls = inner, tamper, 0

  def __next__(self):
    self._calls += 1
    return self._tamper(self._calls, next(self._inner))

  def get_state(self):
    return self._inner.get_state()

  def set_state(self, state):
    self._inner.set_state(state)

  def close(self):
    self._inner.close()


def train_until_killed(config, workdir: str, batch: int) -> None:
  """Runs `config` in `workdir` and kills it (KeyboardInterrupt) when it asks for its
  batch-th training batch (1-based): the steps before it ran, that one never does."""
  real = pipeline.train_iterator

  def tamper(n, b):
    if n == batch:
      raise KeyboardInterrupt("simulated kill")
    return b

  pipeline.train_iterator = lambda *a, **k: TamperedIterator(real(*a, **k), tamper)
  try:
    with pytest.raises(KeyboardInterrupt):
      train.train_and_evaluate(config, workdir)
  finally:
    pipeline.train_iterator = real


def sparse_setup(data_dir, devices, *, method="rigl", sparsity=0.99, interval=1,
                 total_steps=20, nesterov=True, **overrides):
  """(mesh, model, tx, spec, state, batches) of a sparse width-4 ResNet on `devices`."""
  config = tiny_config(data_dir, **{"sparsity.method": method, "sparsity.sparsity": sparsity,
                                    "sparsity.update_interval": interval, **overrides})
  mesh = parallel.create_mesh(devices)
  ds = pipeline.load_dataset(config.dataset)
  model = create_model("resnet18", num_classes=10, width=4, stage_sizes=(1, 1),
                       bn_axis_name=parallel.DATA_AXIS)
  spec = methods.create_spec(config.sparsity, total_steps=total_steps, seed=0)
  tx = transform.sparse_training(optax.sgd(0.1, momentum=0.9, nesterov=nesterov), spec)
  state = train.create_train_state(jax.random.key(0), model, tx, ds.image_shape, mesh)
  batches = pipeline.train_iterator(ds, global_batch_size=32, seed=0)
  return mesh, model, tx, spec, state, batches


def mask_history(data_dir, devices, steps, **setup):
  """(every device's copy of every mask leaf after each of `steps` train steps, the final
  state) of `sparse_setup(data_dir, devices, **setup)`."""
  mesh, model, tx, _, state, batches = sparse_setup(data_dir, devices, **setup)
  step = train.make_train_step(model, tx, mesh)
  history = []
  for _ in range(steps):
    state, _ = step(state, parallel.global_batch(next(batches), mesh))
    # Copied out now: the state is donated to the next step.
    history.append([[np.asarray(s.data) for s in leaf.addressable_shards]
                    for leaf in jax.tree.leaves(state.opt_state.masks)])
  return history, state
