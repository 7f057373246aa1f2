"""Sparse compute in a user's own Flax model (east_jax.sparse_compute): the intercepted
nn.Conv / nn.Dense equal the masked layers, and docs/sparse_compute.md's example runs."""

import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from east_jax import sparse_compute, sparsity

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Layers(nn.Module):
  """Every layer form the interceptor handles, and one it leaves alone (Conv_dense)."""

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(8, (3, 3), strides=2)(x)  # SAME at stride 2 on an odd size: (0, 1) padding.
    x = nn.Conv(8, (3, 3), padding="VALID", use_bias=False)(x)
    x = nn.Conv(6, (1, 3), strides=(1, 2), padding=((1, 0), (2, 1)))(x)
    x = nn.Conv(6, (3, 3), name="Conv_dense")(x)
    x = nn.Dense(5)(x)  # On the last axis of a 4-D input.
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def layers_case():
  import optax
  model = _Layers()
  x = jax.random.normal(jax.random.key(0), (3, 11, 11, 2))
  params = model.init(jax.random.key(1), x)["params"]
  spec = sparsity.SparsitySpec(method="rigl", sparsity=0.8, total_steps=10, update_interval=2,
                               keep_dense=("Conv_dense/kernel",))
  opt_state = sparsity.sparse_training(optax.sgd(0.1), spec).init(params)
  params = sparsity.masked_params(params, opt_state)
  # Non-zero biases, so that adding them is tested too.
  params = jax.tree_util.tree_map_with_path(
      lambda p, v: v + 0.1 if p[-1].key == "bias" else v, params)
  return model, x, params, spec, sparsity.get_masks(opt_state)


def _loss(params, apply, masks, x):
  return jnp.sum(jnp.sin(apply({"params": params, "masks": masks}, x)))


@pytest.mark.parametrize("dense_kernel_grad", [False, True])
def test_intercepted_layers_equal_the_masked_layers(layers_case, dense_kernel_grad):
  model, x, params, spec, masks = layers_case
  schedule = sparse_compute.SlotSchedule(spec, params, "on", masks)
  slots = dict(schedule.slots(0, masks))
  assert set(slots) == {"Conv_0/kernel", "Conv_1/kernel", "Conv_2/kernel", "Dense_0/kernel",
                        "Dense_1/kernel"}  # Every pruned layer; Conv_dense kept dense.
  counts = sparsity.layer_counts(masks).layers
  assert all(slots[n] == counts[n][0] for n in slots)
  program = sparse_compute.Program(schedule.slots(0, masks), dense_kernel_grad)
  y_sparse = program.apply(model)({"params": params, "masks": masks}, x)
  y_masked = model.apply({"params": params}, x)
  np.testing.assert_allclose(y_sparse, y_masked, rtol=1e-5, atol=1e-5)
  g_sparse = jax.grad(_loss)(params, program.apply(model), masks, x)
  g_masked = jax.grad(_loss)(params, model.apply, masks, x)
  for (path, a), b, m in zip(jax.tree_util.tree_flatten_with_path(g_sparse)[0],
                             jax.tree.leaves(g_masked), jax.tree.leaves(masks)):
    name = "/".join(k.key for k in path)
    expected = b if dense_kernel_grad or name not in slots else jnp.where(m, b, 0)
    np.testing.assert_allclose(a, expected, rtol=1e-4, atol=1e-5, err_msg=name)


def test_the_masks_must_be_passed(layers_case):
  model, x, params, spec, masks = layers_case
  apply = sparse_compute.Program((("Conv_0/kernel", 4),)).apply(model)
  with pytest.raises(ValueError, match="'masks'"):
    apply({"params": params}, x)
  wrong = jax.tree.map(lambda m: jnp.ones((), bool), masks)  # Scalars, not kernel masks.
  with pytest.raises(ValueError, match="Conv_0/kernel: the 'masks' collection"):
    apply({"params": params, "masks": wrong}, x)


def test_unsupported_convolutions_say_what_to_do():
  class Dilated(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Conv(4, (3, 3), kernel_dilation=2)(x)

  model, x = Dilated(), jnp.ones((1, 8, 8, 2))
  params = model.init(jax.random.key(0), x)["params"]
  masks = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
  apply = sparse_compute.Program((("Conv_0/kernel", 72),)).apply(model)
  with pytest.raises(ValueError, match="Conv_0/kernel: .*without dilation.*keep_dense"):
    apply({"params": params, "masks": masks}, x)


def test_the_docs_example_runs():
  docs = open(os.path.join(REPO, "docs", "sparse_compute.md")).read()
  section = docs.split("## In your own model", 1)[1].split("\n## ")[0]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0"}
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=600, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]  # Losses within 1e-4, masks identical.
  assert "sparse compute (on): 4 layers over their kept weights only" in proc.stdout
  assert "2 programs" in proc.stdout, proc.stdout  # Ordinary and mask-update steps.
  assert "372 weights kept" in proc.stdout, proc.stdout  # 0.1% of 371,776 kernel weights.
