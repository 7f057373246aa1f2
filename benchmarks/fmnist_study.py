"""EAST vs RigL, SET and static sparse on real Fashion-MNIST, on a CPU.

38 runs (4 methods x 4 sparsities x 2 seeds, 3 ablations at 99% x 2 seeds), about
165 s each on 2 CPU cores: about 1 h 45 min. Every run is `configs/fashion_mnist_r18.py`
with the config argument `method=<m>,sparsity=<s>,seed=<k>` and the study's short-run
overrides below (a small ResNet with 3 blocks per stage, so that weight sharing has
blocks to share), trained in-process one after another. Finished runs are skipped, so an interrupted
study resumes. Prints, and writes to <workdir>/study.md, a Markdown table of test
accuracy (mean +- std over seeds) and wall time, plus the ablation rows.

  python -m benchmarks.fmnist_study --workdir=runs/fmnist_study
"""

import argparse
import json
import os
import statistics
import time

from configs import fashion_mnist_r18
from east_jax import train

OVERRIDES = {
    "model.width": 8, "model.stage_sizes": (3, 3, 3), "num_train_steps": 150,
    "batch_size": 128, "eval_batch_size": 1000, "eval_splits": ("test",),
    "log_every_steps": 5, "eval_every_steps": 150, "checkpoint_every_steps": 150,
    "keep_checkpoints": 1, "sparsity.update_interval": 25, "east.cycle_update_interval": 10,
}
LABELS = {"east": "EAST", "rigl": "RigL", "set": "SET", "static": "static", "gmp": "GMP"}
ABLATIONS = {"EAST, no sharing": "east.share_ratio=0", "EAST, ReLU only": "east.dyrelu=False",
             "EAST, no cycles": "east.num_cycles=0"}


def run_name(method: str, sparsity: float, seed: int, extra: str = "") -> str:
  tag = extra.replace("east.", "").replace("=", "").replace(",", "_")
  return f"{method}{'_' + tag if tag else ''}_s{sparsity}_seed{seed}"


def run(workdir: str, method: str, sparsity: float, seed: int, steps: int, extra: str = "",
        train_missing: bool = True, skip_started: bool = False):
  """Trains one run (unless finished) and returns (test accuracy, wall seconds);
  None for a missing run when `train_missing` is False, or for a started one when
  `skip_started` (several study processes sharing one workdir)."""
  path = os.path.join(workdir, run_name(method, sparsity, seed, extra))
  result_file = os.path.join(path, "study_result.json")
  if not os.path.exists(result_file):
    if not train_missing:
      return None
    if skip_started:
      try:
        os.makedirs(path)  # Claims the run; another study process may own an existing one.
      except FileExistsError:
        return None
    arg = f"method={method},sparsity={sparsity},seed={seed}" + (f",{extra}" if extra else "")
    config = fashion_mnist_r18.get_config(arg)
    for key, value in {**OVERRIDES, "num_train_steps": steps, "eval_every_steps": steps,
                       "checkpoint_every_steps": steps}.items():
      node, *parents_leaf = config, *key.split(".")
      for name in parents_leaf[:-1]:
        node = node[name]
      node[parents_leaf[-1]] = value
    start = time.time()
    train.train_and_evaluate(config, path)
    final = json.load(open(os.path.join(path, "final_metrics.json")))
    with open(result_file, "w") as f:
      json.dump({"test_accuracy": final["test_accuracy"], "seconds": time.time() - start,
                 "arg": arg}, f)
  result = json.load(open(result_file))
  return result["test_accuracy"], result["seconds"]


def _cell(values) -> str:
  mean = 100 * statistics.mean(values)
  std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
  return f"{mean:.2f} +- {std:.2f}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="runs/fmnist_study")
  parser.add_argument("--methods", default="east,rigl,set,static")
  parser.add_argument("--sparsities", default="0.99,0.999,0.9995,0.9999")
  parser.add_argument("--ablation_sparsities", default="0.99",
                      help="ablations where EAST is above chance at this scale")
  parser.add_argument("--seeds", type=int, default=2)
  parser.add_argument("--steps", type=int, default=OVERRIDES["num_train_steps"])
  parser.add_argument("--skip_started", action="store_true",
                      help="leave runs that another study process has started to it")
  parser.add_argument("--report_only", action="store_true",
                      help="tabulate the finished runs, train nothing")
  args = parser.parse_args()
  sparsities = [float(s) for s in args.sparsities.split(",")]
  ablation_sparsities = [float(s) for s in args.ablation_sparsities.split(",") if s]
  rows = [(LABELS.get(m, m), m, "", sparsities) for m in args.methods.split(",")]
  rows += [(label, "east", extra, ablation_sparsities) for label, extra in ABLATIONS.items()]
  total_seconds = 0.0
  table = ["| method | " + " | ".join(f"{100 * s:g}%" for s in sparsities) + " | s / run |",
           "|---" * (len(sparsities) + 2) + "|"]
  for label, method, extra, levels in rows:
    cells, seconds = [], []
    for sparsity in sparsities:
      if sparsity not in levels:
        cells.append("")
        continue
      results = [run(args.workdir, method, sparsity, seed, args.steps, extra,
                     train_missing=not args.report_only, skip_started=args.skip_started)
                 for seed in range(args.seeds)]
      results = [r for r in results if r is not None]
      cells.append(_cell([a for a, _ in results]) + (
          f" (n={len(results)})" if len(results) < args.seeds else "") if results else "n/a")
      seconds += [s for _, s in results]
      total_seconds += sum(s for _, s in results)
      print(f"{label} {sparsity}: {cells[-1]}", flush=True)
    mean_seconds = f"{statistics.mean(seconds):.0f}" if seconds else "n/a"
    table.append(f"| {label} | " + " | ".join(cells) + f" | {mean_seconds} |")
  text = "\n".join(table) + (
      f"\n\nTest accuracy (%) on the 10,000 Fashion-MNIST test images, mean +- std over "
      f"{args.seeds} seeds; {args.steps} steps of batch 128 per run; the runs took "
      f"{total_seconds / 60:.0f} min in all.\n")
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, "study.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  main()
