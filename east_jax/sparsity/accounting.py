"""Densities and FLOPs read from the masks (never from counting zeros in params:
grown weights are zero too).

FLOPs count multiply-adds of convolutions and the classifier (BatchNorm,
activations and pooling are ignored, as in the RigL paper). Per layer, inference
FLOPs = kept weights x output spatial positions. Training FLOPs per step, as in
RigL: 3 x sparse forward (forward + two backward products) on ordinary steps, and
2 x sparse + 1 x dense forward on mask-update steps that need the dense gradient
(RigL); both as multiples of dense training (3 x dense forward).
"""

import math

import jax
import jax.numpy as jnp

from east_jax.sparsity import masks as masks_lib


def output_positions(model, image_shape) -> dict[str, int]:
  """{kernel leaf name: output spatial positions (H x W, 1 for the classifier)}."""
  def run(x):
    variables = model.init(jax.random.key(0), x, train=False)
    _, state = model.apply(variables, x, train=False, capture_intermediates=True,
                           mutable=["intermediates"])
    return variables["params"], state["intermediates"]

  params, inter = jax.eval_shape(run, jnp.zeros((1, *image_shape), jnp.float32))
  # Intermediates are stored as <module path>/__call__/[0].
  outputs = {masks_lib.leaf_name(p[:-2]): x.shape
             for p, x in jax.tree_util.tree_flatten_with_path(inter)[0]}
  positions = {}
  for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = masks_lib.leaf_name(path)
    if name.endswith("kernel"):
      shape = outputs[name[:-len("/kernel")]]
      positions[name] = int(math.prod(shape[1:-1])) if len(shape) > 2 else 1
  return positions


def summarize(masks, params_shapes: dict[str, tuple], positions: dict[str, int],
              prunable: list[str], *, update_interval: int = 0, dense_gradient: bool = False,
              ) -> dict:
  """Totals over the prunable layers plus FLOPs over every kernel.

  Returns density / sparsity / kept / prunable counts, inference FLOPs and training
  FLOPs per step as multiples of the dense model.
  """
  counts = masks_lib.kept_counts(masks, prunable)
  sizes = {n: math.prod(s) for n, s in params_shapes.items()}
  kept = sum(counts.values())
  total = sum(sizes[n] for n in prunable)
  dense_flops = sum(sizes[n] * positions[n] for n in positions)
  sparse_flops = sum(counts.get(n, sizes[n]) * positions[n] for n in positions)
  inference = sparse_flops / dense_flops
  train = inference
  if dense_gradient and update_interval > 0:
    # One step in update_interval computes the dense gradient: 2 f_s + f_D instead of 3 f_s.
    train = (3 * sparse_flops * (update_interval - 1) + 2 * sparse_flops + dense_flops) / (
        3 * dense_flops * update_interval)
  return {"sparsity/kept": kept, "sparsity/prunable": total, "sparsity/density": kept / total,
          "sparsity/sparsity": 1.0 - kept / total, "flops/inference_x_dense": inference,
          "flops/train_x_dense": train}


def format_table(masks, params_shapes: dict[str, tuple], positions: dict[str, int],
                 prunable: list[str]) -> str:
  """A plain-text per-layer table: layer, shape, kept / size, density, inference FLOPs."""
  counts = masks_lib.kept_counts(masks, prunable)
  lines = [f"{'layer':44s} {'shape':>18s} {'kept':>10s} {'size':>10s} {'density':>9s} "
           f"{'MFLOPs':>9s}"]
  for name in positions:
    size = math.prod(params_shapes[name])
    kept = counts.get(name, size)
    note = "" if name in counts else "  (dense)"
    lines.append(f"{name:44s} {str(params_shapes[name]):>18s} {kept:>10d} {size:>10d} "
                 f"{kept / size:>9.5f} {kept * positions[name] / 1e6:>9.3f}{note}")
  kept = sum(counts.values())
  total = sum(math.prod(params_shapes[n]) for n in prunable)
  lines.append(f"{'total (prunable)':44s} {'':>18s} {kept:>10d} {total:>10d} {kept / total:>9.5f}")
  return "\n".join(lines)
