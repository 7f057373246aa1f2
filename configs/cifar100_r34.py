"""ResNet-34 on CIFAR-100: EAST at 99.9%, the CIFAR-10 recipe with 100 classes.

Prepare data: python -m east_jax.data.prepare cifar100
Launch:
  python -m east_jax.main --config=configs/cifar100_r34.py --workdir=runs/c100_r34_east_999
  python -m east_jax.main --config=configs/cifar100_r34.py:method=east,sparsity=0.9995 ...
  (method: dense | static | set | rigl | gmp | east; sparsity: 0.999 | 0.9995 | 0.9999)
Expected: the paper's CIFAR-100 table was not available to us (docs/method.md section 6);
dense is about 77-78% (literature value). Not yet measured with east_jax.
Time: about 3 h on one modern GPU.
"""

from configs import default


def get_config(arg=None):
  config = default.get_config()
  config.model.name = "resnet34"
  config.dataset.name = "cifar100"
  config.sparsity.method = "east"
  config.sparsity.sparsity = 0.999
  return default.apply_arg(config, arg)
