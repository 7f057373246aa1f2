"""Training and evaluation: TrainState, create_train_state, train_step, eval_step,
train_and_evaluate.

`train_step` and `eval_step` are per-device functions over the local shard of a
batch; `make_train_step` / `make_eval_step` wrap them in `jax.shard_map` over the
`data` mesh axis and `jax.jit`.
"""

import functools
import json
import os
import sys
import time
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
import tqdm
from jax.sharding import PartitionSpec as P

from east_jax import checkpointing
from east_jax import compilation_cache
from east_jax import config_validation
from east_jax import east
from east_jax import metrics as metrics_lib
from east_jax import optim
from east_jax import parallel
from east_jax import preemption
from east_jax import pruning_at_init
from east_jax import reporting
from east_jax import run_record
from east_jax import run_timing
from east_jax import step_programs
from east_jax.data import pipeline
from east_jax.errors import RunIntegrityError, UserInputError
from east_jax.models import create_model
from east_jax.models import dyrelu
from east_jax.models import layers
from east_jax.models import resnet
from east_jax.sparsity import masks as masks_lib
from east_jax.sparsity import methods
from east_jax.sparsity import transform as sparse_transform


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; a pytree that checkpoints as a whole."""
  step: jax.Array
  params: dict
  batch_stats: dict
  opt_state: optax.OptState


OPTIMIZATION_LEVEL_FLAG = "--xla_backend_optimization_level"


def compiler_options(runs_once: bool = False) -> dict:
  """XLA options of a program. On CPU, LLVM optimisation level 1 compiles the train and
  eval steps 20-35% faster at the same step time and bit-identical results, and the init
  program, which runs once, compiles 3x faster at level 0 (benchmarks/RESULTS.md, start-up).
  A level set in XLA_FLAGS (`--xla_backend_optimization_level=N`) wins for every program."""
  if (jax.default_backend() != "cpu"
      or OPTIMIZATION_LEVEL_FLAG in os.environ.get("XLA_FLAGS", "")):
    return {}
  return {"xla_backend_optimization_level": 0 if runs_once else 1}


def create_train_state(rng, model, tx, image_shape, mesh, abstract: bool = False) -> TrainState:
  """Initialises the model and optimizer, replicated over `mesh` (abstract: only the
  shapes, dtypes and shardings, nothing computed)."""

  def init(rng):
    variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params = variables["params"]
    opt_state = tx.init(params)
    if isinstance(opt_state, sparse_transform.SparseTrainingState):
      params = masks_lib.apply(params, opt_state.masks)  # Pruned weights start at exactly 0.
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=opt_state)

  program = jax.jit(init, out_shardings=parallel.replicated(mesh),
                    compiler_options=compiler_options(runs_once=True))
  return program.eval_shape(rng) if abstract else program(rng)


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _beta(beta_fn, step):
  return None if beta_fn is None else beta_fn(step)


def _variables(model, state, params) -> dict:
  """What `model.apply` takes: params, BatchNorm statistics and, for a model that computes
  over kept weights only, the masks."""
  variables = {"params": params, "batch_stats": state.batch_stats}
  if model.sparse_capacity:
    variables[layers.MASKS] = state.opt_state.masks
  return variables


def train_step(state: TrainState, batch: dict, *, model, tx, beta_fn=None
               ) -> tuple[TrainState, dict]:
  """One SGD step on this device's shard of the global batch (inside shard_map).

  The loss is the mean over the global batch (pmean of the local means, shards are
  equal-sized), so its gradient w.r.t. the replicated params is the global-batch
  gradient; BatchNorm statistics are reduced over the mesh by the model itself.
  `beta_fn(step)` gives DyReLU's beta (None: the model runs plain ReLU).
  """

  def loss_fn(params):
    logits, updates = model.apply(_variables(model, state, params), batch["image"], train=True,
                                  beta=_beta(beta_fn, state.step), mutable=["batch_stats"])
    loss = jax.lax.pmean(cross_entropy(logits, batch["label"]).mean(), parallel.DATA_AXIS)
    return loss, (logits, updates["batch_stats"])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  accuracy = jax.lax.pmean(jnp.mean(jnp.argmax(logits, -1) == batch["label"]), parallel.DATA_AXIS)
  new_state = TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                         opt_state=opt_state)
  step_metrics = {"loss": loss, "accuracy": accuracy}
  if model.sparse_capacity:
    step_metrics[step_programs.SLOT_EXCESS] = step_programs.slot_excess(model,
                                                                        state.opt_state.masks)
  return new_state, step_metrics


def eval_step(state: TrainState, batch: dict, *, model, beta_fn=None) -> dict:
  """Sums of loss, correct predictions and real examples over the global batch;
  padded examples (mask 0) count for nothing."""
  logits = model.apply(_variables(model, state, state.params), batch["image"], train=False,
                       beta=_beta(beta_fn, state.step))
  mask = batch["mask"]
  sums = {"loss": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
          "correct": jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * mask),
          "count": jnp.sum(mask)}
  return jax.lax.psum(sums, parallel.DATA_AXIS)


def batch_stats_step(state: TrainState, batch: dict, *, model, beta_fn=None) -> dict:
  """BatchNorm running statistics after one training-mode forward pass over the global
  batch (the running average updated as in `train_step`); parameters untouched."""
  _, updates = model.apply(_variables(model, state, state.params), batch["image"], train=True,
                           beta=_beta(beta_fn, state.step), mutable=["batch_stats"])
  return updates["batch_stats"]


def make_train_step(model, tx, mesh, beta_fn=None):
  """`train_step` under shard_map over the mesh and jit; the input state is donated."""
  step = jax.shard_map(functools.partial(train_step, model=model, tx=tx, beta_fn=beta_fn),
                       mesh=mesh,
                       in_specs=(P(), P(parallel.DATA_AXIS)), out_specs=(P(), P()))
  return jax.jit(step, donate_argnums=0, compiler_options=compiler_options())


def make_eval_step(model, mesh, beta_fn=None):
  step = jax.shard_map(functools.partial(eval_step, model=model, beta_fn=beta_fn), mesh=mesh,
                       in_specs=(P(), P(parallel.DATA_AXIS)), out_specs=P())
  return jax.jit(step, compiler_options=compiler_options())


def make_batch_stats_step(model, mesh, beta_fn=None):
  step = jax.shard_map(functools.partial(batch_stats_step, model=model, beta_fn=beta_fn),
                       mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS)), out_specs=P())
  return jax.jit(step, compiler_options=compiler_options())


def evaluate(p_eval_step, state, ds, split, config, mesh) -> dict:
  """Loss and accuracy over every example of `split`, each counted exactly once."""
  totals = {"loss": 0.0, "correct": 0.0, "count": 0.0}
  for batch in pipeline.eval_batches(ds, split, global_batch_size=config.eval_batch_size,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count(),
                                     num_threads=config.dataset.num_threads):
    sums = jax.device_get(p_eval_step(state, parallel.global_batch(batch, mesh)))
    totals = {k: totals[k] + float(sums[k]) for k in totals}
  return {f"{split}_loss": totals["loss"] / totals["count"],
          f"{split}_accuracy": totals["correct"] / totals["count"],
          f"{split}_examples": totals["count"]}


def _check_runnable(config, run: "Run", params) -> None:
  """Stops a config that cannot train before anything is written: a sparsity budget
  below one weight per prunable layer, or a weight-sharing ratio that shares nothing."""
  if run.spec is not None:
    sparse_transform.check_budget(run.spec, sparse_transform.prunable_shapes(run.spec, params))
  problem = east.sharing_problem(config, run.model.stage_sizes)
  if problem is not None:
    message, is_error = problem
    if is_error:
      raise UserInputError(message)
    if jax.process_index() == 0:
      print(f"warning: {message}", file=sys.stderr, flush=True)


def _prepare_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserInputError(f"Cannot create workdir {workdir!r}: {e.strerror}. Pass --workdir=<a "
                         "writable folder>.") from None
  if not os.access(workdir, os.W_OK):
    raise UserInputError(f"Workdir {workdir!r} is not writable. Pass --workdir=<a writable folder>.")


class Run(NamedTuple):
  """What a config builds for a dataset: the model, the optimizer (with the sparse
  transformation), the sparsity spec (None: dense) and the schedules' lengths."""
  model: Any
  tx: optax.GradientTransformation
  spec: Any
  total_steps: int
  steps_per_epoch: int
  learning_rate_fn: Any
  plan: east.Plan        # EAST's sharing, activation, DyReLU phases and cycles


def build_run(config: ml_collections.ConfigDict, ds) -> Run:
  """Builds the model, optimizer and schedules of `config` for the dataset `ds`."""
  steps_per_epoch = ds.num_examples("train") // config.batch_size
  if steps_per_epoch == 0:
    raise UserInputError(f"config.batch_size={config.batch_size} exceeds the "
                         f"{ds.num_examples('train')} training examples of {ds.name}.")
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else int(round(config.num_epochs * steps_per_epoch)))
  if total_steps == 0:
    raise UserInputError(f"config.num_epochs={config.num_epochs} of {steps_per_epoch} steps each "
                         "rounds to 0 train steps: raise config.num_epochs or set "
                         "config.num_train_steps.")
  plan = east.plan(config, total_steps)
  model = create_model(config.model.name, num_classes=ds.num_classes, width=config.model.width,
                       stem=config.model.stem, stage_sizes=config.model.stage_sizes,
                       bn_axis_name=parallel.DATA_AXIS, dtype=jnp.dtype(config.model.dtype),
                       kernel_grad=config.model.kernel_grad, **plan.model_options)
  learning_rate_fn = optim.create_learning_rate_fn(config, total_steps, steps_per_epoch)
  tx = optim.create_optimizer(config, learning_rate_fn, freeze_step=plan.hypernet_freeze_step,
                              frozen=dyrelu.is_hypernet)
  spec = methods.create_spec(config.sparsity, total_steps=total_steps, seed=config.seed,
                             kernel_uses=east.kernel_uses(model), cycles=plan.cycles,
                             never_prune=(dyrelu.HYPERNET,), stem=resnet.STEM_KERNEL,
                             classifier=resnet.CLASSIFIER_KERNEL)
  if spec is not None:
    tx = sparse_transform.sparse_training(tx, spec)
  return Run(model, tx, spec, total_steps, steps_per_epoch, learning_rate_fn, plan)


def _restore_or_start(config, run, state, ds, mesh, checkpointer, train_iter):
  """(state, seconds trained before): the latest readable checkpoint's, else the new
  state (with its pruning-at-initialisation masks scored)."""
  restored = checkpointer.restore_latest(state)
  if restored is None:
    if run.spec is not None and run.spec.prune_at_init:
      state = pruning_at_init.prune(config, run, state, ds, mesh)
    return state, 0.0
  state, data_state = restored
  if data_state["num_workers"] != config.dataset.num_workers:
    raise UserInputError(
        f"The checkpoint in {checkpointer.workdir} was written with config.dataset.num_workers="
        f"{data_state['num_workers']} (its input position is per worker): resume with that value.")
  train_iter.set_state(data_state["iterator"])
  return state, data_state["train_seconds"]


def _masks(state):
  """The masks of a sparse run's state (None for a dense one)."""
  return getattr(state.opt_state, "masks", None)


class _Log:
  """Train metrics of the steps since the last log line: fetched together (no per-step
  sync), checked (NaN / Inf, sparse-compute slots), averaged and written."""

  def __init__(self, config, run, writer, schedule_report, start_step, progress):
    self._config, self._run, self._writer = config, run, writer
    self._schedule_report, self._progress = schedule_report, progress
    self.pending, self._since = [], (time.time(), start_step)

  def restart_clock(self, step=None):
    self._since = (time.time(), self._since[1] if step is None else step)

  def flush(self, step, state, programs):
    records = jax.device_get(self.pending)
    first = step - len(records) + 1
    metrics_lib.check_finite([r["loss"] for r in records], first)
    if any(r.pop(step_programs.SLOT_EXCESS, 0) > 0 for r in records):
      programs.schedule.check(step, _masks(state), every=True)
      raise RunIntegrityError(f"Between steps {first} and {step} a layer kept more weights than "
                              "its sparse-compute slots; the run stopped before writing anything "
                              "more.")
    summary = {f"train_{k}": v for k, v in metrics_lib.mean_of(records).items()}
    start, start_step = self._since
    summary["images_per_second"] = ((step - start_step) * self._config.batch_size
                                    / (time.time() - start))
    summary["learning_rate"] = float(self._run.learning_rate_fn(step - 1))
    summary["epoch"] = step / self._run.steps_per_epoch
    summary.update(self._schedule_report(step, state))
    self._writer.write(step, summary)
    self._progress.set_postfix(loss=f"{summary['train_loss']:.3f}",
                               acc=f"{summary['train_accuracy']:.3f}")
    if jax.process_index() == 0 and self._progress.disable:
      print(f"step {step}/{self._run.total_steps}: loss={summary['train_loss']:.4f} "
            f"accuracy={summary['train_accuracy']:.4f} {summary['images_per_second']:.0f} img/s",
            flush=True)
    self.pending = []
    self.restart_clock(step)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains `config` in `workdir`, resuming from its latest checkpoint if any.

  On SIGTERM it saves a checkpoint at the next step and raises `preemption.Stopped`.
  Returns the final train state; the final evaluation (and `train_seconds`, the wall
  time over all launches up to the end) is in `<workdir>/final_metrics.json`, every
  logged value in `<workdir>/metrics.jsonl`.
  """
  config_validation.validate(config)
  run_record.check_relaunch(config, workdir)  # Before anything is restored or written.
  compilation_cache.enable(config.compilation_cache_dir)
  loop_start = time.time()
  mesh = parallel.create_mesh()
  config_validation.validate_for_devices(config, mesh.size)
  ds = pipeline.load_dataset(config.dataset)
  run = build_run(config, ds)
  state = create_train_state(jax.random.key(config.seed), run.model, run.tx, ds.image_shape, mesh)
  _check_runnable(config, run, state.params)
  _prepare_workdir(workdir)
  is_chief = jax.process_index() == 0
  if is_chief:
    run_record.write(config, workdir)
  train_iter = pipeline.train_iterator(ds, global_batch_size=config.batch_size, seed=config.seed,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count(),
                                       num_threads=config.dataset.num_threads,
                                       num_workers=config.dataset.num_workers)
  checkpointer = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
  state, seconds_before = _restore_or_start(config, run, state, ds, mesh, checkpointer,
                                            train_iter)
  start_step = int(state.step)
  programs = step_programs.StepPrograms(
      run.model, run.spec, run.plan, config.model.sparse_compute, state.params, _masks(state),
      make_train=lambda model, beta_fn: make_train_step(model, run.tx, mesh, beta_fn),
      make_eval=lambda model, beta_fn: make_eval_step(model, mesh, beta_fn))
  if run.spec is not None:
    programs.schedule.check(start_step, _masks(state))
  sparsity_report = reporting.sparsity_reporter(run.spec, run.model, ds.image_shape,
                                                state.params, workdir, programs.schedule.record())
  if sparsity_report and is_chief:
    print(sparsity_report(state, table=True) + "\n" + programs.schedule.describe())
  eval_every = config.eval_every_steps if config.eval_every_steps > 0 else run.steps_per_epoch
  writer = metrics_lib.MetricWriter(workdir)
  # A progress bar on a terminal; in a log file (CI, SLURM) one plain line per logged step.
  progress = tqdm.tqdm(total=run.total_steps, initial=start_step, desc=f"train {ds.name}",
                       disable=not (is_chief and sys.stderr.isatty()), unit="step",
                       dynamic_ncols=True)
  log = _Log(config, run, writer, reporting.schedule_reporter(run.spec, run.plan.beta_fn,
                                                              state.params), start_step, progress)
  eval_metrics, stop, step = {}, preemption.StopRequest(), start_step
  clock = run_timing.PhaseClock(config.batch_size, loop_start)
  try:
    for step in range(start_step + 1, run.total_steps + 1):
      batch = parallel.global_batch(next(train_iter), mesh)
      program = programs.train(step - 1, _masks(state))
      clock.step(program.phase, state)
      with clock.first_call(program.new):
        state, step_metrics = program.step_fn(state, batch)
      log.pending.append(step_metrics)
      progress.update()
      is_last = step == run.total_steps
      stopping = stop.reached(step) and not is_last
      save = step % config.checkpoint_every_steps == 0 or is_last or stopping
      if step % config.log_every_steps == 0 or is_last or save:
        log.flush(step, state, programs)
      if step % eval_every == 0 or is_last:
        clock.pause(state)
        started = time.time()
        programs.schedule.check(step, _masks(state))
        eval_metrics = (sparsity_report(state, run.plan.hypernet_active(step))
                        if sparsity_report else {})
        for split in config.eval_splits:
          eval_metrics.update(evaluate(programs.eval(step, _masks(state)), state, ds, split,
                                       config, mesh))
        writer.write(step, eval_metrics)
        progress.write(f"step {step}: " + ", ".join(
            f"{k}={v:.6g}" for k, v in eval_metrics.items() if not k.endswith("_examples")))
        log.restart_clock()  # Evaluation time is not training throughput.
        clock.add("evaluation", time.time() - started)
      if save:
        clock.pause(state)
        started = time.time()
        checkpointer.save(step, state, {"iterator": train_iter.get_state(),
                                        "num_workers": config.dataset.num_workers,
                                        "train_seconds": seconds_before + time.time() - loop_start})
        clock.add("checkpoint", time.time() - started)
      if stopping:
        break
    clock.pause(state)
  finally:
    stop.close()
    progress.close()
    train_iter.close()
    started = time.time()
    checkpointer.wait()
    waited = time.time() - started
    checkpointer.close()
    writer.close()
  clock.add("checkpoint", waited)
  timing = clock.save(workdir) if is_chief else None
  if step < run.total_steps:
    raise preemption.Stopped(step, workdir)
  if is_chief:
    print(run_timing.describe(timing), flush=True)
  if is_chief and eval_metrics:
    with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
      seconds = seconds_before + time.time() - loop_start
      json.dump({"step": run.total_steps, "train_seconds": seconds, **eval_metrics}, f, indent=2)
  stop.deliver_late()
  return state
