"""ResNet-18 (width 8) on Fashion-MNIST, dense: the embedded default run.

Fits this project's 2-core CPU: the data comes from Debian's dataset-fashion-mnist
(prepared offline by `python -m east_jax.data.prepare fashion_mnist`).

Launch (after `bash setup.sh`):
  python -m east_jax.main --config=configs/fashion_mnist_r18.py --workdir=runs/fmnist_r18

Sparse: pick method and sparsity with the config argument, e.g.
  python -m east_jax.main --config=configs/fashion_mnist_r18.py:method=east,sparsity=0.999 \\
      --workdir=runs/fmnist_r18_east
(method: static | set | rigl | gmp | granet | snip | grasp | synflow | east; ResNet-18's stages of 2 blocks have
nothing to share at ratio 2, so EAST here is DyReLU + cycles + RigL.)

Expected: see README "Results" (dense: 91% test accuracy in about 8 minutes on 2 CPU cores).
"""

from configs import default


def get_config(arg=None):
  config = default.get_config()
  config.model.name = "resnet18"
  config.model.width = 8
  config.dataset.name = "fashion_mnist"
  config.num_epochs = 3.0
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.sparsity.update_interval = 100  # ~12 mask updates over the run
  config.east.cycle_update_interval = 25  # ~10 updates per cycle
  return default.apply_arg(config, arg)
