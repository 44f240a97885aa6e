"""In-graph input handling of the exported signatures: decoding, channels, resizing.

Every path was trained and evaluated on images that `mtsys.data.preprocess` turned into float
[S, S, C] in [0, 1]; the signatures call that same function, so a served task sees exactly what
evaluation saw. What serving adds is only what clients send that training never had: encoded
bytes (decoded here like image-folder training data: alpha dropped), and images with another
channel count than the root reads (1 <-> 3, as the data loaders convert).
"""

from __future__ import annotations

import tensorflow as tf

from mtsys import data as mdata


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
  """uint8 [..., H, W, c] with a run-time c in 1..4 -> [..., H, W, channels].

  Alpha is dropped (RGBA -> RGB, gray+alpha -> gray) as the image-folder loader does; then gray
  and colour convert as `mtsys.data.convert_channels` does for training data.
  """
  have = tf.shape(image)[-1]
  check = tf.debugging.Assert(
      tf.logical_and(have >= 1, have <= 4),
      ["Expected images with 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels; got", have])
  with tf.control_dependencies([check]):
    image = tf.identity(image)

  def first(k):
    part = image[..., :k]
    part.set_shape(image.shape[:-1].concatenate([k]))
    return mdata.convert_channels(part, channels)

  out = tf.cond(have >= 3, lambda: first(3), lambda: first(1))
  out.set_shape(image.shape[:-1].concatenate([channels]))
  return out


def pixels(images: tf.Tensor, image_size: int, channels: int) -> tf.Tensor:
  """uint8 [B, H, W, c] (any H, W; c in 1..4) -> float32 [B, S, S, channels] as in evaluation."""
  return mdata.preprocess(to_channels(images, channels), image_size, channels)


def decode(image_bytes: tf.Tensor, image_size: int, channels: int) -> tf.Tensor:
  """Encoded images (PNG, JPEG, GIF, BMP) string [B] -> float32 [B, S, S, channels].

  Each image is decoded and resized on its own, so one batch may mix sizes and formats. Bytes
  that do not decode fail the request with the decoder's INVALID_ARGUMENT.
  """

  def one(data):
    image = tf.io.decode_image(data, channels=0, expand_animations=False)
    return mdata.preprocess(to_channels(image, channels), image_size, channels)

  return tf.map_fn(one, image_bytes,
                   fn_output_signature=tf.TensorSpec([image_size, image_size, channels],
                                                     tf.float32))


def parse_examples(serialized: tf.Tensor) -> tf.Tensor:
  """Serialized tf.Examples string [B] -> their `image/encoded` bytes [B] (TF Serving Classify)."""
  features = tf.io.parse_example(
      serialized, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})
  return features["image/encoded"]
