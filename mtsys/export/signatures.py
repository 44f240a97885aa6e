"""The signatures of an export, added to a `keras.export.ExportArchive`.

Per task T (its name verbatim as the key):

    T            image_bytes string [B] (PNG/JPEG/GIF/BMP)  -> logits, probabilities, classes,
                                                              class_names (when known)
    T@pixels     image uint8 [B, H, W, C] (any H, W)         -> the same outputs
    T@classify   inputs string [B] (serialized tf.Example,   -> classes string [B, K],
                 image bytes under `image/encoded`)             scores float [B, K]

and for the whole export `routed` (task string [B], image_bytes [B]) and `routed@pixels` (task,
image), each example through its own task's path, plus `serving_default` (the default task's T).
`T@classify` is TF Serving's Classify contract; its method name is set by `saved_model_files`.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from mtsys import errors
from mtsys import data as mdata
from mtsys.export import graph as mgraph
from mtsys.export import preprocess

PIXELS = "@pixels"
CLASSIFY = "@classify"
ROUTED = "routed"
DEFAULT = "serving_default"
RESERVED = (ROUTED, ROUTED + PIXELS, DEFAULT)

_BYTES = tf.TensorSpec([None], tf.string, name="image_bytes")
_IMAGE = tf.TensorSpec([None, None, None, None], tf.uint8, name="image")
_EXAMPLES = tf.TensorSpec([None], tf.string, name="inputs")
_TASK = tf.TensorSpec([None], tf.string, name="task")


def check_task_names(names: Sequence[str]) -> None:
  """Raises ValueError for a task whose name collides with a reserved signature key."""
  for name in names:
    if name in RESERVED:
      raise errors.ExportError(
          f"Task '{name}' cannot be exported: its name is the reserved signature "
          f"key '{name}' (reserved: {list(RESERVED)}). Rename the task.")


def signature_keys(task_names: Sequence[str]) -> list[str]:
  """Every signature key of an export of these tasks, in the order they are added."""
  keys = []
  for name in task_names:
    keys += [name, name + PIXELS, name + CLASSIFY]
  return keys + [ROUTED, ROUTED + PIXELS, DEFAULT]


def _predict_outputs(system: mgraph.SystemGraph, index: int, images: tf.Tensor) -> dict:
  task = system.tasks[index]
  logits = system.logits(index, images)
  classes = tf.argmax(logits, axis=-1, output_type=tf.int64)
  out = {"logits": logits, "probabilities": tf.nn.softmax(logits), "classes": classes}
  if task.class_names:
    out["class_names"] = tf.gather(tf.constant(list(task.class_names)), classes)
  return out


def _class_labels(task: mgraph.TaskPath) -> list[str]:
  return list(task.class_names) or [str(k) for k in range(task.num_classes)]


def add_task(archive: keras.export.ExportArchive, system: mgraph.SystemGraph,
             index: int) -> dict:
  """Adds T, T@pixels and T@classify for task `index`; returns their tf.functions by key."""
  task = system.tasks[index]
  size, channels = task.image_size, system.channels

  def from_bytes(image_bytes):
    return _predict_outputs(system, index, preprocess.decode(image_bytes, size, channels))

  def from_pixels(image):
    return _predict_outputs(system, index, preprocess.pixels(image, size, channels))

  def classify(inputs):
    images = preprocess.decode(preprocess.parse_examples(inputs), size, channels)
    scores = tf.nn.softmax(system.logits(index, images))
    labels = tf.constant(_class_labels(task))
    classes = tf.tile(labels[None, :], [tf.shape(scores)[0], 1])
    return {"classes": classes, "scores": scores}

  return {
      task.name: archive.add_endpoint(task.name, from_bytes, input_signature=[_BYTES]),
      task.name + PIXELS: archive.add_endpoint(task.name + PIXELS, from_pixels,
                                               input_signature=[_IMAGE]),
      task.name + CLASSIFY: archive.add_endpoint(task.name + CLASSIFY, classify,
                                                 input_signature=[_EXAMPLES]),
  }


def _routed_outputs(system: mgraph.SystemGraph, task_index: tf.Tensor,
                    probabilities: tf.Tensor) -> dict:
  classes = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
  names = tf.constant([_class_labels(t) + [""] * (system.max_classes - t.num_classes)
                       for t in system.tasks])
  return {
      "classes": classes,
      "scores": tf.reduce_max(probabilities, axis=-1),
      "probabilities": probabilities,
      "num_classes": tf.gather(tf.constant([t.num_classes for t in system.tasks], tf.int32),
                               task_index),
      "class_names": tf.gather_nd(names, tf.stack([tf.cast(task_index, tf.int64), classes], 1)),
  }


def add_routed(archive: keras.export.ExportArchive, system: mgraph.SystemGraph) -> None:
  """Adds `routed` and `routed@pixels`."""
  channels = system.channels

  def routed(task, image_bytes):
    index = system.task_indices(task)
    probabilities = system.routed_probabilities(
        index, lambda size, rows: preprocess.decode(tf.gather(image_bytes, rows), size, channels))
    return _routed_outputs(system, index, probabilities)

  def routed_pixels(task, image):
    index = system.task_indices(task)
    # Channels are converted once; each image size resizes only its own examples.
    image = preprocess.to_channels(image, channels)
    probabilities = system.routed_probabilities(
        index, lambda size, rows: mdata.preprocess(tf.gather(image, rows), size, channels))
    return _routed_outputs(system, index, probabilities)

  archive.add_endpoint(ROUTED, routed, input_signature=[_TASK, _BYTES])
  archive.add_endpoint(ROUTED + PIXELS, routed_pixels, input_signature=[_TASK, _IMAGE])


def add_default(archive: keras.export.ExportArchive, system: mgraph.SystemGraph,
                index: int) -> None:
  """Adds `serving_default`: the T signature of task `index`."""
  task = system.tasks[index]

  def default(image_bytes):
    images = preprocess.decode(image_bytes, task.image_size, system.channels)
    return _predict_outputs(system, index, images)

  archive.add_endpoint(DEFAULT, default, input_signature=[_BYTES])


def build_archive(system: mgraph.SystemGraph,
                  default_index: int) -> tuple[keras.export.ExportArchive, dict]:
  """An ExportArchive with every signature added.

  The layers are deliberately not `track()`ed: the archive saves every variable the endpoints
  use (each once), and tracking the Keras layers as well would save each weight a second time
  under the layers' own checkpoint keys (Keras 3.15).

  Returns:
    The archive, and the per-task signatures' tf.functions by key (for auditing).
  """
  archive = keras.export.ExportArchive()
  task_functions = {}
  for index in range(len(system.tasks)):
    task_functions.update(add_task(archive, system, index))
  add_routed(archive, system)
  add_default(archive, system, default_index)
  return archive, task_functions
