"""Tasks from the TensorFlow Datasets catalog (TaskSpec.tfds).

Split strings are passed to `tfds.load` exactly as written (the papers' tables use TFDS syntax:
"train[5%:]", "small1", "validation[:50%]"), after checking that they parse, so a typo fails at
load time with the task's name rather than deep inside TFDS.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mtsys import errors
from mtsys.data import sources
from mtsys.data import task_data as td

# Splits whose decoded images fit in this many bytes are cached in memory.
_CACHE_BYTES = 256 << 20


def _check_split(task: str, field: str, split: str) -> None:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if not split:
    raise errors.DataError(
        f"Task '{task}': tfds.{field} is empty; expected a TFDS split such as "
        f"'train' or 'train[5%:]'.")
  try:
    tfds.core.ReadInstruction.from_spec(split)
  except (ValueError, TypeError, AssertionError):
    raise errors.DataError(
        f"Task '{task}': TFDS split '{split}' (tfds.{field}) does not parse; "
        f"expected TFDS split syntax such as 'train', 'train[5%:]' or "
        f"'validation[:50%]' (see https://www.tensorflow.org/datasets/splits)."
        ) from None


def _num_examples(info, split: str, ds: tf.data.Dataset) -> int:
  try:
    return int(info.splits[split].num_examples)
  except (KeyError, ValueError):  # No split metadata (e.g. under tfds.testing.mock_data).
    n = int(ds.cardinality())
    if n >= 0:
      return n
    return int(ds.reduce(np.int64(0), lambda count, _: count + 1))


@sources.register_source("tfds")
def load(task_spec, *, cache_dir: str | None = None) -> td.TaskData:
  """Loads a TfdsSource task; `cache_dir` is unused (TFDS has its own `data_dir`)."""
  del cache_dir
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  task, src, num_classes = task_spec.name, task_spec.tfds, task_spec.num_classes
  if not src.name:
    raise errors.DataError(
        f"Task '{task}': tfds.name is empty; expected a TFDS catalog name such as "
        f"'mnist' or 'cmaterdb/bangla'.")
  split_of = {"train": src.train_split, "validation": src.validation_split,
              "test": src.test_split}
  for name, split in split_of.items():
    _check_split(task, f"{name}_split", split)
  image_key, label_key = src.image_key or "image", src.label_key or "label"
  data_dir = src.data_dir or None

  try:
    builder = tfds.builder(src.name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise errors.DataError(f"Task '{task}': unknown TFDS dataset '{src.name}': {e}") from None
  features = builder.info.features
  for role, key in (("image", image_key), ("label", label_key)):
    if key not in features:
      raise errors.DataError(
          f"Task '{task}': TFDS dataset '{src.name}' has no {role} feature '{key}'; "
          f"expected one of {sorted(features.keys())}.")
  label_feature = features[label_key]
  if isinstance(label_feature, tfds.features.ClassLabel) and (
      label_feature.num_classes != num_classes):
    raise errors.DataError(
        f"Task '{task}': num_classes is {num_classes} but TFDS dataset "
        f"'{src.name}' feature '{label_key}' has {label_feature.num_classes} "
        f"classes.")
  feature_shape = tuple(features[image_key].shape)
  if len(feature_shape) != 3:
    raise errors.DataError(
        f"Task '{task}': TFDS feature '{image_key}' of '{src.name}' has shape "
        f"{feature_shape}; expected an image (H, W, C).")

  def to_pair(example):
    # TFDS labels are only checked as they stream by: reading a split to check it up front
    # would cost a full pass over it.
    label = tf.cast(example[label_key], tf.int64)
    in_range = tf.logical_and(label >= 0, label < num_classes)
    with tf.control_dependencies([tf.debugging.Assert(in_range, [
        f"Task '{task}': label out of range [0, {num_classes}):", label])]):
      return example[image_key], tf.identity(label)

  splits, sizes = {}, {}
  for name, split in split_of.items():
    try:
      ds, info = tfds.load(src.name, split=split, data_dir=data_dir, as_supervised=False,
                           with_info=True)
    except (ValueError, KeyError) as e:
      raise errors.DataError(
          f"Task '{task}': cannot load split '{split}' of TFDS dataset "
          f"'{src.name}': {e}") from e
    sizes[name] = _num_examples(info, split, ds)
    td.check_not_empty(task, name, sizes[name])
    splits[name] = ds.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)

  image_shape = feature_shape
  if None in image_shape:
    image_shape = tuple(next(iter(splits["train"].take(1)))[0].shape)
  for name in splits:
    if sizes[name] * int(np.prod(image_shape)) <= _CACHE_BYTES:
      splits[name] = splits[name].cache()
  names = ()
  if isinstance(label_feature, tfds.features.ClassLabel) and label_feature.names:
    names = tuple(label_feature.names)
  return td.TaskData(name=task, num_classes=num_classes, channels=int(feature_shape[-1]),
                     image_shape=image_shape, splits=splits, sizes=sizes, class_names=names)
