import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtsys.components import PositionEmbedding
from mtsys.components import testing


def _tokens(length=5, batch=2, width=8):
  return np.random.default_rng(0).normal(size=(batch, length, width)).astype("float32")


def _built(grid_size=2, hidden_size=8, seed=1):
  layer = PositionEmbedding(grid_size, hidden_size, seed=seed)
  layer.build((None, 1 + grid_size * grid_size, hidden_size))
  return layer


def test_round_trips_config_and_serialization():
  layer = PositionEmbedding(2, 8, seed=1)
  outputs = testing.run_component_test(layer, _tokens(), ["grid_size", "hidden_size", "seed"])
  assert outputs.shape == (2, 5, 8)


def test_param_count_is_pinned():
  assert _built(2, 8).param_count() == 40  # (1 + 2*2) positions * 8.


def test_flops_per_example_is_zero():
  assert PositionEmbedding(2, 8).flops_per_example((10, 8)) == 0


def test_native_grid_adds_the_weights():
  tokens = _tokens()
  layer = _built()
  np.testing.assert_array_equal(layer(tokens), tokens + layer.embedding.numpy())


def test_initializer_is_seeded_normal_with_small_stddev():
  first, second = _built(grid_size=8, seed=3), _built(grid_size=8, seed=3)
  np.testing.assert_array_equal(first.embedding.numpy(), second.embedding.numpy())
  assert 0.01 < first.embedding.numpy().std() < 0.03


def test_other_grid_interpolates_and_keeps_the_class_position():
  tokens = _tokens(length=10)  # A 3x3 grid on 2x2 weights.
  layer = _built()
  outputs = keras.ops.convert_to_numpy(layer(tokens))
  assert outputs.shape == (2, 10, 8)
  np.testing.assert_allclose(outputs[:, 0], tokens[:, 0] + layer.embedding.numpy()[:, 0])


def test_interpolation_is_bilinear_with_half_pixel_centres():
  layer = _built(hidden_size=1)
  layer.embedding.assign(np.array([7.0, 0.0, 1.0, 2.0, 3.0], "float32").reshape(1, 5, 1))
  grid = layer.resized(4).embedding.numpy()[0, :, 0]
  ramp = np.array([0.0, 0.25, 0.75, 1.0])
  assert grid[0] == 7.0
  np.testing.assert_allclose(grid[1:].reshape(4, 4), 2 * ramp[:, None] + ramp[None, :])


def test_resized_to_the_same_grid_equals_the_original():
  layer = _built()
  same = layer.resized(2)
  assert same is not layer
  np.testing.assert_array_equal(same.embedding.numpy(), layer.embedding.numpy())


def test_resized_matches_call_time_interpolation():
  tokens = _tokens(length=17)  # A 4x4 grid.
  layer = _built(grid_size=3)
  resized = layer.resized(4)
  assert resized.built and resized.grid_size == 4
  assert resized.embedding.shape == (1, 17, 8)
  np.testing.assert_allclose(resized(tokens), layer(tokens), rtol=1e-6, atol=1e-7)


def test_interpolates_inside_a_functional_model_and_tf_function():
  layer = _built()
  inputs = keras.Input((17, 8))
  model = keras.Model(inputs, layer(inputs))
  tokens = _tokens(length=17)
  np.testing.assert_allclose(tf.function(model)(tokens), layer(tokens), rtol=1e-6)


def test_non_square_token_count_raises():
  message = "expects 1 + g*g tokens (a class token and a square grid of patches). Received: 7"
  with pytest.raises(ValueError, match=re.escape(message)):
    PositionEmbedding(2, 8)(_tokens(length=7))
  with pytest.raises(ValueError, match=re.escape(message)):
    _built()(_tokens(length=7))
  with pytest.raises(ValueError, match=re.escape(message)):
    PositionEmbedding(2, 8).flops_per_example((7, 8))


def test_resized_before_build_raises():
  with pytest.raises(ValueError, match=re.escape("before `resized()`")):
    PositionEmbedding(2, 8).resized(3)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: PositionEmbedding(0, 8),
            "Invalid value received for argument `grid_size`. "
            "Expected a positive integer. Received: grid_size=0",
        ),
        (
            lambda: PositionEmbedding(2, 8, seed="x"),
            "Invalid value received for argument `seed`. "
            "Expected None or a non-negative integer. Received: seed='x'",
        ),
        (
            lambda: _built().resized(0),
            "Invalid value received for argument `new_grid_size`. "
            "Expected a positive integer. Received: new_grid_size=0",
        ),
    ],
)
def test_bad_arguments_raise(call, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    call()
