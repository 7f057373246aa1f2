"""Small configs shared by the tests."""

import ml_collections

from configs import default
from east_jax import study


def tiny_config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
  """A few-second Fashion-MNIST run: a 2-stage ResNet of width 4."""
  config = default.get_config()
  config.model.name = "resnet18"
  config.model.width = 4
  config.model.stage_sizes = (1, 1)
  config.dataset.name = "fashion_mnist"
  config.dataset.data_dir = data_dir
  config.dataset.num_threads = 2
  config.batch_size = 32
  config.eval_batch_size = 64
  config.num_train_steps = 6
  config.log_every_steps = 2
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 3
  return study.set_fields(config, overrides)


class TamperedIterator:
  """A train iterator whose n-th batch (1-based) passes through `tamper(n, batch)`."""

  def __init__(self, inner, tamper):
    self._inner, self._tamper, self._calls = inner, tamper, 0

  def __next__(self):
    self._calls += 1
    return self._tamper(self._calls, next(self._inner))

  def get_state(self):
    return self._inner.get_state()

  def set_state(self, state):
    self._inner.set_state(state)

  def close(self):
    self._inner.close()
