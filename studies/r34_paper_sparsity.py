"""EAST's Table 1 on the paper's network: full-width ResNet-34 (CIFAR stem, 21,263,936
prunable weights) on Fashion-MNIST (the stand-in for CIFAR-10, which these machines cannot
fetch), 2 epochs (842 steps of 128), sparse compute (auto), evaluated each epoch. Columns:
RigL, SET, SynFlow (global scope, as its reference), EAST, and EAST with the static
phase-out; rows 99.95% (10,632 kept) and 99.99% (2,126) with 3 seeds, 99.9% (21,264) with 3
(its seeds 1 and 2 queued last).

  python -m east_jax.study studies/r34_paper_sparsity.py --workdir=runs/r34_paper_sparsity
  python -m east_jax.report runs/r34_paper_sparsity --rows=sparsity \
      --reference=studies/east_paper_table1.json

Cost on 2 CPU cores, alone: RigL at 99.99% about 9 minutes, EAST at 99.95% about 20; SynFlow
scores for about 70 s before its first step (100 rounds in float64). The queue gives every
cell its first seed before any gets its second or third; runs finished before this file
grew (EAST and RigL, seeds 0-1) are reused by their folder names.
"""

CONFIG = "../configs/fashion_mnist_r18.py"
OVERRIDES = {"model.name": "resnet34", "model.width": 64, "model.stage_sizes": (),
             "num_epochs": 2.0, "checkpoint_every_steps": 200, "keep_checkpoints": 1}
METHODS = ["method=east", "method=rigl", "method=set", "method=synflow",
           "method=east,east.phase_out=static"]


def _run(method: str, sparsity: float, seed: int) -> str:
  name, _, extra = method.partition(",")
  return f"{name},sparsity={sparsity},seed={seed}" + (f",{extra}" if extra else "")


RUNS = ([_run(m, s, k) for s, k in [(0.9995, 0), (0.9999, 1), (0.9995, 1)]
         for m in METHODS[:2]]  # The study's first six runs, in their original order.
        + [_run(m, s, 0) for s in (0.9995, 0.9999) for m in METHODS[2:]]
        + [_run(m, 0.9999, 0) for m in METHODS[:2]]  # Every cell's first seed before any third.
        + [_run(m, s, 1) for s in (0.9995, 0.9999) for m in METHODS[2:]]
        + [_run(m, 0.999, 0) for m in METHODS]
        + [_run(m, s, 2) for s in (0.9995, 0.9999) for m in METHODS]
        + [_run(m, 0.999, k) for k in (1, 2) for m in METHODS])
