"""README plots from the run logs of a study's EAST and RigL runs (seed 0).

  python -m studies.plots --study=runs/collapse_edge --sparsity=0.997 --out=docs/collapse_edge

Writes density.png (density over training: EAST's cycles vs RigL), beta.png (DyReLU's
beta over training), layers.png (per-layer density at the end) and train_accuracy.png
(train accuracy over training: EAST, EAST with the static phase-out when the study has it,
RigL). Accuracy against kept weights: `python -m east_jax.report <study> --plot=<file>`.
"""

import argparse
import json
import os

import matplotlib

from east_jax.study import run_name

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {"east": "EAST", "rigl": "RigL"}


def _run(study, method, sparsity, extra=""):
  arg = f"method={method},sparsity={sparsity},seed=0" + (f",{extra}" if extra else "")
  return os.path.join(study, run_name(arg))


def _records(run_dir):
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _series(records, key):
  """(steps, values) of `key`; a step logged again after a resume keeps its last value."""
  points = dict(sorted({r["step"]: r[key] for r in records if key in r}.items()))
  return list(points), list(points.values())


def plot_density(study, sparsity, out):
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for label, style in (("east", "-"), ("rigl", "--")):
    records = _records(_run(study, label, sparsity))
    ax.plot(*_series(records, "mask/density"), style, label=f"{LABELS[label]} (masks)")
  records = _records(_run(study, "east", sparsity))
  ax.plot(*_series(records, "mask/target_density"), ":", label="EAST cycle target")
  ax.set(xlabel="step", ylabel="density (kept / unshared size)",
         title=f"Density over training, {100 * sparsity:g}% sparsity")
  ax.legend()
  _save(fig, out, "density.png")


def plot_beta(study, sparsity, out):
  fig, ax = plt.subplots(figsize=(6, 3))
  ax.plot(*_series(_records(_run(study, "east", sparsity)), "east/beta"))
  ax.set(xlabel="step", ylabel="beta", title="DyReLU phasing: beta over training")
  _save(fig, out, "beta.png")


def plot_layers(study, sparsity, out):
  reports = {}
  for label in ("east", "rigl"):
    with open(os.path.join(_run(study, label, sparsity), "sparsity.json")) as f:
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


def plot_train_accuracy(study, sparsity, out):
  fig, ax = plt.subplots(figsize=(6, 3.5))
  runs = [("EAST (ReLU phase-out)", _run(study, "east", sparsity), "-"),
          ("EAST (static phase-out)", _run(study, "east", sparsity, "east.phase_out=static"), "-."),
          ("RigL", _run(study, "rigl", sparsity), "--")]
  for label, path, style in runs:
    if os.path.exists(os.path.join(path, "metrics.jsonl")):
      ax.plot(*_series(_records(path), "train_accuracy"), style, label=label)
  beta = _series(_records(_run(study, "east", sparsity)), "east/beta")
  ax.plot(*beta, ":", color="grey", label="DyReLU beta")
  ax.set(xlabel="step", ylabel="train accuracy (50-step mean)",
         title=f"Train accuracy over training, {100 * sparsity:g}% sparsity, seed 0")
  ax.legend(fontsize=7)
  _save(fig, out, "train_accuracy.png")


def _save(fig, out, name):
  fig.tight_layout()
  fig.savefig(os.path.join(out, name), dpi=110)
  plt.close(fig)
  print(os.path.join(out, name))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--study", default="runs/collapse_edge")
  parser.add_argument("--sparsity", type=float, default=0.997, help="run shown in curves")
  parser.add_argument("--out", default="docs/collapse_edge")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  plot_density(args.study, args.sparsity, args.out)
  plot_beta(args.study, args.sparsity, args.out)
  plot_layers(args.study, args.sparsity, args.out)
  plot_train_accuracy(args.study, args.sparsity, args.out)


if __name__ == "__main__":
  main()
