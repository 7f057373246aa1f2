"""EAST end to end through the command line, and its ablation switches."""

import json
import os
import subprocess
import sys

import pytest

from configs import fashion_mnist_r18
from east_jax import east
from east_jax.errors import UserInputError
from east_jax.models import ReLU
from east_jax.models.dyrelu import DyReLU, beta_schedule
from east_jax.sparsity.cycles import CycleSchedule

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_config_argument_sets_method_sparsity_and_fields():
  config = fashion_mnist_r18.get_config("method=east,sparsity=0.9999,seed=2,east.num_cycles=1")
  assert (config.sparsity.method, config.sparsity.sparsity, config.seed,
          config.east.num_cycles) == ("east", 0.9999, 2, 1)
  with pytest.raises(ValueError, match="Config argument 'nope=1'"):
    fashion_mnist_r18.get_config("nope=1")


@pytest.mark.parametrize("arg,share,act,cycles,beta", [
    ("method=east", 2, DyReLU, True, True),
    ("method=east,east.share_ratio=0", 0, DyReLU, True, True),
    ("method=east,east.dyrelu=False", 2, ReLU, True, False),
    ("method=east,east.num_cycles=0", 2, DyReLU, False, True),
    ("method=rigl", 0, ReLU, False, False),
])
def test_each_trick_has_a_switch(arg, share, act, cycles, beta):
  config = fashion_mnist_r18.get_config(arg + ",sparsity=0.99")
  plan = east.plan(config, 100)
  assert plan.model_options == {"share_ratio": share, "act": act}
  assert (plan.cycles is not None) == cycles
  assert (plan.beta_fn is not None) == beta
  assert plan.relu_from == (50 if beta else 0)


def test_east_run_logs_exact_sparsity_beta_and_cycle(data_dir, tmp_path):
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "east_jax.main",
         "--config=configs/fashion_mnist_r18.py:method=east,sparsity=0.998", f"--workdir={workdir}",
         f"--config.dataset.data_dir={data_dir}", "--config.model.width=8",
         "--config.model.stage_sizes=(3,1)", "--config.num_train_steps=16",
         "--config.batch_size=32", "--config.eval_batch_size=64", "--config.log_every_steps=1",
         "--config.eval_every_steps=8", "--config.east.cycle_update_interval=2",
         "--config.sparsity.update_interval=4", "--config.dataset.num_threads=2"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  report = json.load(open(workdir / "sparsity.json"))
  full, kept = report["sparsity/prunable"], report["sparsity/kept"]
  assert kept == round(0.002 * full) == sum(report["layers"].values())
  assert "stage1_block2/conv1/kernel" not in report["layers"]  # Shared: no kernel of its own.
  assert report["sparsity/compute_density"] > report["sparsity/density"]
  cycles = CycleSchedule(total_steps=16, num_cycles=2, length=0.2, update_interval=2)
  logged = {r["step"]: r for r in records if "mask/kept" in r}
  assert sorted(logged) == list(range(1, 17))
  for step, r in logged.items():
    assert r["east/beta"] == pytest.approx(float(beta_schedule(
        step, total_steps=16, phase_start=0.25, phase_end=0.5)))
    assert r["mask/target_density"] == pytest.approx(cycles.density(step, 0.002))
    last_update = max([s for s in cycles.update_steps() if s < step], default=None)
    density = 0.002 if last_update is None else cycles.density(last_update, 0.002)
    assert r["mask/kept"] == round(density * full), step
  assert max(r["mask/kept"] for r in logged.values()) > kept  # The cycles went up.
  assert [logged[s]["east/cycle"] for s in (1, 4, 7)] == [0, 1, -1]
  assert logged[16]["east/beta"] == 0.0
  evals = [r for r in records if "test_accuracy" in r]
  assert [r["step"] for r in evals] == [8, 16]


def test_phase_out_picks_the_activation_that_dyrelu_blends_toward():
  config = fashion_mnist_r18.get_config("method=east,sparsity=0.99,east.phase_out=static")
  plan = east.plan(config, 100)
  act = plan.model_options["act"]
  assert act.func is DyReLU and act.keywords == {"phase_out": "static"}
  assert plan.beta_fn is not None and plan.relu_from == 50 and plan.hypernet_freeze_step is None
  config.east.freeze_hypernet = True
  assert east.plan(config, 100).hypernet_freeze_step == 25
  config.east.phase_out = "linear"
  with pytest.raises(UserInputError, match="config.east.phase_out must be one of"):
    east.validate(config)
