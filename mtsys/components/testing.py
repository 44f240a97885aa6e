"""Checks every component layer must pass, in the spirit of Keras' `run_layer_test`.

Used by tests/components; also handy for tests of code that stores and rebuilds components.
"""

import json

import keras
import numpy as np

from mtsys.components import registry

_BASE_CONFIG_KEYS = frozenset({"name", "trainable", "dtype"})


def _copy_and_compare(layer, restored, inputs, expected, what):
  restored(inputs)  # Builds it.
  if restored.get_config() != layer.get_config():
    raise AssertionError(
        f"{what}: config changed.\n{restored.get_config()}\n!=\n{layer.get_config()}"
    )
  restored.set_weights(layer.get_weights())
  np.testing.assert_array_equal(
      keras.ops.convert_to_numpy(restored(inputs)), expected, err_msg=what
  )


def run_component_test(layer, inputs, init_args):
  """Calls `layer` on `inputs`, then round-trips it every way a stored component travels.

  Checks that `get_config()` holds exactly `init_args` (names) plus Keras' base keys and is JSON;
  that `from_config`, `registry.from_config` and `keras.saving` (de)serialization rebuild a layer
  with an equal config that, given the same weights, computes identical outputs; and that a
  `trainable=False` copy exposes no trainable weights, even through a `keras.Model`.

  Returns:
    The layer's outputs on `inputs`, as numpy.
  """
  expected = keras.ops.convert_to_numpy(layer(inputs))
  config = layer.get_config()
  if set(config) != _BASE_CONFIG_KEYS | set(init_args):
    raise AssertionError(f"get_config() keys {sorted(config)}; expected {sorted(init_args)}")
  json.dumps(config)
  cls = type(layer)
  _copy_and_compare(layer, cls.from_config(config), inputs, expected, "from_config")
  _copy_and_compare(
      layer, registry.from_config(cls.kind, config), inputs, expected, "registry.from_config"
  )
  serialized = keras.saving.serialize_keras_object(layer)
  restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
  if type(restored) is not cls or not restored.built:
    raise AssertionError(f"deserialized {type(restored)} (built={restored.built})")
  _copy_and_compare(layer, restored, inputs, expected, "serialize_keras_object")

  frozen = cls.from_config({**config, "name": config["name"] + "_frozen", "trainable": False})
  dtype = keras.backend.standardize_dtype(inputs.dtype)
  symbolic = keras.Input(batch_shape=tuple(keras.ops.shape(inputs)), dtype=dtype)
  model = keras.Model(symbolic, frozen(symbolic))
  if model.trainable_weights or frozen.trainable_weights:
    raise AssertionError("a trainable=False component still has trainable weights")
  if sum(int(np.prod(w.shape)) for w in model.non_trainable_weights) != frozen.param_count():
    raise AssertionError("non-trainable weights do not add up to param_count()")
  return expected
