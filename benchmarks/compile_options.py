"""XLA CPU backend optimisation level: compile time and step time of the init program and
the train step, per level (what `train.compiler_options` chose from).

For the collapse-edge ResNet (width 8, stages (3, 3, 3)) on Fashion-MNIST, batch 128: the
init program (model + optimizer + masks) at the default level and at 0, then the train
step at the default level, 2, 1 and 0, each with its compile time, the mean of 10 steps
and the first step's loss (equal losses: the same numerics).

  python -m benchmarks.compile_options [--arg=method=east,sparsity=0.997]
"""

import argparse
import time

import jax
import jax.numpy as jnp

from configs import fashion_mnist_r18
from east_jax import parallel, step_programs, train
from east_jax.data import pipeline


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arg", default="method=east,sparsity=0.997")
  args = parser.parse_args()
  config = fashion_mnist_r18.get_config(args.arg)
  config.model.stage_sizes = (3, 3, 3)
  ds = pipeline.load_dataset(config.dataset)
  run = train.build_run(config, ds)
  key, x = jax.random.key(0), jnp.zeros((1, *ds.image_shape))
  init = jax.jit(lambda k: run.model.init(k, x, train=False))
  for level in (None, 0):
    start = time.time()
    init.lower(key).compile({} if level is None else {"xla_backend_optimization_level": level})
    print(f"init, level {'default' if level is None else level}: compile "
          f"{time.time() - start:.1f} s", flush=True)

  mesh = parallel.create_mesh()
  state = train.create_train_state(key, run.model, run.tx, ds.image_shape, mesh)
  model = step_programs.sparse_compute_model(run.model, run.spec, state.params, "auto")
  batch = parallel.global_batch(next(pipeline.train_iterator(
      ds, global_batch_size=128, seed=0, num_threads=2)), mesh)
  step = train.make_train_step(model, run.tx, mesh, run.plan.beta_fn)
  for level in (None, 2, 1, 0):
    start = time.time()
    compiled = step.lower(state, batch).compile(
        {} if level is None else {"xla_backend_optimization_level": level})
    seconds = time.time() - start
    s, metrics = compiled(jax.tree.map(jnp.copy, state), batch)
    loss = float(metrics["loss"])
    start = time.time()
    for _ in range(10):
      s, metrics = compiled(s, batch)
    jax.block_until_ready(s)
    print(f"train step, level {'default' if level is None else level}: compile "
          f"{seconds:.1f} s, step {(time.time() - start) * 100:.0f} ms, loss {loss:.7f}",
          flush=True)


if __name__ == "__main__":
  main()
