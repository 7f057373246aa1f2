"""Weight sharing: exact budgets on the unshared size, one kernel per shared conv,
forward and gradient identical to an unshared ResNet holding scaled copies."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from east_jax import east
from east_jax.models import create_model
from east_jax.sparsity import accounting, masks as masks_lib, transform


def _params(model, image_shape):
  init = functools.partial(model.init, train=False)
  return jax.eval_shape(init, jax.random.key(0), jnp.zeros((1, *image_shape)))["params"]


def _kernel_total(params):
  return sum(math.prod(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
             if p[-1].key == "kernel")


def test_resnet34_cifar10_budget_counts_the_unshared_network():
  model = create_model("resnet34", num_classes=10, share_ratio=2)
  params = _params(model, (32, 32, 3))
  assert _kernel_total(params) == 11_164_352
  assert len(model.shared_convs()) == 16  # 8 of 16 blocks x 2 convs.
  for sparsity, kept in [(0.999, 21_265), (0.9995, 10_633), (0.9999, 2_127)]:
    spec = transform.SparsitySpec(method="rigl", sparsity=sparsity, total_steps=1,
                                  kernel_uses=east.kernel_uses(model))
    shapes = transform.prunable_shapes(spec, params)
    assert transform.reference_size(spec, shapes) == 21_265_088
    assert sum(transform.target_counts(spec, shapes).values()) == kept


@pytest.mark.parametrize("name,stem,image", [("resnet50", "cifar", (32, 32, 3)),
                                             ("resnet50", "imagenet", (64, 64, 3)),
                                             ("resnet34", "imagenet", (64, 64, 3))])
def test_unshared_size_equals_the_plain_resnet(name, stem, image):
  shared = create_model(name, num_classes=100, stem=stem, share_ratio=2)
  plain = _params(create_model(name, num_classes=100, stem=stem), image)
  spec = transform.SparsitySpec(method="rigl", sparsity=0.999, total_steps=1,
                                kernel_uses=east.kernel_uses(shared))
  shapes = transform.prunable_shapes(spec, _params(shared, image))
  assert transform.reference_size(spec, shapes) == _kernel_total(plain)
  assert len(shared.shared_convs()) == 8 * len(shared.block_cls.main_convs)


def _tiny_pair():
  shared = create_model("resnet18", num_classes=5, width=4, stage_sizes=(4,), share_ratio=2)
  plain = create_model("resnet18", num_classes=5, width=4, stage_sizes=(4,))
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  variables = shared.init(jax.random.key(0), x, train=False)
  return shared, plain, x, variables


def _unshare(params, model):
  """The plain ResNet's params: every reusing conv gets scale x the source kernel."""
  params = jax.tree.map(lambda v: v, params)
  for module, kernel in model.shared_convs().items():
    block, conv = module.split("/")
    source = kernel.split("/")[0]
    scale = params[block][conv]["scale"]
    params[block][conv] = {"kernel": scale * params[source][conv]["kernel"]}
  return params


def test_sharing_blocks_reuse_the_source_kernel_times_their_own_scalar():
  shared, plain, x, variables = _tiny_pair()
  params = variables["params"]
  assert set(params["stage1_block2"]["conv1"]) == {"scale"}
  scales = [float(params[f"stage1_block{j}"][c]["scale"]) for j in (2, 3) for c in ("conv1", "conv2")]
  assert all(0.0 < s < 1.0 for s in scales) and len(set(scales)) == 4
  out_shared = shared.apply(variables, x, train=False)
  out_plain = plain.apply({**variables, "params": _unshare(params, shared)}, x, train=False)
  np.testing.assert_allclose(out_shared, out_plain, rtol=1e-5, atol=1e-6)


def test_gradient_of_a_shared_kernel_is_summed_over_its_uses():
  shared, plain, x, variables = _tiny_pair()
  labels = jnp.array([1, 3])

  def loss(model, params):
    logits, _ = model.apply({**variables, "params": params}, x, train=True,
                            mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  g_shared = jax.grad(functools.partial(loss, shared))(variables["params"])
  unshared = _unshare(variables["params"], shared)
  g_plain = jax.grad(functools.partial(loss, plain))(unshared)
  for conv in ("conv1", "conv2"):
    expected = g_plain["stage1_block1"][conv]["kernel"] + sum(
        variables["params"][f"stage1_block{j}"][conv]["scale"]
        * g_plain[f"stage1_block{j}"][conv]["kernel"] for j in (2, 3))
    np.testing.assert_allclose(g_shared["stage1_block1"][conv]["kernel"], expected,
                               rtol=1e-4, atol=1e-7)


def test_masks_live_on_unique_kernels_and_accounting_counts_every_use():
  shared, _, _, variables = _tiny_pair()
  spec = transform.SparsitySpec(method="rigl", sparsity=0.9, total_steps=1,
                                kernel_uses=east.kernel_uses(shared))
  masks = transform.initial_masks(spec, variables["params"])
  shapes = transform.prunable_shapes(spec, variables["params"])
  assert not any(n.startswith(("stage1_block2", "stage1_block3")) for n in shapes)
  assert masks["stage1_block2"]["conv1"]["scale"].shape == ()
  uses = accounting.kernel_uses(shared, (8, 8, 3), reuses=shared.shared_convs())
  assert uses["stage1_block1/conv1/kernel"] == [64, 64, 64]
  all_shapes = {n: x.shape for n, x in masks_lib.layers(variables["params"], uses).items()}
  summary = accounting.summarize(masks, all_shapes, uses, list(shapes))
  full = transform.reference_size(spec, shapes)
  counts = masks_lib.kept_counts(masks, shapes)
  assert summary["sparsity/kept"] == round(0.1 * full) == sum(counts.values())
  assert summary["sparsity/density"] == pytest.approx(round(0.1 * full) / full)
  computed = sum(c * len(uses[n]) for n, c in counts.items())
  assert summary["sparsity/compute_density"] == pytest.approx(computed / full)
  assert summary["sparsity/compute_density"] > summary["sparsity/density"]
