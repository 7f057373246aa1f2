"""Training and evaluation: TrainState, create_train_state, train_step, eval_step,
train_and_evaluate.

`train_step` and `eval_step` are per-device functions over the local shard of a
batch; `make_train_step` / `make_eval_step` wrap them in `jax.shard_map` over the
`data` mesh axis and `jax.jit`.
"""

import functools
import json
import math
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
from east_jax import run_record
from east_jax.data import pipeline
from east_jax.errors import RunIntegrityError, UserInputError
from east_jax.models import create_model
from east_jax.models import dyrelu
from east_jax.models import layers
from east_jax.models import resnet
from east_jax.models import sparse_conv
from east_jax.sparsity import accounting
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


def compiler_options(runs_once: bool = False) -> dict:
  """XLA options of a program. On CPU, LLVM optimisation level 1 compiles the train and
  eval steps 20-35% faster at the same step time and bit-identical results, and the init
  program, which runs once, compiles 3x faster at level 0 (benchmarks/RESULTS.md, start-up)."""
  if jax.default_backend() != "cpu":
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


def sparse_compute_model(model, spec, params, mode: str, from_step: int = 0, masks=None):
  """`model` with the layers that `mode` (config.model.sparse_compute) selects computed
  over their kept weights only, in as many slots as they keep at steps >= `from_step`
  (read from `masks` when only the masks know them: global scoring, GraNet)."""
  if spec is None:
    return model
  if masks is not None and sparse_transform.counts_from_masks(spec):
    capacity = masks_lib.kept_counts(masks, list(sparse_transform.prunable_shapes(spec, params)))
  else:
    capacity = sparse_transform.kept_capacity(spec, params, from_step)
  sizes = {n: x.size for n, x in masks_lib.layers(params, capacity).items()}
  selected = sparse_conv.select(capacity, sizes, mode, jax.default_backend())
  return model.clone(sparse_capacity=selected, layout="CNHW" if selected else model.layout)


SLOT_EXCESS = "slot_excess"  # A train step's metric: > 0 when a layer keeps more than its slots.


def kept_in_slots(model, masks) -> dict[str, jax.Array]:
  """The kept count of every layer `model` computes over its kept weights."""
  names = [name for name, _ in model.sparse_capacity]
  return {n: jnp.sum(m, dtype=jnp.int32) for n, m in masks_lib.layers(masks, names).items()}


def slot_excess(model, masks) -> jax.Array:
  """The largest (kept count - slots) over the layers computed over their kept weights:
  > 0 means one of them would compute without some of its kept weights."""
  counts = kept_in_slots(model, masks)
  return jnp.max(jnp.stack([counts[n] - slots for n, slots in model.sparse_capacity]))


def check_slots(models, state: TrainState) -> None:
  """Raises RunIntegrityError naming each layer of `models` whose kept count (in the
  masks of `state`) exceeds its slots: sparse compute would silently drop kept weights."""
  over = []
  for model in [m for m in models if m.sparse_capacity]:
    counts = masks_lib.kept_counts(state.opt_state.masks,
                                   [name for name, _ in model.sparse_capacity])
    over += [f"{n} keeps {counts[n]} weights in {slots} slots"
             for n, slots in model.sparse_capacity if counts[n] > slots]
  if over:
    raise RunIntegrityError(
        f"At step {int(state.step)}, sparse compute would drop kept weights: {'; '.join(sorted(set(over)))}. "
        "The masks do not fit this config's slots (a checkpoint of another sparsity?); the run "
        "stopped before writing anything more.")


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
    step_metrics[SLOT_EXCESS] = slot_excess(model, state.opt_state.masks)
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


def sparsity_reporter(spec, model, image_shape, params, workdir):
  """None for dense runs; else report(state, hypernet_active, table=False) ->
  accounting metrics, which also writes the per-layer counts to
  `<workdir>/sparsity.json` unless workdir is None (table=True: returns the printable
  per-layer table)."""
  if spec is None:
    return None
  uses = accounting.kernel_uses(model, image_shape, spec.never_prune, model.shared_convs())
  prunable = list(sparse_transform.prunable_shapes(spec, params))
  shapes = {n: tuple(x.shape) for n, x in masks_lib.layers(params, uses).items()}
  hypernet_macs = accounting.scope_macs(params, dyrelu.HYPERNET)

  def report(state, hypernet_active=False, table=False):
    masks = jax.device_get(state.opt_state.masks)
    if table:
      return accounting.format_table(masks, shapes, uses, prunable)
    summary = accounting.summarize(masks, shapes, uses, prunable,
                                   update_interval=spec.update_interval,
                                   dense_gradient=spec.update_rule in ("rigl", "granet"),
                                   active_extra_macs=hypernet_macs if hypernet_active else 0)
    counts = masks_lib.kept_counts(masks, prunable)
    collapsed = [n for n in prunable if counts[n] == 0]  # Layers cut off: nothing flows.
    summary["sparsity/collapsed_layers"] = len(collapsed)
    if workdir is not None and jax.process_index() == 0:
      with open(os.path.join(workdir, "sparsity.json"), "w") as f:
        json.dump({"step": int(state.step), **summary, "layers": counts,
                   "layer_sizes": {n: math.prod(shapes[n]) for n in prunable},
                   "collapsed_layers": collapsed}, f, indent=2)
    return summary

  return report


def _schedule_reporter(spec, beta_fn, params):
  """step, state -> the schedules' values at `step` (DyReLU's beta, the cycle, the
  density target) and the exact kept count read from the masks."""
  count_kept = None
  if spec is not None:
    prunable = list(sparse_transform.prunable_shapes(spec, params))
    full = sparse_transform.reference_size(spec, sparse_transform.prunable_shapes(spec, params))
    count_kept = jax.jit(lambda masks: sum(
        jnp.sum(m, dtype=jnp.int32) for m in masks_lib.layers(masks, prunable).values()))

  def report(step, state):
    values = {}
    if beta_fn is not None:
      values["east/beta"] = float(beta_fn(step))
    if count_kept is not None:
      kept = int(count_kept(state.opt_state.masks))
      values.update({"mask/kept": kept, "mask/density": kept / full})
    if spec is not None and spec.cycles is not None:
      where = spec.cycles.position(step)
      values.update({"east/cycle": -1 if where is None else where[0],
                     "east/cycle_position": 1.0 if where is None else where[1],
                     "mask/target_density": spec.cycles.density(step, spec.density)})
    return values

  return report


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
  model, tx, spec, total_steps = run.model, run.tx, run.spec, run.total_steps
  steps_per_epoch, learning_rate_fn = run.steps_per_epoch, run.learning_rate_fn
  beta_fn, hypernet_active = run.plan.beta_fn, run.plan.hypernet_active
  eval_every = config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch
  state = create_train_state(jax.random.key(config.seed), model, tx, ds.image_shape, mesh)
  _check_runnable(config, run, state.params)
  _prepare_workdir(workdir)
  is_chief = jax.process_index() == 0
  if is_chief:
    run_record.write(config, workdir)
  sparsity_report = sparsity_reporter(spec, model, ds.image_shape, state.params, workdir)
  schedule_report = _schedule_reporter(spec, beta_fn, state.params)

  train_iter = pipeline.train_iterator(ds, global_batch_size=config.batch_size, seed=config.seed,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count(),
                                       num_threads=config.dataset.num_threads,
                                       num_workers=config.dataset.num_workers)
  checkpointer = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
  restored = checkpointer.restore_latest(state)
  seconds_before = 0.0  # Time the run spent up to its restored checkpoint.
  if restored is not None:
    state, data_state = restored
    if data_state["num_workers"] != config.dataset.num_workers:
      raise UserInputError(
          f"The checkpoint in {workdir} was written with config.dataset.num_workers="
          f"{data_state['num_workers']} (its input position is per worker): resume with that "
          "value.")
    train_iter.set_state(data_state["iterator"])
    seconds_before = data_state["train_seconds"]
  elif spec is not None and spec.prune_at_init:
    state = pruning_at_init.prune(config, run, state, ds, mesh)

  # Over the kept weights: while cycles run, in slots for their peak counts; after their
  # last update (`settled`), in slots for the final counts (read from the masks then
  # when only the masks know them: GraNet).
  settled = sparse_transform.settled_step(spec, state.params)

  def fast_model(done):
    return sparse_compute_model(model, spec, state.params, config.model.sparse_compute,
                                from_step=settled if done else 0,
                                masks=None if spec is None else state.opt_state.masks)

  fast_models = {False: fast_model(False)}
  if settled is not None and not sparse_transform.counts_from_masks(spec):
    fast_models[True] = fast_model(True)
    if fast_models[True] == fast_models[False]:  # Same programs throughout ("off").
      settled = None
  if settled is None:
    fast_models[True] = fast_models[False]
  is_settled = lambda step: settled is None or step >= settled  # noqa: E731
  if restored is not None:
    check_slots([fast_models[is_settled(int(state.step))]] if True in fast_models else [], state)
  # Steps whose mask update reads gradients at pruned positions (RigL's growth) run the
  # same layers with kernel gradients at every position.
  dense_steps = sparse_transform.dense_gradient_steps(spec) if spec is not None else frozenset()

  def train_seconds():  # Wall time over every launch of this run, up to now.
    return seconds_before + time.time() - loop_start

  start_step = int(state.step)

  writer = metrics_lib.MetricWriter(workdir)
  if sparsity_report and is_chief:
    print(sparsity_report(state, table=True))
    counts = [len(fast_models[k].sparse_capacity) if k in fast_models else "some"
              for k in (False, True)]
    print(f"sparse compute ({config.model.sparse_compute}): {counts[0]} layers over their "
          "kept weights only" + (f", {counts[1]} from step {settled}"
                                 if settled is not None else ""))
  # With DyReLU: programs with the hyper-networks while beta > 0, plain ReLU ones after;
  # with sparse compute: programs with dense kernel gradients for the steps that need
  # them, and the cycles' programs until `settled` (jit compiles each on first use).
  programs = {}

  def settled_model(done):  # GraNet's settled slots: from the masks when it gets there.
    if done not in fast_models:
      fast_models[done] = fast_model(done)
    return fast_models[done]

  def train_program(step):
    """The compiled train step of `step` (jit compiles each on first use)."""
    done = is_settled(step)
    fast = settled_model(done)
    dense = step in dense_steps and bool(fast.sparse_capacity)
    key = ("train", hypernet_active(step), dense, done)
    if key not in programs:
      programs[key] = make_train_step(fast.clone(dense_kernel_grad=True) if dense else fast, tx,
                                      mesh, beta_fn if key[1] else None)
    return programs[key]

  def eval_program(step):
    done = is_settled(step)
    key = ("eval", hypernet_active(step), done)
    if key not in programs:
      programs[key] = make_eval_step(settled_model(done), mesh, beta_fn if key[1] else None)
    return programs[key]

  pending = []  # Device metrics of steps not yet logged: fetched together, no per-step sync.
  eval_metrics = {}
  log_start_time, log_start_step = time.time(), start_step
  # A progress bar on a terminal; in a log file (CI, SLURM) one plain line per logged step.
  interactive = sys.stderr.isatty()
  progress = tqdm.tqdm(total=total_steps, initial=start_step,
                       disable=not (is_chief and interactive), desc=f"train {ds.name}",
                       unit="step", dynamic_ncols=True)
  stop = preemption.StopRequest()
  step = start_step
  try:
    for step in range(start_step + 1, total_steps + 1):
      batch = parallel.global_batch(next(train_iter), mesh)
      state, step_metrics = train_program(step - 1)(state, batch)
      pending.append(step_metrics)
      progress.update()
      is_last = step == total_steps
      stopping = stop.reached(step) and not is_last
      save = step % config.checkpoint_every_steps == 0 or is_last or stopping
      if step % config.log_every_steps == 0 or is_last or save:
        records = jax.device_get(pending)
        metrics_lib.check_finite([r["loss"] for r in records], step - len(records) + 1)
        if any(r.pop(SLOT_EXCESS, 0) > 0 for r in records):
          check_slots(list(fast_models.values()), state)
          raise RunIntegrityError(f"Between steps {step - len(records) + 1} and {step} a layer "
                                  "kept more weights than its sparse-compute slots; the run "
                                  "stopped before writing anything more.")
        summary = {f"train_{k}": v for k, v in metrics_lib.mean_of(records).items()}
        elapsed = time.time() - log_start_time
        summary["images_per_second"] = (step - log_start_step) * config.batch_size / elapsed
        summary["learning_rate"] = float(learning_rate_fn(step - 1))
        summary["epoch"] = step / steps_per_epoch
        summary.update(schedule_report(step, state))
        writer.write(step, summary)
        progress.set_postfix(loss=f"{summary['train_loss']:.3f}",
                             acc=f"{summary['train_accuracy']:.3f}")
        if is_chief and not interactive:
          print(f"step {step}/{total_steps}: loss={summary['train_loss']:.4f} "
                f"accuracy={summary['train_accuracy']:.4f} "
                f"{summary['images_per_second']:.0f} img/s", flush=True)
        pending = []
        log_start_time, log_start_step = time.time(), step
      if step % eval_every == 0 or is_last:
        check_slots([settled_model(is_settled(step))], state)
        active = hypernet_active(step)
        eval_metrics = sparsity_report(state, active) if sparsity_report else {}
        for split in config.eval_splits:
          eval_metrics.update(evaluate(eval_program(step), state, ds, split, config, mesh))
        writer.write(step, eval_metrics)
        progress.write(f"step {step}: " + ", ".join(
            f"{k}={v:.6g}" for k, v in eval_metrics.items() if not k.endswith("_examples")))
        log_start_time = time.time()  # Evaluation time is not training throughput.
      if save:
        checkpointer.save(step, state, {"iterator": train_iter.get_state(),
                                        "num_workers": config.dataset.num_workers,
                                        "train_seconds": train_seconds()})
      if stopping:
        break
  finally:
    stop.close()
    progress.close()
    train_iter.close()
    checkpointer.wait()
    checkpointer.close()
    writer.close()
  if step < total_steps:
    raise preemption.Stopped(step, workdir)
  if is_chief and eval_metrics:
    with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
      json.dump({"step": total_steps, "train_seconds": train_seconds(), **eval_metrics}, f,
                indent=2)
  return state
