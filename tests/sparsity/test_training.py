"""Sparse training wired into the train step: 8 devices, checkpoints, config, accounting."""

import json
import math
import os

import jax
import numpy as np
import pytest

from east_jax import checkpointing, parallel, train
from east_jax.data import pipeline
from east_jax.errors import UserInputError
from east_jax.models import create_model
from east_jax.sparsity import accounting, methods, transform
from east_jax.sparsity import masks as masks_lib
from tests.helpers import mask_history, sparse_setup, tiny_config


def test_masks_are_bit_identical_across_devices_and_match_one_device(data_dir):
  single, _ = mask_history(data_dir, jax.devices()[:1], 4)
  multi, state = mask_history(data_dir, jax.devices(), 4)
  for masks_1, masks_8 in zip(single, multi):
    for (leaf_1,), shards in zip(masks_1, masks_8):
      assert len(shards) == 8
      for shard in shards:
        np.testing.assert_array_equal(shard, shards[0])
      np.testing.assert_array_equal(shards[0], leaf_1)
  # The masks did move (an update at every step), and pruned weights are exactly zero.
  assert any((a[0] != b[0]).any() for a, b in zip(multi[0], multi[-1]))
  zeros = jax.tree.map(lambda p, m: not np.any(np.asarray(p)[~np.broadcast_to(m, p.shape)]),
                       jax.device_get(state.params), jax.device_get(state.opt_state.masks))
  assert all(jax.tree.leaves(zeros))


def test_checkpoint_round_trip_gives_the_same_next_mask_update(data_dir, tmp_path):
  mesh, model, tx, spec, state, batches = sparse_setup(data_dir, jax.devices()[:1], interval=1)
  step = train.make_train_step(model, tx, mesh)
  state, _ = step(state, parallel.global_batch(next(batches), mesh))  # Step 0: no update.
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=2)
  checkpointer.save(1, state, batches.get_state())
  checkpointer.wait()
  restored, data_state = checkpointer.restore_latest(state)
  checkpointer.close()
  assert restored.opt_state.masks["classifier"]["kernel"].dtype == np.bool_
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))

  batch = next(batches)
  resumed_batches = pipeline.train_iterator(
      pipeline.load_dataset(tiny_config(data_dir).dataset), global_batch_size=32, seed=0)
  resumed_batches.set_state(data_state)
  np.testing.assert_array_equal(next(resumed_batches)["image"], batch["image"])
  restored_masks = jax.device_get(restored.opt_state.masks)
  uninterrupted, _ = step(state, parallel.global_batch(batch, mesh))  # Step 1: an update.
  resumed, _ = step(restored, parallel.global_batch(batch, mesh))
  assert int(resumed.opt_state.step) == 2
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.opt_state.masks),
               jax.device_get(uninterrupted.opt_state.masks))
  assert any(bool((a != b).any()) for a, b in zip(
      jax.tree.leaves(restored_masks),
      jax.tree.leaves(jax.device_get(resumed.opt_state.masks))))


@pytest.mark.parametrize("overrides,message", [
    ({"sparsity.method": "rigl", "sparsity.sparsity": -0.1}, "sparsity.sparsity must be in"),
    ({"sparsity.method": "rigl", "sparsity.sparsity": 1.0}, "sparsity.sparsity must be in"),
    ({"sparsity.method": "magic"}, "Unknown sparsity method 'magic'"),
    ({"sparsity.method": "set", "sparsity.sparsity": 0.9, "sparsity.update_interval": 0},
     "update_interval must be a positive"),
    ({"sparsity.method": "static", "sparsity.sparsity": 0.9, "sparsity.distribution": "zipf"},
     "Unknown config.sparsity.distribution"),
    ({"sparsity.method": "static", "sparsity.sparsity": 0.9,
      "sparsity.layer_density_overrides": ("stem_conv/kernel",)}, "layer_density_overrides"),
])
def test_invalid_sparsity_config_fails_clearly(data_dir, tmp_path, overrides, message):
  with pytest.raises(UserInputError, match=message):
    train.train_and_evaluate(tiny_config(data_dir, **overrides), str(tmp_path / "run"))


def test_accounting_counts_masks_not_zeros():
  model = create_model("resnet18", num_classes=10, width=4, stage_sizes=(1, 1))
  uses = accounting.kernel_uses(model, (28, 28, 1), reuses=model.shared_convs())
  assert uses["stem_conv/kernel"] == [28 * 28]
  assert uses["stage2_block0/conv1/kernel"] == [14 * 14]
  assert uses["classifier/kernel"] == [1]
  positions = {n: p[0] for n, p in uses.items()}
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 28, 28, 1)),
                                             train=False))["params"]
  spec = transform.SparsitySpec(method="rigl", sparsity=0.9, total_steps=10)
  masks = transform.initial_masks(spec, params)
  prunable = list(transform.prunable_shapes(spec, params))
  shapes = {n: tuple(x.shape) for n, x in masks_lib.layers(params, positions).items()}
  summary = accounting.summarize(masks, shapes, uses, prunable, update_interval=10,
                                 dense_gradient=True)
  total = sum(math.prod(s) for s in shapes.values())
  assert summary["sparsity/kept"] == round(0.1 * total)
  assert summary["sparsity/density"] == pytest.approx(round(0.1 * total) / total)
  counts = masks_lib.kept_counts(masks, prunable)
  dense = sum(math.prod(shapes[n]) * positions[n] for n in positions)
  sparse = sum(counts[n] * positions[n] for n in positions)
  assert summary["flops/inference_x_dense"] == pytest.approx(sparse / dense)
  # 9 ordinary steps at 3 sparse forwards, 1 update step at 2 sparse + 1 dense.
  assert summary["flops/train_x_dense"] == pytest.approx((29 * sparse + dense) / (30 * dense))


def test_rigl_run_logs_exact_sparsity(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  config = tiny_config(data_dir, **{"sparsity.method": "rigl", "sparsity.sparsity": 0.99,
                                    "sparsity.update_interval": 2})
  state = train.train_and_evaluate(config, workdir)
  prunable = sum(x.size for n, x in masks_lib.layers(
      state.params, list(transform.prunable_shapes(
          methods.create_spec(config.sparsity, total_steps=6, seed=0), state.params))).items())
  with open(os.path.join(workdir, "sparsity.json")) as f:
    report = json.load(f)
  assert report["sparsity/kept"] == round(0.01 * prunable) == sum(report["layers"].values())
  logged = [r for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
            if "sparsity/kept" in r]
  assert [r["step"] for r in logged] == [3, 6]
  assert all(r["sparsity/kept"] == round(0.01 * prunable) for r in logged)
