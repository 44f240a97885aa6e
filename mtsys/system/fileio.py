"""The store's file primitives over `tf.io.gfile`: reads, plain and atomic writes, deletions.

Every write primitive is a fault point of `mtsys.faults` (the store's crash tests kill the
process at any of them). Errors of the filesystem (permissions, a transient remote error) become
`StoreAccessError` with their cause kept; only checksum and parse failures are called corrupt.

Atomic replacement: on a local (POSIX) filesystem a temporary file `<name>.tmp-<random>` is
written and `rename(2)`d over the target, which is atomic; on object stores (gs://, s3://), where a
rename is a copy and a delete, the object is written with one upload, which the store makes
visible whole or not at all. A kill leaves at most a temporary file, which
`Store.sweep_leftovers` removes under the run lock.

Exclusive creation (`create_exclusive`, create-if-absent with the whole content visible at once)
is local only: a temporary file is written, fsynced and `link(2)`ed to the target, which fails if
the target exists. `tf.io.gfile` has no create-if-absent (its `rename(overwrite=False)` checks,
then renames), so on object stores it needs the store's create-only precondition
(`ifGenerationMatch=0` on GCS), which is not implemented yet: there it raises.

TensorFlow is imported on first use, not at import time, so processes that only use the local
primitives (`create_exclusive`, `write_atomic_durable` and `mtsys.system.leases` on top of
them) start without it.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Optional

from mtsys import errors
from mtsys import faults as mfaults


class _LazyTensorFlow:
  """`tensorflow`, imported on the first attribute access (see the module doc)."""

  def __getattr__(self, name: str):
    import tensorflow  # pylint: disable=g-import-not-at-top
    return getattr(tensorflow, name)


tf = _LazyTensorFlow()

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


class AlreadyExists(errors.StoreError, FileExistsError):
  """`create_exclusive` found its target present: another writer created it first."""

  def __init__(self, path: str):
    super().__init__(f"{path} already exists: another writer created it first (an exclusive "
                     "create writes a file only if it is absent).")
    self.path = path

  def __reduce__(self):  # pickles (to another process) by its path, not its message
    return (type(self), (self.path,))


class ExclusiveCreateUnsupportedError(errors.StoreError, NotImplementedError):
  """`create_exclusive` on an object store, which needs a precondition not implemented yet."""


def listdir(directory: str) -> list[str]:
  """The entries of `directory` ([] when it does not exist); local directories need no
  TensorFlow (leases, in-flight records and barriers are read by lightweight processes)."""
  if not is_local(directory):
    gfile = tf.io.gfile
    return [e.rstrip("/") for e in gfile.listdir(directory)] if gfile.isdir(directory) else []
  try:
    return os.listdir(directory)
  except FileNotFoundError:
    return []
  except OSError as e:
    raise errors.StoreAccessError(f"Cannot list {directory}: {e.strerror or e}") from e


def is_local(path: str) -> bool:
  """Whether `path` is on a local (POSIX) filesystem rather than behind a URL scheme."""
  return "://" not in path


def _write_synced(path: str, data: bytes) -> None:
  """Creates `path` (which must not exist) holding `data`, fsynced."""
  fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
  try:
    view = memoryview(data)
    while view:
      view = view[os.write(fd, view):]
    os.fsync(fd)
  finally:
    os.close(fd)


def _fsync_dir(directory: str) -> None:
  """Makes the directory's entries (a new link or a rename) durable."""
  fd = os.open(directory or ".", os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _unlink_quietly(path: str) -> None:
  try:
    os.unlink(path)
  except FileNotFoundError:
    pass


def _write_tmp(path: str, data: bytes, faults: mfaults.Injector) -> str:
  """A synced temporary file next to `path` holding `data`; its name."""
  tmp = f"{path}{TMP_MARK}{uuid.uuid4().hex}"
  faults.point(f"write {tmp}", partial=lambda: _write_synced(tmp, data[:len(data) // 2]))
  try:
    _write_synced(tmp, data)
  except OSError as e:
    _unlink_quietly(tmp)
    raise errors.StoreAccessError(f"Cannot write {tmp}: {e.strerror or e}") from e
  return tmp


def create_exclusive(path: str, data: bytes,
                     faults: Optional[mfaults.Injector] = None) -> None:
  """Creates `path` holding `data` only if it is absent; readers see all of it or no file.

  Local filesystems: a temporary file `<path>.tmp-<random>` in the same directory is written and
  fsynced, then hard-linked to `path` with `link(2)`, which fails if `path` exists (atomically,
  unlike a check followed by a write); the temporary name is removed either way and the
  directory fsynced. Of any number of processes creating the same path at once exactly one
  succeeds. A kill leaves at most the temporary file. The directory must exist, and the
  filesystem must support hard links.

  Object stores (gs://, s3://, any URL scheme): not supported yet. `tf.io.gfile` has no
  create-if-absent, so an exclusive create there needs the store's own create-only precondition
  (`ifGenerationMatch=0` on a GCS upload, `If-None-Match: *` on S3) through its client;
  `ExclusiveCreateUnsupportedError` says so.

  Args:
    path: the file to create.
    data: its whole content.
    faults: the fault injector (points: the temporary write, the link); inert when None.

  Raises:
    AlreadyExists: `path` exists (its content is left untouched); the message names it.
    ExclusiveCreateUnsupportedError: `path` is not local.
    StoreAccessError: the filesystem refused (permissions, no directory, no hard links).
  """
  if not is_local(path):
    raise ExclusiveCreateUnsupportedError(
        f"Cannot create {path} exclusively: tf.io.gfile has no create-if-absent, and on an "
        "object store an exclusive create needs the store's create-only precondition "
        "(ifGenerationMatch=0 on GCS), which is not implemented yet; use a local directory.")
  faults = faults or mfaults.Injector()
  tmp = _write_tmp(path, data, faults)
  try:
    faults.point(f"link {tmp} -> {path}")
    os.link(tmp, path)
  except FileExistsError:
    raise AlreadyExists(path) from None
  except OSError as e:
    raise errors.StoreAccessError(f"Cannot create {path}: {e.strerror or e}") from e
  finally:
    _unlink_quietly(tmp)
  _fsync_dir(os.path.dirname(path))


def write_atomic_durable(path: str, data: bytes,
                         faults: Optional[mfaults.Injector] = None) -> None:
  """`write_atomic`, made durable on local filesystems, where it needs no TensorFlow.

  Local: a temporary file is written and fsynced, `rename(2)`d over `path`, and the directory
  fsynced, so readers see the old or the new bytes and a machine crash after the return keeps
  the new ones. Object stores: `write_atomic` (one upload).
  """
  faults = faults or mfaults.Injector()
  if not is_local(path):
    write_atomic(path, data, faults)
    return
  tmp = _write_tmp(path, data, faults)
  faults.point(f"rename {tmp} -> {path}")
  try:
    os.replace(tmp, path)
  except OSError as e:
    _unlink_quietly(tmp)
    raise errors.StoreAccessError(f"Cannot replace {path}: {e.strerror or e}") from e
  _fsync_dir(os.path.dirname(path))


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
