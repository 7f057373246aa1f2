"""What a run reports besides its losses: the per-layer sparsity accounting (also
`<workdir>/sparsity.json`) and the schedules' values at each logged step."""

import json
import math
import os

import jax
import jax.numpy as jnp

from east_jax.models import dyrelu
from east_jax.sparsity import accounting
from east_jax.sparsity import masks as masks_lib
from east_jax.sparsity import transform as sparse_transform


def sparsity_reporter(spec, model, image_shape, params, workdir, sparse_compute=None):
  """None for dense runs; else report(state, hypernet_active, table=False) ->
  accounting metrics, which also writes the per-layer counts (and `sparse_compute`: what
  runs over the kept weights) to `<workdir>/sparsity.json` unless workdir is None
  (table=True: returns the printable per-layer table)."""
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
                                   dense_gradient=spec.method in ("rigl", "granet"),
                                   active_extra_macs=hypernet_macs if hypernet_active else 0)
    counts = masks_lib.kept_counts(masks, prunable)
    collapsed = [n for n in prunable if counts[n] == 0]  # Layers cut off: nothing flows.
    summary["sparsity/collapsed_layers"] = len(collapsed)
    if workdir is not None and jax.process_index() == 0:
      with open(os.path.join(workdir, "sparsity.json"), "w") as f:
        json.dump({"step": int(state.step), **summary, "layers": counts,
                   "layer_sizes": {n: math.prod(shapes[n]) for n in prunable},
                   "collapsed_layers": collapsed, "sparse_compute": sparse_compute}, f,
                  indent=2)
    return summary

  return report


def schedule_reporter(spec, beta_fn, params):
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


