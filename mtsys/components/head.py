"""Classification head: ViT's final encoder norm plus the class-token readout."""

import keras

from mtsys.components import _base
from mtsys.components import registry


@keras.saving.register_keras_serializable(package="mtsys")
@registry.register("head")
class ClassificationHead(_base.Component):
  """LayerNorm -> token 0 -> Dense(num_classes), with the Dense zero-initialised.

  The final norm (ViT's `encoder_norm`, here `norm`, epsilon 1e-6) lives in the head so a
  cloned head also clones it. LayerNorm acts per token, so the head takes token 0 first and
  normalises only it: the same result for a fraction of the work. `dense` (ViT's `head`)
  starts at zero, as in ViT, so a new head predicts uniform probabilities.

  Args:
    num_classes: number of logits.
    hidden_size: token width D.
    seed: optional int; accepted for a uniform constructor, unused (nothing is random).
  """

  def __init__(self, num_classes, hidden_size, seed=None, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = _base.check_positive_int("num_classes", num_classes)
    self.hidden_size = _base.check_positive_int("hidden_size", hidden_size)
    self.seed = _base.check_seed(seed)
    dtype = self.dtype_policy
    self.norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype=dtype, name="norm")
    self.dense = keras.layers.Dense(
        self.num_classes,
        kernel_initializer="zeros",
        bias_initializer="zeros",
        dtype=dtype,
        name="dense",
    )

  def build(self, input_shape):
    if len(input_shape) != 3 or input_shape[-1] != self.hidden_size:
      raise ValueError(
          f"Layer '{self.name}' expects tokens of shape (batch, tokens, "
          f"{self.hidden_size}). Received: shape={tuple(input_shape)}"
      )
    self.norm.build((input_shape[0], self.hidden_size))
    self.dense.build((input_shape[0], self.hidden_size))
    self._propagate_trainable()

  def call(self, tokens):
    return self.dense(self.norm(tokens[:, 0]))

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.num_classes)

  def flops_per_example(self, input_shape):
    """2 * D * num_classes: the logits of the class token."""
    _, d = _base.check_example_shape(input_shape, 2, "(tokens, hidden_size)")
    if d != self.hidden_size:
      raise ValueError(
          f"Layer '{self.name}' has hidden_size={self.hidden_size}. "
          f"Received: input_shape={tuple(input_shape)}"
      )
    return 2 * d * self.num_classes

  def get_config(self):
    config = super().get_config()
    config.update(
        {"num_classes": self.num_classes, "hidden_size": self.hidden_size, "seed": self.seed}
    )
    return config
