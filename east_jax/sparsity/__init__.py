"""The sparse-training engine: masks and their updates as one Optax transformation.

    from east_jax import sparsity

    spec = sparsity.SparsitySpec(method="rigl", sparsity=0.99, total_steps=1000)
    tx = sparsity.sparse_training(optax.sgd(0.1, momentum=0.9), spec)
    opt_state = tx.init(params)
    params = sparsity.masked_params(params, opt_state)   # start from the masks
    ...                                                   # tx.update(grads, opt_state, params)
    counts = sparsity.layer_counts(sparsity.get_masks(opt_state))

The names are those of `config.sparsity`; `create_spec` builds the spec from it. The
modules: `masks` (mask pytrees), `distributions` (per-layer counts), `criteria` (drop and
grow), `schedules`, `cycles` (cyclic sparsity), `saliency` (pruning-at-initialisation
scores), `accounting` (densities and FLOPs), `transform` (the transformation), `methods`
(the config's methods).
"""

from east_jax.sparsity.cycles import CycleSchedule
from east_jax.sparsity.masks import MaskCounts, layer_counts
from east_jax.sparsity.methods import CONFIG_METHODS, create_spec
from east_jax.sparsity.transform import (METHODS, SparseTrainingState, SparsitySpec, get_masks,
                                         masked_params, sparse_training)

__all__ = ["CONFIG_METHODS", "METHODS", "CycleSchedule", "MaskCounts", "SparseTrainingState",
           "SparsitySpec", "create_spec", "get_masks", "layer_counts", "masked_params",
           "sparse_training"]
