"""ResNet-34 on CIFAR-100, dense; the CIFAR-10 recipe with 100 classes.

Prepare data: python -m east_jax.data.prepare cifar100
Launch:
  python -m east_jax.main --config=configs/cifar100_r34.py --workdir=runs/c100_r34
Expected (dense): about 77-78% test top-1 (literature value; not yet measured with
east_jax). Time: about 3 h on one modern GPU.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.name = "resnet34"
  config.dataset.name = "cifar100"
  return config
