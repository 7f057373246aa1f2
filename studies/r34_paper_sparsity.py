"""The paper's network at the paper's sparsities: full-width ResNet-34 (CIFAR stem,
21,265,088 prunable weights) on Fashion-MNIST, EAST vs RigL at 99.95% (10,633 kept) and
99.99% (2,126), 2 epochs (842 steps of 128), sparse compute (auto), evaluated each epoch.

  python -m east_jax.study studies/r34_paper_sparsity.py --workdir=runs/r34_paper_sparsity
  python -m east_jax.report runs/r34_paper_sparsity

Cost on 2 CPU cores: about 25-30 minutes a run alone (RigL at 99.99% trains at ~270 images/s;
EAST's DyReLU phase is slower, 99.95% keeps 5x the weights). The first pair of 99.99% runs
(seed 0, before this study file) is in benchmarks/RESULTS.md: EAST 60.27%, RigL 10.00%.
The runs are ordered so that a study stopped early has the new cells first: 99.95% seed 0,
then 99.99% seed 1, then 99.95% seed 1, and last the re-run of that first 99.99% pair.
"""

CONFIG = "../configs/fashion_mnist_r18.py"
OVERRIDES = {"model.name": "resnet34", "model.width": 64, "model.stage_sizes": (),
             "num_epochs": 2.0, "checkpoint_every_steps": 200, "keep_checkpoints": 1}
RUNS = [f"method={m},sparsity={s},seed={k}"
        for s, k in [(0.9995, 0), (0.9999, 1), (0.9995, 1), (0.9999, 0)] for m in ("east", "rigl")]
