"""Which compiled program a training step runs: built once per run from its model, its
sparsity spec and EAST's plan, each program compiled on first use.

A step's program is keyed by (the hyper-networks run or not: DyReLU's phase; the step
needs kernel gradients at pruned positions or not: RigL's growth with sparse compute;
the masks keep their final counts or not: after EAST's cycles or GraNet's pruning). With
sparse compute the layers that `config.model.sparse_compute` selects run over their kept
weights in a fixed number of slots (`sparse_compute.SlotSchedule`, whose `check` makes
sure no layer ever keeps more); this module adds the ResNet's layout and EAST's phases.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from east_jax import sparse_compute
from east_jax.sparsity import masks as masks_lib


def sparse_compute_model(model, spec, params, mode: str, from_step: int = 0, masks=None):
  """`model` with the layers that `mode` (config.model.sparse_compute) selects computed
  over their kept weights only (`sparse_compute.layer_slots`)."""
  if spec is None:
    return model
  return _with_slots(model, sparse_compute.layer_slots(spec, params, mode, from_step, masks))


def _with_slots(model, slots):
  return model.clone(sparse_capacity=slots, layout="CNHW" if slots else model.layout)


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


class TrainProgram(NamedTuple):
  """A step's compiled train function, the name of its phase (e.g. "DyReLU, peak-count
  slots, mask update", for `run_timing`) and whether it was just built (its first call
  traces and compiles)."""
  step_fn: Any
  phase: str
  new: bool


class StepPrograms:
  """The train and eval programs of a run, keyed by what a step needs (see the module
  docstring); `make_train(model, beta_fn)` / `make_eval(model, beta_fn)` compile them."""

  def __init__(self, model, spec, plan, mode: str, params, masks, make_train, make_eval):
    self.schedule = sparse_compute.SlotSchedule(spec, params, mode, masks)
    self._model, self._plan = model, plan
    self._make_train, self._make_eval = make_train, make_eval
    self._programs = {}

  def model(self, step: int, masks):
    """The model (with its sparse-compute slots) that runs at `step`."""
    return _with_slots(self._model, self.schedule.slots(step, masks))

  def train(self, step: int, masks) -> "TrainProgram":
    """The train step of transformation step `step` (masks: the current ones)."""
    program = self.schedule.program(step, masks)
    active, settled = self._plan.hypernet_active(step), self.schedule.is_settled(step)
    key = ("train", active, program.dense_kernel_grad, settled)
    new = key not in self._programs
    if new:
      model = _with_slots(self._model, program.slots)
      self._programs[key] = self._make_train(
          model.clone(dense_kernel_grad=True) if program.dense_kernel_grad else model,
          self._plan.beta_fn if active else None)
    phase = ", ".join(["DyReLU" if active else "ReLU"]
                      + ([] if settled else ["peak-count slots"])
                      + (["mask update"] if program.dense_kernel_grad else []))
    return TrainProgram(self._programs[key], phase, new)

  def eval(self, step: int, masks):
    model, active = self.model(step, masks), self._plan.hypernet_active(step)
    key = ("eval", active, self.schedule.is_settled(step))
    if key not in self._programs:
      self._programs[key] = self._make_eval(model, self._plan.beta_fn if active else None)
    return self._programs[key]
