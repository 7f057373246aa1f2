"""Train-step throughput: dense vs EAST, float32 vs bfloat16, compile time, mask updates.

  python -m benchmarks.throughput                                   # the default CPU table
  python -m benchmarks.throughput --models=resnet50:imagenet --batch=256 --dtypes=bfloat16
  python -m benchmarks.throughput --models=resnet34:cifar --methods=dense,static,set,rigl,gmp \
      --dtypes=float32                   # every sparse method against dense
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.throughput --devices=8
  python -m benchmarks.throughput --models=resnet34:cifar --methods=east --dtypes=float32 \
      --scaling=1,2,4,8      # the same global batch over 1, 2, 4, 8 devices, one table

Runs the real jitted train step (`train.make_train_step`) on synthetic data. EAST is
the full method at `--sparsity`: weight sharing, DyReLU active (beta = 1, the costly
phase) and cyclic updates. Sparse methods update their masks every other step, so
ordinary and mask-update steps alternate in one compiled step and both are timed.
Compile time is the ahead-of-time `lower().compile()` of that step. Prints a
Markdown table row per (model, method, dtype). With --scaling, each device count runs in a
fresh process (XLA fixes the host device count at start-up; on a CPU the simulated devices
share the same cores, so this measures the sharded program's overhead, not a speed-up).
"""

import os
import subprocess
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from configs import default
from east_jax import east, optim, parallel, train
from east_jax.models import create_model
from east_jax.models import dyrelu
from east_jax.sparsity import methods, transform
from benchmarks import timing

flags.DEFINE_list("models", ["resnet34:cifar", "resnet50:cifar", "resnet50:imagenet"],
                  "model:stem pairs (cifar: 32x32 inputs, imagenet: 224x224)")
flags.DEFINE_list("methods", ["dense", "east"], "dense | static | set | rigl | gmp | east")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "compute dtypes")
flags.DEFINE_list("kernel_grads", ["auto"], "convolution kernel gradients: auto | xla | matmul")
flags.DEFINE_integer("width", 64, "channels of the first stage")
flags.DEFINE_integer("batch", 128, "global batch size")
flags.DEFINE_integer("devices", 1, "devices of the data mesh (the first N)")
flags.DEFINE_float("sparsity", 0.999, "sparsity of the sparse methods")
flags.DEFINE_integer("steps", 2, "timed steps of each kind")
flags.DEFINE_list("scaling", [], "device counts: one fresh process per count, one table")
FLAGS = flags.FLAGS

TOTAL_STEPS = 1000


def build(model_name, stem, method, dtype, kernel_grad):
  """(model, tx, beta_fn, image_shape, num_classes) for one benchmark row."""
  config = default.apply_arg(default.get_config(), f"method={method},sparsity={FLAGS.sparsity}")
  config.sparsity.update_interval = 2
  config.east.cycle_update_interval = 2
  config.east.cycle_length = 0.5  # Cyclic updates throughout the timed steps.
  num_classes = 10 if stem == "cifar" else 1000
  plan = east.plan(config, TOTAL_STEPS)
  model = create_model(model_name, num_classes=num_classes, width=FLAGS.width, stem=stem,
                       bn_axis_name=parallel.DATA_AXIS, dtype=jnp.dtype(dtype),
                       kernel_grad=kernel_grad, **plan.model_options)
  tx = optim.create_optimizer(config, optim.create_learning_rate_fn(config, TOTAL_STEPS, 100))
  spec = methods.create_spec(config.sparsity, total_steps=TOTAL_STEPS, seed=0,
                             kernel_uses=east.kernel_uses(model),
                             never_prune=(dyrelu.HYPERNET,),
                             cycles=plan.cycles)
  if spec is not None:
    tx = transform.sparse_training(tx, spec)
  image = 32 if stem == "cifar" else 224
  return model, tx, plan.beta_fn, (image, image, 3), num_classes


def measure(model_name, stem, method, dtype, kernel_grad):
  """Compile seconds, median ordinary / update step seconds (update None if dense)."""
  mesh = parallel.create_mesh(jax.devices()[:FLAGS.devices])
  model, tx, beta_fn, image_shape, num_classes = build(model_name, stem, method, dtype,
                                                       kernel_grad)
  state = train.create_train_state(jax.random.key(0), model, tx, image_shape, mesh)
  batch = timing.synthetic_batch(mesh, FLAGS.batch, image_shape, num_classes)
  start = time.perf_counter()
  step = train.make_train_step(model, tx, mesh, beta_fn).lower(state, batch).compile()
  compile_seconds = time.perf_counter() - start

  def run_step():
    nonlocal state
    state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))

  # The warm-up is step 0 -> 1, so mask updates (every other step) fall on the even calls.
  sparse = method not in ("dense", "static")
  median = timing.median_times(run_step, ["update" if sparse and i % 2 == 0 else "ordinary"
                                          for i in range(2 * FLAGS.steps)])
  return compile_seconds, median["ordinary"], median.get("update")


def scaling_table(counts):
  """Reruns this benchmark with --devices=N in a fresh process per N (the host device
  count is fixed at start-up) and prints their rows with a devices column."""
  print("| devices | model | input | method | dtype | kernel grad | compile (s) | step (s) | "
        "images/s | mask-update step (s) | update / ordinary |")
  print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
  forwarded = [a for a in sys.argv[1:] if not a.startswith(("--scaling", "--devices"))]
  for n in map(int, counts):
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "
           f"--xla_force_host_platform_device_count={n}".strip()}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.throughput", *forwarded,
                           f"--devices={n}"], env=env, capture_output=True, text=True,
                          check=True)
    for line in proc.stdout.splitlines()[3:]:
      print(f"| {n} {line}", flush=True)


def main(argv):
  del argv
  if FLAGS.scaling:
    scaling_table(FLAGS.scaling)
    return
  device = jax.devices()[0]
  print(f"width {FLAGS.width}, batch {FLAGS.batch}, sparsity {FLAGS.sparsity}, "
        f"{FLAGS.devices} x {device.device_kind} ({device.platform}), jax {jax.__version__}; "
        f"median of {FLAGS.steps} steps of each kind")
  print("| model | input | method | dtype | kernel grad | compile (s) | step (s) | images/s | "
        "mask-update step (s) | update / ordinary |")
  print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
  for entry in FLAGS.models:
    model_name, _, stem = entry.partition(":")
    stem = stem or "cifar"
    for method in FLAGS.methods:
      for dtype in FLAGS.dtypes:
        for kernel_grad in FLAGS.kernel_grads:
          compile_s, ordinary, update = measure(model_name, stem, method, dtype, kernel_grad)
          side = 32 if stem == "cifar" else 224
          update_text = f"{update:.3f} | {update / ordinary:.2f}x" if update else "- | -"
          print(f"| {model_name} | {side}x{side} | {method} | {dtype} | {kernel_grad} | "
                f"{compile_s:.1f} | {ordinary:.3f} | {FLAGS.batch / ordinary:.1f} | "
                f"{update_text} |", flush=True)


if __name__ == "__main__":
  app.run(main)
