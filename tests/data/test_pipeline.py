"""The grain pipeline on a real, locally prepared Fashion-MNIST subset."""

import collections

import numpy as np
import pytest

from east_jax.data import pipeline
from east_jax.errors import UserInputError
from tests.conftest import NUM_TEST, NUM_TRAIN
from tests.helpers import tiny_config


def _dataset(data_dir, **overrides):
  return pipeline.load_dataset(tiny_config(data_dir, **overrides).dataset)


def _batches(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_splits_hold_out_the_last_tenth_of_train(data_dir):
  ds = _dataset(data_dir)
  assert ds.num_examples("train") == NUM_TRAIN - NUM_TRAIN // 10
  assert ds.num_examples("validation") == NUM_TRAIN // 10
  assert ds.num_examples("test") == NUM_TEST
  whole = _dataset(data_dir, **{"dataset.validation_fraction": 0.0})
  assert whole.num_examples("train") == NUM_TRAIN and "validation" not in whole.splits
  held_out = whole.source("train")[NUM_TRAIN - 1]["image"]
  np.testing.assert_array_equal(ds.source("validation")[NUM_TRAIN // 10 - 1]["image"], held_out)


def test_train_batches_are_normalised_and_typed(data_dir):
  ds = _dataset(data_dir)
  batch = next(pipeline.train_iterator(ds, global_batch_size=32, seed=0))
  assert batch["image"].shape == (32, 28, 28, 1) and batch["image"].dtype == np.float32
  assert batch["label"].dtype == np.int32 and set(batch["label"]) <= set(range(10))
  assert abs(float(batch["image"].mean())) < 0.5 and 0.5 < float(batch["image"].std()) < 1.5


def test_order_is_deterministic_for_a_seed(data_dir):
  ds = _dataset(data_dir)
  a = _batches(pipeline.train_iterator(ds, global_batch_size=32, seed=3), 20)
  b = _batches(pipeline.train_iterator(ds, global_batch_size=32, seed=3), 20)
  c = _batches(pipeline.train_iterator(ds, global_batch_size=32, seed=4), 20)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  assert any(not np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))


def test_each_epoch_visits_every_example_once(data_dir):
  ds = _dataset(data_dir, **{"dataset.augment": "none"})
  n = ds.num_examples("train")  # 576 = 18 batches of 32.
  batches = _batches(pipeline.train_iterator(ds, global_batch_size=32, seed=0), 2 * n // 32)
  images = np.concatenate([b["image"] for b in batches]).reshape(2 * n, -1)
  source = ds.source("train")
  want = sorted(pipeline._eval_transform(ds, source[i])["image"].tobytes() for i in range(n))
  for epoch in range(2):
    assert sorted(x.tobytes() for x in images[epoch * n:(epoch + 1) * n]) == want
  assert not np.array_equal(images[:n], images[n:])  # Reshuffled each epoch.


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_shards_are_disjoint_and_make_up_the_global_batch(data_dir, process_count):
  ds = _dataset(data_dir)
  single = _batches(pipeline.train_iterator(ds, global_batch_size=32, seed=1), 5)
  shards = [_batches(pipeline.train_iterator(ds, global_batch_size=32, seed=1, process_index=p,
                                             process_count=process_count), 5)
            for p in range(process_count)]
  for step in range(5):
    parts = [shards[p][step] for p in range(process_count)]
    assert all(len(part["label"]) == 32 // process_count for part in parts)
    merged = sorted(x.tobytes() for part in parts for x in part["image"])
    assert len(set(merged)) == len(merged)  # Disjoint.
    assert merged == sorted(x.tobytes() for x in single[step]["image"])  # Complete.


def test_iterator_state_resumes_with_the_same_batches(data_dir):
  ds = _dataset(data_dir)
  it = pipeline.train_iterator(ds, global_batch_size=32, seed=0)
  _batches(it, 7)
  state = it.get_state()
  expected = _batches(it, 4)
  resumed = pipeline.train_iterator(ds, global_batch_size=32, seed=0)
  resumed.set_state(state)
  for x, y in zip(expected, _batches(resumed, 4)):
    np.testing.assert_array_equal(x["image"], y["image"])


@pytest.mark.parametrize("process_count,batch", [(1, 64), (1, 200), (2, 64), (4, 48)])
def test_eval_scores_every_example_exactly_once(data_dir, process_count, batch):
  ds = _dataset(data_dir)
  source = ds.source("test")
  seen = collections.Counter()
  lengths = set()
  for p in range(process_count):
    batches = list(pipeline.eval_batches(ds, "test", global_batch_size=batch, process_index=p,
                                         process_count=process_count))
    lengths.add(len(batches))
    for b in batches:
      assert b["image"].shape[0] == batch // process_count
      for image, mask in zip(b["image"], b["mask"]):
        if mask:
          seen[image.tobytes()] += 1
        else:
          assert not image.any()
  assert len(lengths) == 1  # Same number of batches on every process.
  want = collections.Counter(pipeline._eval_transform(ds, source[i])["image"].tobytes()
                             for i in range(len(source)))
  assert seen == want and sum(seen.values()) == NUM_TEST


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(UserInputError, match="not prepared.*python -m east_jax.data.prepare cifar10"):
    _dataset(str(tmp_path), **{"dataset.name": "cifar10"})


def test_unknown_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(UserInputError, match="Unknown dataset 'no_such_data'.*prepare npz"):
    _dataset(str(tmp_path), **{"dataset.name": "no_such_data"})


def test_worker_processes_give_the_same_batches_and_resume_exactly(data_dir):
  ds = _dataset(data_dir)
  expected = _batches(pipeline.train_iterator(ds, global_batch_size=32, seed=0), 7)
  it = pipeline.train_iterator(ds, global_batch_size=32, seed=0, num_threads=1, num_workers=2)
  first = _batches(it, 4)
  state = it.get_state()
  it.close()
  resumed = pipeline.train_iterator(ds, global_batch_size=32, seed=0, num_threads=1,
                                    num_workers=2)
  resumed.set_state(state)
  for x, y in zip(expected, first + _batches(resumed, 3), strict=True):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  resumed.close()
