"""Evolution's history: one `ChildRecord` per trained child, kept or pruned, under `history/`.

Pruned children leave no other trace in a system, so this log is what plots, TensorBoard and
reports of a run read (`mtsys.inspect.plots`).

Files: `history/<writer>.<segment>.log`. Every program that evolves the system is one *writer*
(`writer_id`: start time, author, host, process id) and writes only its own files, so agents
sharing a store never contend for one, and no file has two writers. A writer's files hold its
records in the order it made them; `<segment>` counts from 00000.

Format: an 8-byte magic (`MAGIC`), then records, each a 4-byte little-endian payload length, the
payload's CRC-32 (4 bytes, little-endian) and the payload, a serialized ChildRecord.

Writing: object stores cannot append, and an append on a local filesystem is not atomic. A
writer therefore keeps its current segment in memory and replaces the segment's file whole
(`fileio.write_atomic`: a renamed temporary file locally, one upload on object stores) once per
generation, before the evolution state that completes the generation is saved. A segment is
closed once it passes `SEGMENT_BYTES`, which bounds what one generation rewrites; the next record
starts a new segment.

Crashes: a kill leaves the old or the new file (and at most a temporary file, which
`Store.sweep_leftovers` removes). Readers still accept a file cut short anywhere, as a copy or a
non-atomic writer may leave it: a truncated last record is ignored. A complete record whose
checksum does not match, or a file without the magic, is corrupt (CorruptFileError naming the
file). A kill after the history write but before the state write makes the next run redo the
generation: its children get the same `sequence` numbers, and `read` keeps the records written
last.

Systems made before the history existed have no `history/`: `read` returns [] and callers say
"no history". Records of tasks removed from the system (`Store.removed_tasks`) are not returned, and `admin.remove_task` deletes them.
A fork's history starts at the fork (its sources' histories are theirs).
"""

from __future__ import annotations

import os
import re
import socket
import struct
import time
import uuid
import zlib
from typing import TYPE_CHECKING, Callable, Iterable, Optional, Union

import tensorflow as tf

from mtsys import errors
from mtsys.protos import mtsys_pb2
from mtsys.system import fileio

if TYPE_CHECKING:
  from mtsys.system import store as mstore

DIRECTORY = "history"
SUFFIX = ".log"
MAGIC = b"MTSYSHL\x01"
# A segment is closed once it is this large (about 2,000 children's records).
SEGMENT_BYTES = 1 << 20
_HEADER = struct.Struct("<II")  # payload length, CRC-32 of the payload
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def writer_id(author: str, clock: Callable[[], float] = time.time) -> str:
  """A name no other writer of any store has: start time (ms), author, host, process id and a
  random suffix, each made file-name safe. Sorting writers by name sorts them by start time."""
  parts = [f"{int(clock() * 1000):013d}", author or "mtsys", socket.gethostname()[:40],
           str(os.getpid()), uuid.uuid4().hex[:6]]
  return "-".join(_UNSAFE.sub("_", p).strip("._") or "_" for p in parts)


def directory(root: str) -> str:
  return fileio.join(root, DIRECTORY)


def encode(records: Iterable[mtsys_pb2.ChildRecord]) -> bytes:
  """A history file holding `records`."""
  return MAGIC + b"".join(_encode_one(r.SerializeToString()) for r in records)


def _encode_one(payload: bytes) -> bytes:
  return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode(data: bytes, path: str) -> list[mtsys_pb2.ChildRecord]:
  """The records of a history file's bytes; a truncated last record is ignored.

  Raises:
    CorruptFileError: naming `path`, for a file without the magic, a complete record whose
      checksum does not match, or a payload that does not parse.
  """
  if len(data) < len(MAGIC):  # cut short before its first record: nothing to read yet
    if MAGIC.startswith(data):
      return []
    raise errors.CorruptFileError(f"{path} is not an mtsys history file (no magic).")
  if not data.startswith(MAGIC):
    raise errors.CorruptFileError(f"{path} is not an mtsys history file (no magic).")
  out, offset = [], len(MAGIC)
  while offset + _HEADER.size <= len(data):
    length, crc = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    if start + length > len(data):
      break  # the last record is truncated
    payload = data[start:start + length]
    if zlib.crc32(payload) != crc:
      raise errors.CorruptFileError(
          f"Checksum mismatch in {path} at byte {offset}: the history file is corrupt.")
    record = mtsys_pb2.ChildRecord()
    try:
      record.ParseFromString(payload)
    except Exception as e:  # DecodeError despite a matching checksum: not our record
      raise errors.CorruptFileError(f"Cannot parse a ChildRecord in {path} at byte {offset}: "
                                    f"{e}") from e
    out.append(record)
    offset = start + length
  return out


class Writer:
  """Appends one writer's records to its history files in a store (see the module doc)."""

  def __init__(self, store: "mstore.Store", writer: str, segment_bytes: int = SEGMENT_BYTES):
    """Writes under `store`'s root through its fault injector (`mtsys.faults`)."""
    self._store = store
    self.writer = writer
    self._segment_bytes = segment_bytes
    self._segment = 0
    self._records: list[bytes] = []  # the current segment's encoded records
    self._size = len(MAGIC)
    self._pending = False

  @property
  def path(self) -> str:
    """The file of the current segment."""
    return fileio.join(directory(self._store.root),
                       f"{self.writer}.{self._segment:05d}{SUFFIX}")

  def append(self, record: mtsys_pb2.ChildRecord) -> None:
    """Adds `record` (its `writer` set to this writer's id); stored at the next `flush`."""
    record.writer = self.writer
    encoded = _encode_one(record.SerializeToString())
    self._records.append(encoded)
    self._size += len(encoded)
    self._pending = True

  def flush(self) -> None:
    """Replaces the current segment's file with everything appended to it so far."""
    if not self._pending:
      return
    tf.io.gfile.makedirs(directory(self._store.root))
    fileio.write_atomic(self.path, MAGIC + b"".join(self._records), self._store.faults)
    self._pending = False
    if self._size >= self._segment_bytes:  # full: the next record starts the next segment
      self._segment += 1
      self._records, self._size = [], len(MAGIC)


def files(root: str) -> list[str]:
  """The history files of the system at `root`, sorted by name ([] when it has no history)."""
  base = directory(root)
  try:
    if not tf.io.gfile.isdir(base):
      return []
    names = tf.io.gfile.listdir(base)
  except tf.errors.OpError as e:
    raise errors.StoreAccessError(f"Cannot list {base}: {e.message}") from e
  return [fileio.join(base, n) for n in sorted(names) if n.endswith(SUFFIX)]


def read(store: Union[str, "mstore.Store"],
         removed_tasks: Optional[Iterable[str]] = None) -> list[mtsys_pb2.ChildRecord]:
  """Every writer's records of a system, merged in time order; [] for a system without history.

  Args:
    store: a `Store` or a system directory.
    removed_tasks: tasks whose records to leave out; default: the store's removed tasks (read
      from its system.pb when `store` is a Store, none for a bare directory).

  Of records with the same task and `sequence` (a generation redone after a kill) only the one
  written last is kept. Order: wall time, then writer, then the writer's own order.
  """
  root = store if isinstance(store, str) else store.root
  if removed_tasks is None:
    removed_tasks = [] if isinstance(store, str) else store.removed_tasks()
  removed = set(removed_tasks)
  latest: dict = {}
  for n, path in enumerate(files(root)):
    for i, record in enumerate(decode(fileio.read(path), path)):
      if record.task in removed:
        continue
      key = (record.task, record.sequence)
      order = (record.wall_time_ms, n, i)
      if key not in latest or order > latest[key][0]:
        latest[key] = (order, record)
  return [r for _, r in sorted(latest.values(), key=lambda kv: kv[0])]
