"""Evaluate a run: python -m east_jax.evaluate (or east-jax-evaluate) --workdir=<run>

Loss and top-1 of a checkpoint (the latest, or --step) on --split (default test), with
the run's own saved config; for sparse runs the exact kept counts per layer, density and
FLOPs relative to the dense network (DyReLU's hyper-networks counted while active).
Prints a table and, with --json, writes the metrics to that file.

--recalibrate_bn=N first recomputes BatchNorm's running statistics from N training batches
(the first N of the run's training stream, training-mode forward passes that update the
running averages as training does, parameters unchanged; with the ResNets' momentum of 0.9
the checkpoint's statistics keep a weight of 0.9^N): evaluation then shows how much of a
train/test gap is stale statistics.
"""

import json
import sys

import jax
from absl import flags
from absl import logging

from east_jax import cli
from east_jax import parallel
from east_jax import reporting
from east_jax import saved_run
from east_jax import step_programs
from east_jax import train
from east_jax.data import pipeline
from east_jax.errors import UserInputError

FLAGS = flags.FLAGS


def recalibrate_batch_norm(p_stats_step, state, ds, config, mesh, num_batches: int):
  """`state` with BatchNorm statistics updated over the first `num_batches` training batches."""
  batches = pipeline.train_iterator(ds, global_batch_size=config.batch_size, seed=config.seed,
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count(),
                                    num_threads=config.dataset.num_threads)
  try:
    for _ in range(num_batches):
      state = state.replace(batch_stats=p_stats_step(state, parallel.global_batch(next(batches),
                                                                                  mesh)))
  finally:
    batches.close()
  return state


def evaluate(workdir: str, split: str = "test", step: int | None = None,
             recalibrate_bn: int = 0) -> tuple[dict, str]:
  """(metrics, per-layer table or "") of a checkpoint of `workdir` on `split`, after
  `recalibrate_bn` batches of BatchNorm recalibration (0: the checkpoint's statistics)."""
  if split not in ("train", "validation", "test"):
    raise UserInputError(f"--split must be train, validation or test, got {split!r}.")
  if recalibrate_bn < 0:
    raise UserInputError(f"--recalibrate_bn is a number of training batches (0: none), "
                         f"got {recalibrate_bn}.")
  config, ds, run, state, mesh = saved_run.load(workdir, step, model_only=True)
  step = int(state.step)
  active = run.plan.hypernet_active(step)
  model = step_programs.sparse_compute_model(run.model, run.spec, state.params,
                                     config.model.sparse_compute, from_step=step)
  beta_fn = run.plan.beta_fn if active else None
  p_eval_step = train.make_eval_step(model, mesh, beta_fn)
  metrics = {"step": step}
  if recalibrate_bn:
    state = recalibrate_batch_norm(train.make_batch_stats_step(model, mesh, beta_fn), state, ds,
                                   config, mesh, recalibrate_bn)
    metrics["recalibrated_bn_batches"] = recalibrate_bn
  report = reporting.sparsity_reporter(run.spec, run.model, ds.image_shape, state.params, None)
  table = ""
  if report is not None:
    metrics.update(report(state, active))
    table = report(state, active, table=True)
  metrics.update(train.evaluate(p_eval_step, state, ds, split, config, mesh))
  return metrics, table


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.ERROR)
  try:
    metrics, table = evaluate(FLAGS.workdir, FLAGS.split, FLAGS.step, FLAGS.recalibrate_bn)
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if table:
    print(table)
  for key, value in metrics.items():
    print(f"{key:32s} {value:.6g}" if isinstance(value, float) else f"{key:32s} {value}")
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(metrics, f, indent=2)


def run():
  # Defined here, not on import: the library functions above import without flags.
  flags.DEFINE_string("workdir", None, "A training run's workdir.")
  flags.DEFINE_integer("step", None, "The checkpoint's step (default: the latest).")
  flags.DEFINE_string("split", "test", "The split to evaluate: train, validation or test.")
  flags.DEFINE_string("json", "", "Also write the metrics to this JSON file.")
  flags.DEFINE_integer("recalibrate_bn", 0, "Recompute BatchNorm statistics from this many "
                       "training batches before evaluating (0: the checkpoint's).")
  cli.run(main, required=("workdir",))


if __name__ == "__main__":
  run()
