"""Offline builders: IDX files, .npz, image folders -> array_record datasets read back."""

import os

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from east_jax.data import builders
from east_jax.errors import UserInputError
from tests.conftest import NUM_TEST, NUM_TRAIN, write_idx


def _read_all(path, split):
  source = tfds.builder_from_directory(path).as_data_source(split=split)
  images = np.stack([source[i]["image"] for i in range(len(source))])
  labels = np.array([source[i]["label"] for i in range(len(source))])
  return images, labels


def _sorted_pairs(images, labels):
  keys = [img.tobytes() + bytes([int(lab)]) for img, lab in zip(images, labels)]
  return sorted(keys)


def test_read_idx_round_trip(tmp_path):
  array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  write_idx(tmp_path / "a.gz", array)
  np.testing.assert_array_equal(builders.read_idx(str(tmp_path / "a.gz")), array)


def test_read_idx_rejects_other_files(tmp_path):
  (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04\x05")
  with pytest.raises(UserInputError, match="not an unsigned-byte IDX"):
    builders.read_idx(str(tmp_path / "bad"))


def test_fashion_mnist_from_idx_holds_exactly_the_idx_examples(data_dir, fmnist_arrays):
  path = os.path.join(data_dir, "fashion_mnist", "3.0.1")
  info = tfds.builder_from_directory(path).info
  assert info.splits["train"].num_examples == NUM_TRAIN
  assert info.splits["test"].num_examples == NUM_TEST
  assert info.features["label"].names[9] == "Ankle boot"
  for split in ("train", "test"):
    images, labels = _read_all(path, split)
    assert images.shape[1:] == (28, 28, 1) and images.dtype == np.uint8
    want_images, want_labels = fmnist_arrays[split]
    assert _sorted_pairs(images[..., 0], labels) == _sorted_pairs(want_images, want_labels)


def test_missing_idx_files_say_how_to_install(tmp_path):
  with pytest.raises(UserInputError, match="apt-get install dataset-fashion-mnist"):
    builders.prepare_fashion_mnist_idx(str(tmp_path / "tfds"), str(tmp_path / "nowhere"))


def test_npz_builder(tmp_path, fmnist_arrays):
  train_x, train_y = fmnist_arrays["train"]
  test_x, test_y = fmnist_arrays["test"]
  npz = tmp_path / "mine.npz"
  np.savez(npz, train_images=train_x[:50], train_labels=train_y[:50],
           test_images=test_x[:20], test_labels=test_y[:20])
  path = builders.prepare_npz("my_fmnist", str(npz), str(tmp_path / "tfds"))
  images, labels = _read_all(path, "train")
  assert _sorted_pairs(images[..., 0], labels) == _sorted_pairs(train_x[:50], train_y[:50])
  assert tfds.builder_from_directory(path).info.splits["test"].num_examples == 20


def test_npz_builder_rejects_bad_arrays(tmp_path):
  npz = tmp_path / "bad.npz"
  np.savez(npz, train_images=np.zeros((4, 8, 8), np.float32), train_labels=np.zeros(4))
  with pytest.raises(UserInputError, match="must be uint8"):
    builders.prepare_npz("bad_data", str(npz), str(tmp_path / "tfds"))
  with pytest.raises(UserInputError, match="lower_snake_case"):
    builders.prepare_npz("Bad-Name", str(npz), str(tmp_path / "tfds"))


def test_image_folder_builder(tmp_path, fmnist_arrays):
  images, labels = fmnist_arrays["train"]
  root = tmp_path / "folder"
  for i in range(30):
    class_dir = root / "train" / f"class_{labels[i]}"
    class_dir.mkdir(parents=True, exist_ok=True)
    rgb = np.repeat(images[i][..., None], 3, axis=-1)
    PIL.Image.fromarray(rgb).save(class_dir / f"{i}.png")
  path = builders.prepare_image_folder("my_folder", str(root), str(tmp_path / "tfds"))
  builder = tfds.builder_from_directory(path)
  class_names = builder.info.features["label"].names
  assert class_names == sorted({f"class_{y}" for y in labels[:30]})
  got_images, got_labels = _read_all(path, "train")
  want = _sorted_pairs(np.repeat(images[:30][..., None], 3, -1),
                       [class_names.index(f"class_{y}") for y in labels[:30]])
  assert _sorted_pairs(got_images, got_labels) == want
