"""The collapse edge on Fashion-MNIST: does EAST keep learning where RigL collapses?

A ResNet of width 8 with three stages of 3 basic blocks (67,848 prunable weights; under
EAST a stage's third block reuses its second's kernels), 3 epochs (1,263 steps of 128),
evaluated at the end. Sparsities by kept weights, placed from earlier probes
(99%: RigL 78.8%, 99.7%: 29.8%): 99.5% (339 kept), 99.7% (204), 99.85% (102). First
EAST and RigL with 3 seeds at the three; then, at the edge (99.7%), the static phase-out
(3 seeds), the other methods and EAST's ablations with 2 seeds, and a phase-out that ends
before the learning-rate decay (2 seeds). Last, the baselines of the field: SynFlow (global,
and layerwise with the ERK budget), SNIP, GraSP and GraNet, 3 seeds at the edge and one at
99.5% and 99.85%.

  python -m east_jax.study studies/collapse_edge.py --workdir=runs/collapse_edge
  python -m east_jax.report runs/collapse_edge --out=docs/collapse_edge/report.md \\
      --plot=docs/collapse_edge/accuracy.png

Cost on 2 CPU cores (one process): RigL about 3 min a run, EAST about 8 (its DyReLU
phase runs at a quarter of the ReLU phase's speed). Result: docs/studies.md, "The collapse edge".
"""

from east_jax.study import grid

CONFIG = "../configs/fashion_mnist_r18.py"
OVERRIDES = {"model.stage_sizes": (3, 3, 3), "eval_every_steps": 10**9,
             "checkpoint_every_steps": 250, "keep_checkpoints": 1}
EDGE = 0.997
RUNS = (grid(["east", "rigl"], [0.995, EDGE, 0.9985], seeds=3)
        + grid(["east"], [EDGE], seeds=3, extra="east.phase_out=static")
        + grid(["set", "static"], [EDGE], seeds=2)
        + grid(["east"], [EDGE], seeds=2, extra="east.share_ratio=0")
        + grid(["east"], [EDGE], seeds=2, extra="east.dyrelu=False")
        + grid(["east"], [EDGE], seeds=2, extra="east.num_cycles=0")
        + grid(["rigl"], [EDGE], seeds=2,
               extra="sparsity.connect_all_classes=True,sparsity.min_kept_per_layer=2")
        # The phase-out ends at 50%, where the learning rate drops 10x: end it before.
        + grid(["east"], [EDGE], seeds=2,
               extra="east.dyrelu_phase_start=0.15,east.dyrelu_phase_end=0.4")
        # The field's other baselines: pruning at initialisation (SynFlow also with the
        # run's ERK budget per layer) and GraNet; 3 seeds at the edge, then one on each side.
        + grid(["synflow", "snip", "grasp", "granet"], [EDGE], seeds=3)
        + grid(["synflow"], [EDGE], seeds=3, extra="sparsity.scope=layerwise")
        + grid(["synflow", "snip", "grasp", "granet"], [0.995, 0.9985], seeds=1)
        + grid(["synflow"], [0.995, 0.9985], seeds=1, extra="sparsity.scope=layerwise"))
