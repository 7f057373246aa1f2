"""Runs a study: a grid of runs of one config, resumably, in one or several processes.

  python -m east_jax.study studies/collapse_edge.py --workdir=runs/collapse_edge

A study file defines `CONFIG` (a config file, relative to the study file), `OVERRIDES`
({dotted field: value}, for every run) and `RUNS`, a list of config arguments such as
"method=east,sparsity=0.997,seed=1" (build it with `grid`). Each run trains in
`<workdir>/<name>` (the argument, made a folder name). Finished runs (with a
final_metrics.json) are skipped, a run interrupted mid-way resumes from its latest
checkpoint, and several processes can share one workdir: each claims the run it trains
(`<run>/CLAIM`, freed when its process is gone). Tabulate with `python -m east_jax.report`.
"""

import argparse
import contextlib
import itertools
import os
import socket
import sys
import time

from east_jax import cli
from east_jax.errors import RunIntegrityError, UserInputError

CLAIM = "CLAIM"


def grid(methods, sparsities, seeds: int, extra: str = "") -> list[str]:
  """Config arguments of methods x sparsities x seeds 0..seeds-1 (seed-major, so a
  study stopped early has covered every cell), each with `extra` appended."""
  return [f"method={m},sparsity={s},seed={k}" + (f",{extra}" if extra else "")
          for k, m, s in itertools.product(range(seeds), methods, sparsities)]


def run_name(arg: str) -> str:
  """A folder name for a config argument: 'method=east,seed=1' -> 'method-east_seed-1'."""
  return arg.replace("=", "-").replace(",", "_").replace("/", "-")


def set_fields(config, overrides: dict):
  """Sets each dotted field of `overrides` ({"model.width": 8}) in `config`; returns it."""
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for name in parents:
      node = node[name]
    node[leaf] = value
  return config


def build_config(config_file: str, arg: str, overrides: dict):
  return set_fields(cli.load_python_file(config_file).get_config(arg), overrides)


def _me() -> str:
  return f"{socket.gethostname()} {os.getpid()}"


def _claim(path: str) -> bool:
  """Claims the run folder for this process; False when a live process holds it."""
  os.makedirs(path, exist_ok=True)
  claim = os.path.join(path, CLAIM)
  me = _me()
  try:
    with open(claim, "x") as f:
      f.write(me)
    return True
  except FileExistsError:
    host, _, pid = open(claim).read().partition(" ")
    if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
      with open(claim, "w") as f:  # Its process died: take the run over (it resumes).
        f.write(me)
      return True
    return False


def _release(path: str):
  """Removes this process's claim on the run folder; another process's claim stays."""
  with contextlib.suppress(FileNotFoundError):
    with open(os.path.join(path, CLAIM)) as f:
      mine = f.read() == _me()
    if mine:
      os.remove(os.path.join(path, CLAIM))


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass
  return True


def run_study(study_file: str, workdir: str, dry_run: bool = False) -> list[str]:
  """Trains the study's unfinished, unclaimed runs in order; returns the run folders."""
  from east_jax import preemption, train  # Import JAX: not needed to list a study.
  study = cli.load_python_file(study_file)
  config_file = os.path.join(os.path.dirname(os.path.abspath(study_file)), study.CONFIG)
  paths, failed = [], []
  for i, arg in enumerate(study.RUNS):
    path = os.path.join(workdir, run_name(arg))
    paths.append(path)
    tag = f"[{i + 1}/{len(study.RUNS)}]"
    done = os.path.exists(os.path.join(path, "final_metrics.json"))
    if dry_run or done:
      print(f"{tag} {'done' if done else 'todo'}: {arg}", flush=True)
      continue
    if not _claim(path):
      print(f"{tag} another process trains {arg}", flush=True)
      continue
    print(f"{tag} training {arg} in {path}", flush=True)
    start = time.time()
    try:
      train.train_and_evaluate(build_config(config_file, arg, study.OVERRIDES), path)
    except (UserInputError, RunIntegrityError, ValueError, FloatingPointError) as e:  # The others still run.
      print(f"{tag} failed {arg}: {e}", flush=True)
      failed.append(arg)
      continue
    except preemption.Stopped as e:  # SIGTERM: the run has its checkpoint; the study stops.
      print(f"{tag} {e}", flush=True)
      raise SystemExit(preemption.EXIT_CODE) from None
    finally:
      _release(path)
    print(f"{tag} finished {arg} in {time.time() - start:.0f} s", flush=True)
  if failed:
    raise UserInputError(f"{len(failed)} run(s) failed: {'; '.join(failed)}")
  return paths


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("study", help="a study file, e.g. studies/collapse_edge.py")
  parser.add_argument("--workdir", required=True, help="folder of the study's run folders")
  parser.add_argument("--dry_run", action="store_true", help="list the runs and their state")
  args = parser.parse_args(argv)
  from east_jax import process_settings
  process_settings.apply()
  try:
    run_study(args.study, args.workdir, args.dry_run)
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
