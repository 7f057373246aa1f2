"""Train-step time: dense vs each sparse method, ordinary and mask-update steps.

  python -m benchmarks.step_time                       # ResNet-34, CIFAR shapes, batch 128
  python -m benchmarks.step_time --width=16 --steps=5  # a quicker look

Runs the real jitted train step (`train.make_train_step`) on synthetic data on one
device. With update_interval=2 ordinary and mask-update steps alternate, so both are
timed from the same compiled step. Prints a Markdown table.
Targets (issue 5): ordinary-step overhead <= 5% over dense; update step <= 1.25x an
ordinary step.
"""

import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from east_jax import optim, parallel, train
from east_jax.models import create_model
from east_jax.sparsity import transform
from configs import default

flags.DEFINE_string("model", "resnet34", "resnet18 | resnet34 | resnet50")
flags.DEFINE_integer("width", 64, "channels of the first stage")
flags.DEFINE_integer("batch", 128, "batch size")
flags.DEFINE_integer("image", 32, "image side (32: CIFAR, 224: ImageNet)")
flags.DEFINE_float("sparsity", 0.999, "sparsity of the sparse methods")
flags.DEFINE_integer("steps", 3, "timed steps of each kind")
flags.DEFINE_list("methods", ["dense", "static", "set", "rigl", "gmp"], "methods to time")
FLAGS = flags.FLAGS


def time_method(method):
  """(ordinary step seconds, update step seconds or None) of `method`."""
  config = default.get_config()
  mesh = parallel.create_mesh(jax.devices()[:1])
  stem = "imagenet" if FLAGS.image >= 128 else "cifar"
  model = create_model(FLAGS.model, num_classes=10 if stem == "cifar" else 1000,
                       width=FLAGS.width, stem=stem, bn_axis_name=parallel.DATA_AXIS)
  tx = optim.create_optimizer(config, optim.create_learning_rate_fn(config, 1000, 100))
  if method != "dense":
    rule = {"static": "none", "set": "set", "rigl": "rigl", "gmp": "gmp"}[method]
    spec = transform.SparsitySpec(update_rule=rule, density=1 - FLAGS.sparsity, total_steps=1000,
                                  update_interval=2, update_end=1000)
    tx = transform.sparse_training(tx, spec)
  image_shape = (FLAGS.image, FLAGS.image, 3)
  state = train.create_train_state(jax.random.key(0), model, tx, image_shape, mesh)
  rng = np.random.default_rng(0)
  batch = parallel.global_batch({
      "image": rng.standard_normal((FLAGS.batch, *image_shape), np.float32),
      "label": rng.integers(0, 10, FLAGS.batch).astype(np.int32)}, mesh)
  step = train.make_train_step(model, tx, mesh)
  for _ in range(2):  # Compile, and run one step of each kind.
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  times = {"ordinary": [], "update": []}
  for i in range(2 * FLAGS.steps):
    kind = "update" if method not in ("dense", "static") and (i % 2 == 0) else "ordinary"
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    times[kind].append(time.perf_counter() - start)
    logging.info("%s %s step: %.3f s", method, kind, times[kind][-1])
  median = {k: float(np.median(v)) if v else None for k, v in times.items()}
  return median["ordinary"], median["update"]


def main(argv):
  del argv
  print(f"{FLAGS.model} width {FLAGS.width}, {FLAGS.image}x{FLAGS.image}, batch {FLAGS.batch}, "
        f"sparsity {FLAGS.sparsity}, {jax.devices()[0].device_kind} x1, jax {jax.__version__}; "
        f"median of {FLAGS.steps} steps of each kind")
  print("| method | ordinary step (s) | overhead vs dense | mask-update step (s) | update / ordinary |")
  print("|---|---|---|---|---|", flush=True)
  dense = None
  for method in FLAGS.methods:
    ordinary, update = time_method(method)
    dense = ordinary if method == "dense" else dense
    overhead = f"{100 * (ordinary / dense - 1):+.1f}%" if dense else "-"
    ratio = f"{update / ordinary:.2f}x" if update else "-"
    update_text = f"{update:.3f}" if update else "-"
    print(f"| {method} | {ordinary:.3f} | {overhead} | {update_text} | {ratio} |", flush=True)


if __name__ == "__main__":
  app.run(main)
