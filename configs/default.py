"""Defaults shared by every experiment: the CIFAR recipe of docs/method.md section 5.

Not meant to be run by itself; experiment configs import it, override fields and
apply their config argument with `apply_arg`:
  --config=configs/cifar10_r34.py:method=east,sparsity=0.9999,seed=1
Keys are `method`, `sparsity`, `seed` or any dotted field (`east.num_cycles=0`).
"""

import ast

import ml_collections

ALIASES = {"method": "sparsity.method", "sparsity": "sparsity.sparsity"}


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.name = "resnet34"        # resnet18 | resnet34 | resnet50
  config.model.width = 64               # channels of the first stage
  config.model.stage_sizes = ()         # () = the architecture's own, e.g. (3, 4, 6, 3)
  config.model.stem = "cifar"           # cifar (3x3 s1) | imagenet (7x7 s2 + max-pool)
  config.model.dtype = "float32"        # compute: float32 | bfloat16 (params, optimizer: float32)
  config.model.kernel_grad = "auto"     # conv kernel gradients: auto (matmul on CPU) | xla | matmul
  config.model.sparse_compute = "auto"  # compute over kept weights: auto (CPU, <= 5%) | on | off

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "cifar10"
  config.dataset.data_dir = ""          # "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
  config.dataset.validation_fraction = 0.1  # held-out tail of the train split
  config.dataset.augment = ""           # "" = the dataset's default: pad_crop | inception | none
  config.dataset.pad = -1               # pad_crop padding; -1 = the dataset's default
  config.dataset.image_size = 0         # inception crop size; 0 = the dataset's default
  config.dataset.mean = ()              # () = the dataset's default normalisation
  config.dataset.std = ()
  config.dataset.num_threads = 4        # grain reader threads (per worker process)
  config.dataset.num_workers = 0        # decode/augment processes; 0 = threads of this one

  config.batch_size = 128               # global, over all devices and processes
  config.eval_batch_size = 512
  config.num_epochs = 250.0
  config.num_train_steps = -1           # > 0: run exactly this many steps (schedules fit it)

  config.learning_rate = 0.1
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 1e-4
  config.grad_clip_norm = 1.0
  config.lr_decay_at = (0.5, 0.75)      # fractions of training
  config.lr_decay_factor = 0.1
  config.warmup_epochs = 0.0

  config.sparsity = ml_collections.ConfigDict()
  config.sparsity.method = "dense"      # dense | static | set | rigl | gmp | east |
                                        # snip | grasp | synflow | granet
  config.sparsity.sparsity = 0.0        # fraction of prunable weights removed, e.g. 0.999
  config.sparsity.distribution = "erk"  # erk | uniform
  config.sparsity.keep_stem_dense = False        # RigL convention: True
  config.sparsity.keep_classifier_dense = False  # RigL convention: True
  config.sparsity.layer_density_overrides = ()   # e.g. ("stem_conv/kernel=0.5",)
  config.sparsity.min_kept_per_layer = 0         # collapse guard, inside the budget
  config.sparsity.connect_all_classes = False    # collapse guard: >= 1 weight per class
  config.sparsity.update_interval = 4000         # steps between mask updates (GMP: prunings)
  config.sparsity.update_start_step = 0
  config.sparsity.update_end_step = -1           # -1 = end of training
  config.sparsity.drop_fraction = 0.5            # cosine decay ...
  config.sparsity.drop_fraction_final = 0.005    # ... to this at the end of training
  # Pruning at initialisation (snip, grasp, synflow): masks scored once before the first step,
  # then fixed. scope: global (one top-k over all layers, the references) | layerwise (each
  # layer keeps its `distribution` count).
  config.sparsity.scope = "global"
  config.sparsity.synflow_rounds = 100           # SynFlow's iterations (exponential schedule)
  config.sparsity.grasp_samples_per_class = 10   # GraSP's scoring batch ...
  config.sparsity.grasp_temperature = 200.0      # ... and its logit temperature
  # GraNet: from ERK masks at 1 - init_sparsity, global magnitude pruning to `sparsity` on the
  # cubic schedule from update_start_step until prune_end (fraction of training), and RigL's
  # drop / regrow at every update until the end.
  config.sparsity.init_sparsity = 0.5
  config.sparsity.prune_end = 0.5

  # EAST's tricks (used when sparsity.method == "east"; docs/method.md sections 2-4).
  config.east = ml_collections.ConfigDict()
  config.east.share_ratio = 2                # blocks >= this reuse block (ratio - 1); 0 = off
  config.east.dyrelu = True                  # False = ReLU only
  config.east.dyrelu_phase_start = 0.25      # beta = 1 until here (fraction of training) ...
  config.east.dyrelu_phase_end = 0.5         # ... linearly to 0 here: plain ReLU after
  config.east.phase_out = "relu"             # beta -> 0 leads to: relu | static (learned per-
                                             # channel two-piece activation, no hyper-network)
  config.east.freeze_hypernet = False        # stop training the hyper-networks at phase_start
  config.east.num_cycles = 2                 # cyclic sparsity; 0 = off
  config.east.cycle_length = 0.2             # fraction of training per cycle
  config.east.cycle_length_multiplier = 1.0  # cycle k lasts cycle_length * multiplier**k
  config.east.cycle_density_multiplier = 3.0  # peak density = multiplier x (1 - sparsity)
  config.east.cycle_shape = "cosine"         # cosine | triangular
  config.east.cycle_update_interval = 1000   # steps between mask updates inside the cycles

  # Multi-process (multi-host) runs: jax.distributed.initialize() before anything else.
  # On TPU pods, SLURM and Open MPI the cluster is detected; elsewhere give all three.
  # EAST_DISTRIBUTED=1 in the environment turns it on too (the launch/ scripts set it).
  config.distributed = ml_collections.ConfigDict()
  config.distributed.initialize = False
  config.distributed.coordinator_address = ""  # host:port of process 0; "" = detect
  config.distributed.num_processes = 0         # 0 = detect
  config.distributed.process_id = -1           # -1 = detect

  config.log_every_steps = 100
  config.eval_every_steps = -1          # -1 = once per epoch
  config.eval_splits = ("validation", "test")
  config.checkpoint_every_steps = 2000
  config.keep_checkpoints = 3
  config.compilation_cache_dir = "~/.cache/east_jax/jax"  # JAX's persistent cache; "" = off
  return config


def apply_arg(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Applies 'key=value,key=value' (the text after ':' in --config) to `config`."""
  for item in filter(None, (arg or "").split(",")):
    key, sep, text = item.partition("=")
    path = ALIASES.get(key.strip(), key.strip())
    *parents, leaf = path.split(".")
    node = config
    for name in parents:
      node = node.get(name) if isinstance(node, ml_collections.ConfigDict) else None
    if not sep or not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise ValueError(f"Config argument {item!r}: use key=value with a key among "
                       f"{', '.join(ALIASES)}, seed or a dotted config field.")
    node[leaf] = _parse(text.strip(), node[leaf])
  return config


def _parse(text: str, current):
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise ValueError(f"Config argument value {text!r} is not a {type(current).__name__}.") from None
  return float(value) if isinstance(current, float) and isinstance(value, int) else value
