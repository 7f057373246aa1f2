"""Studies (east_jax/study.py) and their report (east_jax/report.py), on tiny real runs."""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys

import pytest

from east_jax import report, study
from east_jax.errors import UserInputError
from tests.helpers import built_once

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STUDY = """
from east_jax.study import grid
CONFIG = {config!r}
OVERRIDES = {{"dataset.data_dir": {data_dir!r}, "model.width": 4, "model.stage_sizes": (1, 1),
              "batch_size": 32, "eval_batch_size": 40, "num_train_steps": 4,
              "eval_every_steps": 10**9, "eval_splits": ("test",), "checkpoint_every_steps": 2,
              "sparsity.update_interval": 2, "dataset.num_threads": 2}}
RUNS = (grid(["rigl", "static"], [0.9], seeds=2)
        + grid(["rigl"], [0.9], seeds=1, extra="sparsity.connect_all_classes=True"))
"""


def _train_study(folder, data_dir):
  study_file = os.path.join(folder, "tiny.py")
  with open(study_file, "w") as f:
    f.write(STUDY.format(config=os.path.join(REPO, "configs", "fashion_mnist_r18.py"),
                         data_dir=data_dir))
  workdir = os.path.join(folder, "runs")
  # A run that a live process (this one) has claimed is left to it; one claimed by a
  # process that is gone is taken over.
  live = os.path.join(workdir, study.run_name("method=static,sparsity=0.9,seed=1"))
  os.makedirs(live)
  with open(os.path.join(live, study.CLAIM), "w") as f:
    f.write(f"{socket.gethostname()} {os.getpid()}")
  dead = os.path.join(workdir, study.run_name("method=rigl,sparsity=0.9,seed=1"))
  os.makedirs(dead)
  with open(os.path.join(dead, study.CLAIM), "w") as f:
    f.write(f"{socket.gethostname()} 999999999")
  paths = study.run_study(study_file, workdir)
  assert not os.path.exists(os.path.join(live, "final_metrics.json"))
  assert os.path.exists(os.path.join(dead, "final_metrics.json"))
  assert not os.path.exists(os.path.join(dead, study.CLAIM))
  os.remove(os.path.join(live, study.CLAIM))
  study.run_study(study_file, workdir)
  with open(os.path.join(folder, "paths.json"), "w") as f:
    json.dump(paths, f)


@pytest.fixture(scope="module")
def finished_study(data_dir):
  """(study file, workdir, run folders) of a finished 5-run study (read it, don't change it)."""
  folder = built_once("study", lambda folder: _train_study(folder, data_dir))
  with open(os.path.join(folder, "paths.json")) as f:
    paths = json.load(f)
  return os.path.join(folder, "tiny.py"), os.path.join(folder, "runs"), paths


def test_a_run_releases_only_its_own_claim(tmp_path):
  path = str(tmp_path / "run")
  assert study._claim(path) and not study._claim(path)  # Held by a live process: this one.
  claim = os.path.join(path, study.CLAIM)
  with open(claim, "w") as f:  # Taken over meanwhile (its folder was freed by hand).
    f.write(f"{socket.gethostname()} 999999999")
  study._release(path)
  assert os.path.exists(claim)
  os.remove(claim)
  study._release(path)  # Gone already: nothing to do.
  assert study._claim(path)
  study._release(path)
  assert not os.path.exists(claim)


def test_grid_is_seed_major_and_names_are_folders():
  assert study.grid(["east", "rigl"], [0.9, 0.99], seeds=2, extra="east.num_cycles=0")[:5] == [
      "method=east,sparsity=0.9,seed=0,east.num_cycles=0",
      "method=east,sparsity=0.99,seed=0,east.num_cycles=0",
      "method=rigl,sparsity=0.9,seed=0,east.num_cycles=0",
      "method=rigl,sparsity=0.99,seed=0,east.num_cycles=0",
      "method=east,sparsity=0.9,seed=1,east.num_cycles=0"]
  assert study.run_name("method=east,seed=1,east.num_cycles=0") == (
      "method-east_seed-1_east.num_cycles-0")


def test_study_trains_every_run_once_and_skips_finished_ones(finished_study):
  study_file, workdir, paths = finished_study
  assert len(paths) == 5
  finals = [os.path.join(p, "final_metrics.json") for p in paths]
  assert all(os.path.exists(f) for f in finals)
  stamps = [os.path.getmtime(f) for f in finals]
  study.run_study(study_file, workdir)  # Nothing left to train.
  assert [os.path.getmtime(f) for f in finals] == stamps
  config = json.load(open(os.path.join(paths[4], "config.json")))
  assert config["sparsity"]["connect_all_classes"] and config["num_train_steps"] == 4
  assert json.load(open(finals[0]))["train_seconds"] > 0


def test_report_table_has_mean_std_and_n_per_cell(finished_study):
  _, workdir, paths = finished_study
  results, unfinished = report.find_runs([workdir])
  assert len(results) == 5 and not unfinished
  text, rows = report.table(results)
  accuracy = {p: json.load(open(os.path.join(p, "final_metrics.json")))["test_accuracy"]
              for p in paths}
  rigl = [100 * accuracy[p] for p in paths[:4] if "method-rigl" in p]
  cells = {(m, v): c for (m, v), c in rows.items()}
  assert set(cells) == {("rigl", ""), ("static", ""),
                        ("rigl", "sparsity.connect_all_classes=True")}
  line = next(l for l in text.splitlines() if l.startswith("| rigl | - |"))
  assert f"{statistics.mean(rigl):.2f} +- {statistics.stdev(rigl):.2f} (n=2)" in line
  guard = next(l for l in text.splitlines() if "connect_all_classes=True" in l)
  assert f"{100 * accuracy[paths[4]]:.2f} (n=1)" in guard
  kept = json.load(open(os.path.join(paths[0], "final_metrics.json")))["sparsity/kept"]
  assert f"90% ({kept} kept)" in text.splitlines()[0]


def test_report_command_writes_table_and_plot(finished_study, tmp_path):
  workdir = str(tmp_path / "runs")
  shutil.copytree(finished_study[1], workdir)
  os.makedirs(os.path.join(workdir, "unfinished"))
  with open(os.path.join(workdir, "unfinished", "config.json"), "w") as f:
    json.dump({"sparsity": {"method": "rigl", "sparsity": 0.9}}, f)
  out, image = tmp_path / "r.md", tmp_path / "r.png"
  proc = subprocess.run([sys.executable, "-m", "east_jax.report", workdir, f"--out={out}",
                         f"--plot={image}", "--metric=test_loss"], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "test_loss: mean +- std" in out.read_text()
  assert "1 run(s) not finished yet: unfinished." in proc.stdout
  assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_by_sparsity_with_published_numbers(finished_study, tmp_path):
  _, workdir, paths = finished_study
  results, _ = report.find_runs([workdir])
  reference = tmp_path / "paper.json"
  reference.write_text(json.dumps({"source": "a paper", "values": {
      "static": {"0.9": 12.5}, "rigl (sparsity.connect_all_classes=True)": {"0.9": 50},
      "rigl": {"0.99": 99.0}}}))
  text, _ = report.table(results, rows_by="sparsity",
                         reference=report.load_reference(str(reference)))
  lines = text.splitlines()
  # Columns in the reference's order.
  assert lines[0] == ("| sparsity | static | rigl (sparsity.connect_all_classes=True) | rigl |")
  accuracy = {p: 100 * json.load(open(os.path.join(p, "final_metrics.json")))["test_accuracy"]
              for p in paths}
  static = [accuracy[p] for p in paths if "method-static" in p]
  guard = accuracy[paths[4]]
  rigl = [accuracy[p] for p in paths[:4] if "method-rigl" in p]
  cells = [c.strip() for c in lines[2].split("|")[2:-1]]
  means = [statistics.mean(static), guard, statistics.mean(rigl)]
  texts = [f"{means[0]:.2f} +- {statistics.stdev(static):.2f}", f"{guard:.2f}",
           f"{means[2]:.2f} +- {statistics.stdev(rigl):.2f}"]
  for i, (mean, measured) in enumerate(zip(means, texts)):
    assert cells[i].startswith(f"**{measured}**" if mean == max(means) else measured)
  assert cells[0].endswith("(n=2) [12.50]") and cells[1].endswith("(n=1) [50.00]")
  assert "[" not in cells[2]  # The reference's 99% has no run here.
  assert lines[3].startswith("| min / run (median) |") and "[brackets]: a paper." in text
  reference.write_text(json.dumps({"values": {"rigl": {"0.9": "high"}}}))
  with pytest.raises(UserInputError, match="not a reference file"):
    report.load_reference(str(reference))
  with pytest.raises(UserInputError, match="No such reference file"):
    report.load_reference(str(tmp_path / "nope.json"))


def test_report_and_study_errors_say_what_to_do(tmp_path, finished_study):
  with pytest.raises(UserInputError, match="No such folder"):
    report.find_runs([str(tmp_path / "nope")])
  _, workdir, _ = finished_study
  with pytest.raises(UserInputError, match="--metric"):
    report.table(report.find_runs([workdir])[0], "nope_accuracy")
  proc = subprocess.run([sys.executable, "-m", "east_jax.report", str(tmp_path)], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and "No finished run" in proc.stderr
  with pytest.raises(UserInputError, match="No such file"):
    study.run_study(str(tmp_path / "missing.py"), str(tmp_path))


def test_report_counts_collapsed_layers_of_runs_that_predate_the_metric(tmp_path):
  for name, layers, metrics in [("old", {"a": 0, "b": 3, "c": 0}, {}),
                                ("new", {"a": 1}, {"sparsity/collapsed_layers": 0})]:
    run = tmp_path / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"sparsity": {"method": "rigl",
                                                              "sparsity": 0.9}}))
    (run / "final_metrics.json").write_text(json.dumps({"test_accuracy": 0.5, **metrics}))
    (run / "sparsity.json").write_text(json.dumps({"layers": layers}))
  results, _ = report.find_runs([str(tmp_path)])
  assert sorted(r.metrics["sparsity/collapsed_layers"] for r in results) == [0, 2]


def test_train_test_gap_pairs_each_evaluation_with_the_last_train_accuracy(tmp_path):
  from studies import train_test_gap
  run = tmp_path / "method-rigl_sparsity-0.9_seed-0"
  run.mkdir()
  records = [{"step": 4, "test_accuracy": 0.1, "test_loss": 2.3},  # Before any training log.
             {"step": 5, "train_accuracy": 0.5}, {"step": 10, "train_accuracy": 0.6},
             {"step": 10, "train_accuracy": 0.7},  # Step 10 again after a resume: this one.
             {"step": 12, "test_accuracy": 0.4, "test_loss": 9.0},
             {"step": 15, "train_accuracy": 0.9},
             {"step": 20, "train_accuracy": 0.8}, {"step": 20, "test_accuracy": 0.78,
                                                   "test_loss": 0.6}]
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  assert train_test_gap.evaluations(str(run)) == [
      {"step": 4, "train_accuracy": None, "test_accuracy": 0.1, "test_loss": 2.3},
      {"step": 12, "train_accuracy": 0.7, "test_accuracy": 0.4, "test_loss": 9.0},
      {"step": 20, "train_accuracy": 0.8, "test_accuracy": 0.78, "test_loss": 0.6}]
  (run / "config.json").write_text(json.dumps({"sparsity": {"method": "rigl", "sparsity": 0.9}}))
  (run / "final_metrics.json").write_text(json.dumps({"test_accuracy": 0.78}))
  (run / "recalibrated_bn.json").write_text(json.dumps({"step": 20, "test_accuracy": 0.795,
                                                        "recalibrated_bn_batches": 50}))
  proc = subprocess.run([sys.executable, "-m", "studies.train_test_gap", str(tmp_path),
                         "--within=1"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  rows = [line for line in proc.stdout.splitlines() if "method-rigl" in line]
  assert rows[1] == ("| rigl | - | 90% | method-rigl_sparsity-0.9_seed-0 | 12 | 70.0 | 40.0 | -30.0 "
                     "| 9 | - |")
  assert rows[2].endswith("| 20 | 80.0 | 78.0 | -2.0 | 0.6 | 79.5 |")  # After recalibration.
  assert "0 of 1 runs end with test accuracy within 1 points" in proc.stdout
  (run / "recalibrated_bn.json").write_text(json.dumps({"step": 20, "test_accuracy": 0.795,
                                                        "recalibrated_bn_batches": 0}))
  proc = subprocess.run([sys.executable, "-m", "studies.train_test_gap", str(tmp_path)], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and "is not a test evaluation after BatchNorm recalibration" \
      in proc.stderr and "Traceback" not in proc.stderr
