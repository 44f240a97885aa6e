"""Whether a config may continue a stored system (checked before a run's first write)."""

from __future__ import annotations

from google.protobuf import text_format

from mtsys import errors
from mtsys.config import loader
from mtsys.protos import mtsys_pb2


def check_compatible(stored: mtsys_pb2.SystemConfig, config: loader.Config) -> None:
  """Raises ValueError when `config` cannot continue a system made with `stored`.

  The root must be the same (its components are already in the system); tasks may be added, but a
  task already in the system keeps its number of classes (its head depends on it).
  """
  if stored.HasField("root") and stored.root != config.proto.root:
    raise errors.IncompatibleSystemError(
        f"The system was made with root {{{_short(stored.root)}}}; the config asks for "
        f"root {{{_short(config.proto.root)}}}. Use the original root or a new "
        "system directory.")
  before = {t.name: t for t in stored.task}
  for task in config.tasks:
    old = before.get(task.name)
    if old is not None and old.num_classes != task.num_classes:
      raise errors.IncompatibleSystemError(
          f"Task '{task.name}' has {old.num_classes} classes in the system; the "
          f"config says {task.num_classes}. Give the changed task a new name.")


def _short(msg) -> str:
  return text_format.MessageToString(msg, as_one_line=True)
