"""EAST = RigL + weight sharing + DyReLU phasing + cyclic sparsity (docs/method.md).

`config.sparsity.method = "east"` turns the three tricks on; each has a switch in
`config.east` for ablations (share_ratio=0: no sharing, dyrelu=False: ReLU only,
num_cycles=0: no cycles). Other methods train the plain ReLU ResNet. `plan(config,
total_steps)` is all the train loop needs to know of EAST.
"""

import collections
import functools
from typing import Callable, NamedTuple

from east_jax.errors import UserInputError
from east_jax.models import dyrelu
from east_jax.models import ReLU
from east_jax.sparsity.cycles import SHAPES, CycleSchedule


def is_east(config) -> bool:
  return config.sparsity.method == "east"


def validate(config) -> None:
  """Checks config.east when EAST is the method; raises UserInputError."""
  if not is_east(config):
    return
  e = config.east
  checks = [
      (e.share_ratio == 0 or e.share_ratio >= 2,
       f"config.east.share_ratio must be 0 (off) or >= 2, got {e.share_ratio}."),
      (0.0 <= e.dyrelu_phase_start <= e.dyrelu_phase_end <= 1.0,
       "config.east.dyrelu_phase_start <= dyrelu_phase_end must be fractions of training in "
       f"[0, 1], got {e.dyrelu_phase_start} and {e.dyrelu_phase_end}."),
      (e.phase_out in dyrelu.PHASE_OUTS,
       f"config.east.phase_out must be one of {dyrelu.PHASE_OUTS}, got {e.phase_out!r}."),
      (e.num_cycles >= 0, f"config.east.num_cycles must be >= 0, got {e.num_cycles}."),
      (e.cycle_length > 0 and e.cycle_length_multiplier > 0,
       "config.east.cycle_length (a fraction of training) and cycle_length_multiplier must be "
       "> 0."),
      (e.cycle_shape in SHAPES,
       f"config.east.cycle_shape must be one of {SHAPES}, got {e.cycle_shape!r}."),
      (e.cycle_update_interval > 0, "config.east.cycle_update_interval must be > 0 steps."),
      (e.cycle_density_multiplier >= 1.0,
       f"config.east.cycle_density_multiplier must be >= 1, got {e.cycle_density_multiplier}."),
      ((1.0 - config.sparsity.sparsity) * e.cycle_density_multiplier <= 1.0,
       f"The cycles' peak density {(1.0 - config.sparsity.sparsity)} x "
       f"{e.cycle_density_multiplier} exceeds 1: lower config.east.cycle_density_multiplier or "
       "raise config.sparsity.sparsity."),
  ]
  for ok, message in checks:
    if not ok:
      raise UserInputError(message)


def sharing_problem(config, stage_sizes) -> tuple[str, bool] | None:
  """(message, is_error) when EAST's `share_ratio` shares no kernel in a network with
  these blocks per stage, else None. Sharing needs a stage of more than `share_ratio`
  blocks: a ratio too large for the network is an error; a network whose stages are all
  too short to share at any ratio (ResNet-18's stages of 2) only gets a warning, since
  EAST's default ratio there means DyReLU + cycles + RigL."""
  ratio = config.east.share_ratio
  if not is_east(config) or ratio == 0 or max(stage_sizes) > ratio:
    return None
  sizes = ", ".join(map(str, stage_sizes))
  if max(stage_sizes) <= 2:
    return (f"EAST shares no kernel here: stages of {sizes} blocks (sharing needs 3 or more); "
            "set config.east.share_ratio=0 to say so.", False)
  return (f"config.east.share_ratio={ratio} shares no kernel in stages of {sizes} blocks: "
          f"use a ratio from 2 to {max(stage_sizes) - 1}, or 0 for no sharing.", True)


class Plan(NamedTuple):
  """What EAST changes in a run, built once from (config, total_steps)."""
  model_options: dict               # create_model keyword arguments: share_ratio, act
  cycles: CycleSchedule | None      # cyclic sparsity, or None
  beta_fn: Callable | None          # step -> DyReLU's beta, or None without DyReLU
  relu_from: int                    # first step without hyper-networks (0 without DyReLU)
  hypernet_freeze_step: int | None  # the hyper-networks stop training here, or None

  def hypernet_active(self, step) -> bool:
    """Whether the model runs its hyper-networks at `step` (steps before relu_from)."""
    return self.beta_fn is not None and step < self.relu_from


def plan(config, total_steps: int) -> Plan:
  """The plan of `config` over `total_steps`; for other methods: the plain ReLU ResNet."""
  if not is_east(config):
    return Plan({"share_ratio": 0, "act": ReLU}, None, None, 0, None)
  e = config.east
  cycles = None if e.num_cycles == 0 else CycleSchedule(
      total_steps=total_steps, num_cycles=e.num_cycles, length=e.cycle_length,
      length_multiplier=e.cycle_length_multiplier, density_multiplier=e.cycle_density_multiplier,
      shape=e.cycle_shape, update_interval=e.cycle_update_interval)
  if not e.dyrelu:
    return Plan({"share_ratio": e.share_ratio, "act": ReLU}, cycles, None, 0, None)
  act = (dyrelu.DyReLU if e.phase_out == "relu"
         else functools.partial(dyrelu.DyReLU, phase_out=e.phase_out))
  phases = {"phase_start": e.dyrelu_phase_start, "phase_end": e.dyrelu_phase_end}
  return Plan(model_options={"share_ratio": e.share_ratio, "act": act}, cycles=cycles,
              beta_fn=functools.partial(dyrelu.beta_schedule, total_steps=total_steps, **phases),
              relu_from=dyrelu.zero_from_step(total_steps=total_steps, **phases),
              hypernet_freeze_step=(round(e.dyrelu_phase_start * total_steps)
                                    if e.freeze_hypernet else None))


def kernel_uses(model) -> tuple:
  """((kernel name, uses), ...) for the kernels that weight sharing reuses."""
  extra = collections.Counter(model.shared_convs().values())
  return tuple((name, 1 + n) for name, n in extra.items())
