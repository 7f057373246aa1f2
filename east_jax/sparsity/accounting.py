"""Densities and FLOPs read from the masks (never from counting zeros in params:
grown weights are zero too).

FLOPs count multiply-adds of convolutions and dense layers (normalisation,
activations and pooling are ignored, as in the RigL paper), every use of a kernel
that weight sharing reuses included. Per use, inference FLOPs = kept weights x
output spatial positions. Training FLOPs per step, as in RigL: 3 x sparse forward
(forward + two backward products) on ordinary steps, and 2 x sparse + 1 x dense
forward on mask-update steps that need the dense gradient (RigL); never-pruned
auxiliary layers (e.g. hyper-networks) add their dense multiply-adds while they are
active. All FLOPs are multiples of the dense, unshared network without them.

Densities are relative to N_full, the prunable size of the unshared network:
storage density = unique kept weights / N_full (the budget), compute density =
kept weights counting every reuse / N_full.
"""

import math

import jax
import jax.numpy as jnp

from east_jax.sparsity import masks as masks_lib


def _module_outputs(model, image_shape):
  def run(x):
    variables = model.init(jax.random.key(0), x, train=False)
    _, state = model.apply(variables, x, train=False, capture_intermediates=True,
                           mutable=["intermediates"])
    return variables["params"], state["intermediates"]

  params, inter = jax.eval_shape(run, jnp.zeros((1, *image_shape), jnp.float32))
  # Intermediates are stored as <module path>/__call__/[0].
  outputs = {masks_lib.leaf_name(p[:-2]): x.shape
             for p, x in jax.tree_util.tree_flatten_with_path(inter)[0]}
  return params, outputs


def _positions(shape) -> int:
  return int(math.prod(shape[1:-1])) if len(shape) > 2 else 1


def kernel_uses(model, image_shape, never_prune: tuple = (),
                reuses: dict | None = None) -> dict[str, list[int]]:
  """{kernel leaf name: output spatial positions of each use (1 for a dense layer)}.

  `reuses` ({module path: the kernel leaf it reuses}, weight sharing) adds one entry per
  reusing module; kernels under the scopes `never_prune` are left out (see `scope_macs`).
  """
  params, outputs = _module_outputs(model, image_shape)
  uses = {}
  for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = masks_lib.leaf_name(path)
    if name.endswith("kernel") and not masks_lib.in_scope(name, never_prune):
      uses[name] = [_positions(outputs[name[:-len("/kernel")]])]
  for module, kernel in (reuses or {}).items():
    uses[kernel].append(_positions(outputs[module]))
  return uses


def scope_macs(params, scope: str) -> int:
  """Multiply-adds per example of the dense layers under `scope` (e.g. every
  hyper-network of a model)."""
  return sum(math.prod(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
             if masks_lib.in_scope(masks_lib.leaf_name(p), (scope,))
             and masks_lib.leaf_name(p).endswith("kernel"))


def summarize(masks, params_shapes: dict[str, tuple], uses: dict[str, list[int]],
              prunable: list[str], *, update_interval: int = 0, dense_gradient: bool = False,
              active_extra_macs: int = 0) -> dict:
  """Totals over the prunable layers plus FLOPs over every kernel use.

  Returns unique kept / N_full / storage and compute density, inference FLOPs and
  training FLOPs per step as multiples of the dense model.
  """
  counts = masks_lib.kept_counts(masks, prunable)
  sizes = {n: math.prod(s) for n, s in params_shapes.items()}
  kept = sum(counts.values())
  full = sum(sizes[n] * len(uses[n]) for n in prunable)
  computed = sum(counts[n] * len(uses[n]) for n in prunable)
  dense_flops = sum(sizes[n] * sum(p) for n, p in uses.items())
  sparse_flops = sum(counts.get(n, sizes[n]) * sum(p) for n, p in uses.items())
  inference = sparse_flops / dense_flops
  train = (sparse_flops + active_extra_macs) / dense_flops
  if dense_gradient and update_interval > 0:
    # One step in k computes the dense gradient: 2 f_s + f_D instead of 3 f_s.
    k = update_interval
    train = (3 * sparse_flops * (k - 1) + 2 * sparse_flops + dense_flops
             + 3 * active_extra_macs * k) / (3 * dense_flops * k)
  return {"sparsity/kept": kept, "sparsity/prunable": full,
          "sparsity/unique_prunable": sum(sizes[n] for n in prunable),
          "sparsity/density": kept / full, "sparsity/sparsity": 1.0 - kept / full,
          "sparsity/compute_density": computed / full,
          "flops/inference_x_dense": inference, "flops/train_x_dense": train}


def format_table(masks, params_shapes: dict[str, tuple], uses: dict[str, list[int]],
                 prunable: list[str]) -> str:
  """A plain-text per-layer table: layer, shape, uses, kept / size, density, MFLOPs."""
  counts = masks_lib.kept_counts(masks, prunable)
  lines = [f"{'layer':44s} {'shape':>18s} {'uses':>4s} {'kept':>10s} {'size':>10s} "
           f"{'density':>9s} {'MFLOPs':>9s}"]
  for name, positions in uses.items():
    size = math.prod(params_shapes[name])
    kept = counts.get(name, size)
    note = "" if name in counts else "  (dense)"
    lines.append(f"{name:44s} {str(params_shapes[name]):>18s} {len(positions):>4d} {kept:>10d} "
                 f"{size:>10d} {kept / size:>9.5f} {kept * sum(positions) / 1e6:>9.3f}{note}")
  kept = sum(counts.values())
  full = sum(math.prod(params_shapes[n]) * len(uses[n]) for n in prunable)
  lines.append(f"{'total (prunable, unique kept / unshared size)':49s} {'':>18s} {kept:>10d} "
               f"{full:>10d} {kept / full:>9.5f}")
  return "\n".join(lines)
