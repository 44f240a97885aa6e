"""Classification head: ViT's final encoder norm plus the class-token readout."""

import numbers

import keras

from mtsys.components import _base
from mtsys.components import registry
from mtsys.components import transformer_block

DEFAULT_LAYER_NORM_EPSILON = transformer_block.DEFAULT_LAYER_NORM_EPSILON


def _check_pre_logits_size(value):
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
    raise ValueError(
        "Invalid value received for argument `pre_logits_size`. "
        f"Expected 0 or a positive integer. Received: pre_logits_size={value!r}"
    )
  return int(value)


@keras.saving.register_keras_serializable(package="mtsys")
@registry.register("head")
class ClassificationHead(_base.Component):
  """LayerNorm -> token 0 -> [Dense(pre_logits_size, tanh)] -> Dense(num_classes), zero init.

  The final norm (ViT's `encoder_norm`, here `norm`, epsilon 1e-6 by default) lives in the head
  so a cloned head also clones it. LayerNorm acts per token, so the head takes token 0 first and
  normalises only it: the same result for a fraction of the work. `dense` (ViT's `head`)
  starts at zero, as in ViT, so a new head predicts uniform probabilities. With
  `pre_logits_size > 0` a `pre_logits` Dense with tanh (ViT's optional `pre_logits`
  representation layer, LeCun-normal init) sits between the norm and `dense`.

  `get_config()` holds `pre_logits_size` and `layer_norm_epsilon` only when they differ from
  their defaults, so older configs are unchanged and load without them.

  Args:
    num_classes: number of logits.
    hidden_size: token width D.
    seed: optional int seeding the `pre_logits` kernel initializer (nothing else is random).
    pre_logits_size: width R of the pre-logits Dense+tanh; 0 for none.
    layer_norm_epsilon: epsilon of the final norm.
  """

  def __init__(self, num_classes, hidden_size, seed=None, pre_logits_size=0,
               layer_norm_epsilon=DEFAULT_LAYER_NORM_EPSILON, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = _base.check_positive_int("num_classes", num_classes)
    self.hidden_size = _base.check_positive_int("hidden_size", hidden_size)
    self.seed = _base.check_seed(seed)
    self.pre_logits_size = _check_pre_logits_size(pre_logits_size)
    self.layer_norm_epsilon = transformer_block.check_epsilon(layer_norm_epsilon)
    dtype = self.dtype_policy
    self.norm = keras.layers.LayerNormalization(
        epsilon=self.layer_norm_epsilon, dtype=dtype, name="norm"
    )
    self.pre_logits = None
    if self.pre_logits_size:
      self.pre_logits = keras.layers.Dense(
          self.pre_logits_size,
          activation="tanh",
          kernel_initializer=keras.initializers.LecunNormal(seed=self.seed),
          dtype=dtype,
          name="pre_logits",
      )
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
    width = self.hidden_size
    if self.pre_logits is not None:
      self.pre_logits.build((input_shape[0], width))
      width = self.pre_logits_size
    self.dense.build((input_shape[0], width))
    self._propagate_trainable()

  def call(self, tokens):
    x = self.norm(tokens[:, 0])
    if self.pre_logits is not None:
      x = self.pre_logits(x)
    return self.dense(x)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.num_classes)

  def flops_per_example(self, input_shape):
    """2 * D * num_classes: the logits of the class token (with pre-logits R: 2*D*R + 2*R*C)."""
    _, d = _base.check_example_shape(input_shape, 2, "(tokens, hidden_size)")
    if d != self.hidden_size:
      raise ValueError(
          f"Layer '{self.name}' has hidden_size={self.hidden_size}. "
          f"Received: input_shape={tuple(input_shape)}"
      )
    if self.pre_logits_size:
      return 2 * d * self.pre_logits_size + 2 * self.pre_logits_size * self.num_classes
    return 2 * d * self.num_classes

  def get_config(self):
    config = super().get_config()
    config.update(
        {"num_classes": self.num_classes, "hidden_size": self.hidden_size, "seed": self.seed}
    )
    if self.pre_logits_size:
      config["pre_logits_size"] = self.pre_logits_size
    if self.layer_norm_epsilon != DEFAULT_LAYER_NORM_EPSILON:
      config["layer_norm_epsilon"] = self.layer_norm_epsilon
    return config
