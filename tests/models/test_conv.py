"""The matmul kernel gradient equals XLA's convolution gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from east_jax.errors import UserInputError
from east_jax.models import conv, create_model


def _grads(fn, x, kernel, strides, padding):
  def loss(x, kernel):
    y = fn(x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jnp.sin(y))  # A non-trivial output gradient.
  return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernel)


@pytest.mark.parametrize("kernel_size,cin,strides,padding", [
    (3, 4, (1, 1), ((1, 1), (1, 1))),     # im2col branch (3*3*4 rows)
    (3, 32, (1, 1), ((1, 1), (1, 1))),    # one product per offset (288 rows)
    (3, 32, (2, 2), ((1, 1), (1, 1))),    # strided
    (1, 32, (2, 2), ((0, 0), (0, 0))),    # projection shortcut
    (7, 3, (2, 2), ((3, 3), (3, 3))),     # ImageNet stem
    (3, 8, (2, 1), ((0, 2), (1, 0))),     # uneven strides and padding
    (3, 8, (1, 1), "SAME"),
])
def test_gradients_match_xla(kernel_size, cin, strides, padding):
  kx, kk = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (2, 11, 10, cin))
  kernel = jax.random.normal(kk, (kernel_size, kernel_size, cin, 5))
  want = _grads(jax.lax.conv_general_dilated, x, kernel, strides, padding)
  got = _grads(conv.conv_general_dilated, x, kernel, strides, padding)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(jnp.abs(w).max()))


def test_bfloat16_kernel_gradient_is_bfloat16_and_close():
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 16), jnp.bfloat16)
  kernel = jax.random.normal(jax.random.key(2), (3, 3, 16, 8), jnp.bfloat16)
  pad = ((1, 1), (1, 1))
  _, got = _grads(conv.conv_general_dilated, x, kernel, (1, 1), pad)
  _, want = _grads(jax.lax.conv_general_dilated, x.astype(jnp.float32),
                   kernel.astype(jnp.float32), (1, 1), pad)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(got.astype(jnp.float32), want, rtol=0.05,
                             atol=0.02 * float(jnp.abs(want).max()))


def test_dilated_convolutions_pass_through_to_lax():
  x = jax.random.normal(jax.random.key(3), (1, 9, 9, 2))
  kernel = jax.random.normal(jax.random.key(4), (3, 3, 2, 3))
  args = (x, kernel, (1, 1), ((2, 2), (2, 2)))
  kwargs = {"rhs_dilation": (2, 2), "dimension_numbers": ("NHWC", "HWIO", "NHWC")}
  np.testing.assert_array_equal(conv.conv_general_dilated(*args, **kwargs),
                                jax.lax.conv_general_dilated(*args, **kwargs))


@pytest.mark.parametrize("name,share", [("resnet18", 0), ("resnet50", 2)])
def test_resnet_gradients_do_not_depend_on_the_kernel_gradient_path(name, share):
  x = jax.random.normal(jax.random.key(5), (4, 16, 16, 3))
  labels = jnp.arange(4) % 3
  grads = {}
  for kernel_grad in ("xla", "matmul"):
    model = create_model(name, num_classes=3, width=4, stage_sizes=(3, 1), share_ratio=share,
                         kernel_grad=kernel_grad)
    variables = model.init(jax.random.key(0), x, train=False)

    def loss(params, model=model, variables=variables):
      logits, _ = model.apply({**variables, "params": params}, x, train=True,
                              mutable=["batch_stats"])
      return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])

    grads[kernel_grad] = jax.jit(jax.grad(loss))(variables["params"])
    # The matmul path is the one taken (a custom_vjp per convolution), not lax's.
    program = str(jax.make_jaxpr(loss)(variables["params"]))
    assert ("custom_vjp_call" in program) == (kernel_grad == "matmul")
  leaves = jax.tree.leaves_with_path(grads["xla"])
  shared_scales = [p for p, _ in leaves if p[-1].key == "scale" and p[-2].key.startswith("conv")]
  assert len(shared_scales) == (3 if share else 0)  # Block 2 of stage 1 reuses 3 kernels.
  for (path, want), got in zip(leaves, jax.tree.leaves(grads["matmul"])):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))


def test_unknown_kernel_grad_is_a_clear_error():
  with pytest.raises(UserInputError, match="kernel_grad"):
    create_model("resnet18", num_classes=3, kernel_grad="fast")
