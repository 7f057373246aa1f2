"""Data-parallel scaling over 1, 2, 4, 8 simulated CPU devices at the same global batch.

  python -m benchmarks.scaling --model=resnet34:cifar --method=east --batch=128

Each device count runs `benchmarks.throughput` in a fresh process (the XLA host
device count is fixed at start-up) and the rows are collected into one table. On
one 2-core CPU the simulated devices share the same cores, so this measures the
cost of the sharded program (collectives, per-device overhead), not a speed-up.
"""

import argparse
import os
import subprocess
import sys


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet34:cifar")
  parser.add_argument("--method", default="east")
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--width", type=int, default=64)
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--devices", default="1,2,4,8")
  args = parser.parse_args()
  print("| devices | compile (s) | step (s) | images/s | mask-update step (s) | update / ordinary |")
  print("|---|---|---|---|---|---|", flush=True)
  for n in map(int, args.devices.split(",")):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.throughput", f"--models={args.model}",
         f"--methods={args.method}", f"--dtypes={args.dtype}", f"--batch={args.batch}",
         f"--width={args.width}", f"--steps={args.steps}", f"--devices={n}"],
        env=env, capture_output=True, text=True, check=True)
    row = proc.stdout.strip().splitlines()[-1].strip("|").split("|")
    print(f"| {n} | " + " | ".join(c.strip() for c in row[4:]) + " |", flush=True)


if __name__ == "__main__":
  main()
