"""Sparse compute in a user's own Flax model: the convnet of docs/sparse_compute.md's example
(plain nn.Conv / nn.Dense, NHWC) trained with RigL, its masked step against its steps over
kept weights (`east_jax.sparse_compute`), timed side by side.

  python -m benchmarks.custom_model
  python -m benchmarks.custom_model --sparsities=0.999 --batch=256 --rounds=7

Rows per sparsity: `masked` (model.apply, pruned weights 0: what the model costs without
east_jax's layers), `sparse` (an ordinary step over kept weights) and `update` (a RigL
mask-update step: the kernel gradient at every position). Each round times every row once,
in turn, so that the machine's drift hits them alike; the table shows medians.
"""

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from east_jax import sparse_compute, sparsity


class ConvNet(nn.Module):
  """The docs example's network."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(64, (3, 3))(x))
    x = nn.relu(nn.Conv(128, (3, 3), strides=2)(x))
    x = nn.relu(nn.Conv(256, (3, 3), strides=2)(x))
    return nn.Dense(10)(x.mean(axis=(1, 2)))


def _steps(level: float, batch: int, side: int):
  """{row: (compiled step, its arguments)} for RigL at `level` sparsity."""
  model = ConvNet()
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.standard_normal((batch, side, side, 1)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, batch), jnp.int32)
  params = model.init(jax.random.key(0), images)["params"]
  spec = sparsity.SparsitySpec(method="rigl", sparsity=level, total_steps=1000,
                               update_interval=2)
  tx = sparsity.sparse_training(optax.sgd(0.1, momentum=0.9), spec)
  opt_state = tx.init(params)
  params = sparsity.masked_params(params, opt_state)

  def make(apply):
    def step(params, opt_state):
      masks = sparsity.get_masks(opt_state)

      def loss_fn(p):
        logits = apply({"params": p, "masks": masks}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

      grads = jax.grad(loss_fn)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    return jax.jit(step)

  masks = sparsity.get_masks(opt_state)
  schedule = sparse_compute.SlotSchedule(spec, params, "on", masks)
  ordinary, update = schedule.program(1, masks), schedule.program(2, masks)
  assert update.dense_kernel_grad and not ordinary.dense_kernel_grad
  # The transformation's step decides whether it updates the masks: 1 no, 2 yes.
  at = lambda step: (params, opt_state._replace(step=jnp.asarray(step, opt_state.step.dtype)))  # noqa: E731
  return {"masked": (make(model.apply), at(1)),
          "sparse": (make(ordinary.apply(model)), at(1)),
          "update": (make(update.apply(model)), at(2))}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sparsities", default="0.99,0.999,0.9999")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--side", type=int, default=28, help="image side (28: Fashion-MNIST)")
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args(argv)
  print(f"ConvNet of docs/sparse_compute.md, batch {args.batch}, {args.side}x{args.side}x1, "
        f"{jax.default_backend()}, median of {args.rounds} rounds")
  print("| sparsity | row | step (ms) | images/s | x masked |")
  print("|---|---|---|---|---|")
  for level in [float(s) for s in args.sparsities.split(",")]:
    rows = _steps(level, args.batch, args.side)
    for fn, state in rows.values():  # Compile and warm up.
      jax.block_until_ready(fn(*state))
    times = {row: [] for row in rows}
    for _ in range(args.rounds):
      for row, (fn, state) in rows.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(*state))
        times[row].append(time.perf_counter() - start)
    masked = np.median(times["masked"])
    for row, t in times.items():
      t = np.median(t)
      print(f"| {level:.2%} | {row} | {1e3 * t:.1f} | {args.batch / t:.0f} | {masked / t:.2f} |")


if __name__ == "__main__":
  main()
