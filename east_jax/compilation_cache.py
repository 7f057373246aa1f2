"""JAX's persistent compilation cache: a second launch of a config reuses its programs.

On by default at `config.compilation_cache_dir` (`~/.cache/east_jax/jax`); "" turns it
off. JAX_COMPILATION_CACHE_DIR in the environment, JAX's own setting, wins.
"""

import os

import jax

MIN_COMPILE_SECONDS = 0.2  # JAX's default (1 s) leaves the many small eval/report programs out.


def enable(path: str) -> str | None:
  """Points JAX's cache at `path` (created if missing); returns the folder in use or None."""
  path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.expanduser(path)
  if not path:
    return None
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  return path
