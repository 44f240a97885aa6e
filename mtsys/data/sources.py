"""The registry of data sources and `load_task`, which dispatches a TaskSpec to its source.

A source is the name of a field of TaskSpec's `source` oneof ("tfds", "files", "builtin") and a
loader `(task_spec, cache_dir) -> TaskData` that validates the data before returning it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import tensorflow as tf

from mtsys import errors
from mtsys.data import task_data as td

Loader = Callable[..., td.TaskData]

_SOURCES: dict[str, Loader] = {}


def register_source(name: str) -> Callable[[Loader], Loader]:
  """Decorator registering a loader for TaskSpec source `name`; a duplicate name raises."""

  def register(loader: Loader) -> Loader:
    if name in _SOURCES:
      raise ValueError(f"Data source '{name}' is already registered.")
    _SOURCES[name] = loader
    return loader

  return register


def source_names() -> list[str]:
  return sorted(_SOURCES)


def load_task(task_spec, *, cache_dir: str | None = None) -> td.TaskData:
  """Loads and validates a task's data.

  Args:
    task_spec: An `mtsys_pb2.TaskSpec`.
    cache_dir: Optional directory where sources may cache prepared arrays (built-in tasks do);
      None caches in memory only.

  Returns:
    A TaskData whose splits yield (uint8 [H, W, C], int64 []) with C = task_spec.channels when
    that is set (images are converted) and the stored channel count otherwise.

  Raises:
    ValueError: The spec or the data is invalid; the message names the task and the bad value.
    FileNotFoundError: A file the spec names does not exist.
  """
  td.check_spec_basics(task_spec)
  kind = task_spec.WhichOneof("source")
  if kind is None:
    raise errors.DataError(
        f"Task '{task_spec.name}' has no data source; set one of "
        f"{source_names()}.")
  if kind not in _SOURCES:
    raise errors.DataError(
        f"Unknown data source '{kind}' for task '{task_spec.name}'; expected one of "
        f"{source_names()}.")
  data = _SOURCES[kind](task_spec, cache_dir=cache_dir)
  for split in td.SPLITS:
    td.check_not_empty(data.name, split, data.sizes.get(split, 0))
  if task_spec.channels and task_spec.channels != data.channels:
    data = _convert(data, task_spec.channels)
  return data


def _convert(data: td.TaskData, channels: int) -> td.TaskData:
  def convert(image, label):
    return td.convert_channels(image, channels), label

  splits = {name: ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
            for name, ds in data.splits.items()}
  return dataclasses.replace(data, channels=channels, splits=splits,
                             image_shape=tuple(data.image_shape[:2]) + (channels,))
