"""EAST = RigL + weight sharing + DyReLU phasing + cyclic sparsity (METHOD.md).

`config.sparsity.method = "east"` turns the three tricks on; each has a switch in
`config.east` for ablations (share_ratio=0: no sharing, dyrelu=False: ReLU only,
num_cycles=0: no cycles). Other methods train the plain ReLU ResNet.
"""

import collections
import functools

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


def model_options(config) -> dict:
  """create_model keyword arguments: weight sharing and the activation."""
  if not is_east(config):
    return {"share_ratio": 0, "act": ReLU}
  if not config.east.dyrelu:
    act = ReLU
  elif config.east.phase_out == "relu":
    act = dyrelu.DyReLU
  else:
    act = functools.partial(dyrelu.DyReLU, phase_out=config.east.phase_out)
  return {"share_ratio": config.east.share_ratio, "act": act}


def kernel_uses(model) -> tuple:
  """((kernel name, uses), ...) for the kernels that weight sharing reuses."""
  extra = collections.Counter(model.shared_convs().values())
  return tuple((name, 1 + n) for name, n in extra.items())


def cycle_schedule(config, total_steps: int) -> CycleSchedule | None:
  if not is_east(config) or config.east.num_cycles == 0:
    return None
  e = config.east
  return CycleSchedule(total_steps=total_steps, num_cycles=e.num_cycles, length=e.cycle_length,
                       length_multiplier=e.cycle_length_multiplier,
                       density_multiplier=e.cycle_density_multiplier, shape=e.cycle_shape,
                       update_interval=e.cycle_update_interval)


def beta_fn(config, total_steps: int):
  """step -> DyReLU's beta, or None when the model has no DyReLU."""
  if not is_east(config) or not config.east.dyrelu:
    return None
  return functools.partial(dyrelu.beta_schedule, total_steps=total_steps,
                           phase_start=config.east.dyrelu_phase_start,
                           phase_end=config.east.dyrelu_phase_end)


def relu_from_step(config, total_steps: int) -> int:
  """The first step at which the model runs without hyper-networks (0 without DyReLU):
  a plain ReLU ResNet, or with east.phase_out=static its learned per-channel activation."""
  if beta_fn(config, total_steps) is None:
    return 0
  return dyrelu.zero_from_step(total_steps=total_steps,
                               phase_start=config.east.dyrelu_phase_start,
                               phase_end=config.east.dyrelu_phase_end)


def hypernet_freeze_step(config, total_steps: int) -> int | None:
  """The step from which the hyper-networks stop training, or None."""
  if beta_fn(config, total_steps) is None or not config.east.freeze_hypernet:
    return None
  return round(config.east.dyrelu_phase_start * total_steps)
