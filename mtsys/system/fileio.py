"""The store's file primitives over `tf.io.gfile`: reads, plain and atomic writes, deletions.

Every write primitive is a fault point of `mtsys.faults` (the store's crash tests kill the
process at any of them). Errors of the filesystem (permissions, a transient remote error) become
`StoreAccessError` with their cause kept; only checksum and parse failures are called corrupt.

Atomic replacement: on a local (POSIX) filesystem a temporary file `<name>.tmp-<random>` is
written and `rename(2)`d over the target, which is atomic; on object stores (gs://, s3://), where a
rename is a copy and a delete, the object is written with one upload, which the store makes
visible whole or not at all. A kill leaves at most a temporary file, which
`Store.sweep_leftovers` removes under the run lock.
"""

from __future__ import annotations

import json
import os
import uuid

import tensorflow as tf

from mtsys import errors
from mtsys import faults as mfaults

# Object stores: a single write is atomic, a rename is a copy + delete (not atomic).
OBJECT_STORE_SCHEMES = ("gs://", "s3://")
TMP_MARK = ".tmp-"


def join(*parts: str) -> str:
  """`parts` joined by "/" (each one's trailing "/" dropped): local paths and URLs alike."""
  return "/".join(p.rstrip("/") for p in parts)


def read(path: str) -> bytes:
  """The file's bytes; CorruptFileError when it is missing, StoreAccessError when unreadable."""
  try:
    if not tf.io.gfile.exists(path):
      raise errors.CorruptFileError(f"Missing file {path}.")
    with tf.io.gfile.GFile(path, "rb") as f:
      return f.read()
  except tf.errors.OpError as e:  # permissions, a transient remote error: not corruption
    raise errors.StoreAccessError(f"Cannot read {path}: {e.message}") from e


def _write(path: str, data: bytes) -> None:
  try:
    with tf.io.gfile.GFile(path, "wb") as f:
      f.write(data)
  except tf.errors.OpError as e:
    raise errors.StoreAccessError(f"Cannot write {path}: {e.message}") from e


def write_plain(path: str, data: bytes, faults: mfaults.Injector) -> None:
  """Writes `path` in place (for files nothing reads before a later manifest names them)."""
  faults.point(f"write {path}", partial=lambda: _write(path, data[:len(data) // 2]))
  _write(path, data)


def write_atomic(path: str, data: bytes, faults: mfaults.Injector) -> None:
  """Replaces `path` so readers see the old or the new bytes, never a mix (see module doc)."""
  if path.startswith(OBJECT_STORE_SCHEMES):
    write_plain(path, data, faults)
    return
  tmp = f"{path}{TMP_MARK}{uuid.uuid4().hex}"
  write_plain(tmp, data, faults)
  faults.point(f"rename {tmp} -> {path}")
  try:
    tf.io.gfile.rename(tmp, path, overwrite=True)
  except tf.errors.OpError as e:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)
    raise errors.StoreAccessError(f"Cannot replace {path}: {e.message}") from e


def remove(path: str, faults: mfaults.Injector) -> None:
  """Deletes a file if it exists."""
  if tf.io.gfile.exists(path):
    faults.point(f"remove {path}")
    tf.io.gfile.remove(path)


def rmtree(path: str, faults: mfaults.Injector) -> None:
  """Deletes a directory tree if it exists."""
  if tf.io.gfile.exists(path):
    faults.point(f"rmtree {path}")
    tf.io.gfile.rmtree(path)


def write_json(path: str, payload) -> None:
  """Writes a results JSON file (indented) atomically, making its directory if needed."""
  parent = os.path.dirname(path)
  if parent:
    tf.io.gfile.makedirs(parent)
  write_atomic(path, json.dumps(payload, indent=2).encode(), mfaults.Injector())
