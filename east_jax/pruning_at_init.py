"""Pruning at initialisation (SNIP, GraSP, SynFlow) for a run: what the scoring needs from
the model and the data, given to the engine's `sparsity.saliency`.

Scoring runs once, before the first step, identically on every process: every process
reads the same examples (the whole first global batch for SNIP, the first examples of
each class for GraSP; SynFlow needs none) and scores on its first local device; the
masks go into the state, replicated, and so into the first checkpoint, and a resumed
run restores them instead of scoring again.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from east_jax import parallel
from east_jax.data import pipeline
from east_jax.errors import UserInputError
from east_jax.sparsity import masks as masks_lib
from east_jax.sparsity import saliency
from east_jax.sparsity import transform as sparse_transform


def _scoring_batch(config, ds, per_class: int | None) -> dict:
  """The first global training batch (per_class None), or the first `per_class` training
  examples of every class, read alike by every process."""
  iterator = pipeline.train_iterator(ds, global_batch_size=config.batch_size, seed=config.seed,
                                     process_index=0, process_count=1,
                                     num_threads=config.dataset.num_threads, num_workers=0)
  try:
    if per_class is None:
      return next(iterator)
    images, labels = [], []
    counts = np.zeros(ds.num_classes, int)
    for _ in range(ds.num_examples("train") // config.batch_size):
      batch = next(iterator)
      for image, label in zip(batch["image"], batch["label"]):
        if counts[label] < per_class:
          counts[label] += 1
          images.append(image)
          labels.append(label)
      if counts.min() >= per_class:
        break
    if counts.min() < per_class:
      raise UserInputError(f"GraSP needs {per_class} training examples of every class; class "
                           f"{int(counts.argmin())} has {int(counts.min())} in an epoch "
                           "(config.sparsity.grasp_samples_per_class).")
    return {"image": np.stack(images), "label": np.asarray(labels)}
  finally:
    iterator.close()


def _loss_fn(model, batch_stats, batch, temperature: float = 1.0):
  """The mean cross-entropy of `batch` as a function of the params, BatchNorm in
  training mode (batch statistics), logits divided by `temperature`."""
  def loss(params):
    logits, _ = model.apply({"params": params, "batch_stats": batch_stats}, batch["image"],
                            train=True, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32) / temperature, batch["label"]).mean()
  return loss


def scored_masks(config, run, params, batch_stats, ds) -> dict:
  """{layer: bool mask} of the run's pruning-at-initialisation method (host arrays)."""
  spec, sc = run.spec, config.sparsity
  shapes = sparse_transform.prunable_shapes(spec, params)
  names = list(shapes)
  key = jax.random.fold_in(jax.random.key(spec.seed), 0x5C0)
  if spec.scope == "global":
    budget = {"total": round(spec.density * sparse_transform.reference_size(spec, shapes)),
              "minimum": dict.fromkeys(names, spec.min_kept_per_layer)
              if spec.min_kept_per_layer else None}
  else:
    budget = {"counts": sparse_transform.target_counts(spec, shapes)}
  # One device, no cross-device BatchNorm: every process computes the same on its own.
  model = run.model.clone(bn_axis_name=None)
  if spec.prune_at_init == "synflow":
    model64 = model.clone(dtype=jnp.float64, kernel_grad="xla")  # No float32 products.
    layer_masks = saliency.synflow_masks(
        lambda p, s, x: model64.apply({"params": p, "batch_stats": s}, x, train=False),
        params, batch_stats, ds.image_shape, names, key=key, rounds=sc.synflow_rounds,
        scope=spec.scope, **budget)
  else:
    grasp = spec.prune_at_init == "grasp"
    batch = _scoring_batch(config, ds, sc.grasp_samples_per_class if grasp else None)
    loss = _loss_fn(model, batch_stats, batch, sc.grasp_temperature if grasp else 1.0)
    scores = (saliency.grasp_scores if grasp else saliency.snip_scores)(loss, params, names)
    layer_masks = saliency.scores_to_masks(scores, scope=spec.scope, key=key, **budget)
  return {n: np.asarray(m) for n, m in layer_masks.items()}


def prune(config, run, state, ds, mesh):
  """`state` with the scored masks in its optimizer state and its pruned weights at 0."""
  start = time.time()
  local = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)),
                       (state.params, state.batch_stats))
  layer_masks = scored_masks(config, run, *local, ds)
  masks = jax.device_put(masks_lib.build(local[0], layer_masks), parallel.replicated(mesh))
  if jax.process_index() == 0:
    kept = sum(int(m.sum()) for m in layer_masks.values())
    print(f"{run.spec.prune_at_init} ({run.spec.scope}): kept {kept} weights, scored in "
          f"{time.time() - start:.1f} s", flush=True)
  opt_state = state.opt_state._replace(masks=masks)
  return state.replace(params=jax.jit(masks_lib.apply)(state.params, masks), opt_state=opt_state)
