"""Fast validation: a path's metrics on a split every epoch, at little more than its logits' cost.

Validation images are resized once and kept in memory (small splits), in batches of
`EVAL_BATCH_FACTOR` times the training batch. The frozen components below the lowest trainable
one give the same outputs for them every epoch, so they run once (once per `ModelCache`, for
paths sharing them) and each epoch runs only the rest of the path, one traced call per batch
(Keras' evaluate under other strategies or XLA). The logits are the whole model's, so accuracy is
exactly what Keras' evaluate reports (the mean loss may differ in the last bits: other batches).
"""

from __future__ import annotations

import contextlib
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from mtsys import data as mdata
from mtsys.train import model_cache

# Evaluation batches are this many training batches: no activations are kept for a backward pass,
# and fewer, larger batches cost less per example. Logits do not depend on the batch size.
EVAL_BATCH_FACTOR = 4
# A validation split up to this size (as float32 images) is preprocessed once and kept in memory
# (in the cache, across paths), instead of decoded and resized again every epoch.
_EVAL_IN_MEMORY_BYTES = 64 << 20


def _eval_arrays(task_data, split, *, batch_size, image_size, channels,
                 cache: Optional[model_cache.ModelCache]):
  """(images, labels) of `split` in order and resized, if small enough to keep in memory."""
  nbytes = task_data.sizes.get(split, 0) * image_size * image_size * channels * 4
  if nbytes > _EVAL_IN_MEMORY_BYTES:
    return None
  key = (split, int(image_size), int(channels))
  stored = cache._get_eval_data(task_data, key) if cache is not None else None
  if stored is None:
    ds = mdata.make_dataset(task_data, split, training=False, batch_size=batch_size,
                            image_size=image_size, channels=channels, hparams=None, seed=None)
    batches = list(ds)
    stored = (tf.concat([b[0] for b in batches], 0), tf.concat([b[1] for b in batches], 0))
    if cache is not None:
      cache._put_eval_data(task_data, key, *stored)
  return stored


def _metrics_function(model: keras.Model, input_shape, input_dtype):
  """A traced function: a batch (inputs, labels) -> (correct predictions, mean loss x size)."""
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  def batch_metrics(x, y):
    logits = model(x, training=False)
    n = tf.cast(tf.shape(logits)[0], tf.float32)
    labels = tf.cast(y, logits.dtype)
    predicted = tf.cast(tf.argmax(logits, axis=-1), logits.dtype)
    correct = tf.reduce_sum(tf.cast(tf.equal(labels, predicted), tf.float32))
    return correct, tf.cast(loss_fn(y, logits), tf.float32) * n, n

  return tf.function(batch_metrics, input_signature=[
      tf.TensorSpec((None, *input_shape), input_dtype), tf.TensorSpec((None,), tf.int64)])


def _evaluate(entry: model_cache.Entry, model: keras.Model, inputs, labels, batch_size) -> dict:
  """Keras evaluate's accuracy and loss of `model` on in-memory (inputs, labels).

  Those are SparseCategoricalAccuracy and the batch-size-weighted mean of each batch's mean
  loss, accumulated in float32 batch after batch. Without distribution or XLA this runs one
  traced call per batch and nothing else; otherwise it is Keras' evaluate.
  """
  if not entry.direct_eval:
    ds = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(batch_size)
    return model.evaluate(ds, verbose=0, return_dict=True)
  inputs, labels = tf.convert_to_tensor(inputs), tf.cast(labels, tf.int64)
  key = (id(model), inputs.dtype)
  if key not in entry.eval_functions:
    entry.eval_functions[key] = _metrics_function(model, inputs.shape[1:], inputs.dtype)
  run = entry.eval_functions[key]
  total = [np.float32(0.0)] * 3
  for i in range(0, int(labels.shape[0]), batch_size):
    batch = run(inputs[i:i + batch_size], labels[i:i + batch_size])
    total = [t + np.float32(b) for t, b in zip(total, batch)]
  correct, loss, count = total
  return {"accuracy": float(correct / count), "loss": float(loss / count)}


def _device_types(strategy) -> tuple:
  try:
    names = strategy.extended.worker_devices
  except RuntimeError:  # the default strategy: wherever TF places ops
    return ("default",)
  return tuple(sorted({tf.DeviceSpec.from_string(d).device_type or "CPU" for d in names}))


def evaluator(entry: model_cache.Entry, planned, task_data, split, *, batch_size, image_size,
              channels, cache: Optional[model_cache.ModelCache],
              on_device=contextlib.nullcontext):
  """A function returning the path's metrics on `split` ({"accuracy": ..., "loss": ...}).

  Evaluation images carry no augmentation, so the frozen components below the lowest trainable
  one give the same outputs every epoch (and for every path that shares them): they run once,
  and each call runs only the rest of the path on their outputs (kept in `cache`, if given,
  across paths). The logits are those of the whole model, the metrics those of Keras' evaluate.
  Splits too large to keep in memory are streamed through the whole model on every call.
  """
  arrays = _eval_arrays(task_data, split, batch_size=batch_size, image_size=image_size,
                        channels=channels, cache=cache)
  if arrays is None:
    ds = mdata.make_dataset(task_data, split, training=False, batch_size=batch_size,
                            image_size=image_size, channels=channels, hparams=None, seed=None)
    return lambda: entry.model.evaluate(ds, verbose=0, return_dict=True)
  images, labels = arrays
  k = entry.first_trainable
  feature_bytes = int(labels.shape[0]) * int(np.prod(entry.input_shapes[k][1:])) * 4
  if k == 0 or feature_bytes > _EVAL_IN_MEMORY_BYTES:
    return lambda: _evaluate(entry, entry.model, images, labels, batch_size)
  prefix = planned[:k]
  cacheable = cache is not None and all(p.weights is not None for p in prefix)
  devices = _device_types(entry.strategy)
  numerics = (entry.key.jit_compile, entry.key.dtype_policy, devices)
  key = (split, int(image_size), int(channels), numerics, tuple(p.spec.id for p in prefix))
  prefix_weights = [list(p.weights) for p in prefix] if cacheable else None
  features = cache._get_features(task_data, key, prefix_weights) if cacheable else None
  if features is None:
    # Whole batches only (the last one padded), so predict traces one batch shape, not two.
    n = int(images.shape[0])
    padded = tf.concat([images, tf.repeat(images[-1:], (-n) % batch_size, axis=0)], 0)
    padded = tf.data.Dataset.from_tensor_slices(padded).batch(batch_size)
    with on_device():
      features = entry.prefix.predict(padded, verbose=0)[:n]
    if cacheable:
      cache._put_features(task_data, key, prefix_weights, features)
  features = tf.convert_to_tensor(features)
  return lambda: _evaluate(entry, entry.suffix, features, labels, batch_size)


class Validate(keras.callbacks.Callback):
  """Adds `val_<metric>` to the epoch's logs (before the callbacks that read them)."""

  def __init__(self, evaluate):
    super().__init__()
    self._evaluate = evaluate

  def on_epoch_end(self, epoch, logs=None):
    if logs is not None:
      logs.update({f"val_{k}": v for k, v in self._evaluate().items()})
