"""Export (east_jax/export.py): compressed file, folded BatchNorm, sparse inference that
matches the trained network."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from east_jax import export, saved_run, train
from east_jax import metrics as metrics_lib
from east_jax.data import pipeline
from east_jax.errors import UserInputError
from east_jax.models import ReLU, dyrelu
from tests.helpers import built_once, east_masked_run, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def east_run(data_dir):
  """A finished EAST run with weight sharing, past its DyReLU phase-out."""
  return east_masked_run(data_dir)


def test_exported_network_scores_like_the_checkpoint(east_run, tmp_path):
  config, ds, run, state, _ = saved_run.load(east_run)
  arrays, meta = export.compress(config, run, state)
  path = str(tmp_path / "model.npz")
  size = export.write(path, arrays, meta)
  kept = sum(len(v) for n, v in arrays.items() if n.startswith("values/"))
  assert kept == sum(int(np.sum(m)) for m in jax.tree.leaves(state.opt_state.masks)
                     if np.ndim(m))
  assert not any("hypernet" in n for n in arrays)
  assert "bias/stem_bn" in arrays and "stage1_block0/bn1" in meta["folded_norms"]
  assert "stage1_block1/bn1" not in meta["folded_norms"]  # Its kernel is shared.
  # At 90% sparsity the kept values and indices are under a quarter of the dense kernels
  # (this tiny net's file is mostly zip headers: its size is only checked to be written).
  payload = sum(v.nbytes for n, v in arrays.items() if n.split("/")[0] in ("values", "indices"))
  dense_kernels = 4 * sum(np.prod(s) for s in meta["shapes"].values())
  assert size > 0 and payload < dense_kernels / 4

  model, variables = export.load(path)
  assert model.sparse_capacity and model.layout == "CNHW"
  reference = run.model.clone(bn_axis_name=None)
  batch = next(iter(pipeline.eval_batches(ds, "test", global_batch_size=200)))
  got = model.apply(variables, batch["image"], train=False)
  want = reference.apply({"params": state.params, "batch_stats": state.batch_stats},
                         batch["image"], train=False)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  exported = export.accuracy(lambda x: model.apply(variables, x, train=False), ds, "test")
  trained = export.accuracy(lambda x: reference.apply(
      {"params": state.params, "batch_stats": state.batch_stats}, x, train=False), ds, "test")
  assert exported == trained


@pytest.fixture(scope="module")
def static_run(data_dir):
  """A finished EAST run that phased DyReLU out into learned per-channel coefficients."""
  config = tiny_config(data_dir, **{"sparsity.method": "east", "sparsity.sparsity": 0.9,
                                    "model.stage_sizes": (3, 1), "sparsity.update_interval": 2,
                                    "east.cycle_update_interval": 1, "east.phase_out": "static",
                                    "log_every_steps": 1})
  return built_once("export_static", lambda workdir: train.train_and_evaluate(config, workdir))


def test_static_phase_out_exports_its_activations_without_hypernetworks(static_run, tmp_path):
  config, ds, run, state, _ = saved_run.load(static_run)
  offsets = {n: v for n, v in export._flat(state.params).items() if n.endswith("static_offset")}
  assert len(offsets) == 9 and any(np.any(v != 0) for v in offsets.values())  # Learned.
  arrays, meta = export.compress(config, run, state)
  assert meta["model"]["phase_out"] == "static" and not any("hypernet" in n for n in arrays)
  assert {f"params/{n}" for n in offsets} <= set(arrays)
  path = str(tmp_path / "model.npz")
  export.write(path, arrays, meta)
  model, variables = export.load(path)
  reference = run.model.clone(bn_axis_name=None)
  batch = next(iter(pipeline.eval_batches(ds, "test", global_batch_size=200)))
  want = reference.apply({"params": state.params, "batch_stats": state.batch_stats},
                         batch["image"], train=False)
  np.testing.assert_allclose(model.apply(variables, batch["image"], train=False), want,
                             rtol=1e-4, atol=1e-4)
  # ReLU would score differently: the learned coefficients are what is deployed.
  relu = run.model.clone(bn_axis_name=None, act=ReLU)
  assert not np.allclose(relu.apply({"params": state.params, "batch_stats": state.batch_stats},
                                    batch["image"], train=False), want, atol=1e-4)


def test_static_phase_out_follows_the_beta_schedule_and_counts_no_hypernetwork_flops(
    static_run, east_run):
  records = metrics_lib.read_metrics(static_run)
  betas = {r["step"]: r["east/beta"] for r in records if "east/beta" in r}
  assert betas == pytest.approx({s: float(dyrelu.beta_schedule(
      s, total_steps=6, phase_start=0.25, phase_end=0.5)) for s in range(1, 7)})
  # After the phase-out both runs cost their kept weights only (same shapes, same counts).
  final = [json.load(open(os.path.join(w, "final_metrics.json"))) for w in (static_run, east_run)]
  assert final[0]["sparsity/kept"] == final[1]["sparsity/kept"]
  assert final[0]["flops/inference_x_dense"] == pytest.approx(final[1]["flops/inference_x_dense"])


def test_export_command_writes_the_file_and_reports_sizes(east_run, tmp_path):
  out = tmp_path / "m.npz"
  proc = subprocess.run([sys.executable, "-m", "east_jax.export", f"--workdir={east_run}",
                         f"--out={out}", "--split=test"], cwd=REPO, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert out.is_file() and "kept weights" in proc.stdout
  exported, checkpoint = proc.stdout.split("exported ")[1].split(", checkpoint ")
  assert float(exported) == float(checkpoint.split()[0])


def test_export_errors_say_what_to_do(east_run, tmp_path, data_dir):
  with pytest.raises(UserInputError, match="no config.json"):
    saved_run.load(str(tmp_path))
  config, _, run, state, _ = saved_run.load(east_run)
  early = state.replace(step=np.asarray(1, np.int32))
  with pytest.raises(UserInputError, match="still uses DyReLU"):
    export.compress(config, run, early)
  dense = tiny_config(data_dir)
  with pytest.raises(UserInputError, match="dense"):
    export.compress(dense, run._replace(spec=None), state)
