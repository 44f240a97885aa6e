"""The pre-LayerNorm ViT encoder block."""

import math
import numbers

import keras

from mtsys.components import _base
from mtsys.components import registry

DEFAULT_LAYER_NORM_EPSILON = 1e-6


def _check_dropout(dropout):
  if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
    raise ValueError(
        "Invalid value received for argument `dropout`. "
        f"Expected a float value between 0 and 1. Received: dropout={dropout!r}"
    )
  return float(dropout)


def check_bool(name, value):
  """Returns `value` if it is a bool, or raises Keras' "Invalid value received" error."""
  if not isinstance(value, bool):
    raise ValueError(
        f"Invalid value received for argument `{name}`. "
        f"Expected a bool. Received: {name}={value!r}"
    )
  return value


def check_epsilon(value):
  """Returns a LayerNorm epsilon as a `float`: a finite positive number."""
  if (
      isinstance(value, bool)
      or not isinstance(value, numbers.Real)
      or not math.isfinite(value)
      or value <= 0
  ):
    raise ValueError(
        "Invalid value received for argument `layer_norm_epsilon`. Expected a positive "
        f"float. Received: layer_norm_epsilon={value!r}"
    )
  return float(value)


@keras.saving.register_keras_serializable(package="mtsys")
@registry.register("transformer_block")
class TransformerBlock(_base.Component):
  """x + Attention(LN(x)), then x + MLP(LN(x)): ViT's `Encoder1DBlock`.

  Sublayers, named to map one-to-one onto a ViT checkpoint's encoder block:
  `ln_1` (LayerNorm_0), `attention` (MultiHeadDotProductAttention_1: query/key/value kernels
  `(D, heads, D/heads)`, `attention_output` kernel `(heads, D/heads, D)`), `ln_2` (LayerNorm_2),
  `mlp_1` and `mlp_2` (MlpBlock_3/Dense_0 and Dense_1). By default LayerNorm epsilon is 1e-6
  and the MLP uses exact GELU, as in Model Garden's ViT; a block imported from the original ViT
  (flax's `nn.gelu`) sets `gelu_approximate=True`, the tanh form. Dropout, as in ViT, follows
  the attention output and each MLP dense layer; the attention probabilities themselves are not
  dropped.

  `get_config()` holds `gelu_approximate` and `layer_norm_epsilon` only when they differ from
  their defaults, so the configs of blocks made before these options existed are unchanged, and
  configs without them load with the defaults.

  Args:
    hidden_size: token width D; must be divisible by `num_heads`.
    num_heads: attention heads.
    mlp_dim: hidden width of the MLP.
    dropout: dropout rate in [0, 1), active only in training.
    seed: optional int; each initializer (and the dropout) gets `seed + k`.
    gelu_approximate: the MLP's GELU: False for the exact (erf) form, True for the tanh
      approximation.
    layer_norm_epsilon: epsilon of both LayerNorms.
  """

  def __init__(self, hidden_size, num_heads, mlp_dim, dropout=0.0, seed=None,
               gelu_approximate=False, layer_norm_epsilon=DEFAULT_LAYER_NORM_EPSILON, **kwargs):
    super().__init__(**kwargs)
    self.gelu_approximate = check_bool("gelu_approximate", gelu_approximate)
    self.layer_norm_epsilon = check_epsilon(layer_norm_epsilon)
    self.hidden_size = _base.check_positive_int("hidden_size", hidden_size)
    self.num_heads = _base.check_positive_int("num_heads", num_heads)
    self.mlp_dim = _base.check_positive_int("mlp_dim", mlp_dim)
    self.dropout = _check_dropout(dropout)
    self.seed = _base.check_seed(seed)
    if self.hidden_size % self.num_heads:
      raise ValueError(
          "Invalid value received for argument `num_heads`. Expected a divisor of "
          f"hidden_size={self.hidden_size}. Received: num_heads={self.num_heads}"
      )
    dtype = self.dtype_policy
    epsilon = self.layer_norm_epsilon
    self.ln_1 = keras.layers.LayerNormalization(epsilon=epsilon, dtype=dtype, name="ln_1")
    self.attention = keras.layers.MultiHeadAttention(
        self.num_heads,
        key_dim=self.hidden_size // self.num_heads,
        kernel_initializer=keras.initializers.GlorotUniform(seed=self.seed),
        dtype=dtype,
        name="attention",
    )
    self.ln_2 = keras.layers.LayerNormalization(epsilon=epsilon, dtype=dtype, name="ln_2")
    self.mlp_1 = keras.layers.Dense(
        self.mlp_dim,
        activation=None,  # GELU in `call`, exact or approximate.
        kernel_initializer=keras.initializers.GlorotUniform(seed=_base.offset_seed(seed, 4)),
        dtype=dtype,
        name="mlp_1",
    )
    self.mlp_2 = keras.layers.Dense(
        self.hidden_size,
        kernel_initializer=keras.initializers.GlorotUniform(seed=_base.offset_seed(seed, 5)),
        dtype=dtype,
        name="mlp_2",
    )
    self.dropout_layer = keras.layers.Dropout(
        self.dropout, seed=_base.offset_seed(seed, 6), dtype=dtype, name="dropout"
    )

  def build(self, input_shape):
    if len(input_shape) != 3 or input_shape[-1] != self.hidden_size:
      raise ValueError(
          f"Layer '{self.name}' expects tokens of shape (batch, tokens, "
          f"{self.hidden_size}). Received: shape={tuple(input_shape)}"
      )
    self.ln_1.build(input_shape)
    self.attention.build(input_shape, input_shape)
    if self.seed is not None:
      # MultiHeadAttention hands each projection a copy of one initializer; with an int
      # seed query, key and value would start identical. Redraw each with its own seed.
      projections = (
          self.attention.query_dense,
          self.attention.key_dense,
          self.attention.value_dense,
          self.attention.output_dense,
      )
      for offset, dense in enumerate(projections):
        init = keras.initializers.GlorotUniform(seed=self.seed + offset)
        dense.kernel.assign(init(dense.kernel.shape, dtype=dense.kernel.dtype))
    self.ln_2.build(input_shape)
    self.mlp_1.build(input_shape)
    self.mlp_2.build(tuple(input_shape[:-1]) + (self.mlp_dim,))
    self._propagate_trainable()

  def call(self, tokens, training=None):
    x = self.ln_1(tokens)
    x = self.attention(x, x, training=training)
    tokens = tokens + self.dropout_layer(x, training=training)
    x = self.ln_2(tokens)
    x = keras.activations.gelu(self.mlp_1(x), approximate=self.gelu_approximate)
    x = self.dropout_layer(x, training=training)
    x = self.dropout_layer(self.mlp_2(x), training=training)
    return tokens + x

  def compute_output_shape(self, input_shape):
    return tuple(input_shape)

  def flops_per_example(self, input_shape):
    """8*N*D^2 (q, k, v, output projections) + 4*N^2*D (scores, weighted values) + 4*N*D*M."""
    n, d = _base.check_example_shape(input_shape, 2, "(tokens, hidden_size)")
    if d != self.hidden_size:
      raise ValueError(
          f"Layer '{self.name}' has hidden_size={self.hidden_size}. "
          f"Received: input_shape={tuple(input_shape)}"
      )
    return 8 * n * d * d + 4 * n * n * d + 4 * n * d * self.mlp_dim

  def get_config(self):
    config = super().get_config()
    config.update(
        {
            "hidden_size": self.hidden_size,
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "dropout": self.dropout,
            "seed": self.seed,
        }
    )
    if self.gelu_approximate:
      config["gelu_approximate"] = True
    if self.layer_norm_epsilon != DEFAULT_LAYER_NORM_EPSILON:
      config["layer_norm_epsilon"] = self.layer_norm_epsilon
    return config
