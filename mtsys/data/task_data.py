"""TaskData, the loaded form of a TaskSpec, and the checks every source shares.

Bad data must fail when a task is loaded, not minutes into training, and the message must name
the task and the bad value; these helpers are what the sources use for that.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
import tensorflow as tf

from mtsys import errors

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class TaskData:
  """A task's data, ready for `make_dataset`.

  Attributes:
    name: The task's name.
    num_classes: Labels lie in [0, num_classes).
    channels: Channels of the images the splits yield (1 or 3).
    image_shape: (H, W, C) of the images; for sources with images of varying size (some TFDS
      datasets) the shape of the first training example.
    splits: "train", "validation", "test" -> tf.data.Dataset of (uint8 image [H, W, C], int64
      label []).
    sizes: Split -> number of examples.
    class_names: The name of each class by label index, where the source knows them (folder
      names, TFDS ClassLabel names, built-in characters); () otherwise. Exports serve them.
  """

  name: str
  num_classes: int
  channels: int
  image_shape: tuple
  splits: Mapping[str, tf.data.Dataset]
  sizes: Mapping[str, int]
  class_names: tuple = ()


def check_image_size(task_name: str, image_size: int, patch_size: int) -> None:
  """Raises ValueError unless `image_size` is a positive multiple of `patch_size`."""
  if patch_size <= 0:
    raise errors.DataError(
        f"Task '{task_name}': patch size must be positive. Received: "
        f"patch_size={patch_size}")
  if image_size <= 0 or image_size % patch_size:
    below = max(patch_size, image_size // patch_size * patch_size)
    nearest = sorted({below, below + patch_size} if image_size > patch_size else {patch_size})
    raise errors.DataError(
        f"Task '{task_name}': image size {image_size} is not a multiple of the patch size "
        f"{patch_size}; expected one of [{patch_size}, {2 * patch_size}, ...] (nearest: "
        f"{' or '.join(map(str, nearest))}).")


def check_spec_basics(task_spec) -> None:
  """Checks what every source needs: a name, num_classes > 0, channels in {0, 1, 3}."""
  if not task_spec.name:
    raise errors.DataError("A task has an empty name; every TaskSpec needs a unique `name`.")
  if task_spec.num_classes <= 0:
    raise errors.DataError(
        f"Task '{task_spec.name}': num_classes must be positive. Received: "
        f"num_classes={task_spec.num_classes}")
  if task_spec.channels not in (0, 1, 3):
    raise errors.DataError(
        f"Task '{task_spec.name}': channels must be 0 (from the data), 1 or 3. "
        f"Received: channels={task_spec.channels}")


def check_arrays(task: str, images, labels, num_classes: int, where: str) -> tuple:
  """Validates an (images, labels) pair and returns it as (uint8 [N,H,W,C], int64 [N]).

  Args:
    task: Task name, for messages.
    images: Array (N, H, W) or (N, H, W, C) of uint8 with C in {1, 3}.
    labels: Integer array (N,).
    num_classes: Labels must lie in [0, num_classes).
    where: What the arrays are (e.g. "'/data/digits.npz' (split 'train')"), for messages.
  """
  images = np.asarray(images)
  labels = np.asarray(labels)
  if images.dtype != np.uint8:
    raise errors.DataError(
        f"Task '{task}': images in {where} must be uint8 (0-255); got dtype "
        f"{images.dtype}.")
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise errors.DataError(
        f"Task '{task}': images in {where} must have shape (N, H, W) or (N, H, W, C) "
        f"with C in {{1, 3}}; got shape {tuple(np.asarray(images).shape)}.")
  if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
    raise errors.DataError(
        f"Task '{task}': labels in {where} must have shape ({images.shape[0]},) to "
        f"match the {images.shape[0]} images; got shape {labels.shape}.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise errors.DataError(
        f"Task '{task}': labels in {where} must be integers; got dtype "
        f"{labels.dtype}.")
  check_labels(task, labels, num_classes, where)
  return images, labels.astype(np.int64)


def check_labels(task: str, labels: np.ndarray, num_classes: int, where: str) -> None:
  bad = labels[(labels < 0) | (labels >= num_classes)]
  if bad.size:
    raise errors.DataError(
        f"Task '{task}': label {int(bad[0])} in {where} is out of range "
        f"[0, {num_classes}) (num_classes={num_classes}).")


def check_not_empty(task: str, split: str, size: int) -> None:
  if size <= 0:
    raise errors.DataError(
        f"Task '{task}': split '{split}' is empty; every task needs train, "
        f"validation and test examples.")


def convert_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
  """uint8 [..., H, W, C] -> [..., H, W, channels]: 1->3 tiles, 3->1 takes the luma."""
  have = image.shape[-1]
  if have == channels:
    return image
  if have == 1 and channels == 3:
    return tf.tile(image, [1] * (image.shape.rank - 1) + [3])
  if have == 3 and channels == 1:
    return tf.image.rgb_to_grayscale(image)
  raise errors.DataError(
      f"Cannot convert images with {have} channels to {channels}; expected 1 or 3.")


def from_arrays(images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
  """An in-memory dataset of (uint8 image, int64 label) pairs."""
  return tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))
