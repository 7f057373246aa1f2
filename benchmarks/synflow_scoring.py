"""SynFlow's scoring time on a config's network: the rounds of float64 scoring and exact
selection that run once before the first step, and the layers they leave empty.

  python -m benchmarks.synflow_scoring [--model=resnet34] [--sparsity=0.9995] [--rounds=100]

Prints one Markdown row: model, sparsity, rounds, seconds (compile included), kept
weights, layers with none (names below the table).
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from east_jax.models import create_model
from east_jax.sparsity import masks as masks_lib
from east_jax.sparsity import saliency


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet34")
  parser.add_argument("--width", type=int, default=64)
  parser.add_argument("--sparsity", type=float, default=0.9995)
  parser.add_argument("--rounds", type=int, default=100)
  parser.add_argument("--image_shape", default="28,28,1", help="one example (Fashion-MNIST)")
  args = parser.parse_args(argv)
  shape = tuple(int(d) for d in args.image_shape.split(","))
  model = create_model(args.model, num_classes=10, width=args.width, stem="cifar")
  variables = model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False)
  params, stats = variables["params"], variables["batch_stats"]
  shapes = masks_lib.prunable_shapes(params)
  total = round((1.0 - args.sparsity) * sum(int(np.prod(s)) for s in shapes.values()))
  model64 = model.clone(dtype=jnp.float64, kernel_grad="xla")
  start = time.time()
  masks = saliency.synflow_masks(
      lambda p, s, x: model64.apply({"params": p, "batch_stats": s}, x, train=False),
      params, stats, shape, list(shapes), key=jax.random.key(0), rounds=args.rounds,
      scope="global", total=total)
  seconds = time.time() - start
  empty = [n for n, m in masks.items() if not np.asarray(m).any()]
  print("| model | sparsity | rounds | seconds | kept | empty layers |\n|---|---|---|---|---|---|")
  print(f"| {args.model} w{args.width} | {args.sparsity} | {args.rounds} | {seconds:.1f} | "
        f"{sum(int(np.asarray(m).sum()) for m in masks.values())} | {len(empty)} of "
        f"{len(shapes)} |")
  print("empty:", ", ".join(empty) or "none")


if __name__ == "__main__":
  main()
