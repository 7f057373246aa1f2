"""README plots from the run logs of the Fashion-MNIST study.

  python -m benchmarks.plots --study=runs/fmnist_study --out=docs/plots

Writes density.png (density over training: EAST's cycles vs RigL), beta.png
(DyReLU's beta over training), layers.png (per-layer density at the end) and
accuracy.png (test accuracy vs sparsity, mean +- std over seeds).
"""

import argparse
import collections
import glob
import json
import os
import re
import statistics

import matplotlib

from benchmarks.fmnist_study import ABLATIONS, LABELS, run_name

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RUN = re.compile(r"^(?P<label>.+)_s(?P<sparsity>[0-9.]+)_seed(?P<seed>\d+)$")


def _records(run_dir):
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _series(records, key):
  points = [(r["step"], r[key]) for r in records if key in r]
  return [s for s, _ in points], [v for _, v in points]


def plot_density(study, sparsity, out):
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for label, style in (("east", "-"), ("rigl", "--")):
    records = _records(os.path.join(study, f"{label}_s{sparsity}_seed0"))
    ax.plot(*_series(records, "mask/density"), style, label=f"{LABELS[label]} (masks)")
  records = _records(os.path.join(study, f"east_s{sparsity}_seed0"))
  ax.plot(*_series(records, "mask/target_density"), ":", label="EAST cycle target")
  ax.set(xlabel="step", ylabel="density (kept / unshared size)",
         title=f"Density over training, {100 * sparsity:g}% sparsity")
  ax.legend()
  _save(fig, out, "density.png")


def plot_beta(study, sparsity, out):
  fig, ax = plt.subplots(figsize=(6, 3))
  ax.plot(*_series(_records(os.path.join(study, f"east_s{sparsity}_seed0")), "east/beta"))
  ax.set(xlabel="step", ylabel="beta", title="DyReLU phasing: beta over training")
  _save(fig, out, "beta.png")


def plot_layers(study, sparsity, out):
  reports = {}
  for label in ("east", "rigl"):
    with open(os.path.join(study, f"{label}_s{sparsity}_seed0", "sparsity.json")) as f:
      reports[label] = json.load(f)
  names = sorted(set(reports["rigl"]["layers"]) | set(reports["east"]["layers"]))
  fig, ax = plt.subplots(figsize=(7, 4))
  for i, (label, report) in enumerate(reports.items()):
    density = [report["layers"][n] / report["layer_sizes"][n] if n in report["layers"] else 0.0
               for n in names]
    ax.bar([j + 0.4 * i for j in range(len(names))], density, width=0.4, label=LABELS[label])
  ax.set_xticks(range(len(names)), [n.replace("/kernel", "") for n in names], rotation=90,
                fontsize=6)
  ax.set(ylabel="density (missing bar: 0, or a shared block)", yscale="log",
         title=f"Per-layer density at the end, {100 * sparsity:g}% sparsity")
  ax.legend()
  _save(fig, out, "layers.png")


def plot_accuracy(study, out):
  results = collections.defaultdict(lambda: collections.defaultdict(list))
  for path in glob.glob(os.path.join(study, "*", "study_result.json")):
    match = RUN.match(os.path.basename(os.path.dirname(path)))
    with open(path) as f:
      results[match["label"]][float(match["sparsity"])].append(
          100 * json.load(f)["test_accuracy"])
  fig, ax = plt.subplots(figsize=(6, 4))
  names = {**LABELS, **{run_name("east", 0, 0, extra).split("_s0")[0]: label
                        for label, extra in ABLATIONS.items()}}
  for label, by_sparsity in sorted(results.items()):
    levels = sorted(by_sparsity)
    means = [statistics.mean(by_sparsity[s]) for s in levels]
    stds = [statistics.stdev(by_sparsity[s]) if len(by_sparsity[s]) > 1 else 0 for s in levels]
    ax.errorbar([100 * (1 - s) for s in levels], means, yerr=stds, marker="o", capsize=3,
                label=names.get(label, label))
  ax.set(xlabel="density (%) = 100 - sparsity", ylabel="test accuracy (%)", xscale="log",
         title="Fashion-MNIST study: accuracy vs sparsity")
  ax.invert_xaxis()
  ax.legend(fontsize=7)
  _save(fig, out, "accuracy.png")


def _save(fig, out, name):
  fig.tight_layout()
  fig.savefig(os.path.join(out, name), dpi=110)
  plt.close(fig)
  print(os.path.join(out, name))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--study", default="runs/fmnist_study")
  parser.add_argument("--sparsity", type=float, default=0.99, help="run shown in curves")
  parser.add_argument("--out", default="docs/plots")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  plot_density(args.study, args.sparsity, args.out)
  plot_beta(args.study, args.sparsity, args.out)
  plot_layers(args.study, args.sparsity, args.out)
  plot_accuracy(args.study, args.out)


if __name__ == "__main__":
  main()
