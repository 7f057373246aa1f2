"""tfds builders for data prepared offline, without TensorFlow.

* `prepare_fashion_mnist_idx`: Fashion-MNIST from the four IDX files (Debian's
  `dataset-fashion-mnist` installs them under /usr/share/datasets/fashion-mnist;
  the stock tfds builder rejects them because they were recompressed).
* `prepare_npz`: any dataset from an .npz holding `<split>_images` (N, H, W[, C])
  uint8 and `<split>_labels` (N,) integer arrays, e.g. `train_images`, `test_labels`.
* `prepare_image_folder`: any dataset from `root/<split>/<class>/<image file>`.

Each writes array_record files readable by `tfds.data_source` / the pipeline.
Images are handed to tfds as PIL images or file bytes, so that no TensorFlow is needed.
"""

import gzip
import os
import types

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from east_jax.errors import UserInputError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def read_idx(path: str) -> np.ndarray:
  """Reads a (gzipped) IDX file into a uint8 array of its stated shape."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise UserInputError(f"{path} is not an unsigned-byte IDX file.")
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(shape)):
    raise UserInputError(f"{path} is truncated: expected {np.prod(shape)} values, found {body.size}.")
  return body.reshape(shape)


class _ArrayImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Builds a classification dataset from in-memory uint8 images and labels."""

  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, *, splits, class_names, **kwargs):
    self._splits = splits  # {split: (images (N, H, W, C) uint8, labels (N,))}
    self._class_names = class_names
    super().__init__(**kwargs)

  def _info(self):
    shape = next(iter(self._splits.values()))[0].shape[1:]
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=shape),
            "label": tfds.features.ClassLabel(names=list(self._class_names)),
        }),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(*arrays) for split, arrays in self._splits.items()}

  def _generate_examples(self, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
      pil = PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
      yield i, {"image": pil, "label": int(label)}


class _FolderImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Builds a classification dataset from image files, one folder per class."""

  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, *, splits, class_names, channels, encoding="png", **kwargs):
    self._splits = splits  # {split: [(path, label), ...]}
    self._class_names = class_names
    self._channels = channels
    self._encoding = encoding
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, self._channels),
                                         encoding_format=self._encoding),
            "label": tfds.features.ClassLabel(names=list(self._class_names)),
        }),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(items) for split, items in self._splits.items()}

  def _generate_examples(self, items):
    mode = "L" if self._channels == 1 else "RGB"
    for path, label in items:
      with PIL.Image.open(path) as image:
        yield path, {"image": image.convert(mode), "label": label}


def _builder_class(base, name, version):
  """A subclass of `base` whose tfds name is `name` (tfds derives names from classes)."""

  def body(ns):
    ns["name"] = name
    ns["VERSION"] = tfds.core.Version(version)
  return types.new_class(f"_{name}_builder", (base,), {"skip_registration": True}, body)


def _check_name(name):
  if not name or not name.replace("_", "").isalnum() or not name[0].isalpha() or name != name.lower():
    raise UserInputError(f"Dataset name {name!r} must be lower_snake_case, e.g. 'my_images'.")


def _prepare(builder):
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder.data_dir


def prepare_fashion_mnist_idx(data_dir: str, idx_dir: str = FASHION_MNIST_DIR) -> str:
  """Prepares `fashion_mnist` (60k train / 10k test) from local IDX files."""
  splits = {}
  for split, (image_file, label_file) in _IDX_FILES.items():
    paths = [os.path.join(idx_dir, f) for f in (image_file, label_file)]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
      raise UserInputError(
          f"Fashion-MNIST IDX file(s) not found: {', '.join(missing)}. Install them with "
          "`apt-get install dataset-fashion-mnist` or pass --idx_dir=<folder with the 4 .gz files>.")
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or len(images) != len(labels):
      raise UserInputError(f"{paths[0]} and {paths[1]} do not hold matching images and labels.")
    splits[split] = (images[..., None], labels)
  cls = _builder_class(_ArrayImages, "fashion_mnist", "3.0.1")
  return _prepare(cls(splits=splits, class_names=FASHION_MNIST_CLASSES, data_dir=data_dir,
                      file_format="array_record"))


def prepare_npz(name: str, npz_path: str, data_dir: str) -> str:
  """Prepares dataset `name` from an .npz of `<split>_images` / `<split>_labels`."""
  _check_name(name)
  if not os.path.isfile(npz_path):
    raise UserInputError(f"No such .npz file: {npz_path}")
  with np.load(npz_path) as npz:
    arrays = dict(npz)
  splits = {}
  for key in arrays:
    if key.endswith("_images"):
      split = key[:-len("_images")]
      images, labels = arrays[key], arrays.get(f"{split}_labels")
      if labels is None:
        raise UserInputError(f"{npz_path} has {key} but no {split}_labels.")
      if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise UserInputError(f"{npz_path}:{key} must be uint8 (N, H, W) or (N, H, W, C), "
                             f"got {images.dtype} {images.shape}.")
      if images.ndim == 3:
        images = images[..., None]
      if len(images) != len(labels):
        raise UserInputError(f"{npz_path}: {len(images)} {split} images but {len(labels)} labels.")
      splits[split] = (images, np.asarray(labels).astype(np.int64))
  if "train" not in splits:
    raise UserInputError(f"{npz_path} needs at least train_images and train_labels; "
                         f"found keys {sorted(arrays)}.")
  num_classes = int(max(labels.max() for _, labels in splits.values())) + 1
  cls = _builder_class(_ArrayImages, name, "1.0.0")
  return _prepare(cls(splits=splits, class_names=[str(i) for i in range(num_classes)],
                      data_dir=data_dir, file_format="array_record"))


def prepare_image_folder(name: str, root: str, data_dir: str, channels: int = 3,
                         encoding: str = "png") -> str:
  """Prepares dataset `name` from `root/<split>/<class>/<image>` (classes sorted by name),
  stored `encoding`-encoded (png: lossless; jpeg: like tfds' ImageNet, decoded per read)."""
  _check_name(name)
  if encoding not in ("png", "jpeg"):
    raise UserInputError(f"Image encoding {encoding!r}: use png or jpeg.")
  if not os.path.isdir(root):
    raise UserInputError(f"No such folder: {root}")
  split_names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  if "train" not in split_names:
    raise UserInputError(f"{root} must hold a train/ folder (and optionally test/), "
                         "each with one sub-folder per class.")
  class_names = sorted(d for d in os.listdir(os.path.join(root, "train"))
                       if os.path.isdir(os.path.join(root, "train", d)))
  splits = {}
  for split in split_names:
    items = []
    for label, class_name in enumerate(class_names):
      class_dir = os.path.join(root, split, class_name)
      if os.path.isdir(class_dir):
        items += [(os.path.join(class_dir, f), label) for f in sorted(os.listdir(class_dir))
                  if f.lower().endswith(_IMAGE_SUFFIXES)]
    if not items:
      raise UserInputError(f"{os.path.join(root, split)} holds no images in class folders.")
    splits[split] = items
  cls = _builder_class(_FolderImages, name, "1.0.0")
  return _prepare(cls(splits=splits, class_names=class_names, channels=channels,
                      encoding=encoding, data_dir=data_dir, file_format="array_record"))


def prepare_tfds(name: str, data_dir: str, manual_dir: str | None = None) -> str:
  """Prepares a stock tfds dataset (cifar10, cifar100, imagenet2012) as array_record.

  Needs the internet (CIFAR) or the manually downloaded files in `manual_dir` (ImageNet),
  and TensorFlow for the stock builders' image encoding.
  """
  builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder.data_dir
