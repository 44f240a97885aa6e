"""muNet's residual adapter: a small bottleneck MLP that starts as the identity."""

import keras

from mtsys.components import _base
from mtsys.components import registry


@keras.saving.register_keras_serializable(package="mtsys")
@registry.register("residual_adapter")
class ResidualAdapter(_base.Component):
  """x + Dense_up(GELU(Dense_down(LN(x)))), with `up` zero-initialised.

  The zero kernel and bias make a freshly inserted adapter the identity, so inserting one
  into a trained path does not change its predictions before training (muNet).
  Sublayers: `ln` (epsilon 1e-6), `down` (D -> inner_dim, exact GELU), `up` (inner_dim -> D).

  Args:
    hidden_size: token width D.
    inner_dim: bottleneck width.
    seed: optional int seeding the `down` kernel initializer.
  """

  def __init__(self, hidden_size, inner_dim, seed=None, **kwargs):
    super().__init__(**kwargs)
    self.hidden_size = _base.check_positive_int("hidden_size", hidden_size)
    self.inner_dim = _base.check_positive_int("inner_dim", inner_dim)
    self.seed = _base.check_seed(seed)
    dtype = self.dtype_policy
    self.ln = keras.layers.LayerNormalization(epsilon=1e-6, dtype=dtype, name="ln")
    self.down = keras.layers.Dense(
        self.inner_dim,
        activation="gelu",
        kernel_initializer=keras.initializers.GlorotUniform(seed=self.seed),
        dtype=dtype,
        name="down",
    )
    self.up = keras.layers.Dense(
        self.hidden_size,
        kernel_initializer="zeros",
        bias_initializer="zeros",
        dtype=dtype,
        name="up",
    )

  def build(self, input_shape):
    if input_shape[-1] != self.hidden_size:
      raise ValueError(
          f"Layer '{self.name}' expects tokens of width {self.hidden_size}. "
          f"Received: shape={tuple(input_shape)}"
      )
    self.ln.build(input_shape)
    self.down.build(input_shape)
    self.up.build(tuple(input_shape[:-1]) + (self.inner_dim,))
    self._propagate_trainable()

  def call(self, tokens):
    return tokens + self.up(self.down(self.ln(tokens)))

  def compute_output_shape(self, input_shape):
    return tuple(input_shape)

  def flops_per_example(self, input_shape):
    """4 * N * D * inner_dim: the down and up projections."""
    n, d = _base.check_example_shape(input_shape, 2, "(tokens, hidden_size)")
    if d != self.hidden_size:
      raise ValueError(
          f"Layer '{self.name}' has hidden_size={self.hidden_size}. "
          f"Received: input_shape={tuple(input_shape)}"
      )
    return 4 * n * d * self.inner_dim

  def get_config(self):
    config = super().get_config()
    config.update(
        {"hidden_size": self.hidden_size, "inner_dim": self.inner_dim, "seed": self.seed}
    )
    return config
