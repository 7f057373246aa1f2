"""The XLA CPU gap: what makes a plain ResNet-18 CIFAR train step faster on this CPU.

  python -m benchmarks.cpu_gap                       # every try, one table
  python -m benchmarks.cpu_gap --tries=default,onednn --steps=3

Each try runs in a fresh process (XLA flags are read once at start-up): the real
jitted dense train step (`train.make_train_step`, SGD-Nesterov, weight decay,
clipping) of a ResNet-18 (width 64, CIFAR stem, 10 classes) on synthetic 32x32x3
data, one device. A try changes one thing against `default`: how convolution kernel
gradients are computed (`config.model.kernel_grad`), XLA flags, batch size, compute
dtype, or what is timed (forward only; the 3x3 convolutions alone, NHWC or NCHW).
The PyTorch side: `benchmarks/pytorch_resnet18.py`.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

from benchmarks import timing
from configs import default
from east_jax import optim, parallel, train
from east_jax.models import conv, create_model

CONCURRENCY = "--xla_cpu_enable_concurrency_optimized_scheduler=true"
ONEDNN = "--xla_cpu_use_onednn=true"
SINGLE_THREAD_EIGEN = "--xla_cpu_multi_thread_eigen=false"
DEFAULT = {"flags": "", "batch": 128, "dtype": "float32", "timed": "train", "kernel_grad": "auto"}
# Each try: what it changes against DEFAULT ("auto" kernel gradients are matmuls on CPU).
TRIES = {
    "xla_kernel_grad": {"kernel_grad": "xla"},
    "default": {},
    "batch32": {"batch": 32},
    "batch64": {"batch": 64},
    "batch256": {"batch": 256},
    "bfloat16": {"dtype": "bfloat16"},
    "forward_only": {"timed": "forward"},
    "convs_nhwc_xla": {"timed": "convs:NHWC", "kernel_grad": "xla"},
    "convs_nchw_xla": {"timed": "convs:NCHW", "kernel_grad": "xla"},
    "convs_nhwc": {"timed": "convs:NHWC"},
    "onednn": {"flags": ONEDNN},
    "onednn_fusions": {"flags": f"{ONEDNN} "
                                "--xla_cpu_experimental_onednn_fusion_type=dot,eltwise,reduce"},
    "xnnpack_off": {"flags": "--xla_cpu_use_xnnpack=false"},
    "xnn_fusions": {"flags": "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce"},
    "ynn_fusions": {"flags": "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce"},
    "fast_math": {"flags": "--xla_cpu_enable_fast_math=true"},
    "eigen_single_thread": {"flags": SINGLE_THREAD_EIGEN},
    "concurrency_scheduler": {"flags": CONCURRENCY},
    "concurrency_onednn": {"flags": f"{CONCURRENCY} {ONEDNN}"},
    "concurrency_single_thread_eigen": {"flags": f"{CONCURRENCY} {SINGLE_THREAD_EIGEN}"},
    "concurrency_onednn_batch64": {"flags": f"{CONCURRENCY} {ONEDNN}", "batch": 64},
    "concurrency_onednn_bfloat16": {"flags": f"{CONCURRENCY} {ONEDNN}", "dtype": "bfloat16"},
}


def _settings(name):
  return {**DEFAULT, **TRIES[name]}


def _train_fn(batch, dtype, forward_only, kernel_grad):
  """(step function, its arguments) for the real train step or the eval forward pass."""
  config = default.get_config()
  mesh = parallel.create_mesh(jax.devices()[:1])
  model = create_model("resnet18", num_classes=10, width=64, stem="cifar",
                       bn_axis_name=parallel.DATA_AXIS, dtype=jnp.dtype(dtype),
                       kernel_grad=kernel_grad)
  tx = optim.create_optimizer(config, optim.create_learning_rate_fn(config, 1000, 100))
  state = train.create_train_state(jax.random.key(0), model, tx, (32, 32, 3), mesh)
  data = timing.synthetic_batch(mesh, batch, (32, 32, 3), 10)
  if forward_only:
    return train.make_eval_step(model, mesh), (state, data), False
  return train.make_train_step(model, tx, mesh), (state, data), True


def _convs_fn(batch, layout, kernel_grad):
  """Forward and backward of ResNet-18's 3x3 convolutions alone (as often as in the net)."""
  conv_fn = conv.conv_general_dilated if conv.uses_matmul(kernel_grad) else (
      jax.lax.conv_general_dilated)
  shapes = [(32, 64, 64, 1), (32, 64, 128, 2), (16, 128, 128, 1), (16, 128, 256, 2),
            (8, 256, 256, 1), (8, 256, 512, 2), (4, 512, 512, 1)]
  counts = [4, 1, 3, 1, 3, 1, 3]  # How often each shape occurs in ResNet-18 (CIFAR).
  keys = jax.random.split(jax.random.key(0), 2 * len(shapes))
  args = []
  for (size, cin, cout, stride), k1, k2 in zip(shapes, keys[::2], keys[1::2]):
    x_shape = (batch, size, size, cin) if layout == "NHWC" else (batch, cin, size, size)
    args.append((jax.random.normal(k1, x_shape), jax.random.normal(k2, (3, 3, cin, cout)) * 0.01,
                 stride))
  dims = (layout, "HWIO", layout)

  def loss(kernels, xs):
    total = 0.0
    for x, w, (_, _, stride), n in zip(xs, kernels, args, counts):
      y = conv_fn(x, w, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=dims)
      total = total + n * jnp.mean(y * y)
    return total

  kernels = [a[1] for a in args]
  xs = [a[0] for a in args]
  return jax.jit(jax.grad(loss, argnums=(0, 1))), (kernels, xs), False


def run_try(name, steps):
  """Runs one try in this process; returns its measurements as a dict."""
  t = _settings(name)
  if t["timed"].startswith("convs:"):
    fn, args, donates_state = _convs_fn(t["batch"], t["timed"].partition(":")[2],
                                        t["kernel_grad"])
  else:
    fn, args, donates_state = _train_fn(t["batch"], t["dtype"], t["timed"] == "forward",
                                        t["kernel_grad"])
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - start

  def run_step():
    nonlocal args
    out = compiled(*args)
    jax.block_until_ready(out)
    if donates_state:
      args = (out[0], args[1])  # The train step donates its state: carry the new one.

  step_s = timing.median_times(run_step, ["step"] * steps)["step"]
  return {"compile_s": compile_s, "step_s": step_s, "images_per_s": t["batch"] / step_s}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tries", default=",".join(TRIES), help="comma-separated try names")
  parser.add_argument("--steps", type=int, default=3, help="timed steps (median) per try")
  parser.add_argument("--child", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(run_try(args.child, args.steps)))
    return
  names = args.tries.split(",")
  unknown = [n for n in names if n not in TRIES]
  if unknown:
    parser.error(f"unknown tries {unknown}; choose from {', '.join(TRIES)}")
  print(f"ResNet-18 CIFAR (width 64), median of {args.steps} steps after one warm-up, "
        f"{os.cpu_count()} CPUs")
  print("| try | XLA flags | batch | dtype | timed | kernel grad | compile (s) | step (s) | "
        "images/s |")
  print("|---|---|---|---|---|---|---|---|---|", flush=True)
  for name in names:
    t = _settings(name)
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {t['flags']}".strip()}
    row = (f"| {name} | `{t['flags'] or '-'}` | {t['batch']} | {t['dtype']} | {t['timed']} | "
           f"{t['kernel_grad']} |")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cpu_gap", f"--child={name}",
                           f"--steps={args.steps}"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
      error = (proc.stderr.strip().splitlines() or ["no output"])[-1][:100]
      print(f"{row} failed: {error} | | |", flush=True)
      continue
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{row} {r['compile_s']:.1f} | {r['step_s']:.3f} | {r['images_per_s']:.1f} |",
          flush=True)


if __name__ == "__main__":
  main()
