"""Compile cost of a study cell's later seeds: one run per seed of the same config, in that
order, sharing one empty persistent compilation cache; each run a separate process.

Every run is shortened to --steps (EAST's phases are fractions of training, so a short
run still builds every train program: the cycles' slots, DyReLU, ReLU, mask updates).
Prints a Markdown table from each run's timing.json; with --before=<an older checkout>,
that checkout's runs first, on their own empty cache.

  python -m benchmarks.seed_programs [--run=method=east,sparsity=0.9995,...] [--seeds=0,1]
      [--steps=40] [--study=studies/r34_paper_sparsity.py] [--before=/tmp/old_checkout]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile


def train_short(study_file: str, arg: str, steps: int, workdir: str) -> None:
  """Trains `arg` of the study for `steps` steps, evaluating once on validation."""
  from east_jax import process_settings, study, train
  process_settings.apply(announce=False)
  spec = study.cli.load_python_file(study_file)
  config_file = os.path.join(os.path.dirname(study_file), spec.CONFIG)
  config = study.build_config(config_file, arg, {
      **spec.OVERRIDES, "num_train_steps": steps, "eval_every_steps": steps,
      "eval_splits": ("validation",)})
  train.train_and_evaluate(config, workdir)


def run_one(repo: str, study_file: str, arg: str, steps: int, workdir: str, cache: str) -> dict:
  """`train_short` in a new process importing east_jax from `repo`; its timing.json."""
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache, "PYTHONPATH": os.path.abspath(repo)}
  subprocess.run([sys.executable, os.path.abspath(__file__), "--one", f"--study={study_file}",
                  f"--run={arg}", f"--steps={steps}", f"--workdir={workdir}"],
                 cwd=repo, env=env, check=True, stdout=subprocess.DEVNULL)
  with open(os.path.join(workdir, "timing.json")) as f:
    return json.load(f)


def row(label: str, seed: str, timing: dict) -> str:
  s = timing["seconds"]
  steps = sum(p["seconds"] for p in timing["phases"].values())
  return (f"| {label} | {seed} | {timing['programs_compiled']} | "
          f"{timing.get('programs_from_cache', '-')} | {s['compile']:.0f} | {steps:.0f} | "
          f"{s['evaluation']:.0f} | {s['startup']:.0f} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--study", default="studies/r34_paper_sparsity.py")
  parser.add_argument("--run", default="method=east,sparsity=0.9995,sparsity.update_interval=3,"
                      "east.cycle_update_interval=3")
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--before", default="", help="an older checkout to run first")
  parser.add_argument("--one", action="store_true", help="(internal) train one run")
  parser.add_argument("--workdir", default="")
  args = parser.parse_args()
  study_file = os.path.abspath(args.study)
  if args.one:
    return train_short(study_file, args.run, args.steps, args.workdir)
  print(f"{args.run}, {args.steps} steps of {args.study}")
  rows = ["| code | seed | train programs | from cache | compile (s) | steps (s) | "
          "evaluation (s) | start-up (s) |", "|---" * 8 + "|"]
  checkouts = ([("before", os.path.abspath(args.before))] if args.before else []) + [("now", ".")]
  with tempfile.TemporaryDirectory() as tmp:
    for label, repo in checkouts:
      cache = os.path.join(tmp, f"cache_{label}")
      for seed in args.seeds.split(","):
        workdir = os.path.join(tmp, f"{label}_{seed}")
        timing = run_one(repo, study_file, f"{args.run},seed={seed}", args.steps, workdir, cache)
        rows.append(row(label, seed, timing))
        print(rows[-1], flush=True)
  print("\n".join(rows))


if __name__ == "__main__":
  main()
