"""Which compiled program a training step runs: built once per run from its model, its
sparsity spec and EAST's plan, each program compiled on first use.

A step's program is keyed by (the hyper-networks run or not: DyReLU's phase; the step
needs kernel gradients at pruned positions or not: RigL's growth with sparse compute;
the masks keep their final counts or not: after EAST's cycles or GraNet's pruning). With
sparse compute the layers that `config.model.sparse_compute` selects run over their kept
weights in a fixed number of slots; `check` makes sure no layer ever keeps more.
"""

import jax
import jax.numpy as jnp

from east_jax.errors import RunIntegrityError
from east_jax.models import sparse_conv
from east_jax.sparsity import masks as masks_lib
from east_jax.sparsity import transform as sparse_transform


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


def check_slots(models, masks, step: int) -> None:
  """Raises RunIntegrityError naming each layer of `models` whose kept count (in
  `masks`) exceeds its slots: sparse compute would silently drop kept weights."""
  over = []
  for model in [m for m in models if m.sparse_capacity]:
    counts = masks_lib.kept_counts(masks, [name for name, _ in model.sparse_capacity])
    over += [f"{n} keeps {counts[n]} weights in {slots} slots"
             for n, slots in model.sparse_capacity if counts[n] > slots]
  if over:
    raise RunIntegrityError(
        f"At step {step}, sparse compute would drop kept weights: {'; '.join(sorted(set(over)))}. "
        "The masks do not fit this config's slots (a checkpoint of another sparsity?); the run "
        "stopped before writing anything more.")



class StepPrograms:
  """The train and eval programs of a run, keyed by what a step needs (see the module
  docstring); `make_train(model, beta_fn)` / `make_eval(model, beta_fn)` compile them."""

  def __init__(self, model, spec, plan, mode: str, params, masks, make_train, make_eval):
    self._model, self._spec, self._plan, self._mode, self._params = model, spec, plan, mode, params
    self._make_train, self._make_eval = make_train, make_eval
    self._programs = {}
    # Over the kept weights: while cycles run, in slots for their peak counts; after their
    # last update (`settled`), in slots for the final counts (read from the masks when it
    # gets there if only the masks know them: GraNet).
    self.settled = sparse_transform.settled_step(spec, params)
    self._models = {False: self._fast_model(False, masks)}
    if self.settled is not None and not sparse_transform.counts_from_masks(spec):
      self._models[True] = self._fast_model(True, masks)
      if self._models[True] == self._models[False]:  # Same programs throughout ("off").
        self.settled = None
    if self.settled is None:
      self._models[True] = self._models[False]
    # Steps whose mask update reads gradients at pruned positions (RigL's growth) run the
    # same layers with kernel gradients at every position.
    self._dense_steps = (sparse_transform.dense_gradient_steps(spec) if spec is not None
                         else frozenset())

  def _fast_model(self, settled: bool, masks):
    return sparse_compute_model(self._model, self._spec, self._params, self._mode,
                                from_step=self.settled if settled else 0, masks=masks)

  def _settled(self, step: int) -> bool:
    return self.settled is None or step >= self.settled

  def model(self, step: int, masks):
    """The model (with its sparse-compute slots) that runs at `step`."""
    settled = self._settled(step)
    if settled not in self._models:
      self._models[settled] = self._fast_model(settled, masks)
    return self._models[settled]

  def train(self, step: int, masks):
    """The compiled train step of transformation step `step` (masks: the current ones)."""
    model = self.model(step, masks)
    dense = step in self._dense_steps and bool(model.sparse_capacity)
    active = self._plan.hypernet_active(step)
    key = ("train", active, dense, self._settled(step))
    if key not in self._programs:
      self._programs[key] = self._make_train(model.clone(dense_kernel_grad=True) if dense
                                             else model, self._plan.beta_fn if active else None)
    return self._programs[key]

  def eval(self, step: int, masks):
    model, active = self.model(step, masks), self._plan.hypernet_active(step)
    key = ("eval", active, self._settled(step))
    if key not in self._programs:
      self._programs[key] = self._make_eval(model, self._plan.beta_fn if active else None)
    return self._programs[key]

  def check(self, step: int, masks, every: bool = False) -> None:
    """check_slots for the model of `step` (every: for every model built so far)."""
    models = list(self._models.values()) if every else [self.model(step, masks)]
    check_slots(models, masks, step)

  def describe(self) -> str:
    counts = [len(self._models[k].sparse_capacity) if k in self._models else "some"
              for k in (False, True)]
    path = f"; {sparse_conv.kernel_path()}" if any(counts) else ""
    return (f"sparse compute ({self._mode}): {counts[0]} layers over their kept weights only"
            + (f", {counts[1]} from step {self.settled}" if self.settled is not None else "")
            + path)

  def record(self) -> dict:
    """What the run computes over its kept weights, for sparsity.json: the mode, the
    kernel path and every such layer's slots (until `settled`, and from it on)."""
    layers = [dict(self._models[k].sparse_capacity) if k in self._models else {}
              for k in (False, True)]
    record = {"mode": self._mode, "layers": layers[0],
              "kernels": sparse_conv.kernel_path() if any(layers) else None}
    if self.settled is not None:
      record["settled_step"] = self.settled
      if True in self._models:  # Else chosen from the masks when the run gets there.
        record["settled_layers"] = layers[1]
    return record
