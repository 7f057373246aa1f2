"""The native kernels built for each instruction-set level against -march=native: one
convolution's forward pass and both gradients over its kept weights, ResNet-34 CIFAR shapes
at batch 128, each target in its own process (EAST_JAX_KERNEL_TARGET), in turn, per round.

  python -m benchmarks.kernel_targets
  python -m benchmarks.kernel_targets --rounds=5 --targets=native,x86_64_v4
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

# (input side, c_in, c_out, stride, kept fraction)
CASES = [(32, 64, 64, 1, 0.001), (32, 64, 64, 1, 0.01), (16, 128, 128, 1, 0.01),
         (8, 256, 256, 1, 0.03), (32, 64, 128, 2, 0.01)]

_TIME_CASES = """
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
from east_jax import kernels
from east_jax.models import sparse_conv
assert kernels.available(), kernels.status()
rng = np.random.default_rng(0)
times = []
for side, cin, cout, stride, kept in json.loads(sys.argv[1]):
  x = jnp.asarray(rng.standard_normal((cin, 128, side, side)), jnp.float32)
  shape = (3, 3, cin, cout)
  flat = np.zeros(np.prod(shape), bool)
  count = max(1, round(kept * flat.size))
  flat[rng.choice(flat.size, count, replace=False)] = True
  mask = jnp.asarray(flat.reshape(shape))
  kernel = jnp.asarray(rng.standard_normal(shape), jnp.float32) * mask
  grad = jax.jit(jax.grad(lambda x, k: jnp.sum(sparse_conv.conv(
      x, k, mask, count, (stride, stride), ((1, 1), (1, 1))) ** 2), argnums=(0, 1)))
  jax.block_until_ready(grad(x, kernel))
  best = float("inf")
  for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    jax.block_until_ready(grad(x, kernel))
    best = min(best, time.perf_counter() - start)
  times.append(best * 1e3)
print(json.dumps({"status": kernels.status(), "ms": times}))
"""


def main(argv=None):
  from east_jax.kernels import targets
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--targets", default=",".join(
      [targets.NATIVE.name] + [t.name for t in targets.supported()]))
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--calls", type=int, default=5, help="timed calls per case (fastest)")
  args = parser.parse_args(argv)
  names = args.targets.split(",")
  times = {n: [] for n in names}
  for _ in range(args.rounds):
    for name in names:
      env = {**os.environ, "EAST_JAX_KERNEL_TARGET": name}
      out = subprocess.run([sys.executable, "-c", _TIME_CASES, json.dumps(CASES),
                            str(args.calls)], env=env, capture_output=True, text=True,
                           check=True).stdout
      times[name].append(json.loads(out.splitlines()[-1])["ms"])
  print(f"ms per call (fastest of {args.calls}, median over {args.rounds} rounds); "
        f"x native: that time over -march=native's")
  print("| case | " + " | ".join(names) + " |")
  print("|---|" + "---|" * len(names))
  median = {n: np.median(np.array(t), axis=0) for n, t in times.items()}
  for i, (side, cin, cout, stride, kept) in enumerate(CASES):
    base = median[names[0]][i]
    print(f"| {side}x{side} {cin}->{cout} s{stride} kept {kept:.1%} | " + " | ".join(
        f"{median[n][i]:.1f} ({median[n][i] / base:.2f}x)" for n in names) + " |")


if __name__ == "__main__":
  main()
