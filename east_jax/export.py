"""Export a trained sparse run in compressed form, and run inference from the export.

  python -m east_jax.export (or east-jax-export) --workdir=runs/x --out=runs/x/model.npz \\
      [--split=test]

The file (a compressed .npz) holds, for every prunable layer, its kept values and their
flat indices (the smallest unsigned integer type that fits the layer), and the dense
params that are not pruned (BatchNorm, weight-sharing scales); DyReLU's hyper-networks
are dropped (the exported network is the ResNet of the phase after DyReLU: plain ReLU,
or with east.phase_out=static its learned per-channel activations). BatchNorm is
folded into the convolution before it wherever that is exact: its inference affine
y * s + t (s = scale / sqrt(var + eps), t = bias - mean * s) scales each output channel
of the kept values by s and leaves a per-channel bias t; convolutions whose kernel is
shared by several blocks (each with its own BatchNorm) keep their BatchNorms. `load`
rebuilds a network that computes over the kept weights only; `--split` reports its
top-1 next to the checkpoint's.
"""

import functools
import json
import math
import os
import sys

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from east_jax import checkpointing
from east_jax import cli
from east_jax import saved_run
from east_jax.data import pipeline
from east_jax.errors import UserInputError
from east_jax.models import ReLU, create_model
from east_jax.models import dyrelu
from east_jax.models import layers
from east_jax.models import sparse_conv
from east_jax.sparsity import masks as masks_lib
from east_jax.sparsity import transform

_EPS = 1e-5  # The ResNets' BatchNorm epsilon.
_META = "__meta__"


def _flat(tree) -> dict:
  return {masks_lib.leaf_name(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _norm_of(kernel: str) -> str:
  """The BatchNorm after a conv kernel: stem_conv -> stem_bn, blockX/convN -> blockX/bnN,
  blockX/shortcut_conv -> blockX/shortcut_bn."""
  module = kernel[:-len("/kernel")]
  scope, _, conv = module.rpartition("/")
  norm = conv.replace("conv", "bn") if conv.startswith("conv") else conv.replace("_conv", "_bn")
  return f"{scope}/{norm}" if scope else norm


def compress(config, run, state) -> tuple[dict, dict]:
  """(arrays, meta) of the exported network; raises while DyReLU is still active."""
  step = int(state.step)
  if run.spec is None:
    raise UserInputError("This run is dense (config.sparsity.method=dense): nothing to "
                         "compress; its checkpoint is the model.")
  if run.plan.hypernet_active(step):
    raise UserInputError(f"The checkpoint of step {step} still uses DyReLU (beta = "
                         f"{float(run.plan.beta_fn(step)):.3f}); the network without "
                         f"hyper-networks exists from step {run.plan.relu_from} on. Export a "
                         "later checkpoint.")
  params = dyrelu.strip_hypernetworks(state.params)
  prunable = list(transform.prunable_shapes(run.spec, params))
  masks = {n: np.asarray(m) for n, m in masks_lib.layers(state.opt_state.masks, prunable).items()}
  flat_params, flat_stats = _flat(params), _flat(state.batch_stats)
  shared = set(run.model.shared_convs().values())
  arrays, folded = {}, []
  for name in prunable:
    kernel, mask = flat_params.pop(name), masks[name]
    indices = np.flatnonzero(mask)
    values = kernel.reshape(-1)[indices]
    norm = _norm_of(name)
    if len(kernel.shape) == 4 and name not in shared and f"{norm}/scale" in flat_params:
      scale = flat_params.pop(f"{norm}/scale") / np.sqrt(flat_stats.pop(f"{norm}/var") + _EPS)
      bias = flat_params.pop(f"{norm}/bias") - flat_stats.pop(f"{norm}/mean") * scale
      values = values * scale[indices % kernel.shape[-1]]
      arrays[f"bias/{norm}"] = bias.astype(np.float32)
      folded.append(norm)
    arrays[f"values/{name}"] = values.astype(np.float32)
    arrays[f"indices/{name}"] = indices.astype(np.min_scalar_type(max(1, mask.size - 1)))
  arrays.update({f"params/{n}": v for n, v in flat_params.items()})
  arrays.update({f"stats/{n}": v for n, v in flat_stats.items()})
  model = config.model
  meta = {"model": {"name": model.name, "width": model.width, "stem": model.stem,
                    "stage_sizes": list(model.stage_sizes), "num_classes": run.model.num_classes,
                    "share_ratio": run.model.share_ratio,
                    "phase_out": _phase_out(config)},
          "shapes": {n: list(masks[n].shape) for n in prunable}, "folded_norms": folded,
          "step": step, "dataset": config.dataset.name}
  return arrays, meta


def _phase_out(config) -> str:
  """What the exported network's activations are: relu, or static (DyReLU's learned
  per-channel coefficients, east.phase_out=static)."""
  uses_dyrelu = config.sparsity.method == "east" and config.east.dyrelu
  return config.east.phase_out if uses_dyrelu else "relu"


def write(path: str, arrays: dict, meta: dict) -> int:
  """Writes the export; returns its size in bytes."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with open(path, "wb") as f:
    np.savez_compressed(f, **arrays, **{_META: np.asarray(json.dumps(meta))})
  return os.path.getsize(path)


def _nest(flat: dict) -> dict:
  return jax.tree.map(jnp.asarray, checkpointing.nested(flat))


def load(path: str, sparse_compute: str = "on"):
  """(model, variables) of an export: a ReLU ResNet whose prunable layers compute over
  the kept weights only (`sparse_compute` as config.model.sparse_compute)."""
  with np.load(path) as f:
    arrays = {k: f[k] for k in f.files}
  meta = json.loads(str(arrays.pop(_META)))
  params = {n[len("params/"):]: v for n, v in arrays.items() if n.startswith("params/")}
  stats = {n[len("stats/"):]: v for n, v in arrays.items() if n.startswith("stats/")}
  for norm in meta["folded_norms"]:  # The affine now lives in the values and this bias.
    bias = arrays[f"bias/{norm}"]
    params.update({f"{norm}/scale": np.ones_like(bias), f"{norm}/bias": bias})
    stats.update({f"{norm}/mean": np.zeros_like(bias), f"{norm}/var": np.full_like(bias, 1 - _EPS)})
  masks, counts = {}, {}
  for name, shape in meta["shapes"].items():
    indices = arrays[f"indices/{name}"].astype(np.int64)
    kernel = np.zeros(math.prod(shape), np.float32)
    kernel[indices] = arrays[f"values/{name}"]
    params[name] = kernel.reshape(shape)
    mask = np.zeros(kernel.size, bool)
    mask[indices] = True
    masks[name], counts[name] = mask.reshape(shape), len(indices)
  sizes = {n: math.prod(s) for n, s in meta["shapes"].items()}
  selected = sparse_conv.select(counts, sizes, sparse_compute, jax.default_backend())
  m = meta["model"]
  act = (ReLU if m["phase_out"] == "relu"
         else functools.partial(dyrelu.DyReLU, phase_out=m["phase_out"]))
  model = create_model(m["name"], num_classes=m["num_classes"], width=m["width"], stem=m["stem"],
                       stage_sizes=tuple(m["stage_sizes"]), share_ratio=m["share_ratio"], act=act,
                       sparse_capacity=selected, layout="CNHW" if selected else "NHWC")
  variables = {"params": _nest(params), "batch_stats": _nest(stats)}
  if selected:
    variables[layers.MASKS] = _nest(masks)
  return model, variables


def accuracy(apply_fn, ds, split: str, batch_size: int = 500) -> float:
  """Top-1 of `apply_fn(images) -> logits` over every example of `split`."""
  correct = total = 0
  for batch in pipeline.eval_batches(ds, split, global_batch_size=batch_size):
    predicted = np.argmax(np.asarray(apply_fn(jnp.asarray(batch["image"]))), -1)
    real = batch["mask"] > 0
    correct += int(np.sum((predicted == batch["label"])[real]))
    total += int(np.sum(real))
  return correct / total


def _checkpoint_bytes(workdir: str, step: int) -> int:
  folder = os.path.join(workdir, "checkpoints", str(step))
  return sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(folder) for f in files)


FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  try:
    config, ds, run, state, _ = saved_run.load(FLAGS.workdir, model_only=True)
    state = jax.device_get(state)
    arrays, meta = compress(config, run, state)
    size = write(FLAGS.out, arrays, meta)
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  dense_bytes = 4 * sum(x.size for x in jax.tree.leaves(dyrelu.strip_hypernetworks(state.params)))
  kept = sum(len(v) for n, v in arrays.items() if n.startswith("values/"))
  checkpoint_bytes = _checkpoint_bytes(FLAGS.workdir, meta["step"])
  print(f"step {meta['step']}: {kept} kept weights -> {FLAGS.out}: {size / 1e3:.1f} kB "
        f"(dense float32 params {dense_bytes / 1e6:.2f} MB, {dense_bytes / size:.0f}x; the "
        f"checkpoint with optimizer state {checkpoint_bytes / 1e6:.2f} MB); BatchNorm folded "
        f"into {len(meta['folded_norms'])} convolutions")
  if FLAGS.split:
    model, variables = load(FLAGS.out)
    exported = jax.jit(lambda x: model.apply(variables, x, train=False))
    checkpoint = jax.jit(lambda x: run.model.clone(bn_axis_name=None).apply(
        {"params": state.params, "batch_stats": state.batch_stats}, x, train=False))
    print(f"{FLAGS.split} top-1: exported {accuracy(exported, ds, FLAGS.split):.4f}, "
          f"checkpoint {accuracy(checkpoint, ds, FLAGS.split):.4f}")


def run():
  # Defined here, not on import: the library functions above import without flags.
  flags.DEFINE_string("workdir", None, "A training run's workdir (its latest checkpoint).")
  flags.DEFINE_string("out", None, "The export file to write (.npz).")
  flags.DEFINE_string("split", "", "Also report this split's top-1, exported vs checkpoint.")
  cli.run(main, required=("workdir", "out"))


if __name__ == "__main__":
  run()
