"""Sparse compute against dense and masked training steps, and the floor.

  python -m benchmarks.sparse_compute                      # the default CPU table
  python -m benchmarks.sparse_compute --models=resnet34:cifar:128 --sparsities=0.999,0.9999
  python -m benchmarks.sparse_compute --layers             # per-layer crossover (auto's threshold)
  python -m benchmarks.sparse_compute --kernels=native,xla # native CPU kernels vs XLA's path

Rows, all on the real jitted train step (`train.make_train_step`) with synthetic data:
  dense            no masks
  floor            every convolution replaced by a strided copy (no conv FLOPs, no conv
                   params): what BatchNorm, activations, pooling and the optimizer cost alone
  <m> masked       today's path: dense convolutions over masked weights (sparse_compute=off)
  <m> sparse       convolutions over kept weights only (sparse_compute=on), ordinary step
  <m> update       a mask-update step of the sparse run: RigL/EAST need the kernel gradient
                   at every position, so its layers add it (dense_kernel_grad), forward and
                   input gradient staying sparse (what train.py runs)
for m in rigl, east (DyReLU phase: beta = 1, hyper-networks on) and east-relu (after the
phase-out). Peak memory is XLA's buffer assignment of the compiled step (arguments +
temporaries, donated state counted once). Inference rows: the eval forward pass.
"""

import contextlib
import resource
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from configs import default
from east_jax import east, optim, parallel, step_programs, train
from east_jax.models import create_model
from east_jax.models import dyrelu
from east_jax.models import sparse_conv
from east_jax.sparsity import methods, transform

flags.DEFINE_list("models", ["resnet34:cifar:128", "resnet50:imagenet:32"],
                  "model:stem:batch triples (cifar: 32x32 inputs, imagenet: 224x224)")
flags.DEFINE_list("sparsities", ["0.99", "0.999", "0.9995", "0.9999"], "sparsities")
flags.DEFINE_list("methods", ["rigl", "east", "east-relu"], "rigl | east | east-relu")
flags.DEFINE_list("masked_at", ["0.999"], "sparsities at which the masked path is timed "
                  "(its cost does not depend on the sparsity)")
flags.DEFINE_list("update_at", ["0.999", "0.9999"], "sparsities at which mask-update steps "
                  "are timed (the dense-layer program: its cost barely depends on the sparsity)")
flags.DEFINE_list("kernels", ["native"], "sparse rows with the native CPU kernels and / or "
                  "XLA's gather / scatter path (native,xla: side by side)")
flags.DEFINE_integer("steps", 3, "timed steps per row (median; --layers: the fastest)")
flags.DEFINE_bool("inference", True, "also time the eval forward pass at batch 1 and 128")
flags.DEFINE_bool("layers", False, "only the per-layer crossover table")
FLAGS = flags.FLAGS

TOTAL_STEPS = 1000
UPDATE_STEP, ORDINARY_STEP = 2, 3  # With update_interval 2: an update and an ordinary step.


class _StridedCopy(nn.Module):
  """Stands in for a convolution in the floor: stride and channel count, no arithmetic."""

  features: int
  kernel_size: tuple
  strides: int = 1
  capacity: int = 0

  def __call__(self, x):
    x = x[:, ::self.strides, ::self.strides]
    reps = -(-self.features // x.shape[-1])
    return jnp.concatenate([x] * reps, axis=-1)[..., :self.features]


def _config(method, sparsity):
  name = {"floor": "dense", "east-relu": "east"}.get(method, method)
  config = default.apply_arg(default.get_config(), f"method={name},sparsity={sparsity}")
  config.sparsity.update_interval = 2
  config.east.cycle_update_interval = 2
  config.east.num_cycles = 0  # Constant-density RigL updates in the timed steps.
  return config


def _step_programs(model_name, stem, batch, method, sparsity, mode, with_update):
  """{kind: (compiled step, state, batch)} for one row of the table."""
  config = _config(method, sparsity)
  num_classes = 10 if stem == "cifar" else 1000
  floor = method == "floor"
  plan = east.plan(config, TOTAL_STEPS)
  options = {"share_ratio": 0} if floor else plan.model_options
  model = create_model(model_name, num_classes=num_classes, stem=stem,
                       bn_axis_name=parallel.DATA_AXIS,
                       conv=_StridedCopy if floor else None, **options)
  tx = optim.create_optimizer(config, optim.create_learning_rate_fn(config, TOTAL_STEPS, 100))
  spec = methods.create_spec(config.sparsity, total_steps=TOTAL_STEPS, seed=0,
                             kernel_uses=east.kernel_uses(model),
                             never_prune=(dyrelu.HYPERNET,))
  if spec is not None:
    tx = transform.sparse_training(tx, spec)
  mesh = parallel.create_mesh(jax.devices()[:1])
  side = 32 if stem == "cifar" else 224
  state = train.create_train_state(jax.random.key(0), model, tx, (side, side, 3), mesh)
  data = timing.synthetic_batch(mesh, batch, (side, side, 3), num_classes)
  fast = step_programs.sparse_compute_model(model, spec, state.params, mode)
  # After the phase-out train.py runs the programs without the hyper-networks (beta None).
  beta_fn = None if method == "east-relu" else plan.beta_fn
  programs = {"step": (fast, ORDINARY_STEP)}
  if with_update:
    programs["update"] = (fast.clone(dense_kernel_grad=True), UPDATE_STEP)
  out = {}
  for kind, (m, at) in programs.items():
    at_state = _at_step(state, at)
    compiled = train.make_train_step(m, tx, mesh, beta_fn).lower(at_state, data).compile()
    out[kind] = (compiled, at_state, data)
  return out, (fast, state, mesh, num_classes, side)


def _at_step(state, step):
  opt_state = state.opt_state
  if isinstance(opt_state, transform.SparseTrainingState):
    opt_state = opt_state._replace(step=jnp.asarray(step, jnp.int32))
  return state.replace(step=jnp.asarray(step, jnp.int32), opt_state=opt_state)


def _peak_mb(compiled) -> float:
  memory = compiled.memory_analysis()
  total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
           + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
  return total / 2**20


def _time(compiled, state, data, step_count):
  """Median seconds of `compiled` from `state` held at `step_count` (update or not)."""
  holder = {"state": jax.tree.map(jnp.copy, state)}

  def run():
    new_state, metrics = compiled(holder["state"], data)
    jax.block_until_ready((new_state, metrics))
    holder["state"] = _at_step(new_state, step_count)

  return timing.median_times(run, ["t"] * FLAGS.steps)["t"]


def _inference(fast, state, mesh, num_classes, side):
  """Eval forward images/s at batch 1 and 128."""
  out = {}
  for batch in (1, 128):
    data = timing.synthetic_batch(mesh, batch, (side, side, 3), num_classes)
    compiled = train.make_eval_step(fast, mesh).lower(state, data).compile()
    seconds = timing.median_times(lambda: jax.block_until_ready(compiled(state, data)),
                                  ["t"] * FLAGS.steps)["t"]
    out[batch] = batch / seconds
  return out


def train_table():
  device = jax.devices()[0]
  print(f"{device.device_kind} ({device.platform}), jax {jax.__version__}, "
        f"{time.strftime('%Y-%m-%d')}; median of {FLAGS.steps} steps")
  print("| model | batch | method | sparsity | path | step (s) | images/s | x dense | "
        "x floor | peak MB | inference images/s b=1 / b=128 |")
  print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
  for entry in FLAGS.models:
    model_name, stem, batch = entry.split(":")
    batch = int(batch)
    rows = [("dense", "0", "off"), ("floor", "0", "off")]
    for method in FLAGS.methods:
      for sparsity in FLAGS.sparsities:
        if sparsity in FLAGS.masked_at:
          rows.append((method, sparsity, "off"))
        rows.extend((method, sparsity, kernel) for kernel in FLAGS.kernels)
    reference = {}
    for method, sparsity, mode in rows:
      with sparse_conv.xla_only() if mode == "xla" else contextlib.nullcontext():
        programs, extra = _step_programs(
            model_name, stem, batch, method, sparsity, "off" if mode == "off" else "on",
            with_update=(mode == FLAGS.kernels[0] and sparsity in FLAGS.update_at
                         and method != "east-relu"))
      for kind, (compiled, state, data) in programs.items():
        at = UPDATE_STEP if kind == "update" else ORDINARY_STEP
        seconds = _time(compiled, state, data, at)
        if method in ("dense", "floor"):
          reference[method] = seconds
        path = {"off": "masked", "native": "sparse", "xla": "sparse (xla)"}[mode]
        path = path if kind == "step" else "update"
        path = method if method in ("dense", "floor") else path
        infer = ""
        if FLAGS.inference and kind == "step" and method in ("dense", "rigl"):
          with sparse_conv.xla_only() if mode == "xla" else contextlib.nullcontext():
            speeds = _inference(*extra)
          infer = f"{speeds[1]:.1f} / {speeds[128]:.1f}"
        ratio = lambda r: f"{reference[r] / seconds:.2f}" if r in reference else "-"  # noqa: E731
        print(f"| {model_name} {stem} | {batch} | {method} | "
              f"{'-' if sparsity == '0' else sparsity} | {path} | {seconds:.3f} | "
              f"{batch / seconds:.1f} | {ratio('dense')} | {ratio('floor')} | "
              f"{_peak_mb(compiled):.0f} | {infer} |", flush=True)
  print(f"process peak resident memory: {_peak_rss_mb():.0f} MB")


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB.


def layers_table():
  """Forward + both gradients of one convolution: dense (XLA, matmul kernel gradient, NHWC)
  against kept weights only (CNHW), by density, for the ResNet-34 CIFAR shapes at batch 128."""
  from east_jax.models import conv as conv_lib
  shapes = [(32, 64, 64, 1), (16, 128, 128, 1), (8, 256, 256, 1), (4, 512, 512, 1),
            (32, 64, 128, 2)]
  densities = [0.001, 0.003, 0.01, 0.03, 0.1]
  print(f"{time.strftime('%Y-%m-%d')}, kernels: {', '.join(FLAGS.kernels)}; ms per call")
  print("| input | cin -> cout | stride | dense | kernels | " +
        " | ".join(f"kept {d:.1%}" for d in densities) + " |")
  print("|---|---|---|---|---|" + "---|" * len(densities), flush=True)
  rng = np.random.default_rng(0)
  for size, cin, cout, stride in shapes:
    x = jnp.asarray(rng.standard_normal((128, size, size, cin)), jnp.float32)
    x_cnhw = x.transpose(3, 0, 1, 2)
    pad = ((1, 1), (1, 1))
    kernel_shape = (3, 3, cin, cout)

    def timed(fn, *args):
      grad = jax.jit(jax.grad(lambda x, k, *a: jnp.sum(fn(x, k, *a) ** 2), argnums=(0, 1)))
      jax.block_until_ready(grad(*args))
      times = []
      for _ in range(FLAGS.steps):
        start = time.perf_counter()
        jax.block_until_ready(grad(*args))
        times.append(time.perf_counter() - start)
      return min(times) * 1e3

    kernel = jnp.asarray(rng.standard_normal(kernel_shape), jnp.float32)
    dense = timed(lambda x, k: conv_lib.conv_general_dilated(
        x, k, (stride, stride), pad, dimension_numbers=("NHWC", "HWIO", "NHWC")), x, kernel)
    masks = []
    for d in densities:
      count = max(1, round(d * kernel.size))
      flat = np.zeros(kernel.size, bool)
      flat[rng.choice(kernel.size, count, replace=False)] = True
      masks.append((count, jnp.asarray(flat.reshape(kernel_shape))))
    for kernels in FLAGS.kernels:
      with sparse_conv.xla_only() if kernels == "xla" else contextlib.nullcontext():
        cells = [timed(lambda x, k, m, c=count: sparse_conv.conv(x, k, m, c, (stride, stride),
                                                                 pad), x_cnhw, kernel * mask, mask)
                 for count, mask in masks]
      print(f"| {size}x{size} | {cin} -> {cout} | {stride} | {dense:.1f} | {kernels} | " +
            " | ".join(f"{c:.1f}" for c in cells) + " |", flush=True)


def main(argv):
  del argv
  if FLAGS.layers:
    layers_table()
  else:
    train_table()


if __name__ == "__main__":
  app.run(main)
