"""make_dataset: shapes, value range, channel conversion, seeded augmentation, errors."""

import numpy as np
import pytest
import tensorflow as tf

from mtsys.data import TaskData
from mtsys.data import augmentation_params
from mtsys.data import make_dataset
from mtsys.config import hparams as hp

OFF = {"crop": False, "flip": False}


def toy_task(channels=1, n=20, size=(12, 10)):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n,) + size + (channels,), dtype=np.uint8)
  labels = np.arange(n, dtype=np.int64) % 5
  splits = {s: tf.data.Dataset.from_tensor_slices((images, labels))
            for s in ("train", "validation", "test")}
  return TaskData(name="toy", num_classes=5, channels=channels, image_shape=size + (channels,),
                  splits=splits, sizes={s: n for s in splits}), images, labels


def batches(ds):
  return [(x.numpy(), y.numpy()) for x, y in ds]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("stored, channels", [(1, 1), (1, 3), (3, 1), (3, 3)])
def test_shapes_dtypes_and_range(training, stored, channels):
  data, _, _ = toy_task(channels=stored)
  hparams = {"brightness_delta": 0.2, "contrast_delta": 0.2, "saturation_delta": 0.2,
             "hue_delta": 0.2}
  out = batches(make_dataset(data, "train", batch_size=8, image_size=16, channels=channels,
                             hparams=hparams, training=training, seed=0))
  assert [x.shape for x, _ in out] == [(8, 16, 16, channels)] * 2 + [(4, 16, 16, channels)]
  for x, y in out:
    assert x.dtype == np.float32 and y.dtype == np.int64 and y.shape == (len(x),)
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_evaluation_is_an_ordered_resize():
  data, images, labels = toy_task(size=(16, 16))
  out = batches(make_dataset(data, "validation", batch_size=7, image_size=16, channels=1,
                             hparams=None, training=False, seed=None))
  x = np.concatenate([b[0] for b in out])
  np.testing.assert_array_equal(np.concatenate([b[1] for b in out]), labels)
  np.testing.assert_allclose(x, images / 255.0, atol=1e-6)


def test_one_channel_is_tiled_to_three():
  data, images, _ = toy_task(size=(16, 16))
  x, _ = next(iter(make_dataset(data, "test", batch_size=20, image_size=16, channels=3,
                                hparams=None, training=False, seed=None)))
  for c in range(3):
    np.testing.assert_allclose(x[..., c], images[..., 0] / 255.0, atol=1e-6)


def test_three_channels_become_luma():
  data, images, _ = toy_task(channels=3, size=(16, 16))
  x, _ = next(iter(make_dataset(data, "test", batch_size=20, image_size=16, channels=1,
                                hparams=None, training=False, seed=None)))
  expected = tf.image.convert_image_dtype(tf.image.rgb_to_grayscale(images), tf.float32)
  np.testing.assert_allclose(x, expected, atol=1e-6)


def train_run(data, seed, hparams=None, take=6):
  ds = make_dataset(data, "train", batch_size=8, image_size=16, channels=3, hparams=hparams,
                    training=True, seed=seed, repeat=True, drop_remainder=True)
  return batches(ds.take(take))


def test_training_is_reproducible_for_a_seed_and_varies_across_seeds_and_epochs():
  data, _, _ = toy_task()
  hparams = {"brightness_delta": 0.1, "contrast_delta": 0.1}
  a, b, c = train_run(data, 7, hparams), train_run(data, 7, hparams), train_run(data, 8, hparams)
  for (xa, ya), (xb, yb) in zip(a, b):
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
  assert not np.array_equal(a[0][0], c[0][0])
  # Repeated epochs are reshuffled: 20 examples, 8 per batch -> epoch 2 starts in batch 3.
  first_epoch = np.concatenate([y for _, y in a])[:20]
  second_epoch = np.concatenate([y for _, y in a])[20:40]
  assert sorted(first_epoch) == sorted(second_epoch)
  assert list(first_epoch) != list(second_epoch)  # the same examples, in another order


def test_without_augmentation_training_only_shuffles():
  data, images, _ = toy_task(size=(16, 16))
  out = train_run(data, 0, {"crop": False, "flip": False}, take=2)
  x = np.concatenate([b[0] for b in out])[..., 0]
  got = sorted(map(bytes, np.rint(x * 255).astype(np.uint8)))
  assert set(got) <= set(map(bytes, images[..., 0]))
  assert not np.array_equal(np.rint(x[:16] * 255), images[:16, ..., 0])  # shuffled


def test_crop_and_flip_change_images():
  data, images, _ = toy_task(size=(16, 16))
  x = np.concatenate([b[0] for b in train_run(data, 0, {"crop_area_min": 0.1}, take=2)])
  originals = set(map(bytes, images[..., 0]))
  changed = [bytes(np.rint(i[..., 0] * 255).astype(np.uint8)) not in originals for i in x]
  assert sum(changed) > len(x) // 2


def test_missing_hparams_take_their_defaults():
  params = augmentation_params({"flip": False, "learning_rate": 0.1})
  assert params["flip"] is False
  assert params["crop"] is hp.KNOWN["crop"].default
  assert params["crop_area_min"] == hp.KNOWN["crop_area_min"].default
  assert augmentation_params(None) == augmentation_params({})


def test_bad_arguments():
  data, _, _ = toy_task()
  kwargs = dict(batch_size=4, image_size=16, channels=1, hparams=None, training=False, seed=0)
  with pytest.raises(ValueError, match=r"^Task 'toy': unknown split 'dev'; expected one of "
                     r"\['test', 'train', 'validation'\]\.$"):
    make_dataset(data, "dev", **kwargs)
  with pytest.raises(ValueError, match=r"^Task 'toy': channels must be 1 or 3\. Received: "
                     r"channels=2$"):
    make_dataset(data, "test", **{**kwargs, "channels": 2})
  with pytest.raises(ValueError, match=r"^Task 'toy': batch_size must be positive"):
    make_dataset(data, "test", **{**kwargs, "batch_size": 0})
  with pytest.raises(ValueError, match=r"Invalid value for hyperparameter 'crop_area_min'\. "
                     r"Expected a value in \(0, 1\]\. Received: crop_area_min=0\.0"):
    make_dataset(data, "train", **{**kwargs, "training": True, "hparams": {"crop_area_min": 0}})
