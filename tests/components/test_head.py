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


def test_pre_logits_round_trips_and_matches_numpy():
  tokens = _tokens()
  layer = ClassificationHead(3, 8, seed=1, pre_logits_size=5, layer_norm_epsilon=1e-3)
  testing.run_component_test(
      layer, tokens, ["num_classes", "hidden_size", "seed", "pre_logits_size", "layer_norm_epsilon"]
  )
  names = [w.path.split("/", 1)[1] for w in layer.weights]
  assert names == ["norm/gamma", "norm/beta", "pre_logits/kernel", "pre_logits/bias",
                   "dense/kernel", "dense/bias"]
  rng = np.random.default_rng(2)
  for variable in layer.weights:
    variable.assign(rng.normal(size=variable.shape).astype("float32"))
  w = [v.numpy() for v in layer.weights]
  cls = tokens[:, 0]
  normed = (cls - cls.mean(-1, keepdims=True)) / np.sqrt(cls.var(-1, keepdims=True) + 1e-3)
  pre = np.tanh((normed * w[0] + w[1]) @ w[2] + w[3])
  np.testing.assert_allclose(layer(tokens), pre @ w[4] + w[5], rtol=1e-5, atol=1e-5)


def test_pre_logits_params_and_flops():
  layer = ClassificationHead(3, 8, pre_logits_size=5)
  layer.build((None, 5, 8))
  # LayerNorm 16 + pre-logits 8*5 + 5 + dense 5*3 + 3.
  assert layer.param_count() == 79
  # 2*D*R + 2*R*C = 80 + 30.
  assert layer.flops_per_example((5, 8)) == 110
  np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(_tokens())), np.zeros((2, 3)))


def test_config_without_the_options_loads_unchanged():
  old = {"name": "h", "trainable": True, "dtype": "float32", "num_classes": 3, "hidden_size": 8,
         "seed": None}
  layer = ClassificationHead.from_config(old)
  assert layer.pre_logits_size == 0 and layer.layer_norm_epsilon == 1e-6
  config = layer.get_config()
  assert {k: v for k, v in config.items() if k != "dtype"} == {
      k: v for k, v in old.items() if k != "dtype"
  }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pre_logits_size": -1}, "Expected 0 or a positive integer. Received: pre_logits_size=-1"),
        ({"pre_logits_size": True}, "Received: pre_logits_size=True"),
        ({"layer_norm_epsilon": -1e-6}, "Received: layer_norm_epsilon=-1e-06"),
    ],
)
def test_bad_options_raise(kwargs, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    ClassificationHead(3, 8, **kwargs)
