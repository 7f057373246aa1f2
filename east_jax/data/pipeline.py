"""Input pipeline: prepared tfds datasets read through array_record + grain.

Training: one global shuffle per epoch from the seed, each process takes its
interleaved share of the global stream (so the global batch of step s is the same
whatever the process count), per-example augmentation seeded by the example's
position in the stream. The iterator's state is a small dict that checkpoints with
the model, so a resumed run sees exactly the batches it would have seen.

Evaluation: every example exactly once; the last batch is padded and `mask` marks
the real examples.
"""

import dataclasses
import math
import os
from typing import Iterator

from absl import flags
import grain
import numpy as np
import tensorflow_datasets as tfds

from east_jax.data import augment
from east_jax.errors import UserInputError

# Defaults per dataset: augmentation, normalisation and the split that serves as test.
KNOWN_DATASETS = {
    "fashion_mnist": dict(augment="pad_crop", pad=2, mean=(0.2860,), std=(0.3530,),
                          test_split="test"),
    "cifar10": dict(augment="pad_crop", pad=4, mean=(0.4914, 0.4822, 0.4465),
                    std=(0.2023, 0.1994, 0.2010), test_split="test"),
    "cifar100": dict(augment="pad_crop", pad=4, mean=(0.5071, 0.4865, 0.4409),
                     std=(0.2673, 0.2564, 0.2762), test_split="test"),
    "imagenet2012": dict(augment="inception", image_size=224, mean=(0.485, 0.456, 0.406),
                         std=(0.229, 0.224, 0.225), test_split="validation"),
}
_CUSTOM_DEFAULTS = dict(augment="none", pad=0, mean=None, std=None, test_split="test")
AUGMENTATIONS = ("pad_crop", "inception", "none")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A prepared dataset and how to read it.

  `splits` maps our split names to tfds split strings: "train" (the part of tfds
  train that we train on), "validation" (the held-out tail of tfds train) and
  "test" (where the dataset has one).
  """
  name: str
  builder: tfds.core.DatasetBuilder
  num_classes: int
  image_shape: tuple
  splits: dict
  augment: str
  pad: int
  image_size: int
  mean: tuple
  std: tuple

  def num_examples(self, split: str) -> int:
    return len(self.source(split))

  def source(self, split: str):
    if split not in self.splits:
      raise UserInputError(f"Dataset {self.name!r} has no split {split!r}; available: "
                           f"{', '.join(self.splits)} (config.dataset.eval_splits).")
    return self.builder.as_data_source(split=self.splits[split])


def default_data_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def prepare_command(name: str, data_dir: str) -> str:
  if name == "fashion_mnist":
    return f"python -m east_jax.data.prepare fashion_mnist --data_dir={data_dir}"
  if name in KNOWN_DATASETS:
    return f"python -m east_jax.data.prepare {name} --data_dir={data_dir}  (see docs/running.md, Data)"
  return (f"python -m east_jax.data.prepare npz --name={name} --npz=<file.npz> --data_dir={data_dir}"
          f"  or  python -m east_jax.data.prepare folder --name={name} --root=<dir> "
          f"--data_dir={data_dir}")


def find_prepared(name: str, data_dir: str) -> str | None:
  """The newest prepared version folder of `name` under `data_dir`, or None."""
  root = os.path.join(data_dir, name)
  if not os.path.isdir(root):
    return None
  versions = [v for v in os.listdir(root)
              if os.path.isfile(os.path.join(root, v, "dataset_info.json"))]
  if not versions:
    return None
  newest = max(versions, key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()))
  return os.path.join(root, newest)


def load_dataset(config) -> Dataset:
  """Opens the prepared dataset named by `config` (config.dataset); never downloads."""
  name = config.name
  data_dir = config.data_dir or default_data_dir()
  path = find_prepared(name, data_dir)
  if path is None:
    if name not in KNOWN_DATASETS:
      raise UserInputError(
          f"Unknown dataset {name!r}: not one of {', '.join(KNOWN_DATASETS)} and not prepared in "
          f"{data_dir}. To bring your own data: {prepare_command(name, data_dir)}")
    raise UserInputError(f"Dataset {name!r} is not prepared in {data_dir}. Prepare it with: "
                         f"{prepare_command(name, data_dir)}")
  if not any(".array_record" in f for f in os.listdir(path)):
    raise UserInputError(f"{path} holds no array_record files (prepared as tfrecord?). Prepare it "
                         f"again with: {prepare_command(name, data_dir)}")
  builder = tfds.builder_from_directory(path)
  info = builder.info
  features = info.features
  if "image" not in features or "label" not in features:
    raise UserInputError(f"{path}: expected 'image' and 'label' features, found {list(features)}.")
  defaults = dict(_CUSTOM_DEFAULTS, **KNOWN_DATASETS.get(name, {}))
  augment_name = config.augment or defaults["augment"]
  if augment_name not in AUGMENTATIONS:
    raise UserInputError(f"config.dataset.augment={augment_name!r}: use one of {AUGMENTATIONS}.")
  stored_shape = tuple(features["image"].shape)
  image_size = config.image_size or defaults.get("image_size") or stored_shape[0]
  if augment_name == "inception":
    image_shape = (image_size, image_size, stored_shape[-1])
  elif None in stored_shape:
    raise UserInputError(f"{name} has images of varying size: set config.dataset.augment='inception' "
                         "and config.dataset.image_size.")
  else:
    image_shape = stored_shape
  channels = image_shape[-1]
  mean = tuple(config.mean or defaults["mean"] or (0.5,) * channels)
  std = tuple(config.std or defaults["std"] or (0.5,) * channels)
  if len(mean) != channels or len(std) != channels:
    raise UserInputError(f"config.dataset.mean/std need {channels} values for {name}.")

  splits = _split_map(name, info, config.validation_fraction, defaults["test_split"])
  return Dataset(name=name, builder=builder, num_classes=features["label"].num_classes,
                 image_shape=image_shape, splits=splits, augment=augment_name,
                 pad=config.pad if config.pad is not None else defaults["pad"],
                 image_size=image_size, mean=mean, std=std)


def _split_map(name, info, validation_fraction, test_split):
  if "train" not in info.splits:
    raise UserInputError(f"Dataset {name!r} has no train split.")
  if not 0 <= validation_fraction < 1:
    raise UserInputError("config.dataset.validation_fraction must be in [0, 1), "
                         f"got {validation_fraction}.")
  splits = {"train": "train"}
  if validation_fraction > 0:
    cut = info.splits["train"].num_examples - round(validation_fraction
                                                    * info.splits["train"].num_examples)
    splits = {"train": f"train[:{cut}]", "validation": f"train[{cut}:]"}
  if test_split in info.splits:
    splits["test"] = test_split
  return splits


def _train_transform(ds: Dataset, example, rng):
  image = example["image"]
  if ds.augment == "pad_crop" and ds.pad > 0:
    image = augment.pad_crop_flip(image, rng, ds.pad)
  elif ds.augment == "inception":
    image = augment.inception_crop_flip(image, rng, ds.image_size)
  return {"image": augment.normalize(image, ds.mean, ds.std),
          "label": np.int32(example["label"])}


def _eval_transform(ds: Dataset, example):
  image = example["image"]
  if ds.augment == "inception":
    image = augment.resize_center_crop(image, round(ds.image_size * 256 / 224), ds.image_size)
  return {"image": augment.normalize(image, ds.mean, ds.std),
          "label": np.int32(example["label"])}


def train_iterator(ds: Dataset, *, global_batch_size: int, seed: int, process_index: int = 0,
                   process_count: int = 1, num_threads: int = 4,
                   num_workers: int = 0) -> grain.DatasetIterator:
  """An endless iterator of this process's share of each global training batch.

  Batches are dicts of `image` (B, H, W, C) float32 and `label` (B,) int32 with
  B = global_batch_size // process_count. `get_state()` / `set_state()` resume it.
  num_workers > 0 decodes and augments in that many worker processes (each reading
  with `num_threads` threads); the batches are the same as with none.
  """
  if global_batch_size % process_count:
    raise UserInputError(f"Global batch size {global_batch_size} is not divisible by the "
                         f"{process_count} processes.")
  source = ds.source("train")
  if len(source) < global_batch_size:
    raise UserInputError(f"The train split of {ds.name} has {len(source)} examples, fewer than "
                         f"one batch ({global_batch_size}).")
  data = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
  data = data[process_index::process_count]
  data = data.random_map(lambda ex, rng: _train_transform(ds, ex, rng), seed=seed + 1)
  data = data.batch(global_batch_size // process_count, drop_remainder=True)
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)
  data = data.to_iter_dataset(options)
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # grain reads its own absl flags (at their defaults).
      flags.FLAGS.mark_as_parsed()
    data = data.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(data)


def eval_batches(ds: Dataset, split: str, *, global_batch_size: int, process_index: int = 0,
                 process_count: int = 1, num_threads: int = 4) -> Iterator[dict]:
  """This process's share of `split`, padded: each example appears once with mask 1.

  Every process yields the same number of batches (needed for the collective
  evaluation step); padding examples are zeros with `mask` 0.
  """
  source = ds.source(split)
  per_process = global_batch_size // process_count
  mine = range(process_index, len(source), process_count)
  num_batches = math.ceil(math.ceil(len(source) / process_count) / per_process)
  padding = {"image": np.zeros(ds.image_shape, np.float32), "label": np.int32(0)}

  def load(i):
    if i < len(mine):
      return dict(_eval_transform(ds, source[mine[i]]), mask=np.float32(1))
    return dict(padding, mask=np.float32(0))

  data = grain.MapDataset.range(num_batches * per_process).map(load).batch(per_process)
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)
  return iter(data.to_iter_dataset(options))
