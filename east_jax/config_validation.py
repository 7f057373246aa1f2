"""Checks a config before anything is built, with messages that say what to change."""

from east_jax import east
from east_jax.errors import UserInputError
from east_jax.models import MODEL_NAMES
from east_jax.models.conv import KERNEL_GRADS
from east_jax.models.sparse_conv import SPARSE_COMPUTE
from east_jax.sparsity import methods

EVAL_SPLITS = ("validation", "test")
DTYPES = ("float32", "bfloat16")


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise UserInputError(message)


def validate(config) -> None:
  """Raises UserInputError for any config value that cannot work."""
  _require(config.model.name in MODEL_NAMES,
           f"Unknown model {config.model.name!r}: choose one of {', '.join(MODEL_NAMES)} "
           "(config.model.name).")
  _require(config.model.dtype in DTYPES,
           f"config.model.dtype must be one of {DTYPES}, got {config.model.dtype!r}.")
  _require(config.model.kernel_grad in KERNEL_GRADS,
           f"config.model.kernel_grad must be one of {KERNEL_GRADS}, got "
           f"{config.model.kernel_grad!r}.")
  _require(config.model.sparse_compute in SPARSE_COMPUTE,
           f"config.model.sparse_compute must be one of {SPARSE_COMPUTE}, got "
           f"{config.model.sparse_compute!r}.")
  for field in ("batch_size", "eval_batch_size"):
    value = config[field]
    _require(isinstance(value, int) and value > 0,
             f"config.{field} must be a positive integer, got {value!r}.")
  _require(config.num_train_steps > 0 or config.num_epochs > 0,
           "Set config.num_epochs > 0 or config.num_train_steps > 0.")
  threads, workers = config.dataset.num_threads, config.dataset.num_workers
  _require(isinstance(threads, int) and threads >= 1,
           f"config.dataset.num_threads must be an integer >= 1, got {threads!r}.")
  _require(isinstance(workers, int) and workers >= 0,
           f"config.dataset.num_workers must be an integer >= 0 (0: threads only), got "
           f"{workers!r}.")
  for field in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
    _require(config[field] > 0, f"config.{field} must be > 0, got {config[field]}.")
  _require(config.learning_rate > 0, f"config.learning_rate must be > 0, got {config.learning_rate}.")
  _require(0 <= config.momentum < 1, f"config.momentum must be in [0, 1), got {config.momentum}.")
  _require(config.weight_decay >= 0, "config.weight_decay must be >= 0.")
  _require(all(0 < f < 1 for f in config.lr_decay_at),
           f"config.lr_decay_at holds fractions of training in (0, 1), got {config.lr_decay_at}.")
  unknown = [s for s in config.eval_splits if s not in EVAL_SPLITS]
  _require(not unknown, f"config.eval_splits: unknown split(s) {unknown}; use {EVAL_SPLITS}.")
  methods.validate(config.sparsity)
  east.validate(config)
  _require("validation" not in config.eval_splits or config.dataset.validation_fraction > 0,
           "config.eval_splits asks for 'validation' but config.dataset.validation_fraction is 0.")


def validate_for_devices(config, num_devices: int) -> None:
  """Batch sizes must split evenly over the devices of the mesh."""
  for field in ("batch_size", "eval_batch_size"):
    _require(config[field] % num_devices == 0,
             f"config.{field}={config[field]} is not divisible by the {num_devices} devices; "
             f"use a multiple of {num_devices}.")
