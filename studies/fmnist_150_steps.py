"""The first Fashion-MNIST study: 150-step runs, EAST vs RigL, SET and static.

Too short for DyReLU phasing, cycles or the LR schedule to act, and from 99.9% past the
edge of collapse for every method; kept as the record of that study (its table is in
benchmarks/RESULTS.md). `studies/collapse_edge.py` is the study that answers the question.
38 runs: 4 methods x 4 sparsities x 2 seeds, EAST's 3 ablations at 99% x 2 seeds, about
165 s each on 2 CPU cores.

  python -m east_jax.study studies/fmnist_150_steps.py --workdir=runs/fmnist_study
  python -m east_jax.report runs/fmnist_study
"""

from east_jax.study import grid

CONFIG = "../configs/fashion_mnist_r18.py"
OVERRIDES = {"model.width": 8, "model.stage_sizes": (3, 3, 3), "num_train_steps": 150,
             "batch_size": 128, "eval_batch_size": 1000, "eval_splits": ("test",),
             "log_every_steps": 5, "eval_every_steps": 150, "checkpoint_every_steps": 150,
             "keep_checkpoints": 1, "sparsity.update_interval": 25,
             "east.cycle_update_interval": 10}
RUNS = (grid(["east", "rigl", "set", "static"], [0.99, 0.999, 0.9995, 0.9999], seeds=2)
        + grid(["east"], [0.99], seeds=2, extra="east.share_ratio=0")
        + grid(["east"], [0.99], seeds=2, extra="east.dyrelu=False")
        + grid(["east"], [0.99], seeds=2, extra="east.num_cycles=0"))
