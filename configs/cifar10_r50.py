"""ResNet-50 (bottleneck, CIFAR stem) on CIFAR-10: EAST at 99.9%.

Sharing ratio 2 shares 8 of the 16 bottlenecks. Same recipe as cifar10_r34.py.
Prepare data: python -m east_jax.data.prepare cifar10
Launch:
  python -m east_jax.main --config=configs/cifar10_r50.py --workdir=runs/c10_r50_east_999
  python -m east_jax.main --config=configs/cifar10_r50.py:method=east,sparsity=0.9999 ...
Expected: the paper's ResNet-50 tables were not available to us (docs/method.md
section 6); dense is about 95% (literature value). Not yet measured with east_jax.
Time: about 5 h on one modern GPU.
"""

from configs import default


def get_config(arg=None):
  config = default.get_config()
  config.model.name = "resnet50"
  config.dataset.name = "cifar10"
  config.sparsity.method = "east"
  config.sparsity.sparsity = 0.999
  return default.apply_arg(config, arg)
