"""EAST at 99.9% sparsity on Fashion-MNIST: the README's first run.

A ResNet with the CIFAR stem, 3 stages of 3 basic blocks at width 32 (1,080,864 prunable
weights, 1,081 kept; every stage has a block to share) with all of EAST: weight sharing,
the DyReLU phase and its phase-out, two sparsity cycles, RigL-style updates; sparse
compute (auto) runs every layer over its kept weights only. A short run
(300 steps of 128, under an epoch) so that it fits a laptop-class CPU in a few minutes;
the schedules fit the run length.

Launch (set-up, data and the summary included):
  bash run.sh
or by hand:
  python -m east_jax.main --config=configs/first_run.py --workdir=runs/first_run

Expected on 2 CPU cores (measured 2026-12-03): 47.3% test accuracy (chance: 10%) with
1,081 of 1,080,864 weights, 7.6 min with the set-up done; the summary in the README.
"""

from configs import default
from configs import fashion_mnist_r18


def get_config(arg=None):
  config = fashion_mnist_r18.get_config("method=east,sparsity=0.999")
  config.model.name = "resnet34"
  config.model.width = 32
  config.model.stage_sizes = (3, 3, 3)
  config.num_train_steps = 300
  config.log_every_steps = 25
  config.eval_every_steps = 10**9  # Once, at the end.
  config.eval_splits = ("test",)
  config.checkpoint_every_steps = 100
  config.keep_checkpoints = 1
  config.sparsity.update_interval = 25
  config.east.cycle_update_interval = 10
  return default.apply_arg(config, arg)
