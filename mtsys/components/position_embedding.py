"""Learned position embedding that follows the patch grid when the image size changes."""

import math

import keras
from keras import ops

from mtsys.components import _base
from mtsys.components import registry


def _resize(embedding, grid_size):
  """Bilinearly resizes the grid part of a `(1, 1 + g0*g0, D)` embedding to `grid_size`.

  The class-token position (index 0) is kept as is. Half-pixel centres, no antialiasing
  (`tf.image.resize` semantics), so resizing to the same grid is the identity.
  """
  embedding = ops.convert_to_tensor(embedding)
  width = embedding.shape[-1]
  old_grid = math.isqrt(embedding.shape[1] - 1)
  cls, grid = embedding[:, :1], embedding[:, 1:]
  grid = ops.reshape(grid, (1, old_grid, old_grid, width))
  grid = ops.image.resize(
      grid,
      (grid_size, grid_size),
      interpolation="bilinear",
      antialias=False,
      data_format="channels_last",
  )
  grid = ops.cast(ops.reshape(grid, (1, grid_size * grid_size, width)), embedding.dtype)
  return ops.concatenate([cls, grid], axis=1)


@keras.saving.register_keras_serializable(package="mtsys")
@registry.register("position_embedding")
class PositionEmbedding(_base.Component):
  """Adds a learned `(1, 1 + grid_size**2, D)` embedding (`pos_embedding`) to the tokens.

  Placed after the class token, as in the original ViT and Model Garden (big_vision adds it
  before). A sequence of `1 + g*g` tokens with `g != grid_size` gets the weights' grid
  interpolated to `g x g` at call time, so a path at another image size can share the frozen
  weights; `resized()` bakes that interpolation into a new layer for a cloned component.

  Args:
    grid_size: patches per side at the native image size (image_size / patch_size).
    hidden_size: token width D.
    seed: optional int seeding the normal(stddev=0.02) initializer.
  """

  def __init__(self, grid_size, hidden_size, seed=None, **kwargs):
    super().__init__(**kwargs)
    self.grid_size = _base.check_positive_int("grid_size", grid_size)
    self.hidden_size = _base.check_positive_int("hidden_size", hidden_size)
    self.seed = _base.check_seed(seed)

  def _grid_for(self, num_tokens):
    grid = math.isqrt(max(num_tokens - 1, 0))
    if num_tokens < 2 or grid * grid != num_tokens - 1:
      raise ValueError(
          f"Layer '{self.name}' expects 1 + g*g tokens (a class token and a square grid of "
          f"patches). Received: {num_tokens} tokens"
      )
    return grid

  def build(self, input_shape):
    if len(input_shape) != 3 or input_shape[-1] != self.hidden_size:
      raise ValueError(
          f"Layer '{self.name}' expects tokens of shape (batch, 1 + g*g, "
          f"{self.hidden_size}). Received: shape={tuple(input_shape)}"
      )
    if input_shape[1] is not None:
      self._grid_for(input_shape[1])
    self.embedding = self.add_weight(
        shape=(1, 1 + self.grid_size * self.grid_size, self.hidden_size),
        initializer=keras.initializers.RandomNormal(stddev=0.02, seed=self.seed),
        name="pos_embedding",
    )

  def call(self, tokens):
    # An unknown sequence length can only be the native one: the grid must be static.
    num_tokens = tokens.shape[1]
    embedding = self.embedding
    if num_tokens is not None and num_tokens != embedding.shape[1]:
      embedding = _resize(embedding, self._grid_for(num_tokens))
    return tokens + ops.cast(embedding, tokens.dtype)

  def compute_output_shape(self, input_shape):
    return tuple(input_shape)

  def resized(self, new_grid_size):
    """A new, built PositionEmbedding of `new_grid_size` holding the interpolated weights.

    Its output equals this layer's call-time interpolation for the same grid.
    """
    new_grid_size = _base.check_positive_int("new_grid_size", new_grid_size)
    if not self.built:
      raise ValueError(
          f"Layer '{self.name}' has no weights to resize until it is built; call it on an "
          "input or call `build(input_shape)` before `resized()`."
      )
    layer = PositionEmbedding(
        new_grid_size, self.hidden_size, seed=self.seed, dtype=self.dtype_policy
    )
    layer.build((None, 1 + new_grid_size * new_grid_size, self.hidden_size))
    if new_grid_size == self.grid_size:
      layer.embedding.assign(self.embedding)
    else:
      layer.embedding.assign(_resize(self.embedding, new_grid_size))
    return layer

  def flops_per_example(self, input_shape):
    """0: an elementwise addition (interpolation, once per batch, is not counted)."""
    num_tokens, _ = _base.check_example_shape(input_shape, 2, "(tokens, hidden_size)")
    self._grid_for(num_tokens)
    return 0

  def get_config(self):
    config = super().get_config()
    config.update(
        {"grid_size": self.grid_size, "hidden_size": self.hidden_size, "seed": self.seed}
    )
    return config
