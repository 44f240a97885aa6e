"""Evaluating a stored (frozen) path on one split of its task."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from mtsys import data as mdata
from mtsys import errors
from mtsys.system import assembly
from mtsys.system import paths as mpaths


def evaluate_path(planned: Sequence[assembly.PlannedComponent], task_data: "mdata.TaskData",
                  split: str, *, image_size: int, channels: int, batch_size: int,
                  hparams: Optional[Mapping[str, object]] = None,
                  strategy: Optional[tf.distribute.Strategy] = None) -> float:
  """Accuracy of the path on `split` (no augmentation)."""
  strategy = strategy or tf.distribute.get_strategy()
  ds = mdata.make_dataset(task_data, split, batch_size=batch_size, image_size=image_size,
                          channels=channels, hparams=hparams, training=False, seed=0)
  with strategy.scope():
    frozen = [assembly.PlannedComponent(p.spec, p.weights, None, False) for p in planned]
    model, _ = assembly.build_path_model(frozen, image_size, channels)
    model.compile(metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
  return float(model.evaluate(ds, verbose=0, return_dict=True)["accuracy"])


class PathPredictor:
  """The library's own (in-process) prediction of a frozen path; exports are checked against it.

  Images are preprocessed one by one through tf.data exactly as `evaluate_path` does, then run
  through a Keras model assembled from the components, traced once with an unknown batch size as
  a served signature is (TensorFlow picks kernels by static shape: a graph traced for batch 1
  rounds differently in the last bit). Build one per path and call it for every batch.
  """

  def __init__(self, planned: Sequence[assembly.PlannedComponent], *, image_size: int,
               channels: int, batch_size: int = 256):
    self.image_size, self.channels, self.batch_size = image_size, channels, batch_size
    frozen = [assembly.PlannedComponent(p.spec, p.weights, None, False) for p in planned]
    self._model, _ = assembly.build_path_model(frozen, image_size, channels)
    self._run = tf.function(
        self._model.__call__, autograph=False, jit_compile=False,
        input_signature=[tf.TensorSpec([None, image_size, image_size, channels])])

  def __call__(self, images) -> np.ndarray:
    """Logits for uint8 images [N, H, W, C] (C 1 or 3)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
      raise ValueError("Expected uint8 images of shape (N, H, W, C) with C in {1, 3}. Received: "
                       f"dtype={images.dtype}, shape={images.shape}")
    if not len(images):
      return np.zeros((0, self._model.output_shape[-1]), np.float32)
    size, channels = self.image_size, self.channels
    ds = tf.data.Dataset.from_tensor_slices(images).map(
        lambda image: mdata.preprocess(image, size, channels)).batch(self.batch_size)
    return np.concatenate([self._run(x).numpy() for x in ds])


def predict_path(planned: Sequence[assembly.PlannedComponent], images, *, image_size: int,
                 channels: int, batch_size: int = 256) -> np.ndarray:
  """`PathPredictor(...)(images)`: the frozen path's logits for uint8 images, once."""
  return PathPredictor(planned, image_size=image_size, channels=channels,
                       batch_size=batch_size)(images)


def predict_stored(store, task: str, images) -> np.ndarray:
  """`predict_path` for a task's current path in a store (its image size, the root's channels)."""
  path = store.read_path(task)
  if path is None:
    raise errors.UnknownTaskError(f"Task '{task}' has no path in {store.root}.")
  size = int(mpaths.hparams_from_proto(path.hparams).get(
      "image_size", store.read_state().config.root.image_size))
  return predict_path(mpaths.load_frozen(store, path), images, image_size=size,
                      channels=store.read_state().config.root.channels)
