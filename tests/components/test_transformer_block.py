import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtsys.components import TransformerBlock
from mtsys.components import testing


def _tokens(batch=2, length=5, width=8):
  return np.random.default_rng(0).normal(size=(batch, length, width)).astype("float32")


def test_round_trips_config_and_serialization():
  layer = TransformerBlock(8, 2, 16, dropout=0.1, seed=1)
  outputs = testing.run_component_test(
      layer, _tokens(), ["hidden_size", "num_heads", "mlp_dim", "dropout", "seed"]
  )
  assert outputs.shape == (2, 5, 8)


def test_param_count_is_pinned():
  layer = TransformerBlock(8, 2, 16)
  layer.build((None, 5, 8))
  # Attention 4*8*8 + 4*8 = 288; MLP 2*8*16 + 16 + 8 = 280; two LayerNorms 4*8 = 32.
  assert layer.param_count() == 600


def test_flops_per_example_is_pinned():
  # N=5, D=8, M=16: projections 8*N*D^2 = 2560; scores + weighted values 4*N^2*D = 800;
  # MLP 4*N*D*M = 2560.
  assert TransformerBlock(8, 2, 16).flops_per_example((5, 8)) == 5920


def test_sublayer_names_match_the_vit_layout():
  layer = TransformerBlock(8, 2, 16)
  layer.build((None, 5, 8))
  names = [w.path.split("/", 1)[1] for w in layer.weights]
  assert names == [
      "ln_1/gamma", "ln_1/beta",
      "attention/query/kernel", "attention/query/bias",
      "attention/key/kernel", "attention/key/bias",
      "attention/value/kernel", "attention/value/bias",
      "attention/attention_output/kernel", "attention/attention_output/bias",
      "ln_2/gamma", "ln_2/beta",
      "mlp_1/kernel", "mlp_1/bias",
      "mlp_2/kernel", "mlp_2/bias",
  ]  # fmt: skip
  assert layer.attention.query_dense.kernel.shape == (8, 2, 4)
  assert layer.attention.output_dense.kernel.shape == (2, 4, 8)


def _layer_norm(x, gamma, beta):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-6) * gamma + beta


def _reference(layer, x):
  """Pre-LN ViT encoder block in numpy, reading the layer's weights by name."""
  w = {v.path.split("/", 1)[1]: v.numpy() for v in layer.weights}
  y = _layer_norm(x, w["ln_1/gamma"], w["ln_1/beta"])
  q, k, v = (
      np.einsum("bnd,dhk->bnhk", y, w[f"attention/{p}/kernel"]) + w[f"attention/{p}/bias"]
      for p in ("query", "key", "value")
  )
  scores = np.einsum("bqhk,bthk->bhqt", q, k) / math.sqrt(q.shape[-1])
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  attended = np.einsum("bhqt,bthk->bqhk", probs, v)
  out = np.einsum("bqhk,hkd->bqd", attended, w["attention/attention_output/kernel"])
  x = x + out + w["attention/attention_output/bias"]
  y = _layer_norm(x, w["ln_2/gamma"], w["ln_2/beta"])
  h = y @ w["mlp_1/kernel"] + w["mlp_1/bias"]
  h = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))  # Exact GELU.
  return x + h @ w["mlp_2/kernel"] + w["mlp_2/bias"]


def test_matches_a_numpy_reference():
  tokens = _tokens()
  layer = TransformerBlock(8, 2, 16, seed=3)
  layer.build(tokens.shape)
  rng = np.random.default_rng(1)
  for variable in layer.weights:  # Non-trivial LayerNorm and bias values too.
    variable.assign(rng.normal(scale=0.5, size=variable.shape).astype("float32"))
  np.testing.assert_allclose(layer(tokens), _reference(layer, tokens), rtol=1e-4, atol=1e-4)


def test_int_seed_is_reproducible_and_gives_distinct_projections():
  first, second = TransformerBlock(8, 2, 16, seed=5), TransformerBlock(8, 2, 16, seed=5)
  first.build((None, 5, 8))
  second.build((None, 5, 8))
  for a, b in zip(first.weights, second.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  attention = first.attention
  assert not np.allclose(attention.query_dense.kernel, attention.key_dense.kernel)
  assert not np.allclose(attention.key_dense.kernel, attention.value_dense.kernel)


def test_dropout_only_in_training():
  tokens = _tokens()
  layer = TransformerBlock(8, 2, 16, dropout=0.5, seed=1)
  inference = layer(tokens)
  np.testing.assert_array_equal(layer(tokens, training=False), inference)
  assert not np.allclose(layer(tokens, training=True), inference)


def test_frozen_before_build_freezes_attention_projections():
  layer = TransformerBlock(8, 2, 16)
  layer.trainable = False  # Before build: MultiHeadAttention makes its sublayers in build.
  inputs = keras.Input((5, 8))
  model = keras.Model(inputs, layer(inputs))
  assert model.trainable_weights == []
  layer.trainable = True
  assert len(model.trainable_weights) == 16


def test_gradients_flow_in_tf_function():
  tokens = tf.constant(_tokens())
  layer = TransformerBlock(8, 2, 16, seed=1)

  @tf.function
  def grads(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(layer(x) ** 2)
    return tape.gradient(loss, [x] + layer.trainable_weights)

  assert all(g is not None for g in grads(tokens))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"hidden_size": 8, "num_heads": 3, "mlp_dim": 16},
            "Invalid value received for argument `num_heads`. Expected a divisor of "
            "hidden_size=8. Received: num_heads=3",
        ),
        (
            {"hidden_size": 8, "num_heads": 2, "mlp_dim": 0},
            "Invalid value received for argument `mlp_dim`. "
            "Expected a positive integer. Received: mlp_dim=0",
        ),
        (
            {"hidden_size": 8, "num_heads": 2, "mlp_dim": 16, "dropout": 1.0},
            "Invalid value received for argument `dropout`. "
            "Expected a float value between 0 and 1. Received: dropout=1.0",
        ),
    ],
)
def test_bad_arguments_raise(kwargs, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    TransformerBlock(**kwargs)


def test_flops_with_wrong_width_raises():
  with pytest.raises(ValueError, match=re.escape("has hidden_size=8")):
    TransformerBlock(8, 2, 16).flops_per_example((5, 6))


def _gelu_tanh(h):
  return 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))


def test_options_round_trip_and_default_config_is_unchanged():
  layer = TransformerBlock(8, 2, 16, seed=1, gelu_approximate=True, layer_norm_epsilon=1e-5)
  testing.run_component_test(
      layer,
      _tokens(),
      ["hidden_size", "num_heads", "mlp_dim", "dropout", "seed", "gelu_approximate",
       "layer_norm_epsilon"],
  )
  assert "gelu_approximate" not in TransformerBlock(8, 2, 16).get_config()
  assert "layer_norm_epsilon" not in TransformerBlock(8, 2, 16).get_config()


def test_config_without_the_options_loads_with_defaults():
  old = {"name": "b", "trainable": True, "dtype": "float32", "hidden_size": 8, "num_heads": 2,
         "mlp_dim": 16, "dropout": 0.0, "seed": 1}
  layer = TransformerBlock.from_config(old)
  assert layer.gelu_approximate is False
  assert layer.layer_norm_epsilon == 1e-6
  config = layer.get_config()
  assert {k: v for k, v in config.items() if k != "dtype"} == {
      k: v for k, v in old.items() if k != "dtype"
  }


def test_gelu_approximate_and_epsilon_match_a_numpy_reference():
  tokens = _tokens()
  layer = TransformerBlock(8, 2, 16, seed=3, gelu_approximate=True, layer_norm_epsilon=1e-2)
  layer.build(tokens.shape)
  rng = np.random.default_rng(1)
  for variable in layer.weights:
    variable.assign(rng.normal(scale=0.5, size=variable.shape).astype("float32"))
  w = {v.path.split("/", 1)[1]: v.numpy() for v in layer.weights}

  def norm(x, name):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-2) * w[f"{name}/gamma"] + w[f"{name}/beta"]

  y = norm(tokens, "ln_1")
  q, k, v = (
      np.einsum("bnd,dhk->bnhk", y, w[f"attention/{p}/kernel"]) + w[f"attention/{p}/bias"]
      for p in ("query", "key", "value")
  )
  scores = np.einsum("bqhk,bthk->bhqt", q, k) / math.sqrt(q.shape[-1])
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  out = np.einsum("bhqt,bthk->bqhk", probs, v)
  x = tokens + np.einsum("bqhk,hkd->bqd", out, w["attention/attention_output/kernel"])
  x = x + w["attention/attention_output/bias"]
  h = _gelu_tanh(norm(x, "ln_2") @ w["mlp_1/kernel"] + w["mlp_1/bias"])
  expected = x + h @ w["mlp_2/kernel"] + w["mlp_2/bias"]
  np.testing.assert_allclose(layer(tokens), expected, rtol=1e-4, atol=1e-4)
  exact = TransformerBlock(8, 2, 16, layer_norm_epsilon=1e-2)
  exact.build(tokens.shape)
  exact.set_weights(layer.get_weights())
  assert not np.allclose(exact(tokens), layer(tokens), atol=1e-6)


def test_options_do_not_change_flops_or_params():
  plain = TransformerBlock(8, 2, 16)
  tuned = TransformerBlock(8, 2, 16, gelu_approximate=True, layer_norm_epsilon=1e-5)
  assert tuned.flops_per_example((5, 8)) == plain.flops_per_example((5, 8))
  tuned.build((None, 5, 8))
  assert tuned.param_count() == 600


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gelu_approximate": 1}, "Expected a bool. Received: gelu_approximate=1"),
        (
            {"layer_norm_epsilon": 0.0},
            "Expected a positive float. Received: layer_norm_epsilon=0.0",
        ),
        ({"layer_norm_epsilon": "1e-6"}, "Received: layer_norm_epsilon='1e-6'"),
    ],
)
def test_bad_options_raise(kwargs, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    TransformerBlock(8, 2, 16, **kwargs)
