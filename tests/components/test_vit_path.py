"""All six kinds chained into a tiny ViT, as a path is assembled by mtsys.system."""

import keras
import numpy as np
import tensorflow as tf

from mtsys import components


def _tiny_vit(seed=0):
  images = keras.Input((8, 8, 1))
  x = components.PatchEmbedding(4, 8, seed=seed)(images)
  x = components.ClassToken(8)(x)
  x = components.PositionEmbedding(2, 8, seed=seed + 1)(x)
  x = components.TransformerBlock(8, 2, 16, seed=seed + 2)(x)
  x = components.ResidualAdapter(8, 4, seed=seed + 3)(x)
  logits = components.ClassificationHead(3, 8)(x)
  return keras.Model(images, logits)


def _data():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(4, 8, 8, 1)).astype("float32")
  labels = np.array([0, 1, 2, 1], "int32")
  return images, labels


def _fit_one_step(devices):
  strategy = tf.distribute.MirroredStrategy(devices)
  images, labels = _data()
  with strategy.scope():
    model = _tiny_vit()
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
  np.testing.assert_array_equal(model.predict(images, verbose=0), 0.0)
  history = model.fit(images, labels, batch_size=4, epochs=1, verbose=0, shuffle=False)
  return model, history


def test_trains_one_step_under_mirrored_strategy_like_one_device():
  """Two replicas (2 logical CPUs, tests/conftest.py) take the step one device takes."""
  model, history = _fit_one_step(["/cpu:0", "/cpu:1"])
  assert model.distribute_strategy.num_replicas_in_sync == 2
  head = model.layers[-1]
  assert np.isclose(history.history["loss"][0], np.log(3), atol=1e-5)
  assert np.any(head.dense.kernel.numpy() != 0.0)
  assert sum(layer.param_count() for layer in model.layers[1:]) == model.count_params()
  single, _ = _fit_one_step(["/cpu:0"])
  compared = 0
  for got, want in zip(model.weights, single.weights, strict=True):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-6)
    compared += 1
  assert compared == len(model.weights) > 10


def test_saves_and_loads_as_a_keras_file(tmp_path):
  model = _tiny_vit()
  model.layers[-1].dense.kernel.assign(np.ones((8, 3), "float32"))
  images, _ = _data()
  path = str(tmp_path / "vit.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0))
