"""east_jax: Extreme Adaptive Sparse Training (EAST) of ResNets in JAX/Flax.

Importing it changes no process-wide setting; see `east_jax.process_settings`.
"""
