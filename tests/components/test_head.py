import re

import keras
import numpy as np
import pytest

from mtsys.components import ClassificationHead
from mtsys.components import testing


def _tokens(batch=2, length=5, width=8):
  return np.random.default_rng(0).normal(size=(batch, length, width)).astype("float32")


def test_round_trips_config_and_serialization():
  layer = ClassificationHead(3, 8, seed=1)
  outputs = testing.run_component_test(layer, _tokens(), ["num_classes", "hidden_size", "seed"])
  assert outputs.shape == (2, 3)


def test_param_count_is_pinned():
  layer = ClassificationHead(3, 8)
  layer.build((None, 5, 8))
  # LayerNorm 2*8 + kernel 8*3 + bias 3.
  assert layer.param_count() == 43


def test_flops_per_example_is_pinned():
  # Only the class token is projected: 8 * 3 multiply-adds.
  assert ClassificationHead(3, 8).flops_per_example((5, 8)) == 48


def test_fresh_head_gives_zero_logits():
  logits = keras.ops.convert_to_numpy(ClassificationHead(3, 8)(_tokens()))
  np.testing.assert_array_equal(logits, np.zeros((2, 3)))


def test_normalises_and_reads_only_the_class_token():
  tokens = _tokens()
  layer = ClassificationHead(3, 8)
  layer.build(tokens.shape)
  kernel = np.random.default_rng(1).normal(size=(8, 3)).astype("float32")
  bias = np.array([1.0, 2.0, 3.0], "float32")
  layer.dense.set_weights([kernel, bias])
  cls = tokens[:, 0]
  normed = (cls - cls.mean(-1, keepdims=True)) / np.sqrt(cls.var(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(layer(tokens), normed @ kernel + bias, rtol=1e-5, atol=1e-5)
  other = tokens.copy()
  other[:, 1:] = 0.0
  np.testing.assert_array_equal(layer(other), layer(tokens))


@pytest.mark.parametrize(
    "args, message",
    [
        (
            (0, 8),
            "Invalid value received for argument `num_classes`. "
            "Expected a positive integer. Received: num_classes=0",
        ),
        (
            (3, True),
            "Invalid value received for argument `hidden_size`. "
            "Expected a positive integer. Received: hidden_size=True",
        ),
    ],
)
def test_bad_arguments_raise(args, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    ClassificationHead(*args)
