import math
import re

import keras
import numpy as np
import pytest

from mtsys.components import ResidualAdapter
from mtsys.components import testing


def _tokens(batch=2, length=5, width=8):
  return np.random.default_rng(0).normal(size=(batch, length, width)).astype("float32")


def test_round_trips_config_and_serialization():
  layer = ResidualAdapter(8, 4, seed=1)
  outputs = testing.run_component_test(layer, _tokens(), ["hidden_size", "inner_dim", "seed"])
  assert outputs.shape == (2, 5, 8)


def test_param_count_is_pinned():
  layer = ResidualAdapter(8, 4)
  layer.build((None, 5, 8))
  # LayerNorm 2*8 + down 8*4 + 4 + up 4*8 + 8.
  assert layer.param_count() == 92


def test_flops_per_example_is_pinned():
  # Down and up projections: 2 * (5 * 8 * 4) multiply-adds.
  assert ResidualAdapter(8, 4).flops_per_example((5, 8)) == 640


def test_fresh_adapter_is_the_identity():
  tokens = _tokens()
  np.testing.assert_array_equal(ResidualAdapter(8, 4, seed=3)(tokens), tokens)


def test_matches_a_numpy_reference():
  tokens = _tokens()
  layer = ResidualAdapter(8, 4, seed=3)
  layer.build(tokens.shape)
  rng = np.random.default_rng(2)
  layer.up.set_weights([rng.normal(size=(4, 8)).astype("float32"), np.ones(8, "float32")])
  down_kernel, down_bias = layer.down.get_weights()
  up_kernel, up_bias = layer.up.get_weights()
  x = (tokens - tokens.mean(-1, keepdims=True)) / np.sqrt(tokens.var(-1, keepdims=True) + 1e-6)
  h = x @ down_kernel + down_bias
  h = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))  # Exact GELU.
  expected = tokens + h @ up_kernel + up_bias
  np.testing.assert_allclose(layer(tokens), expected, rtol=1e-5, atol=1e-5)


def test_bad_argument_raises():
  message = (
      "Invalid value received for argument `inner_dim`. "
      "Expected a positive integer. Received: inner_dim=-2"
  )
  with pytest.raises(ValueError, match=re.escape(message)):
    ResidualAdapter(8, -2)


def test_wrong_width_raises():
  with pytest.raises(ValueError, match=re.escape("expects tokens of width 8")):
    ResidualAdapter(8, 4)(keras.Input((5, 6)))
