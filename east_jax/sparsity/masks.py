"""Mask pytrees that mirror the params.

A prunable leaf (by default every conv and dense kernel; the caller's predicate decides,
minus the leaves it keeps dense and any under a scope it excludes) has a boolean mask of
its own shape; every other leaf has the scalar mask True, which broadcasts. Which leaves
are prunable is a static function of the param tree's paths and shapes, so there are no
None leaves and nothing to carry in state.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def leaf_name(path) -> str:
  """'stage1_block0/conv1/kernel' for a params path."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def is_kernel(name: str, shape) -> bool:
  """The default prunable leaves: conv (4-D) and dense (2-D) kernels."""
  return name.endswith("kernel") and len(shape) in (2, 4)


def in_scope(name: str, scopes) -> bool:
  """Whether the leaf name has one of `scopes` as a path component."""
  return any(scope in name.split("/") for scope in scopes)


def prunable_shapes(params, prunable=is_kernel, never_prune: tuple = (),
                    keep_dense: tuple = ()) -> dict[str, tuple]:
  """{leaf name: shape} of the leaves with `prunable(name, shape)`, in tree order, except
  those under a scope in `never_prune` and those named in `keep_dense`."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  shapes = {leaf_name(p): tuple(x.shape) for p, x in leaves}
  return {n: s for n, s in shapes.items()
          if prunable(n, s) and not in_scope(n, never_prune) and n not in keep_dense}


def build(params, layer_masks: dict):
  """The mask pytree: `layer_masks[name]` at prunable leaves, scalar True elsewhere."""
  def leaf(path, x):
    mask = layer_masks.get(leaf_name(path))
    return jnp.ones((), jnp.bool_) if mask is None else jnp.asarray(mask, jnp.bool_)
  return jax.tree_util.tree_map_with_path(leaf, params)


def layers(masks, names) -> dict:
  """{name: mask} for the named (prunable) leaves of a mask pytree."""
  flat = {leaf_name(p): m for p, m in jax.tree_util.tree_flatten_with_path(masks)[0]}
  return {n: flat[n] for n in names}


def replace_layers(masks, new_layers: dict):
  """`masks` with the named leaves replaced."""
  def leaf(path, m):
    return new_layers.get(leaf_name(path), m)
  return jax.tree_util.tree_map_with_path(leaf, masks)


def apply(params, masks):
  """Zeros the pruned weights."""
  return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, masks)


def kept_counts(masks, names) -> dict[str, int]:
  """Exact kept count per named layer, read from the masks (host side)."""
  return {n: int(np.count_nonzero(np.asarray(m))) for n, m in layers(masks, names).items()}


class MaskCounts(NamedTuple):
  """Kept weights per pruned layer and in total."""
  layers: dict[str, tuple[int, int]]  # leaf name -> (kept, size)
  kept: int
  size: int

  @property
  def density(self) -> float:
    """The kept fraction of the pruned layers."""
    return self.kept / self.size

  @property
  def sparsity(self) -> float:
    return 1.0 - self.density


def layer_counts(masks) -> MaskCounts:
  """Exact kept counts of every pruned leaf (host side; only the masks are needed).

  Args:
    masks: a mask pytree (e.g. `get_masks(opt_state)`).

  Returns:
    MaskCounts: (kept, size) per pruned leaf in tree order, their totals, and the density
    and sparsity over them. Weight sharing is not counted here (see `accounting`).
  """
  layers = {}
  for path, mask in jax.tree_util.tree_flatten_with_path(jax.device_get(masks))[0]:
    if np.ndim(mask):
      layers[leaf_name(path)] = (int(np.count_nonzero(mask)), int(np.size(mask)))
  return MaskCounts(layers, sum(k for k, _ in layers.values()),
                    sum(n for _, n in layers.values()))
