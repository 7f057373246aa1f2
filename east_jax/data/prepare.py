"""Prepares datasets as array_record for training, offline where possible.

  python -m east_jax.data.prepare fashion_mnist [--idx_dir=/usr/share/datasets/fashion-mnist]
  python -m east_jax.data.prepare npz --name=my_data --npz=data.npz
  python -m east_jax.data.prepare folder --name=my_data --root=images/   # root/<split>/<class>/*
  python -m east_jax.data.prepare cifar10 | cifar100          # needs the internet + tensorflow
  python -m east_jax.data.prepare imagenet2012 --manual_dir=<folder with the ILSVRC tars>

All take --data_dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets).
"""

import sys

from absl import flags
from absl import logging

from east_jax import cli
from east_jax.data import builders
from east_jax.data import pipeline
from east_jax.errors import UserInputError

flags.DEFINE_string("data_dir", None, "tfds data_dir (default $TFDS_DATA_DIR or "
                    "~/tensorflow_datasets).")
flags.DEFINE_string("idx_dir", builders.FASHION_MNIST_DIR, "fashion_mnist: folder of IDX files.")
flags.DEFINE_string("name", None, "npz/folder: the dataset name to give (lower_snake_case).")
flags.DEFINE_string("npz", None, "npz: the .npz file.")
flags.DEFINE_string("root", None, "folder: root/<split>/<class>/<image>.")
flags.DEFINE_integer("channels", 3, "folder: 1 (grey) or 3 (RGB).")
flags.DEFINE_enum("encoding", "png", ["png", "jpeg"], "folder: how images are stored (png: "
                  "lossless; jpeg: smaller, decoded on every read like tfds' ImageNet).")
flags.DEFINE_string("manual_dir", None, "imagenet2012: folder holding the manually downloaded files.")
FLAGS = flags.FLAGS

SOURCES = ("fashion_mnist", "npz", "folder", "cifar10", "cifar100", "imagenet2012")


def prepare(source: str) -> str:
  data_dir = FLAGS.data_dir or pipeline.default_data_dir()
  if source == "fashion_mnist":
    return builders.prepare_fashion_mnist_idx(data_dir, FLAGS.idx_dir)
  if source in ("npz", "folder"):
    if not FLAGS.name:
      raise UserInputError(f"{source}: pass --name=<dataset name>.")
    if source == "npz":
      if not FLAGS.npz:
        raise UserInputError("npz: pass --npz=<file.npz>.")
      return builders.prepare_npz(FLAGS.name, FLAGS.npz, data_dir)
    if not FLAGS.root:
      raise UserInputError("folder: pass --root=<folder>.")
    return builders.prepare_image_folder(FLAGS.name, FLAGS.root, data_dir, FLAGS.channels,
                                         FLAGS.encoding)
  if source in ("cifar10", "cifar100", "imagenet2012"):
    return builders.prepare_tfds(source, data_dir, FLAGS.manual_dir)
  raise UserInputError(f"Unknown source {source!r}: use one of {', '.join(SOURCES)}.")


def main(argv):
  if len(argv) != 2:
    cli.fail(f"name one source: {', '.join(SOURCES)}.")
  logging.set_verbosity(logging.WARNING)
  try:
    path = prepare(argv[1])
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"prepared {path}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
