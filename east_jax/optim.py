"""The optimizer of the training recipe (docs/method.md section 5), built from the config.

SGD with (Nesterov) momentum, decoupled from nothing: weight decay is added to the
gradient after global-norm clipping, as torch.optim.SGD does after clip_grad_norm_.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from east_jax.sparsity.masks import leaf_name


def create_learning_rate_fn(config, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  """Linear warm-up (optional), then the base rate multiplied by `lr_decay_factor`
  at each fraction of training in `lr_decay_at` (a multistep schedule)."""
  boundaries = {int(round(f * total_steps)): config.lr_decay_factor for f in config.lr_decay_at}
  schedule = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
  warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
  if warmup_steps == 0:
    return schedule
  warmup = optax.linear_schedule(0.0, config.learning_rate, warmup_steps)
  return optax.join_schedules([warmup, schedule], [warmup_steps])


class FreezeState(NamedTuple):
  count: jax.Array


def freeze_from(step: int, frozen: Callable[[str], bool]) -> optax.GradientTransformation:
  """Zeroes the updates of the leaves whose name `frozen` accepts, from `step` on."""

  def init_fn(params):
    del params
    return FreezeState(count=jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params=None):
    del params
    def leaf(path, u):
      return jnp.where(state.count < step, u, jnp.zeros_like(u)) if frozen(leaf_name(path)) else u
    return jax.tree_util.tree_map_with_path(leaf, updates), FreezeState(count=state.count + 1)

  return optax.GradientTransformation(init_fn, update_fn)


def create_optimizer(config, learning_rate_fn: optax.Schedule, *, freeze_step: int | None = None,
                     frozen: Callable[[str], bool] | None = None) -> optax.GradientTransformation:
  """clip_by_global_norm -> weight decay -> SGD(momentum, nesterov) [-> freeze `frozen`
  leaves from `freeze_step` on]."""
  parts = []
  if config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if config.weight_decay > 0:
    parts.append(optax.add_decayed_weights(config.weight_decay))
  parts.append(optax.sgd(learning_rate_fn, momentum=config.momentum or None,
                         nesterov=config.nesterov))
  if freeze_step is not None:
    parts.append(freeze_from(freeze_step, frozen))
  return optax.chain(*parts)
