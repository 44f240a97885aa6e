"""Patch embedding: cuts an image into non-overlapping patches and projects each to a token."""

import math
import numbers

import keras
from keras import ops

from mtsys.components import _base
from mtsys.components import registry


def _check_per_channel(name, values):
  """None, or a non-empty sequence of finite numbers as a tuple of floats."""
  if values is None:
    return None
  try:
    items = tuple(values)
  except TypeError:
    items = None
  if not items or any(
      isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v)
      for v in items
  ):
    raise ValueError(
        f"Invalid value received for argument `{name}`. Expected None or a non-empty list "
        f"of finite floats, one per channel. Received: {name}={values!r}"
    )
  return tuple(float(v) for v in items)


@keras.saving.register_keras_serializable(package="mtsys")
@registry.register("patch_embedding")
class PatchEmbedding(_base.Component):
  """Conv2D with kernel = stride = `patch_size` and valid padding, flattened to tokens.

  Maps images `(B, H, W, C)` to tokens `(B, (H/p) * (W/p), hidden_size)`, row-major over the
  patch grid. H and W must be multiples of `patch_size`: valid padding would otherwise silently
  drop the image's last rows/columns. The kernel `conv/kernel` has the layout of ViT's
  `embedding/kernel` (p, p, C, D), so pretrained weights load without transposes.

  A root imported from a checkpoint whose model expects other inputs than mtsys's pixels in
  [0, 1] (the original ViT: [-1, 1]) holds that normalisation here, the first component of
  every path, so training, evaluation and export all apply it: the conv sees
  `images * input_scale + input_offset`, per channel. `get_config()` holds the two only when
  set, so older configs are unchanged and load without them.

  Args:
    patch_size: side of the square patches, in pixels.
    hidden_size: token width D.
    seed: optional int seeding the LeCun-normal kernel initializer.
    input_scale: None (1) or one factor per channel applied to the images before the conv.
    input_offset: None (0) or one value per channel added after the scaling.
  """

  def __init__(self, patch_size, hidden_size, seed=None, input_scale=None, input_offset=None,
               **kwargs):
    super().__init__(**kwargs)
    self.input_scale = _check_per_channel("input_scale", input_scale)
    self.input_offset = _check_per_channel("input_offset", input_offset)
    self.patch_size = _base.check_positive_int("patch_size", patch_size)
    self.hidden_size = _base.check_positive_int("hidden_size", hidden_size)
    self.seed = _base.check_seed(seed)
    self.conv = keras.layers.Conv2D(
        self.hidden_size,
        kernel_size=self.patch_size,
        strides=self.patch_size,
        padding="valid",
        kernel_initializer=keras.initializers.LecunNormal(seed=self.seed),
        dtype=self.dtype_policy,
        name="conv",
    )

  def _check_image_shape(self, shape):
    shape = tuple(shape)
    if len(shape) != 4 or shape[3] is None:
      raise ValueError(
          f"Layer '{self.name}' expects images of shape (batch, height, width, channels) "
          f"with known channels. Received: shape={shape}"
      )
    for size in shape[1:3]:
      if size is not None and size % self.patch_size:
        raise ValueError(
            f"Layer '{self.name}' needs image height and width that are multiples of "
            f"patch_size={self.patch_size}. Received: images of shape {shape}"
        )
    for name, values in (("input_scale", self.input_scale), ("input_offset", self.input_offset)):
      if values is not None and len(values) != shape[3]:
        raise ValueError(
            f"Layer '{self.name}' has {name} for {len(values)} channels. "
            f"Received: images of shape {shape}"
        )

  def build(self, input_shape):
    self._check_image_shape(input_shape)
    self.conv.build(input_shape)
    self._propagate_trainable()

  def call(self, images):
    # A layer built for one size may be shared by a path with another: check again.
    self._check_image_shape(images.shape)
    if self.input_scale is not None:
      images = images * ops.convert_to_tensor(self.input_scale, dtype=images.dtype)
    if self.input_offset is not None:
      images = images + ops.convert_to_tensor(self.input_offset, dtype=images.dtype)
    x = self.conv(images)
    shape = ops.shape(x)
    return ops.reshape(x, (-1, shape[1] * shape[2], self.hidden_size))

  def compute_output_shape(self, input_shape):
    batch, height, width = input_shape[:3]
    if height is None or width is None:
      return (batch, None, self.hidden_size)
    num_patches = (height // self.patch_size) * (width // self.patch_size)
    return (batch, num_patches, self.hidden_size)

  def flops_per_example(self, input_shape):
    """2 * num_patches * (p * p * C) * D: the patch projection (bias, input scaling not counted)."""
    height, width, channels = _base.check_example_shape(
        input_shape, 3, "(height, width, channels)"
    )
    self._check_image_shape((None, height, width, channels))
    num_patches = (height // self.patch_size) * (width // self.patch_size)
    return 2 * num_patches * self.patch_size * self.patch_size * channels * self.hidden_size

  def get_config(self):
    config = super().get_config()
    config.update(
        {"patch_size": self.patch_size, "hidden_size": self.hidden_size, "seed": self.seed}
    )
    if self.input_scale is not None:
      config["input_scale"] = list(self.input_scale)
    if self.input_offset is not None:
      config["input_offset"] = list(self.input_offset)
    return config
