"""Tabulates finished runs: mean +- std over seeds per method, sparsity and variant.

  python -m east_jax.report runs/collapse_edge [more workdirs or folders of them] \\
      [--metric=test_accuracy] [--rows=method|sparsity] [--reference=paper.json] \\
      [--out=report.md] [--plot=accuracy.png]

Every folder given, or found below one, with a `config.json` is a run; it counts once it
has its `final_metrics.json`. Runs whose configs differ only in the seed (and in fields
that do not change the result: logging, checkpoint cadence, data paths, sparse compute)
form one cell. Rows are method + variant, where the variant lists the fields that set
the row apart from the most common value among all runs (e.g. `east.num_cycles=0`);
columns are sparsities, headed with their kept weights (`--rows=sparsity` turns the table
round, as papers print it, and bolds each row's best accuracy). `--reference` puts published
numbers in brackets next to each cell. The plot shows the metric against kept weights,
every seed a point and a line through each row's means.
"""

import argparse
import collections
import json
import os
import statistics
import sys

from east_jax import run_record
from east_jax.errors import UserInputError

# Fields that do not define a cell: the seed, and those that change how a run is executed
# or observed, not what it computes (run_record.HOW_IT_RUNS, plus the worker count).
IGNORED = ("seed", "dataset.num_workers")


class Result:
  """One finished run."""

  def __init__(self, path: str, config: dict, metrics: dict):
    self.path, self.config, self.metrics = path, config, metrics
    self.method = config.get("sparsity.method", "dense")
    self.sparsity = config.get("sparsity.sparsity", 0.0) if self.method != "dense" else 0.0

  def fields(self) -> dict:
    """The config fields that define the cell (seed and the IGNORED ones left out;
    EAST's options only for EAST)."""
    return {k: v for k, v in self.config.items()
            if k not in IGNORED and not run_record.is_free(k)
            and (self.method == "east" or not k.startswith("east."))}


def find_runs(paths) -> tuple[list[Result], list[str]]:
  """(finished runs, unfinished run folders) under `paths`."""
  folders = []
  for path in paths:
    if not os.path.isdir(path):
      raise UserInputError(f"No such folder: {path!r}. Pass run workdirs or folders of them.")
    folders += sorted(root for root, _, files in os.walk(path) if "config.json" in files)
  results, unfinished = [], []
  for folder in folders:
    final = os.path.join(folder, "final_metrics.json")
    if not os.path.exists(final):
      unfinished.append(folder)
      continue
    with open(os.path.join(folder, "config.json")) as f:
      config = run_record.flat_fields(json.load(f))
    with open(final) as f:
      metrics = json.load(f)
    layers = os.path.join(folder, "sparsity.json")
    if "sparsity/collapsed_layers" not in metrics and os.path.exists(layers):
      with open(layers) as f:  # Runs from before the metric: count the empty layers.
        metrics["sparsity/collapsed_layers"] = sum(c == 0 for c in json.load(f)["layers"].values())
    results.append(Result(folder, config, metrics))
  return results, unfinished


def _label(value) -> str:
  return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def variants(results: list[Result]) -> dict:
  """{id(result): variant text}: the fields where the run differs from the most common
  value of that field among all runs (method and sparsity are columns of their own)."""
  common = {}
  for key in {k for r in results for k in r.fields()} - {"sparsity.method", "sparsity.sparsity"}:
    values = collections.Counter(r.fields().get(key) for r in results if key in r.fields())
    if len(values) > 1:
      common[key] = values.most_common(1)[0][0]
  return {id(r): " ".join(f"{k}={_label(r.fields()[k])}" for k in sorted(common)
                          if k in r.fields() and r.fields()[k] != common[k])
          for r in results}


def load_reference(path: str) -> dict:
  """Published numbers to show beside the table's cells: a JSON file
  {"source": "...", "values": {"<column label>": {"<sparsity>": <number>, ...}, ...}}, where a
  column label is a method, or a method and its variant as the table prints them
  ("east (east.phase_out=static)"), and a sparsity is written as in the configs ("0.999")."""
  try:
    with open(path) as f:
      reference = json.load(f)
    values = {label: {float(s): float(v) for s, v in cells.items()}
              for label, cells in reference["values"].items()}
  except FileNotFoundError:
    raise UserInputError(f"No such reference file: {path!r}.") from None
  except (json.JSONDecodeError, KeyError, AttributeError, TypeError, ValueError) as e:
    raise UserInputError(
        f"{path} is not a reference file ({e}); write it as "
        '{"source": "...", "values": {"rigl": {"0.999": 85.71}}}.') from None
  return {"source": str(reference.get("source", path)), "values": values}


def _column_label(method: str, variant: str) -> str:
  return method + (f" ({variant})" if variant else "")


def table(results: list[Result], metric: str = "test_accuracy", rows_by: str = "method",
          reference: dict | None = None) -> tuple[str, dict]:
  """(Markdown pivot table, {(method, variant): {sparsity: [results]}}). Rows are method +
  variant and columns sparsities, or the other way round with `rows_by="sparsity"`;
  `reference` (from `load_reference`) adds published numbers in brackets."""
  if rows_by not in ("method", "sparsity"):
    raise UserInputError(f"rows={rows_by!r}: choose 'method' or 'sparsity'.")
  missing = [r.path for r in results if metric not in r.metrics]
  if missing:
    raise UserInputError(f"{len(missing)} run(s) have no {metric!r} in final_metrics.json "
                         f"(e.g. {missing[0]}). Pass --metric=<a key they have>.")
  labels = variants(results)
  rows = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in results:
    rows[(r.method, labels[id(r)])][r.sparsity].append(r)
  sparsities = sorted({r.sparsity for r in results})
  kept = {s: _kept([r for r in results if r.sparsity == s]) for s in sparsities}
  scale, unit = (100.0, "%") if metric.endswith("accuracy") else (1.0, "")
  published = (reference or {}).get("values", {})
  rank = {label: i for i, label in enumerate(published)}
  keys = sorted(rows, key=lambda k: (rank.get(_column_label(*k), len(rank)), k[1], k[0]))
  values = {(k, s): [scale * r.metrics[metric] for r in cell]
            for k in keys for s, cell in rows[k].items()}
  means = {ks: statistics.mean(v) for ks, v in values.items()}
  # Each sparsity's best mean, bolded when sparsities are rows (for accuracies only: a higher
  # loss is not better).
  best = {s: max(m for (_, t), m in means.items() if t == s) for s in sparsities}

  def cell(key, s, bold=False) -> str:
    text = ""
    if (key, s) in values:
      n = len(values[key, s])
      spread = f" +- {statistics.stdev(values[key, s]):.2f}" if n > 1 else ""
      text = f"{means[key, s]:.2f}{spread}"
      if bold and unit and means[key, s] == best[s]:
        text = f"**{text}**"
      text += f" (n={n})"
    paper = published.get(_column_label(*key), {}).get(s)
    return f"{text} [{paper:.2f}]".strip() if paper is not None else text

  def minutes(key) -> str:
    seconds = [r.metrics["train_seconds"] for c in rows[key].values() for r in c
               if "train_seconds" in r.metrics]
    return f"{statistics.median(seconds) / 60:.1f}" if seconds else "n/a"

  heads = {s: f"{100 * s:g}% ({kept[s]} kept)" if kept[s] else "dense" for s in sparsities}
  if rows_by == "method":
    lines = ["| method | variant | " + " | ".join(heads.values()) + " | min / run (median) |",
             "|---" * (len(sparsities) + 3) + "|"]
    lines += [f"| {k[0]} | {k[1] or '-'} | " + " | ".join(cell(k, s) for s in sparsities)
              + f" | {minutes(k)} |" for k in keys]
  else:
    lines = ["| sparsity | " + " | ".join(_column_label(*k) for k in keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {heads[s]} | " + " | ".join(cell(k, s, bold=True) for k in keys) + " |"
              for s in sparsities]
    lines.append("| min / run (median) | " + " | ".join(minutes(k) for k in keys) + " |")
  lines.append(f"\n{metric}{' (' + unit + ')' if unit else ''}: mean +- std over seeds (n "
               "runs); kept = the exact number of kept weights at the end (mean over seeds); min / "
               "run = the median training minutes of a run (its train_seconds).")
  if published:
    lines.append(f"[brackets]: {reference['source']}.")
  return "\n".join(lines), rows


def _kept(results) -> int | None:
  counts = [r.metrics["sparsity/kept"] for r in results if "sparsity/kept" in r.metrics]
  return round(statistics.mean(counts)) if counts else None


def plot(rows: dict, path: str, metric: str) -> None:
  """Metric vs kept weights (log scale): every seed a dot, each row's means open diamonds
  joined by a line."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  scale = 100.0 if metric.endswith("accuracy") else 1.0
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for (method, variant), cells in sorted(rows.items()):
    points = sorted((_kept(rs), [scale * r.metrics[metric] for r in rs])
                    for rs in cells.values() if _kept(rs))
    if not points:
      continue
    label = _column_label(method, variant)
    line, = ax.plot([k for k, _ in points], [statistics.mean(v) for _, v in points], "-D",
                    markersize=6, markerfacecolor="none", label=f"{label}: mean", alpha=0.9)
    for k, values in points:
      ax.scatter([k] * len(values), values, color=line.get_color(), s=14, alpha=0.6)
  ax.set_xscale("log")
  ax.set_xlabel("kept weights")
  ax.set_ylabel(metric + (" (%)" if scale == 100.0 else ""))
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+", help="run workdirs, or folders holding them")
  parser.add_argument("--metric", default="test_accuracy", help="a key of final_metrics.json")
  parser.add_argument("--rows", default="method", choices=("method", "sparsity"),
                      help="what the table's rows are (sparsity: as papers print it)")
  parser.add_argument("--reference", default="",
                      help="JSON file of published numbers to show in brackets")
  parser.add_argument("--out", default="", help="also write the table to this Markdown file")
  parser.add_argument("--plot", default="", help="write the plot to this image file")
  args = parser.parse_args(argv)
  try:
    results, unfinished = find_runs(args.workdirs)
    if not results:
      raise UserInputError(f"No finished run (config.json + final_metrics.json) under "
                           f"{', '.join(args.workdirs)}.")
    reference = load_reference(args.reference) if args.reference else None
    text, rows = table(results, args.metric, args.rows, reference)
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if unfinished:
    text += f"\n{len(unfinished)} run(s) not finished yet: " + ", ".join(
        os.path.basename(os.path.normpath(u)) for u in unfinished) + "."
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")
  if args.plot:
    plot(rows, args.plot, args.metric)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
  main()
