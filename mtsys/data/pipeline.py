"""make_dataset: a task split -> batches of float images in [0, 1] and int64 labels.

Training batches follow muNet's input pipeline (its `Task.get_ds`): an inception-style random crop
(area in [crop_area_min, 1], aspect in [crop_aspect_min, 1/crop_aspect_min]), a random left/right
flip, random brightness (additive delta), contrast, saturation and hue (factors 1 +- delta), then
a bilinear resize and a clip. Every random op is stateless and keyed by (seed, example index), so
a seed fixes the batches exactly, however many threads the map uses. That is also why the
augmentation is not built from Model Garden's `preprocess_ops.random_*`: those draw from
op-seeded stateful kernels, whose sequence depends on the order parallel map calls run them; we
use TF's stateless image ops, the crop being `random_crop_image`'s (and muNet's) bounding-box
sampling done with `stateless_sample_distorted_bounding_box`.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
import tensorflow as tf

from mtsys import errors
from mtsys.config import hparams as hp
from mtsys.data import task_data as td

_AUGMENT_KEYS = ("crop", "crop_area_min", "crop_aspect_min", "flip", "brightness_delta",
                 "contrast_delta", "saturation_delta", "hue_delta")
# The shuffle buffer holds the whole split when it fits in this many bytes (all of chars-lite and
# the small TFDS tasks), else as many examples as fit, and at least _MIN_SHUFFLE.
_SHUFFLE_BYTES = 256 << 20
_MIN_SHUFFLE = 1_000


def augmentation_params(hparams: Mapping[str, object] | None) -> dict:
  """The augmentation hyperparameters, with mtsys.config.hparams defaults for missing ones."""
  hparams = hparams or {}
  params = {k: hparams.get(k, hp.KNOWN[k].default) for k in _AUGMENT_KEYS}
  for k in _AUGMENT_KEYS:
    params[k] = bool(params[k]) if hp.KNOWN[k].kind == hp.FLAG else float(params[k])
  if not 0 < params["crop_area_min"] <= 1:
    raise errors.ConfigError(
        f"Invalid value for hyperparameter 'crop_area_min'. Expected a value in "
        f"(0, 1]. Received: crop_area_min={params['crop_area_min']}")
  if not 0 < params["crop_aspect_min"] <= 1:
    raise errors.ConfigError(
        f"Invalid value for hyperparameter 'crop_aspect_min'. Expected a value in "
        f"(0, 1]. Received: crop_aspect_min={params['crop_aspect_min']}")
  for k in _AUGMENT_KEYS[4:]:
    if params[k] < 0:
      raise errors.ConfigError(
          f"Invalid value for hyperparameter '{k}'. Expected a value >= 0. "
          f"Received: {k}={params[k]}")
  return params


def augment(image: tf.Tensor, seed: tf.Tensor, params: Mapping[str, object]) -> tf.Tensor:
  """Random crop, flip and colour jitter of one float image [H, W, C] in [0, 1].

  Args:
    image: float32 [H, W, C] with C in {1, 3}; saturation and hue are skipped when C == 1.
    seed: int [2], the stateless seed of this example.
    params: `augmentation_params(...)`.
  """
  seeds = tf.unstack(tf.random.experimental.stateless_split(seed, num=6))
  channels = image.shape[-1]
  if params["crop"] and params["crop_area_min"] < 1.0:
    aspect = params["crop_aspect_min"]
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([0, 0, 4], tf.float32), seed=seeds[0],
        min_object_covered=0.0, aspect_ratio_range=(aspect, 1.0 / aspect),
        area_range=(params["crop_area_min"], 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, size)
    image.set_shape([None, None, channels])
  if params["flip"]:
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
  if params["brightness_delta"] > 0:
    image = tf.image.stateless_random_brightness(image, params["brightness_delta"], seeds[2])
  if params["contrast_delta"] > 0:
    d = params["contrast_delta"]
    image = tf.image.stateless_random_contrast(image, 1 - d, 1 + d, seeds[3])
  if channels == 3 and params["saturation_delta"] > 0:
    d = params["saturation_delta"]
    image = tf.image.stateless_random_saturation(image, max(0.0, 1 - d), 1 + d, seeds[4])
  if channels == 3 and params["hue_delta"] > 0:
    image = tf.image.stateless_random_hue(image, min(0.5, params["hue_delta"]), seeds[5])
  return image


def preprocess(image: tf.Tensor, image_size: int, channels: int) -> tf.Tensor:
  """uint8 image(s) [..., H, W, C] -> float32 [..., S, S, channels] in [0, 1], unaugmented.

  What evaluation feeds a path, and what an export's signatures compute in-graph: one function,
  so served predictions equal the library's on the same pixels. Works on one image or a batch
  (the resize treats every image on its own, so the two give the same bits).
  """
  return _resize(_to_float(image, channels), image_size)


def _resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
  # antialias only matters when shrinking (e.g. omniglot's 105 px to 32): it keeps thin strokes.
  image = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
  return tf.clip_by_value(image, 0.0, 1.0)


def _to_float(image: tf.Tensor, channels: int) -> tf.Tensor:
  return tf.image.convert_image_dtype(td.convert_channels(image, channels), tf.float32)


def _shuffle_buffer(task_data: td.TaskData, split: str) -> int:
  image_bytes = max(1, int(np.prod([d or 1 for d in task_data.image_shape])))
  fits = max(_MIN_SHUFFLE, _SHUFFLE_BYTES // image_bytes)
  return max(1, min(task_data.sizes.get(split, fits), fits))


def make_dataset(task_data: td.TaskData, split: str, *, batch_size: int, image_size: int,
                 channels: int, hparams: Mapping[str, object] | None, training: bool,
                 seed: int | None, repeat: bool = False,
                 drop_remainder: bool = False) -> tf.data.Dataset:
  """Batches of one split of a task.

  Args:
    task_data: From `load_task`.
    split: "train", "validation" or "test".
    batch_size: Examples per batch.
    image_size: Images are resized to image_size x image_size.
    channels: Channels the model reads (1 or 3); images are converted (1->3 tiles, 3->1 luma).
    hparams: A path's hyperparameters; only the augmentation ones are read, missing ones take
      their defaults. Ignored unless `training`.
    training: Shuffle and augment (True) or resize only, in order (False).
    seed: Fixes the shuffle order and the augmentation; None draws a fresh one.
    repeat: Repeat forever (each epoch reshuffled and re-augmented).
    drop_remainder: Drop a last, smaller batch.

  Returns:
    A dataset of (float32 [B, image_size, image_size, channels] in [0, 1], int64 [B]).
  """
  if split not in task_data.splits:
    raise ValueError(f"Task '{task_data.name}': unknown split '{split}'; expected one of "
                     f"{sorted(task_data.splits)}.")
  for name, value in (("batch_size", batch_size), ("image_size", image_size)):
    if int(value) <= 0:
      raise ValueError(f"Task '{task_data.name}': {name} must be positive. Received: "
                       f"{name}={value}")
  if channels not in (1, 3):
    raise ValueError(f"Task '{task_data.name}': channels must be 1 or 3. Received: "
                     f"channels={channels}")
  ds = task_data.splits[split]
  if training:
    params = augmentation_params(hparams)
    if seed is None:
      seed = int.from_bytes(os.urandom(8), "little")
    shuffle_seed, augment_seed = np.random.SeedSequence(seed).generate_state(2, np.uint32)
    ds = ds.shuffle(_shuffle_buffer(task_data, split), seed=int(shuffle_seed),
                    reshuffle_each_iteration=True)
    if repeat:
      ds = ds.repeat()
    base = tf.constant([int(augment_seed), 0], tf.int64)

    def train_map(index, example):
      image, label = example
      key = tf.random.experimental.stateless_fold_in(base, index)
      image = augment(_to_float(image, channels), key, params)
      return _resize(image, image_size), label

    ds = ds.enumerate().map(train_map, num_parallel_calls=tf.data.AUTOTUNE)
  else:
    if repeat:
      ds = ds.repeat()
    ds = ds.map(lambda image, label: (preprocess(image, image_size, channels), label),
                num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder,
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE)
