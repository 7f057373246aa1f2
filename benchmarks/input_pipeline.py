"""Input pipeline throughput: training batches per second with 0 / 1 / 2 worker processes.

Two datasets built locally in a temporary data_dir: ImageNet-shaped (full-size JPEGs,
stored JPEG-encoded as tfds stores ImageNet, decoded + inception crop to 224 + flip per
example) and CIFAR-shaped (32x32x3 arrays, pad-crop + flip). For each, images/s of
`pipeline.train_iterator` after a warm-up batch, and images per CPU-second (this process
and its worker processes, user + system, read from /proc; Linux): the rate one fully
used core gives, from which the cores a GPU needs follow. Prints a Markdown table.

  python -m benchmarks.input_pipeline [--images=512] [--batches=8] [--workers=0,1,2]
"""

import argparse
import os
import tempfile
import time

import numpy as np
import PIL.Image

from east_jax.data import builders, pipeline
from configs import default


def _jpeg_folder(root: str, count: int, rng) -> None:
  """`count` photo-like JPEGs of ImageNet's typical size (500 x 375), two classes."""
  for i in range(count):
    folder = os.path.join(root, "train", f"class{i % 2}")
    os.makedirs(folder, exist_ok=True)
    coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)  # Smooth, like a photo.
    image = PIL.Image.fromarray(coarse).resize((500, 375), PIL.Image.BICUBIC)
    noise = rng.integers(-12, 13, (375, 500, 3))
    image = PIL.Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))
    image.save(os.path.join(folder, f"{i}.jpg"), quality=90)


def _cifar_npz(path: str, count: int, rng) -> None:
  np.savez(path, train_images=rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8),
           train_labels=rng.integers(0, 10, count).astype(np.int64))


def _descendants(pid: int) -> list[int]:
  found = []
  for task in os.listdir(f"/proc/{pid}/task"):
    try:
      with open(f"/proc/{pid}/task/{task}/children") as f:
        children = [int(c) for c in f.read().split()]
    except OSError:
      continue
    for child in children:
      found += [child, *_descendants(child)]
  return found


def _cpu_seconds() -> float:
  """User + system CPU seconds of this process and its live descendants (the workers)."""
  total = 0.0
  for pid in [os.getpid(), *_descendants(os.getpid())]:
    try:
      with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
      continue
    total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
  return total


def measure(ds, batch: int, batches: int, workers: int, threads: int) -> tuple[float, float]:
  """(images/s, images per CPU-second) over `batches` batches after the first."""
  it = pipeline.train_iterator(ds, global_batch_size=batch, seed=0, num_threads=threads,
                               num_workers=workers)
  next(it)  # Starts the workers (their start-up is not measured).
  cpu, start = _cpu_seconds(), time.time()
  for _ in range(batches):
    next(it)
  wall, cpu = time.time() - start, _cpu_seconds() - cpu
  it.close()
  images = batches * batch
  return images / wall, images / max(cpu, 1e-9)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=512, help="JPEGs to build")
  parser.add_argument("--batches", type=int, default=8)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--workers", default="0,1,2")
  parser.add_argument("--threads", type=int, default=2, help="reader threads per process")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  rows = ["| data | workers | images/s | images per CPU-second |", "|---|---|---|---|"]
  with tempfile.TemporaryDirectory() as tmp:
    data_dir = os.path.join(tmp, "tfds")
    _jpeg_folder(os.path.join(tmp, "jpegs"), args.images, rng)
    builders.prepare_image_folder("bench_jpeg", os.path.join(tmp, "jpegs"), data_dir,
                                  encoding="jpeg")
    _cifar_npz(os.path.join(tmp, "cifar.npz"), 8 * args.batch * (args.batches + 2), rng)
    builders.prepare_npz("bench_cifar", os.path.join(tmp, "cifar.npz"), data_dir)
    cases = {"ImageNet-shaped JPEG, inception 224": ("bench_jpeg", "inception", 224),
             "CIFAR-shaped arrays, pad-crop": ("bench_cifar", "pad_crop", 0)}
    for label, (name, augment, size) in cases.items():
      config = default.get_config().dataset
      config.update({"name": name, "data_dir": data_dir, "augment": augment, "image_size": size,
                     "pad": 4 if augment == "pad_crop" else -1, "validation_fraction": 0.0})
      ds = pipeline.load_dataset(config)
      for workers in map(int, args.workers.split(",")):
        rate, per_cpu = measure(ds, args.batch, args.batches, workers, args.threads)
        rows.append(f"| {label} | {workers} | {rate:.0f} | {per_cpu:.0f} |")
        print(rows[-1], flush=True)
  print("\n".join(rows))


if __name__ == "__main__":
  main()
