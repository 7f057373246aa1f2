"""ResNet-50 (bottleneck, CIFAR stem) on CIFAR-10, dense.

Prepare data: python -m east_jax.data.prepare cifar10
Launch:
  python -m east_jax.main --config=configs/cifar10_r50.py --workdir=runs/c10_r50
Expected (dense): about 95% test top-1 (literature value; not yet measured with
east_jax). Time: about 5 h on one modern GPU.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.name = "resnet50"
  config.dataset.name = "cifar10"
  return config
