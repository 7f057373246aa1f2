"""A finished run in a few plain lines: test accuracy, kept weights, its step time against
a dense step of the same network, and where its files are; writes its training curves.

  python -m east_jax.run_summary --workdir=runs/first_run [--dense_steps=2]

The sparse step time is the median over the run's logged intervals after the first (which
holds the compilations); the dense one is measured here, on one device, with the run's
network, batch size and optimizer and the sparsity method set to dense, on synthetic data
(compile excluded; --dense_steps=0 skips it). Curves: <workdir>/training.png.
"""

import json
import os
import statistics
import time

from absl import flags
from absl import logging
import jax
import numpy as np

from east_jax import cli
from east_jax import parallel
from east_jax import run_record
from east_jax import train
from east_jax.data import pipeline

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The workdir of a finished training run.")
flags.DEFINE_integer("dense_steps", 2, "Timed dense steps after one warm-up (0: none).")


def read_metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def sparse_step_seconds(metrics: list[dict], batch_size: int) -> float | None:
  """Median seconds per train step over the logged intervals after the first."""
  rates = [m["images_per_second"] for m in metrics if "images_per_second" in m][1:]
  return batch_size / statistics.median(rates) if rates else None


def dense_step_seconds(config, steps: int) -> float:
  """Median seconds of a dense train step of `config`'s network (one device, synthetic
  batch of config.batch_size, compile excluded)."""
  config = config.copy_and_resolve_references()
  config.sparsity.method, config.sparsity.sparsity = "dense", 0.0
  ds = pipeline.load_dataset(config.dataset)
  run = train.build_run(config, ds)
  mesh = parallel.create_mesh(jax.devices()[:1])
  state = train.create_train_state(jax.random.key(0), run.model, run.tx, ds.image_shape, mesh)
  rng = np.random.default_rng(0)
  batch = parallel.global_batch({
      "image": rng.standard_normal((config.batch_size, *ds.image_shape), np.float32),
      "label": rng.integers(0, ds.num_classes, config.batch_size).astype(np.int32)}, mesh)
  step = train.make_train_step(run.model, run.tx, mesh).lower(state, batch).compile()
  times = []
  for _ in range(steps + 1):  # The first is a warm-up.
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  return statistics.median(times[1:])


def plot_training(metrics: list[dict], path: str) -> None:
  """Train accuracy, kept weights and DyReLU's beta against the step."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  series = [("train_accuracy", "train accuracy"), ("mask/kept", "kept weights"),
            ("east/beta", "DyReLU beta")]
  series = [(k, label) for k, label in series if any(k in m for m in metrics)]
  fig, axes = plt.subplots(len(series), 1, figsize=(6.5, 2.2 * len(series)), sharex=True)
  for ax, (key, label) in zip(np.atleast_1d(axes), series):
    points = [(m["step"], m[key]) for m in metrics if key in m]
    ax.plot(*zip(*points), "-")
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)
  np.atleast_1d(axes)[-1].set_xlabel("step")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def summary_lines(workdir: str, dense_steps: int) -> list[str]:
  config = run_record.load_config(workdir)
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    final = json.load(f)
  metrics = read_metrics(workdir)
  lines = []
  if "test_accuracy" in final:
    lines.append(f"test accuracy: {100 * final['test_accuracy']:.2f}% after {final['step']} "
                 f"steps ({final['train_seconds'] / 60:.1f} min of training)")
  if "sparsity/kept" in final:
    lines.append(f"kept weights: {final['sparsity/kept']:,} of {final['sparsity/prunable']:,} "
                 f"({100 * final['sparsity/sparsity']:.2f}% sparse, "
                 f"{final.get('sparsity/collapsed_layers', 0)} layers left empty)")
  sparse = sparse_step_seconds(metrics, config.batch_size)
  if sparse is not None:
    line = f"train step: {sparse:.2f} s ({config.sparsity.method}, batch {config.batch_size})"
    if dense_steps > 0:
      dense = dense_step_seconds(config, dense_steps)
      line += f" against {dense:.2f} s for a dense step of the same network ({dense / sparse:.1f}x)"
    lines.append(line)
  plot = os.path.join(workdir, "training.png")
  plot_training(metrics, plot)
  lines.append(f"files: {workdir} (config.json, metrics.jsonl, final_metrics.json, "
               f"sparsity.json, checkpoints/, tensorboard/); curves: {plot}")
  return lines


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  for name in ("final_metrics.json", "metrics.jsonl"):
    if not os.path.exists(os.path.join(FLAGS.workdir, name)):
      cli.fail(f"{FLAGS.workdir} has no {name}: pass the --workdir of a finished run.")
  logging.set_verbosity(logging.ERROR)  # tfds logs every dataset it opens at INFO.
  print("\n".join(summary_lines(FLAGS.workdir, FLAGS.dense_steps)), flush=True)


if __name__ == "__main__":
  cli.run(main, required=("workdir",))
