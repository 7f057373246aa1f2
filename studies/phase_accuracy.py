"""Train accuracy of each finished run by phase of training, from its metrics.jsonl.

For EAST's default phasing (beta 1 until 25% of training, 0 from 50%) the windows are:
late DyReLU phase (35-47.5%), just after the phase-out (51-63%) and the end (87-100%).
Prints one Markdown row per run; mean per (method, variant, sparsity) with --mean.

  python -m studies.phase_accuracy runs/collapse_edge [--mean]
"""

import argparse
import collections
import json
import os
import statistics

from east_jax import report

WINDOWS = {"DyReLU phase (35-47.5%)": (0.35, 0.475), "after phase-out (51-63%)": (0.51, 0.63),
           "end (87-100%)": (0.87, 1.0)}


def phase_accuracy(path: str, total_steps: int) -> list[float]:
  by_step = {}
  with open(os.path.join(path, "metrics.jsonl")) as f:
    for line in f:
      record = json.loads(line)
      if "train_accuracy" in record:
        by_step[record["step"]] = record["train_accuracy"]  # A resumed step: its last value.
  means = []
  for lo, hi in WINDOWS.values():
    values = [a for s, a in by_step.items() if lo * total_steps < s <= hi * total_steps]
    means.append(statistics.mean(values) if values else float("nan"))
  return means


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--mean", action="store_true", help="one row per cell, mean over seeds")
  args = parser.parse_args()
  results, _ = report.find_runs(args.workdirs)
  labels = report.variants(results)
  rows = collections.defaultdict(list)
  for r in results:
    key = (r.method, labels[id(r)], r.sparsity)
    rows[key if args.mean else key + (os.path.basename(r.path),)].append(
        phase_accuracy(r.path, r.metrics["step"]) + [r.metrics["test_accuracy"]])
  columns = [*WINDOWS, "test top-1", "n"] if args.mean else ["run", *WINDOWS, "test top-1"]
  print("| method | variant | sparsity |" + "".join(f" {c} |" for c in columns))
  print("|---" * (len(columns) + 3) + "|")
  for key, values in sorted(rows.items()):
    method, variant, sparsity, *run = key
    cells = [statistics.mean(column) for column in zip(*values)]
    print(f"| {method} | {variant or '-'} | {100 * sparsity:g}% |" + "".join(f" {r} |" for r in run)
          + "".join(f" {100 * c:.1f} |" for c in cells) + (f" {len(values)} |" if args.mean else ""))


if __name__ == "__main__":
  main()
