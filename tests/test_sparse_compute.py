"""Sparse compute is the same training as the masked path: gradients of whole ResNets,
and whole RigL and EAST runs on 8 devices (config.model.sparse_compute on vs off), whose
EAST logs follow the cycles and DyReLU's schedule exactly."""

import json
import math
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from east_jax import saved_run, train
from east_jax.models import create_model
from east_jax.models import layers
from east_jax.models.dyrelu import beta_schedule
from east_jax.sparsity import criteria
from east_jax.sparsity import masks as masks_lib
from east_jax.sparsity.cycles import CycleSchedule
from tests.helpers import EAST_RUN, east_masked_run, tiny_config


def _random_masks(params, density, seed=0):
  shapes = masks_lib.prunable_shapes(params)
  layer_masks = {n: criteria.random_mask(jax.random.key(seed + i), s,
                                         max(1, round(density * math.prod(s))))
                 for i, (n, s) in enumerate(shapes.items())}
  return masks_lib.build(params, layer_masks), {n: int(m.sum()) for n, m in layer_masks.items()}


@pytest.mark.parametrize("name,stem,share,dtype,dense_layers,dense_kernel_grad", [
    ("resnet18", "cifar", 2, "float32", (), False),  # 3x3 s1/s2, 1x1 s2 shortcuts, sharing
    ("resnet50", "imagenet", 2, "float32", (), False),  # 7x7 s2 stem, 1x1 bottlenecks
    ("resnet18", "cifar", 2, "bfloat16", (), False),
    # As "auto" may choose: some layers dense inside the channel-first network.
    ("resnet18", "cifar", 2, "float32", ("stem_conv/kernel", "stage1_block1/conv2/kernel",
                                         "classifier/kernel"), False),
    # Mask-update steps: the kernel gradient at every position.
    ("resnet18", "cifar", 2, "float32", (), True),
    ("resnet50", "imagenet", 2, "float32", (), True),
])
def test_resnet_loss_and_kept_gradients_equal_the_masked_model(name, stem, share, dtype,
                                                               dense_layers, dense_kernel_grad):
  size = 32 if stem == "imagenet" else 8
  dense = create_model(name, num_classes=5, width=4, stem=stem, stage_sizes=(3, 3),
                       share_ratio=share, dtype=jnp.dtype(dtype))
  x = jax.random.normal(jax.random.key(1), (4, size, size, 3))
  variables = dense.init(jax.random.key(0), x, train=False)
  masks, counts = _random_masks(variables["params"], 0.2)
  params = masks_lib.apply(variables["params"], masks)
  sparse = dense.clone(sparse_capacity=tuple((n, c + 2) for n, c in counts.items()
                                             if n not in dense_layers), layout="CNHW",
                       dense_kernel_grad=dense_kernel_grad)
  labels = jnp.arange(4) % 5

  def loss_fn(model, extra):
    def loss(params):
      logits, _ = model.apply({**variables, "params": params, **extra}, x, mutable=["batch_stats"])
      return train.cross_entropy(logits, labels).mean()
    return jax.jit(jax.value_and_grad(loss))

  want_loss, want = loss_fn(dense, {})(params)
  got_loss, got = loss_fn(sparse, {layers.MASKS: masks})(params)
  # Sparse layers have their gradient at kept positions only (unless dense_kernel_grad),
  # dense ones everywhere.
  kept = want if dense_kernel_grad else masks_lib.apply(want, masks_lib.replace_layers(
      masks, {n: jnp.ones((), bool) for n in dense_layers}))
  if dtype == "float32":
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(kept)):
      np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    return
  # bfloat16 rounds differently in the two paths: the sparse gradient must be about as far
  # from the float32 gradient as the masked path's (relative L2 error over all params).
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-2)
  _, exact = loss_fn(dense.clone(dtype=jnp.float32), {})(params)
  flat = [np.concatenate([np.ravel(x) for x in jax.tree.leaves(masks_lib.apply(t, masks))])
          for t in (got, want, exact)]
  errors = [np.linalg.norm(f - flat[2]) / np.linalg.norm(flat[2]) for f in flat[:2]]
  assert errors[0] <= 1.5 * errors[1] + 0.01, errors


def _run(config, workdir):
  state = train.train_and_evaluate(config, str(workdir))
  return jax.device_get(state), _losses(workdir)


def _losses(workdir):
  return [r["train_loss"] for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
          if "train_loss" in r]


def _assert_east_logs(workdir, *, total_steps, sparsity, cycle_update_interval, eval_every):
  """An EAST run's logs: exact kept counts at every step (the cycles' density since their
  last update), DyReLU's beta, the cycle index, the shared kernels' accounting and the
  evaluations (every `eval_every` steps and at the end)."""
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  report = json.load(open(workdir / "sparsity.json"))
  density = 1.0 - sparsity
  full, kept = report["sparsity/prunable"], report["sparsity/kept"]
  assert kept == round(density * full) == sum(report["layers"].values())
  assert "stage1_block2/conv1/kernel" not in report["layers"]  # Shared: no kernel of its own.
  assert report["sparsity/compute_density"] > report["sparsity/density"]
  cycles = CycleSchedule(total_steps=total_steps, num_cycles=2, length=0.2,
                         update_interval=cycle_update_interval)
  logged = {r["step"]: r for r in records if "mask/kept" in r}
  assert sorted(logged) == list(range(1, total_steps + 1))
  for step, r in logged.items():
    assert r["east/beta"] == pytest.approx(float(beta_schedule(
        step, total_steps=total_steps, phase_start=0.25, phase_end=0.5)))
    assert r["mask/target_density"] == pytest.approx(cycles.density(step, density))
    last_update = max([s for s in cycles.update_steps() if s < step], default=None)
    now = density if last_update is None else cycles.density(last_update, density)
    assert r["mask/kept"] == round(now * full), step
    position = cycles.position(step)
    assert r["east/cycle"] == (-1 if position is None else position[0]), step
  assert max(r["mask/kept"] for r in logged.values()) > kept  # The cycles went up.
  assert {r["east/cycle"] for r in logged.values()} == {0, 1, -1}
  assert logged[total_steps]["east/beta"] == 0.0
  evals = [r["step"] for r in records if "test_accuracy" in r]
  assert evals == sorted({*range(eval_every, total_steps + 1, eval_every), total_steps})


@pytest.mark.parametrize("method", ["rigl", "east"])
def test_a_sparse_run_equals_the_masked_run(data_dir, tmp_path, capsys, method):
  """8 devices, mask updates (RigL's dense gradient; EAST's cycles, DyReLU then ReLU,
  sharing, slots for the cycles' peaks then for the final counts): identical masks, the
  same losses, params and optimizer state."""
  if method == "rigl":
    overrides = {"sparsity.method": "rigl", "sparsity.sparsity": 0.9,
                 "sparsity.update_interval": 2, "learning_rate": 0.02, "log_every_steps": 1,
                 "model.kernel_grad": "xla"}
    masked_dir = tmp_path / "off"
    masked, masked_losses = _run(tiny_config(data_dir, **overrides,
                                             **{"model.sparse_compute": "off"}), masked_dir)
  else:
    overrides = EAST_RUN
    masked_dir = east_masked_run(data_dir)
    masked, masked_losses = jax.device_get(saved_run.load(masked_dir).state), _losses(masked_dir)
    assert int(masked.step) == 8
  sparse, sparse_losses = _run(tiny_config(data_dir, **overrides,
                                           **{"model.sparse_compute": "on"}), tmp_path / "on")
  if method == "east":  # 8 steps, 2 cycles of 1.6 steps: the last cycle update at step 3.
    assert "from step 4" in capsys.readouterr().out
    for workdir in (masked_dir, tmp_path / "on"):
      _assert_east_logs(pathlib.Path(workdir), total_steps=8, sparsity=0.9,
                        cycle_update_interval=1, eval_every=3)
    # What ran over the kept weights is recorded: every masked layer, in slots for the
    # cycles' peak counts, then for the final ones from step 4; the native kernels.
    report = json.load(open(tmp_path / "on" / "sparsity.json"))
    record, layers = report["sparse_compute"], report["layers"]
    assert record["mode"] == "on" and record["kernels"].startswith("native CPU kernels (")
    assert set(record["layers"]) == set(record["settled_layers"]) == set(layers)
    assert record["settled_step"] == 4
    assert all(record["settled_layers"][n] == max(1, layers[n]) <= record["layers"][n]
               for n in layers)
    assert json.load(open(os.path.join(masked_dir, "sparsity.json")))["sparse_compute"] == {
        "mode": "off", "layers": {}, "kernels": None}
    # Where the time went, by train program: every step counted once, the cycles' slots
    # until the settled step, each program's first call counted as compiling.
    timing = json.load(open(tmp_path / "on" / "timing.json"))
    phases = timing["phases"]
    assert timing["launches"] == 1 and timing["programs_compiled"] == len(phases) >= 4
    assert sum(p["steps"] for p in phases.values()) == 8
    assert sum(p["steps"] for n, p in phases.items() if "peak-count slots" in n) == 4
    assert {n.split(",")[0] for n in phases} == {"DyReLU", "ReLU"}
    assert any("mask update" in n for n in phases)
    for p in phases.values():
      assert p["images_per_second"] == pytest.approx(p["steps"] * 32 / p["seconds"])
    assert all(v > 0 for v in timing["seconds"].values()), timing
  assert jax.device_count() == 8
  np.testing.assert_allclose(sparse_losses, masked_losses, rtol=1e-5)
  for got, want in zip(jax.tree.leaves(sparse.opt_state.masks),
                       jax.tree.leaves(masked.opt_state.masks)):
    np.testing.assert_array_equal(got, want)
  # Momentum sums gradients over 25k positions with cancellation: float32 noise; the largest
  # seen is 1.2e-4 on the stem kernel's trace (EAST, steps compiled at XLA CPU level 1).
  for tree, atol in (("params", 1e-5), ("batch_stats", 1e-5), ("opt_state", 3e-4)):
    got_leaves = jax.tree_util.tree_flatten_with_path(getattr(sparse, tree))[0]
    for (path, got), want in zip(got_leaves, jax.tree.leaves(getattr(masked, tree))):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol,
                                 err_msg=tree + jax.tree_util.keystr(path))


def test_another_seed_loads_every_train_program_from_the_persistent_cache(data_dir, tmp_path):
  """The seed is optimizer state, not a compiled constant: a second seed of the same config
  runs the first seed's train programs (loaded from JAX's persistent cache, as
  timing.json records) and still draws other masks."""
  overrides = {"sparsity.method": "rigl", "sparsity.sparsity": 0.9,
               "sparsity.update_interval": 2, "model.sparse_compute": "on"}
  states, timings = {}, {}
  for seed in (3, 4):
    workdir = tmp_path / str(seed)
    states[seed] = _run(tiny_config(data_dir, seed=seed, **overrides), workdir)[0]
    timings[seed] = json.load(open(workdir / "timing.json"))
  assert timings[4]["programs_compiled"] == 2  # The ordinary step and the mask update.
  assert timings[4]["programs_from_cache"] == 2, timings
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(states[3].opt_state.masks),
                                                      jax.tree.leaves(states[4].opt_state.masks)))
