"""Validation of the names that become parts of storage paths.

Task names and component ids end up in file names inside a system directory (possibly a
`gs://` bucket), so they are checked before any I/O: nothing a config or a command supplies may
point outside the directory.
"""

from __future__ import annotations

import re

# TFDS-style task names ("emnist/digits", "visual_domain_decathlon/vgg-flowers") are allowed:
# segments of letters, digits, "_", "-", "." joined by single "/", no "." or ".." segment.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"
_TASK_RE = re.compile(rf"^{_SEGMENT}(/{_SEGMENT})*$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
MAX_LEN = 128


def check_task_name(name: str) -> str:
  """Returns `name` if it is a valid task name, else raises ValueError."""
  if (not isinstance(name, str) or len(name) > MAX_LEN or not _TASK_RE.match(name)
      or any(seg in (".", "..") or seg.endswith(".") for seg in name.split("/"))):
    raise ValueError(
        f"Invalid task name {name!r}: expected 1-{MAX_LEN} characters of letters, digits and "
        "'_-.', optionally in '/'-separated segments (like 'emnist/digits'), each starting "
        "with a letter or digit.")
  return name


def check_component_id(component_id: str) -> str:
  """Returns `component_id` if valid, else raises ValueError."""
  if (not isinstance(component_id, str) or len(component_id) > MAX_LEN
      or not _ID_RE.match(component_id) or ".." in component_id):
    raise ValueError(
        f"Invalid component id {component_id!r}: expected 1-{MAX_LEN} characters of letters, "
        "digits and '_-.', starting with a letter or digit, without '..'.")
  return component_id


def task_file_stem(name: str) -> str:
  """An injective, path-safe file name for a task ('emnist/digits' -> 'emnist~digits')."""
  # '~' cannot occur in a valid task name, so the mapping is reversible.
  return check_task_name(name).replace("/", "~")


def task_from_file_stem(stem: str) -> str:
  """The task a `task_file_stem` names ('emnist~digits' -> 'emnist/digits')."""
  return check_task_name(stem.replace("~", "/"))
