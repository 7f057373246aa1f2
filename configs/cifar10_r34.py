"""ResNet-34 on CIFAR-10, the paper's main setting (docs/method.md sections 5-6): EAST at 99.9%.

Recipe: 250 epochs, batch 128, SGD Nesterov 0.9, lr 0.1 x0.1 at 50% and 75%,
weight decay 1e-4, clip 1.0, crop + flip. Validation = last 10% of train. EAST:
sharing ratio 2, DyReLU phased out over 25-50% of training, 2 density cycles of
20% of training each (peak 3x density, mask updates every 1000 steps inside them),
RigL updates every 4000 steps after.

Prepare data (needs the internet and tensorflow once):
  python -m east_jax.data.prepare cifar10
Launch (the config argument picks method and sparsity; any dotted field works too):
  python -m east_jax.main --config=configs/cifar10_r34.py --workdir=runs/c10_r34_east_999
  python -m east_jax.main --config=configs/cifar10_r34.py:method=east,sparsity=0.9999 \\
      --workdir=runs/c10_r34_east_9999
  python -m east_jax.main --config=configs/cifar10_r34.py:method=rigl,sparsity=0.9995 ...
Ablations: add east.share_ratio=0 (no sharing), east.dyrelu=False (ReLU only),
east.num_cycles=0 (no cycles) to the config argument.

Expected test top-1, % (paper v4 Table 1, mean +- std of 3 seeds; not yet
measured with east_jax):
  sparsity  RigL           SET            EAST
  99%       92.92 +- 0.18  93.09 +- 0.15  93.51 +- 0.13
  99.9%     85.71 +- 0.23  82.70 +- 0.91  86.99 +- 0.32
  99.95%    81.47 +- 0.32  70.84 +- 1.51  83.83 +- 0.02
  99.99%    10.03 +- 0.19  10.00 +- 0.00  62.12 +- 0.90
  dense: about 95% (literature value for this recipe).
Time: about 3 h on one modern GPU.
"""

from configs import default


def get_config(arg=None):
  config = default.get_config()
  config.model.name = "resnet34"
  config.dataset.name = "cifar10"
  config.sparsity.method = "east"
  config.sparsity.sparsity = 0.999
  return default.apply_arg(config, arg)
