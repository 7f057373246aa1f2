"""ResNet-34 on CIFAR-10, the paper's main setting (METHOD.md section 5), dense.

Recipe: 250 epochs, batch 128, SGD Nesterov 0.9, lr 0.1 x0.1 at 50% and 75%,
weight decay 1e-4, clip 1.0, crop + flip. Validation = last 10% of train.

Prepare data (needs the internet and tensorflow once):
  python -m east_jax.data.prepare cifar10
Launch:
  python -m east_jax.main --config=configs/cifar10_r34.py --workdir=runs/c10_r34
Expected (dense): about 95% test top-1 (literature value for this recipe; not yet
measured with east_jax). The sparse results of METHOD.md section 6 need the
sparse-training engine. Time: about 3 h on one modern GPU.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.name = "resnet34"
  config.dataset.name = "cifar10"
  return config
