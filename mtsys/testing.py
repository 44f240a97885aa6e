"""Small helpers for tests of code built on mtsys (like `tfds.testing`): data that needs no
download and that a tiny model learns in a few steps."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf


def write_band_npz(directory: str, name: str, seed: int, *, classes: int = 3, n: int = 150,
                   size: int = 8) -> str:
  """Writes `<directory>/<name>.npz` (uint8 `image` [n, size, size], int `label` [n]) and
  returns its path: dark noise with a bright 3-row band whose position is the class."""
  if 2 * (classes - 1) + 3 > size:
    raise ValueError(f"{classes} classes need bands of 3 rows 2 apart: size >= "
                     f"{2 * (classes - 1) + 3}, got size={size}.")
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, classes, n)
  images = rng.integers(0, 50, (n, size, size), dtype=np.uint8)
  for i, c in enumerate(labels):
    images[i, c * 2:c * 2 + 3, :] += 200
  path = os.path.join(directory, f"{name}.npz")
  np.savez(path, image=images, label=labels)
  return path


def corrupt_file(path: str, offset: int = -10) -> None:
  """Flips every bit of the byte at `offset` (negative counts from the end) of the file at
  `path`, through `tf.io.gfile` so any TensorFlow filesystem (e.g. ram://) works: enough to
  break a checksum while keeping the file's size."""
  with tf.io.gfile.GFile(path, "rb") as f:
    data = bytearray(f.read())
  data[offset] ^= 0xFF
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(bytes(data))


def band_tasks_textproto(directory: str, names, *, classes: int = 3) -> str:
  """`task { ... }` entries of a config text proto for `write_band_npz` files `<name>.npz` in
  `directory` (a fifth each for validation and test)."""
  return "".join(
      f'task {{ name: "{name}" num_classes: {classes} files {{ npz: "{directory}/{name}.npz" '
      "validation_fraction: 0.2 test_fraction: 0.2 } }\n" for name in names)
