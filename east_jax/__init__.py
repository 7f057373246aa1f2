"""east_jax: Extreme Adaptive Sparse Training (EAST) of ResNets in JAX/Flax."""
