"""Train step semantics: loss goes down, 1 device == 8 devices, NaN guard, end to end."""

import json
import os

import jax
import numpy as np
import optax
import pytest

from east_jax import metrics, parallel, train
from east_jax.data import pipeline
from east_jax.models import create_model
from tests.helpers import TamperedIterator, tiny_config


def _setup(data_dir, devices, tx):
  mesh = parallel.create_mesh(devices)
  ds = pipeline.load_dataset(tiny_config(data_dir).dataset)
  model = create_model("resnet18", num_classes=10, width=4, stage_sizes=(1, 1),
                       bn_axis_name=parallel.DATA_AXIS)
  state = train.create_train_state(jax.random.key(0), model, tx, ds.image_shape, mesh)
  batch = next(pipeline.train_iterator(ds, global_batch_size=32, seed=0))
  return mesh, model, state, batch


def test_one_train_step_lowers_the_loss_on_a_fixed_batch(data_dir):
  tx = optax.sgd(0.05)
  mesh, model, state, batch = _setup(data_dir, jax.devices()[:1], tx)
  step = train.make_train_step(model, tx, mesh)
  batch = parallel.global_batch(batch, mesh)
  state, first = step(state, batch)
  _, second = step(state, batch)
  assert float(second["loss"]) < float(first["loss"])


def _reference_grads(model, state, batch):
  """Gradient of the full-batch mean loss computed without any mapping."""
  local_model = model.clone(bn_axis_name=None)

  def loss_fn(params):
    logits, _ = local_model.apply({"params": params, "batch_stats": state.batch_stats},
                                  batch["image"], train=True, mutable=["batch_stats"])
    return train.cross_entropy(logits, batch["label"]).mean()

  return jax.grad(loss_fn)(state.params)


def test_one_and_eight_devices_give_the_same_gradients_and_parameters(data_dir):
  assert jax.device_count() == 8
  lr = 0.1
  tx = optax.sgd(lr)  # Plain SGD: the first update is exactly -lr * gradient.
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh, model, state, batch = _setup(data_dir, devices, tx)
    initial = jax.device_get(state)
    step = train.make_train_step(model, tx, mesh)
    state, _ = step(state, parallel.global_batch(batch, mesh))
    grads = jax.tree.map(lambda a, b: (a - b) / lr, initial.params, jax.device_get(state.params))
    state, _ = step(state, parallel.global_batch(batch, mesh))
    results.append((grads, jax.device_get(state.params), jax.device_get(state.batch_stats)))
  (g1, p1, s1), (g8, p8, s8) = results
  # The gradient of the global-batch mean loss, not N times it (the shard_map trap).
  reference = _reference_grads(model, initial, batch)
  tol = dict(rtol=2e-4, atol=2e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), g1, reference)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), g8, reference)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), p1, p8)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), s1, s8)


def test_eval_counts_every_example_once_on_eight_devices(data_dir):
  tx = optax.sgd(0.1)
  mesh, model, state, _ = _setup(data_dir, jax.devices(), tx)
  config = tiny_config(data_dir, eval_batch_size=64)
  ds = pipeline.load_dataset(config.dataset)
  result = train.evaluate(train.make_eval_step(model, mesh), state, ds, "test", config, mesh)
  assert result["test_examples"] == ds.num_examples("test")
  # Same numbers from a plain loop over the examples.
  source = ds.source("test")
  images = np.stack([pipeline._eval_transform(ds, source[i])["image"] for i in range(len(source))])
  labels = np.array([source[i]["label"] for i in range(len(source))])
  logits = model.clone(bn_axis_name=None).apply(
      {"params": state.params, "batch_stats": state.batch_stats}, images, train=False)
  np.testing.assert_allclose(result["test_accuracy"], np.mean(np.argmax(logits, -1) == labels),
                             atol=1e-6)
  np.testing.assert_allclose(result["test_loss"],
                             np.mean(train.cross_entropy(logits, labels)), rtol=1e-4)


def test_compiler_options_yield_to_a_level_in_xla_flags(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  assert train.compiler_options() == {"xla_backend_optimization_level": 1}
  assert train.compiler_options(runs_once=True) == {"xla_backend_optimization_level": 0}
  monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=2")
  assert train.compiler_options() == train.compiler_options(runs_once=True) == {}


def test_check_finite_names_the_first_bad_step():
  metrics.check_finite([1.0, 0.5], first_step=10)
  with pytest.raises(FloatingPointError, match="nan at step 12"):
    metrics.check_finite([1.0, 0.9, float("nan"), float("inf")], first_step=10)


def test_divergence_stops_the_run_naming_the_step(data_dir, tmp_path, monkeypatch):
  real_iterator = pipeline.train_iterator

  def poison(n, batch):  # Batch 4 carries a NaN pixel, as corrupt data would.
    if n == 4:
      batch["image"][0, 0, 0, 0] = np.nan
    return batch

  monkeypatch.setattr(pipeline, "train_iterator",
                      lambda *a, **k: TamperedIterator(real_iterator(*a, **k), poison))
  config = tiny_config(data_dir, num_train_steps=6, log_every_steps=6, checkpoint_every_steps=3)
  workdir = str(tmp_path / "run")
  # In step 4's forward pass ReLU maps the NaN activations to 0 (XLA's max), but its
  # gradient is NaN: the parameters, and so the loss, are NaN from step 5 on.
  with pytest.raises(FloatingPointError, match="loss is nan at step 5"):
    train.train_and_evaluate(config, workdir)
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["3"]  # Nothing NaN saved.


def test_train_and_evaluate_writes_metrics_and_checkpoints(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  state = train.train_and_evaluate(tiny_config(data_dir), workdir)
  assert int(state.step) == 6
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    result = json.load(f)
  assert result["test_examples"] == 200 and result["validation_examples"] == 64
  assert 0.0 <= result["test_accuracy"] <= 1.0
  records = metrics.read_metrics(workdir)
  train_steps = [r["step"] for r in records if "train_loss" in r]
  assert train_steps == [2, 3, 4, 6]  # every 2 steps, and at each checkpoint step
  assert all(np.isfinite(r["train_loss"]) and r["images_per_second"] > 0 for r in records
             if "train_loss" in r)
  assert [r["step"] for r in records if "test_accuracy" in r] == [3, 6]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  assert result["step"] == 6
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["width"] == 4


def test_bfloat16_compute_stays_close_to_float32_with_identical_masks(data_dir, tmp_path):
  runs = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny_config(data_dir, **{"model.dtype": dtype, "num_train_steps": 3,
                                      "sparsity.method": "set", "sparsity.sparsity": 0.9,
                                      "sparsity.update_interval": 2, "eval_splits": ("test",)})
    state = train.train_and_evaluate(config, str(tmp_path / dtype))
    losses = [r["train_loss"] for r in metrics.read_metrics(str(tmp_path / dtype))
              if "train_loss" in r]
    runs[dtype] = (jax.device_get(state), losses)
  (fp32, loss32), (bf16, loss16) = runs["float32"], runs["bfloat16"]
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(bf16.params))  # fp32 params ...
  assert all(x.dtype in (np.float32, np.int32, bool)  # ... and optimizer state (its
             for x in jax.tree.leaves(bf16.opt_state._replace(rng_key=())))  # key: uint32).
  for a, b in zip(jax.tree.leaves(fp32.opt_state.masks), jax.tree.leaves(bf16.opt_state.masks)):
    np.testing.assert_array_equal(a, b)  # The update at step 2 included.
  np.testing.assert_allclose(loss16, loss32, rtol=2e-2)
  for a, b in zip(jax.tree.leaves(fp32.params), jax.tree.leaves(bf16.params)):
    np.testing.assert_allclose(a, b, rtol=0.1, atol=2e-2)
