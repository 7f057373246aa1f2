"""SNIP, GraSP, SynFlow and GraNet in the training loop: exact counts, identical masks on
every device, masks in the first checkpoint (a resumed run never re-scores), the CLI."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from east_jax import parallel, pruning_at_init, saved_run, step_programs, train
from east_jax.data import pipeline
from east_jax.sparsity import masks as masks_lib
from east_jax.sparsity import transform
from tests.helpers import tiny_config, train_until_killed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(data_dir, method, **overrides):
  return tiny_config(data_dir, **{
      "sparsity.method": method, "sparsity.sparsity": 0.95, "sparsity.synflow_rounds": 10,
      "sparsity.grasp_samples_per_class": 2, "sparsity.update_interval": 2,
      "eval_every_steps": 6, **overrides})


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow", "granet"])
def test_a_resumed_run_restores_its_masks_and_ends_where_an_uninterrupted_one_does(
    data_dir, tmp_path, monkeypatch, method):
  config = _config(data_dir, method)
  whole = train.train_and_evaluate(config, str(tmp_path / "whole"))
  shapes = transform.prunable_shapes(train.build_run(config, pipeline.load_dataset(
      config.dataset)).spec, whole.params)
  kept = masks_lib.kept_counts(jax.device_get(whole.opt_state.masks), list(shapes))
  assert sum(kept.values()) == round(0.05 * sum(np.prod(s) for s in shapes.values()))

  workdir = str(tmp_path / "resumed")
  train_until_killed(config, workdir, 5)
  first = saved_run.load(workdir, step=3).state.opt_state.masks
  if method != "granet":  # The scored masks are in the first checkpoint ...
    np.testing.assert_array_equal(np.asarray(jax.tree.leaves(first)[0]),
                                  np.asarray(jax.tree.leaves(whole.opt_state.masks)[0]))

  def never(*args, **kwargs):
    raise AssertionError("a resumed run scored again")
  monkeypatch.setattr(pruning_at_init, "scored_masks", never)  # ... and never scored again.
  resumed = train.train_and_evaluate(config, workdir)
  for a, b in zip(jax.tree.leaves(jax.device_get((resumed.params, resumed.opt_state))),
                  jax.tree.leaves(jax.device_get((whole.params, whole.opt_state))), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method,scope", [("snip", "layerwise"), ("synflow", "global"),
                                          ("synflow", "layerwise"), ("grasp", "global")])
def test_scored_masks_are_identical_on_one_and_eight_devices_with_exact_counts(
    data_dir, method, scope):
  config = _config(data_dir, method, **{"sparsity.scope": scope})
  ds = pipeline.load_dataset(config.dataset)
  run = train.build_run(config, ds)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.create_mesh(devices)
    state = train.create_train_state(jax.random.key(config.seed), run.model, run.tx,
                                     ds.image_shape, mesh)
    state = pruning_at_init.prune(config, run, state, ds, mesh)
    for leaf in jax.tree.leaves(state.opt_state.masks):
      shards = [np.asarray(s.data) for s in leaf.addressable_shards]
      assert len(shards) == len(devices)
      assert all((s == shards[0]).all() for s in shards)
    for p, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(state.opt_state.masks)):
      assert not np.asarray(p)[~np.broadcast_to(np.asarray(m), p.shape)].any()
    results.append(jax.device_get(state.opt_state.masks))
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_array_equal(a, b)
  shapes = transform.prunable_shapes(run.spec, state.params)
  counts = masks_lib.kept_counts(results[0], list(shapes))
  if scope == "layerwise":
    assert counts == transform.target_counts(run.spec, shapes)
  else:
    assert sum(counts.values()) == round(0.05 * sum(np.prod(s) for s in shapes.values()))
  # Sparse compute takes its slots from the masks: exactly the counts.
  model = step_programs.sparse_compute_model(run.model, run.spec, state.params, "on",
                                     masks=results[0])
  assert dict(model.sparse_capacity) == {n: max(1, c) for n, c in counts.items()}


def test_snip_keeps_the_largest_scores_of_the_dense_initialisation(data_dir):
  """Scoring sees every weight of the initialisation, not the masked one: in each layer,
  every kept |g * w| (computed here from the dense init) is >= every pruned one."""
  config = _config(data_dir, "snip", **{"sparsity.scope": "layerwise"})
  ds = pipeline.load_dataset(config.dataset)
  run = train.build_run(config, ds)
  mesh = parallel.create_mesh(jax.devices()[:1])
  state = train.create_train_state(jax.random.key(config.seed), run.model, run.tx,
                                   ds.image_shape, mesh)
  masks = jax.device_get(pruning_at_init.prune(config, run, state, ds, mesh).opt_state.masks)
  variables = run.model.init(jax.random.key(config.seed),
                             np.zeros((1, *ds.image_shape), np.float32), train=False)
  batch = pruning_at_init._scoring_batch(config, ds, None)
  model = run.model.clone(bn_axis_name=None)

  def loss(params):
    logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                            batch["image"], train=True, mutable=["batch_stats"])
    log_p = jax.nn.log_softmax(logits)
    return -np.take_along_axis(log_p, batch["label"][:, None], axis=1).mean()

  grads = jax.grad(loss)(variables["params"])
  names = list(transform.prunable_shapes(run.spec, variables["params"]))
  weights, gradients = (masks_lib.layers(t, names) for t in (variables["params"], grads))
  kept = masks_lib.layers(masks, names)
  for name in names:
    score = np.abs(np.asarray(weights[name]) * np.asarray(gradients[name]))
    keep = np.asarray(kept[name])
    assert 0 < keep.sum() < keep.size
    assert score[keep].min() >= score[~keep].max(), name
    assert score[keep].min() > 0, name


def test_synflow_from_the_command_line_reports_collapsed_layers(data_dir, tmp_path):
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "east_jax.main",
         "--config=configs/fashion_mnist_r18.py:method=synflow,sparsity=0.95",
         f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}",
         "--config.model.width=4", "--config.model.stage_sizes=(1, 1)",
         "--config.batch_size=32", "--config.eval_batch_size=64", "--config.num_train_steps=2",
         "--config.sparsity.synflow_rounds=5", "--config.model.sparse_compute=on"]
  # Without the native kernels the run says so at its start and records the path it took.
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "EAST_JAX_NATIVE_KERNELS": "0"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "synflow (global): kept 65 weights" in proc.stdout
  path = "XLA gather / scatter (native CPU kernels off (EAST_JAX_NATIVE_KERNELS=0))"
  assert sum(path in line for line in proc.stdout.splitlines()) == 1
  report = json.load(open(workdir / "sparsity.json"))
  assert report["sparsity/kept"] == 65 == sum(report["layers"].values())
  assert report["sparse_compute"]["kernels"] == path
  assert report["collapsed_layers"] == [n for n, c in report["layers"].items() if c == 0]
  assert report["sparsity/collapsed_layers"] == len(report["collapsed_layers"])
