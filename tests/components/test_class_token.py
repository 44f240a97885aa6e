import re

import keras
import numpy as np
import pytest

from mtsys.components import ClassToken
from mtsys.components import testing


def _tokens(batch=2, length=4, width=8):
  return np.random.default_rng(0).normal(size=(batch, length, width)).astype("float32")


def test_round_trips_config_and_serialization():
  outputs = testing.run_component_test(ClassToken(8), _tokens(), ["hidden_size"])
  assert outputs.shape == (2, 5, 8)


def test_param_count_is_pinned():
  layer = ClassToken(8)
  layer.build((None, 4, 8))
  assert layer.param_count() == 8  # One (1, 1, 8) vector.


def test_flops_per_example_is_zero():
  assert ClassToken(8).flops_per_example((4, 8)) == 0


def test_prepends_a_zero_initialised_learned_token():
  tokens = _tokens()
  layer = ClassToken(8)
  outputs = keras.ops.convert_to_numpy(layer(tokens))
  np.testing.assert_array_equal(outputs[:, 0], 0.0)
  np.testing.assert_array_equal(outputs[:, 1:], tokens)
  layer.token.assign(np.arange(8, dtype="float32").reshape(1, 1, 8))
  outputs = keras.ops.convert_to_numpy(layer(tokens))
  np.testing.assert_array_equal(outputs[:, 0], np.tile(np.arange(8), (2, 1)))


def test_symbolic_output_shape():
  assert ClassToken(8)(keras.Input((None, 8))).shape == (None, None, 8)
  assert ClassToken(8)(keras.Input((4, 8))).shape == (None, 5, 8)


def test_wrong_width_raises():
  with pytest.raises(ValueError, match=re.escape("expects tokens of shape (batch, tokens, 8)")):
    ClassToken(8)(_tokens(width=6))


def test_bad_argument_raises():
  message = (
      "Invalid value received for argument `hidden_size`. "
      "Expected a positive integer. Received: hidden_size=0"
  )
  with pytest.raises(ValueError, match=re.escape(message)):
    ClassToken(0)
