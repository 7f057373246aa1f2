"""Test accuracy against train accuracy at each evaluation of every finished run.

Train accuracy is the last logged training-mode mean at or before the evaluation step (a
resumed step counts with its last value). Prints one Markdown row per run and evaluation,
then how many runs end with test accuracy within --within points of train accuracy. Where a
run folder holds `recalibrated_bn.json` (written by `python -m east_jax.evaluate
--workdir=<run> --recalibrate_bn=50 --json=<run>/recalibrated_bn.json`), the row of that
checkpoint's step also shows the test accuracy after BatchNorm recalibration.

  python -m studies.train_test_gap runs/r34_paper_sparsity [--within=3]
"""

import argparse
import json
import os
import sys

from east_jax import report
from east_jax.errors import UserInputError


def evaluations(path: str) -> list[dict]:
  """[{step, train_accuracy, test_accuracy, test_loss}] for each evaluation in the run's
  metrics.jsonl, in step order."""
  train, tests = {}, {}
  with open(os.path.join(path, "metrics.jsonl")) as f:
    for line in f:
      record = json.loads(line)
      if "train_accuracy" in record:
        train[record["step"]] = record["train_accuracy"]
      if "test_accuracy" in record:
        tests[record["step"]] = record
  rows = []
  for step in sorted(tests):
    before = [s for s in train if s <= step]
    rows.append({"step": step, "train_accuracy": train[max(before)] if before else None,
                 "test_accuracy": tests[step]["test_accuracy"],
                 "test_loss": tests[step]["test_loss"]})
  return rows


RECALIBRATED = "recalibrated_bn.json"


def recalibrated(path: str) -> dict:
  """{step: test accuracy after BatchNorm recalibration} from the run's RECALIBRATED file."""
  file = os.path.join(path, RECALIBRATED)
  if not os.path.exists(file):
    return {}
  with open(file) as f:
    metrics = json.load(f)
  if metrics.get("recalibrated_bn_batches", 0) <= 0 or "test_accuracy" not in metrics:
    raise UserInputError(f"{file} is not a test evaluation after BatchNorm recalibration: write "
                         "it with `python -m east_jax.evaluate --workdir=<run> "
                         "--recalibrate_bn=50 --json=<run>/recalibrated_bn.json`.")
  return {metrics["step"]: metrics["test_accuracy"]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--within", type=float, default=3.0,
                      help="points of test below train that count as level at the end")
  args = parser.parse_args()
  try:
    print_gaps(args.workdirs, args.within)
  except (UserInputError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def print_gaps(workdirs: list[str], within: float):
  results, _ = report.find_runs(workdirs)
  labels = report.variants(results)
  print("| method | variant | sparsity | run | step | train % | test % | test - train | test loss "
        "| test % (BN recalibrated) |")
  print("|---" * 10 + "|")
  level, lagging = 0, []
  for r in sorted(results, key=lambda r: (r.method, labels[id(r)], r.sparsity, r.path)):
    run = os.path.basename(r.path)
    rows, after = evaluations(r.path), recalibrated(r.path)
    for e in rows:
      train = "-" if e["train_accuracy"] is None else f"{100 * e['train_accuracy']:.1f}"
      gap = ("-" if e["train_accuracy"] is None
             else f"{100 * (e['test_accuracy'] - e['train_accuracy']):+.1f}")
      recalibrated_test = f"{100 * after[e['step']]:.1f}" if e["step"] in after else "-"
      print(f"| {r.method} | {labels[id(r)] or '-'} | {100 * r.sparsity:g}% | {run} | {e['step']} "
            f"| {train} | {100 * e['test_accuracy']:.1f} | {gap} | {e['test_loss']:.3g} "
            f"| {recalibrated_test} |")
    last = rows[-1] if rows else None
    if last and last["train_accuracy"] is not None:
      if 100 * (last["train_accuracy"] - last["test_accuracy"]) <= within:
        level += 1
      else:
        lagging.append(run)
  print(f"\n{level} of {level + len(lagging)} runs end with test accuracy within {within:g} "
        f"points of train accuracy; lagging: {', '.join(lagging) or 'none'}")


if __name__ == "__main__":
  main()
