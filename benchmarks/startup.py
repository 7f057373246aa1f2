"""Time to first step: from launching `python -m east_jax.main` to its first logged step.

For each method, launches of the same config on fresh workdirs: without the persistent
compilation cache, then with an empty cache folder (a first launch), then again with that
folder (a second launch); with --before=<an older checkout>, first that checkout's launch.
Prints a Markdown table (seconds).

  python -m benchmarks.startup [--methods=dense,rigl,east] [--before=/tmp/old_checkout]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time


def time_to_first_step(config: str, workdir: str, cache: str | None, repo: str = ".") -> float:
  """Seconds until the run logs its first step to metrics.jsonl (cache None: a checkout
  without the cache setting)."""
  cmd = [sys.executable, "-m", "east_jax.main", f"--config={config}", f"--workdir={workdir}",
         "--config.log_every_steps=1", "--config.num_train_steps=1000"]
  if cache is not None:
    cmd.append(f"--config.compilation_cache_dir={cache}")
  metrics = os.path.join(workdir, "metrics.jsonl")
  os.makedirs(workdir)
  with open(os.path.join(workdir, "stderr.txt"), "w+") as err:
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=err)
    try:
      while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
        if proc.poll() is not None:
          err.seek(0)
          raise RuntimeError(f"{' '.join(cmd)} ended before its first step:\n{err.read()}")
        time.sleep(0.05)
      return time.time() - start
    finally:
      proc.kill()
      proc.wait()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--methods", default="dense,rigl,east")
  parser.add_argument("--config", default="configs/fashion_mnist_r18.py")
  parser.add_argument("--sparsity", default="0.99")
  parser.add_argument("--before", default="", help="an older checkout to launch first")
  args = parser.parse_args()
  before = ["before"] if args.before else []
  rows = ["| method | " + " | ".join(before + ["no cache", "first launch, empty cache",
                                                "second launch"]) + " |",
          "|---" * (4 + len(before)) + "|"]
  with tempfile.TemporaryDirectory() as tmp:
    for method in args.methods.split(","):
      config = f"{args.config}:method={method},sparsity={args.sparsity if method != 'dense' else 0}"
      cache = os.path.join(tmp, f"cache_{method}")
      times = [time_to_first_step(config, os.path.join(tmp, f"{method}_old"), None,
                                  os.path.abspath(args.before))] if args.before else []
      times += [time_to_first_step(config, os.path.join(tmp, f"{method}_{i}"), c)
                for i, c in enumerate(["", cache, cache])]
      rows.append(f"| {method} | " + " | ".join(f"{t:.1f}" for t in times) + " |")
      print(rows[-1], flush=True)
  print("\n".join(rows))


if __name__ == "__main__":
  main()
