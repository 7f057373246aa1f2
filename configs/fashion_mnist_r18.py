"""ResNet-18 (width 8) on Fashion-MNIST, dense: the embedded default run.

Fits this project's 2-core CPU: the data comes from Debian's dataset-fashion-mnist
(prepared offline by `python -m east_jax.data.prepare fashion_mnist`).

Launch (README's first command does the set-up and runs exactly this):
  python -m east_jax.main --config=configs/fashion_mnist_r18.py --workdir=runs/fmnist_r18

Sparse: add --config.sparsity.method=rigl --config.sparsity.sparsity=0.999 (or set,
static, gmp).

Expected: see README "Results" (dense: 91% test accuracy in about 8 minutes on 2 CPU cores).
"""

from configs import default


def get_config():
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
  return config
