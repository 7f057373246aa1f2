"""Sparse compute for any Flax model: its convolutions and dense layers over their kept
weights only, and the programs a training loop switches between.

Two pieces, usable in a user's own loop (docs/sparse_compute.md has a complete example):

- `SlotSchedule(spec, params, mode, masks)`: which prunable layers compute over their kept
  weights, in how many slots (a static count: changing masks never recompiles), and which
  steps need the kernel gradient at every position (RigL's growth). `program(step, masks)`
  returns the `Program` a step runs: hashable, so a loop caches one compiled step per
  program (at most a handful per run).
- `Program.apply(model)`: `model.apply` in which every `flax.linen.Conv` and `Dense` of
  the program computes over its kept weights, read from the `masks` variable collection
  (`model.apply({"params": params, "masks": masks}, x)`, the engine's mask pytree). The
  model's code is unchanged: its layers' calls are intercepted (`nn.intercept_methods`).

Both paths give the outputs of the masked layers, and the same gradients at kept positions;
at pruned positions the gradient is 0 except on the steps that ask for it. The bundled
ResNets run channel first throughout (`models/layers.py`); a user's NHWC model pays one
transpose on each side of a sparse convolution.
"""

from typing import NamedTuple

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from east_jax.errors import RunIntegrityError
from east_jax.models import sparse_conv
from east_jax.sparsity import masks as masks_lib
from east_jax.sparsity import transform as sparse_transform

MASKS = "masks"  # The variable collection the layers read their masks from.


def layer_slots(spec, params, mode: str, from_step: int = 0,
                masks=None) -> tuple[tuple[str, int], ...]:
  """((kernel name, slots), ...) of the layers that `mode` ("on", "off" or "auto": by
  density and backend) computes over their kept weights, with as many slots as each keeps
  at steps >= `from_step` (read from `masks` when only the masks know them: global
  scoring, GraNet)."""
  if spec is None:
    return ()
  if masks is not None and sparse_transform.counts_from_masks(spec):
    capacity = masks_lib.kept_counts(masks, list(sparse_transform.prunable_shapes(spec, params)))
  else:
    capacity = sparse_transform.kept_capacity(spec, params, from_step)
  sizes = {n: x.size for n, x in masks_lib.layers(params, capacity).items()}
  return sparse_conv.select(capacity, sizes, mode, jax.default_backend())


class Program(NamedTuple):
  """What a training step computes over kept weights: the layers and their slots, and
  whether their kernel gradient is needed at every position."""
  slots: tuple[tuple[str, int], ...]
  dense_kernel_grad: bool = False

  def apply(self, model: nn.Module):
    """`model.apply` with the program's layers over their kept weights.

    Args:
      model: a Flax module whose prunable layers are `nn.Conv` (2-D, NHWC, no dilation or
        groups) or `nn.Dense`.

    Returns:
      A function with `model.apply`'s signature; its variables need a `masks` collection.
    """
    return _apply_over_kept_weights(model, dict(self.slots), self.dense_kernel_grad)


def _apply_over_kept_weights(model, slots: dict[str, int], dense_kernel_grad: bool):
  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__" or not isinstance(module, (nn.Conv, nn.Dense)):
      return next_fun(*args, **kwargs)
    name = "/".join(module.path) + "/kernel"
    if name not in slots:
      return next_fun(*args, **kwargs)
    layer = _conv if isinstance(module, nn.Conv) else _dense
    return layer(module, name, *args, capacity=slots[name], dense_kernel_grad=dense_kernel_grad)

  def apply(variables, *args, **kwargs):
    if MASKS not in variables:
      raise ValueError(f"Sparse compute reads the masks from the variables: call "
                       f"apply({{'params': params, '{MASKS}': masks}}, ...) with the engine's "
                       "masks (sparsity.get_masks(opt_state)).")
    with nn.intercept_methods(interceptor):
      return model.apply(variables, *args, **kwargs)

  return apply


def _variables(module, name):
  kernel = module.get_variable("params", "kernel")
  mask = module.get_variable(MASKS, "kernel")
  if kernel is None or mask is None or jnp.shape(mask) != jnp.shape(kernel):
    raise ValueError(f"{name}: the '{MASKS}' collection has no mask of the kernel's shape "
                     "there; pass the engine's mask pytree (it mirrors the params).")
  bias = module.get_variable("params", "bias") if module.use_bias else None
  return kernel, mask, bias


def _unsupported(name, what):
  return ValueError(f"{name}: sparse compute supports 2-D NHWC convolutions without {what}; "
                    "leave this layer dense (sparsity `keep_dense`) or compute it masked "
                    "(sparse_compute='off').")


def _conv(module: nn.Conv, name: str, x, *, capacity: int, dense_kernel_grad: bool):
  if len(module.kernel_size) != 2 or x.ndim != 4:
    raise _unsupported(name, "other ranks or unbatched inputs")
  if any(d not in (None, 1) and set(jnp.atleast_1d(d).tolist()) != {1}
         for d in (module.input_dilation, module.kernel_dilation)):
    raise _unsupported(name, "dilation")
  if module.feature_group_count != 1 or module.mask is not None:
    raise _unsupported(name, "feature groups or a fixed mask")
  kernel, mask, bias = _variables(module, name)
  x, kernel, bias = module.promote_dtype(x, kernel, bias, dtype=module.dtype)
  strides = module.strides if module.strides is not None else 1
  strides = (strides,) * 2 if isinstance(strides, int) else tuple(strides)
  padding = module.padding
  if isinstance(padding, str):
    if padding not in ("SAME", "VALID"):
      raise _unsupported(name, f"{padding} padding")
    padding = lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], strides, padding)
  else:
    padding = nn.linear.canonicalize_padding(padding, 2)
  y = sparse_conv.conv(x.transpose(3, 0, 1, 2), kernel, mask, capacity, strides, padding,
                       dense_kernel_grad=dense_kernel_grad).transpose(1, 2, 3, 0)
  return y if bias is None else y + bias


def _dense(module: nn.Dense, name: str, x, *, capacity: int, dense_kernel_grad: bool):
  kernel, mask, bias = _variables(module, name)
  x, kernel, bias = module.promote_dtype(x, kernel, bias, dtype=module.dtype)
  rows = x.reshape(-1, x.shape[-1])  # A 1x1 convolution of (features, rows, 1, 1).
  y = sparse_conv.conv(rows.T[:, :, None, None], kernel[None, None], mask[None, None],
                       capacity, (1, 1), ((0, 0), (0, 0)), dense_kernel_grad=dense_kernel_grad)
  y = y[:, :, 0, 0].T.reshape(*x.shape[:-1], kernel.shape[-1])
  return y if bias is None else y + bias


class SlotSchedule:
  """Which layers a run computes over their kept weights at each step, in how many slots.

  While masks change their counts (EAST's cycles, GraNet's pruning) the layers run in
  slots for their peak counts; from the spec's `settled` step on, in slots for the final
  counts (read from the masks when the run gets there if only the masks know them).
  Steps whose mask update reads gradients at pruned positions (RigL's growth) run with
  the kernel gradient at every position.

  Args:
    spec: the run's SparsitySpec (None: nothing is sparse).
    params: the params (shapes only).
    mode: "on" (every masked layer), "off" or "auto" (by density and backend).
    masks: the masks at the start (needed when only the masks know the counts).
  """

  def __init__(self, spec, params, mode: str, masks=None):
    self._spec, self._params, self.mode = spec, params, mode
    self.settled = sparse_transform.settled_step(spec, params) if spec is not None else None
    self._slots = {False: layer_slots(spec, params, mode, 0, masks)}
    if self.settled is not None and not sparse_transform.counts_from_masks(spec):
      self._slots[True] = layer_slots(spec, params, mode, self.settled)
      if self._slots[True] == self._slots[False]:  # Same programs throughout ("off").
        self.settled = None
    if self.settled is None:
      self._slots[True] = self._slots[False]
    self._dense_steps = (sparse_transform.dense_gradient_steps(spec) if spec is not None
                         else frozenset())

  def is_settled(self, step: int) -> bool:
    """Whether `step` runs in the slots of the final counts."""
    return self.settled is None or step >= self.settled

  def slots(self, step: int, masks) -> tuple[tuple[str, int], ...]:
    """((kernel name, slots), ...) of the layers over kept weights at `step`."""
    settled = self.is_settled(step)
    if settled not in self._slots:
      self._slots[settled] = layer_slots(self._spec, self._params, self.mode, self.settled,
                                         masks)
    return self._slots[settled]

  def program(self, step: int, masks) -> Program:
    """The Program of transformation step `step` (the number of updates applied before
    it); `masks`: the current masks."""
    slots = self.slots(step, masks)
    return Program(slots, step in self._dense_steps and bool(slots))

  def built(self) -> list[tuple[tuple[str, int], ...]]:
    """The slot sets chosen so far."""
    return list(self._slots.values())

  def check(self, step: int, masks, every: bool = False) -> None:
    """Raises RunIntegrityError naming each layer whose kept count (in `masks`) exceeds its
    slots at `step` (every: in any slot set chosen so far): sparse compute would drop
    kept weights."""
    over = []
    for slots in self.built() if every else [self.slots(step, masks)]:
      counts = masks_lib.kept_counts(masks, [name for name, _ in slots])
      over += [f"{n} keeps {counts[n]} weights in {k} slots" for n, k in slots if counts[n] > k]
    if over:
      raise RunIntegrityError(
          f"At step {step}, sparse compute would drop kept weights: {'; '.join(sorted(set(over)))}. "
          "The masks do not fit this config's slots (a checkpoint of another sparsity?); the "
          "run stopped before writing anything more.")

  def describe(self) -> str:
    """One line: how many layers run over their kept weights, and on which path."""
    counts = [len(self._slots[k]) if k in self._slots else "some" for k in (False, True)]
    path = f"; {sparse_conv.kernel_path()}" if any(counts) else ""
    return (f"sparse compute ({self.mode}): {counts[0]} layers over their kept weights only"
            + (f", {counts[1]} from step {self.settled}" if self.settled is not None else "")
            + path)

  def record(self) -> dict:
    """What the run computes over its kept weights, for sparsity.json: the mode, the
    kernel path and every such layer's slots (until `settled`, and from it on)."""
    layers = [dict(self._slots[k]) if k in self._slots else {} for k in (False, True)]
    record = {"mode": self.mode, "layers": layers[0],
              "kernels": sparse_conv.kernel_path() if any(layers) else None}
    if self.settled is not None:
      record["settled_step"] = self.settled
      if True in self._slots:  # Else chosen from the masks when the run gets there.
        record["settled_layers"] = layers[1]
    return record
