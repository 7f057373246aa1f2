"""ResNet structure: exact parameter counts, output shapes, injectable conv/act."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from east_jax.errors import UserInputError
from east_jax.models import ReLU, create_model


def _shapes(model, image_shape):
  init = functools.partial(model.init, train=False)
  return jax.eval_shape(init, jax.random.key(0), jnp.zeros((1, *image_shape)))


def _count(tree, leaf_name=None):
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return sum(int(np.prod(x.shape)) for path, x in leaves
             if leaf_name is None or path[-1].key == leaf_name)


def test_resnet34_cifar10_conv_and_classifier_kernels():
  variables = _shapes(create_model("resnet34", num_classes=10), (32, 32, 3))
  assert _count(variables["params"], "kernel") == 21_265_088


def test_resnet50_imagenet_trainable_parameters():
  variables = _shapes(create_model("resnet50", num_classes=1000, stem="imagenet"), (224, 224, 3))
  # torchvision's 25,557,032 minus the 1,000 classifier biases.
  assert _count(variables["params"]) == 25_556_032


def test_resnet18_has_no_biases_and_projection_shortcuts():
  variables = _shapes(create_model("resnet18", num_classes=10), (32, 32, 3))
  names = {"/".join(p.key for p in path)
           for path, _ in jax.tree_util.tree_flatten_with_path(variables["params"])[0]}
  assert not any(n.endswith("bias") and "bn" not in n for n in names)
  shortcuts = sorted(n.split("/")[0] for n in names if "shortcut_conv" in n)
  assert shortcuts == ["stage2_block0", "stage3_block0", "stage4_block0"]
  assert variables["params"]["stage2_block0"]["shortcut_conv"]["kernel"].shape == (1, 1, 64, 128)


@pytest.mark.parametrize("name,stem,image,final", [
    ("resnet18", "cifar", (32, 32, 3), 512),
    ("resnet34", "cifar", (32, 32, 3), 512),
    ("resnet50", "cifar", (32, 32, 3), 2048),
    ("resnet50", "imagenet", (224, 224, 3), 2048),
    ("resnet18", "imagenet", (224, 224, 3), 512),
])
def test_output_shapes(name, stem, image, final):
  model = create_model(name, num_classes=7, stem=stem)
  variables = _shapes(model, image)
  assert variables["params"]["classifier"]["kernel"].shape == (final, 7)
  out = jax.eval_shape(functools.partial(model.apply, train=False), variables,
                       jnp.zeros((3, *image)))
  assert out.shape == (3, 7) and out.dtype == jnp.float32


def test_imagenet_stem_downsamples_by_four():
  model = create_model("resnet18", num_classes=10, stem="imagenet", width=4, stage_sizes=(1,))
  variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
  _, state = model.apply(variables, jnp.zeros((2, 64, 64, 3)), train=True,
                         mutable=["batch_stats", "intermediates"])
  assert variables["params"]["stem_conv"]["kernel"].shape == (7, 7, 3, 4)
  assert state["batch_stats"]["stage1_block0"]["bn1"]["mean"].shape == (4,)


def test_tiny_variant_runs_and_is_deterministic():
  model = create_model("resnet18", num_classes=10, width=4, stage_sizes=(1, 1))
  x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
  variables = model.init(jax.random.key(0), x, train=False)
  out1 = model.apply(variables, x, train=False)
  out2 = model.apply(variables, x, train=False)
  assert out1.shape == (4, 10)
  np.testing.assert_array_equal(out1, out2)


def test_conv_and_activation_are_injectable():
  calls = {"conv": 0, "act": 0}

  class CountingAct(nn.Module):
    @nn.compact
    def __call__(self, x, beta=None):
      calls["act"] += 1
      return nn.relu(x)

  def conv(features, kernel_size, strides, *, name, capacity):
    assert capacity == 0  # Every layer is dense without sparse_capacity.
    calls["conv"] += 1
    return nn.Conv(features, kernel_size, strides=strides, use_bias=False, name=name)

  model = create_model("resnet18", num_classes=3, width=4, stage_sizes=(1, 1),
                       conv=conv, act=CountingAct)
  model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
  # stem + 2 blocks x 2 convs + 1 shortcut; stem act + 2 per block.
  assert calls == {"conv": 6, "act": 5}
  assert ReLU().apply({}, jnp.array([-1.0, 2.0])).tolist() == [0.0, 2.0]


def test_unknown_model_name_is_a_clear_error():
  with pytest.raises(UserInputError, match="Unknown model 'resnet99'.*resnet18"):
    create_model("resnet99", num_classes=10)
