"""Class token: one learned token prepended to every sequence; the head reads its output."""

import keras
from keras import ops

from mtsys.components import _base
from mtsys.components import registry


@keras.saving.register_keras_serializable(package="mtsys")
@registry.register("class_token")
class ClassToken(_base.Component):
  """Prepends a learned, zero-initialised `(1, 1, D)` vector: `(B, N, D) -> (B, N + 1, D)`.

  The weight is named `cls`, as in ViT checkpoints. Zero init (as in ViT) needs no seed.

  Args:
    hidden_size: token width D.
  """

  def __init__(self, hidden_size, **kwargs):
    super().__init__(**kwargs)
    self.hidden_size = _base.check_positive_int("hidden_size", hidden_size)

  def build(self, input_shape):
    if len(input_shape) != 3 or input_shape[-1] != self.hidden_size:
      raise ValueError(
          f"Layer '{self.name}' expects tokens of shape (batch, tokens, "
          f"{self.hidden_size}). Received: shape={tuple(input_shape)}"
      )
    self.token = self.add_weight(
        shape=(1, 1, self.hidden_size), initializer="zeros", name="cls"
    )

  def call(self, tokens):
    batch = ops.shape(tokens)[0]
    token = ops.cast(self.token, tokens.dtype)
    return ops.concatenate([ops.tile(token, (batch, 1, 1)), tokens], axis=1)

  def compute_output_shape(self, input_shape):
    batch, length, width = input_shape
    return (batch, None if length is None else length + 1, width)

  def flops_per_example(self, input_shape):
    """0: a concatenation computes nothing."""
    _base.check_example_shape(input_shape, 2, "(tokens, hidden_size)")
    return 0

  def get_config(self):
    config = super().get_config()
    config.update({"hidden_size": self.hidden_size})
    return config
