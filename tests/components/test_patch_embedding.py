import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtsys.components import PatchEmbedding
from mtsys.components import testing


def _images(height=8, width=8, channels=1, batch=2):
  return np.random.default_rng(0).normal(size=(batch, height, width, channels)).astype("float32")


def test_round_trips_config_and_serialization():
  layer = PatchEmbedding(4, 8, seed=1)
  outputs = testing.run_component_test(layer, _images(), ["patch_size", "hidden_size", "seed"])
  assert outputs.shape == (2, 4, 8)


def test_param_count_is_pinned():
  layer = PatchEmbedding(4, 8)
  layer.build((None, 8, 8, 1))
  # Conv kernel 4*4*1*8 = 128 + bias 8.
  assert layer.param_count() == 136


def test_flops_per_example_is_pinned():
  # 4 patches * (4*4*1 inputs) * 8 outputs * 2 FLOPs per multiply-add.
  assert PatchEmbedding(4, 8).flops_per_example((8, 8, 1)) == 1024


def test_tokens_follow_the_patch_grid_row_major():
  layer = PatchEmbedding(2, 1)
  layer.build((None, 4, 6, 1))
  layer.conv.set_weights([np.ones((2, 2, 1, 1), "float32"), np.zeros((1,), "float32")])
  # Every pixel of patch (row r, column c) holds 10*r + c, so token i sums to 4 * (10*r + c).
  patch_values = np.array([[0, 1, 2], [10, 11, 12]], "float32")
  images = np.kron(patch_values, np.ones((2, 2), "float32"))[None, :, :, None]
  tokens = keras.ops.convert_to_numpy(layer(images))
  np.testing.assert_allclose(tokens[0, :, 0], 4 * patch_values.reshape(-1))


def test_same_seed_gives_same_weights():
  first, second = PatchEmbedding(4, 8, seed=7), PatchEmbedding(4, 8, seed=7)
  first.build((None, 8, 8, 3))
  second.build((None, 8, 8, 3))
  np.testing.assert_array_equal(first.conv.kernel.numpy(), second.conv.kernel.numpy())


def test_image_size_not_a_multiple_of_the_patch_raises():
  with pytest.raises(ValueError, match=re.escape("multiples of patch_size=4")):
    PatchEmbedding(4, 8)(_images(height=10))
  with pytest.raises(ValueError, match=re.escape("(None, 8, 6, 1)")):
    PatchEmbedding(4, 8)(keras.Input((8, 6, 1)))
  with pytest.raises(ValueError, match=re.escape("multiples of patch_size=4")):
    PatchEmbedding(4, 8).flops_per_example((8, 6, 1))


def test_shared_layer_checks_every_call():
  layer = PatchEmbedding(4, 8)
  layer(_images())
  with pytest.raises(ValueError, match=re.escape("multiples of patch_size=4")):
    layer(_images(height=12, width=10))


def test_works_in_tf_function_with_unknown_image_size():
  layer = PatchEmbedding(4, 8, seed=1)
  eager = layer(_images(height=8, width=12))
  spec = tf.TensorSpec((None, None, None, 1), tf.float32)
  graph = tf.function(layer, input_signature=[spec])(_images(height=8, width=12))
  np.testing.assert_allclose(graph, eager, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"patch_size": 0, "hidden_size": 8},
            "Invalid value received for argument `patch_size`. "
            "Expected a positive integer. Received: patch_size=0",
        ),
        (
            {"patch_size": 4, "hidden_size": 2.5},
            "Invalid value received for argument `hidden_size`. "
            "Expected a positive integer. Received: hidden_size=2.5",
        ),
        (
            {"patch_size": 4, "hidden_size": 8, "seed": -1},
            "Invalid value received for argument `seed`. "
            "Expected None or a non-negative integer. Received: seed=-1",
        ),
    ],
)
def test_bad_arguments_raise(kwargs, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    PatchEmbedding(**kwargs)


def test_param_count_before_build_raises():
  with pytest.raises(ValueError, match=re.escape("before `param_count()`")):
    PatchEmbedding(4, 8).param_count()


def test_flops_with_bad_shape_pins_the_message():
  message = (
      "Invalid value received for argument `input_shape`. Expected a shape without the batch "
      "dimension: 3 positive integers (height, width, channels). Received: input_shape=(8, 8)"
  )
  with pytest.raises(ValueError, match=re.escape(message)):
    PatchEmbedding(4, 8).flops_per_example((8, 8))


def test_input_normalisation_round_trips_and_applies_before_the_conv():
  images = _images(channels=3)
  layer = PatchEmbedding(4, 8, seed=1, input_scale=[2.0, 2.0, 0.5], input_offset=(-1, -1, 0.25))
  outputs = testing.run_component_test(
      layer, images, ["patch_size", "hidden_size", "seed", "input_scale", "input_offset"]
  )
  assert layer.get_config()["input_offset"] == [-1.0, -1.0, 0.25]
  plain = PatchEmbedding(4, 8)
  plain.build(images.shape)
  plain.set_weights(layer.get_weights())
  scaled = images * np.array([2.0, 2.0, 0.5], "float32") + np.array([-1, -1, 0.25], "float32")
  np.testing.assert_allclose(outputs, plain(scaled), rtol=1e-6, atol=1e-6)


def test_only_a_scale_or_only_an_offset():
  images = _images()
  layer = PatchEmbedding(4, 8, seed=1, input_offset=[0.5])
  plain = PatchEmbedding(4, 8, seed=1)
  np.testing.assert_allclose(layer(images), plain(images + 0.5), rtol=1e-6, atol=1e-6)
  assert "input_scale" not in layer.get_config()
  scaled = PatchEmbedding(4, 8, seed=1, input_scale=[3.0])
  np.testing.assert_allclose(scaled(images), plain(images * 3.0), rtol=1e-5, atol=1e-5)


def test_config_without_normalisation_loads_unchanged():
  old = {"name": "p", "trainable": True, "dtype": "float32", "patch_size": 4, "hidden_size": 8,
         "seed": None}
  layer = PatchEmbedding.from_config(old)
  assert layer.input_scale is None and layer.input_offset is None
  config = layer.get_config()
  assert {k: v for k, v in config.items() if k != "dtype"} == {
      k: v for k, v in old.items() if k != "dtype"
  }


def test_normalisation_does_not_change_flops():
  layer = PatchEmbedding(4, 8, input_scale=[2.0], input_offset=[-1.0])
  assert layer.flops_per_example((8, 8, 1)) == 1024


def test_normalisation_for_other_channel_count_raises():
  layer = PatchEmbedding(4, 8, input_scale=[2.0, 2.0, 2.0])
  with pytest.raises(ValueError, match=re.escape("has input_scale for 3 channels")):
    layer(_images(channels=1))


@pytest.mark.parametrize("value", [[], [float("nan")], ["1"], 2.0, [True]])
def test_bad_normalisation_raises(value):
  message = "Invalid value received for argument `input_scale`"
  with pytest.raises(ValueError, match=re.escape(message)):
    PatchEmbedding(4, 8, input_scale=value)
