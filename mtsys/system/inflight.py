"""In-flight records: the components an agent's current generation reads or creates, which
garbage collection keeps while the record has not expired (issue #12; `mtsys.system.gc`).

| file | holds | written how | a kill leaves |
|---|---|---|---|
| `inflight/<task>.pb` | InflightRecord (task, holder, token, expiry, component ids), a checksummed record (`mtsys.system.records`) | atomic replace (`fileio.write_atomic_durable`) by the task's lease holder only: `publish` (also to renew: same ids, new expiry); `clear` deletes it | the old or the new record, or a `*.tmp-<random>` leftover |

`<task>` is `names.task_file_stem(task)`. What an agent must do, and why garbage collection's
tombstones make it race-free, is in `mtsys.system.gc`'s docstring; in short: publish a record
naming what a generation will read or create BEFORE checking that those components are usable
(`gc.unusable`) or creating them, renew it before it expires, and drop an id only once what
keeps it live otherwise (a committed path, a saved state) is visible.

Expiry. A record protects its components while its expiry + `max_clock_skew_s`
(`leases.MAX_CLOCK_SKEW_S`) is after the reader's clock, the same clock assumption as the leases.
An agent that died stops renewing; its record then protects nothing and is left in place (the
next agent of the task replaces it); deleting it would gain nothing.

One writer per task: the task's lease holder. `publish` and `clear` refuse (`LeaseLost`) when
the stored record carries a higher fencing token than the caller's, so a superseded holder that
wakes up does not replace its successor's record. The check and the write are two steps: the
window between them is the leases' (see `mtsys.system.leases`), not closed here.

Corrupt records. A record is replaced whole, so a kill never leaves a partial one; a corrupt
file means damage (a flipped byte, a foreign file). It cannot say which components it protects,
nor until when, so treating it as protecting nothing could delete what a live agent uses:
`read_all` raises `CorruptFileError` naming every corrupt file, and garbage collection refuses to
delete anything until the file is replaced (its agent's next renewal rewrites it) or deleted by
someone who knows its agent is gone.

Works on local directories without TensorFlow; other filesystems go through `tf.io.gfile`
(garbage collection itself is local only).
"""

from __future__ import annotations

import os
import time
from typing import Iterable, Optional

from mtsys import errors
from mtsys import faults as mfaults
from mtsys.config import names
from mtsys.protos import mtsys_pb2
from mtsys.system import fileio
from mtsys.system import leases
from mtsys.system import records

INFLIGHT_DIR = "inflight"


class CorruptRecordError(errors.CorruptFileError):
  """In-flight records that cannot be read: what they protect cannot be known."""


def record_path(root: str, task: str) -> str:
  """The in-flight record file of `task` in the system directory `root`."""
  return fileio.join(root, INFLIGHT_DIR, names.task_file_stem(task) + ".pb")


def publish(root: str, task: str, holder: str, token: int, component_ids: Iterable[str],
            ttl_s: float, clock: leases.Clock = time.time,
            faults: Optional[mfaults.Injector] = None) -> mtsys_pb2.InflightRecord:
  """Writes (or renews) the in-flight record of `task`: `component_ids` protected for `ttl_s`.

  Args:
    root: the system directory.
    task: the agent's task (one record per task).
    holder, token: the agent's lease holder id and its task lease's fencing token.
    component_ids: every component the agent's generation reads or creates.
    ttl_s: seconds from now until the record expires (renew before).
    clock: wall-clock seconds (injectable).
    faults: fault points of crash tests; inert when None.

  Returns:
    The record written.

  Raises:
    LeaseLost: the stored record was written under a higher token (a successor holds the task).
    ValueError: a non-positive ttl, an invalid task name or component id.
  """
  if not ttl_s > 0:
    raise ValueError(f"In-flight record of {task!r}: the ttl must be positive, got {ttl_s}.")
  ids = sorted({names.check_component_id(c) for c in component_ids})
  path = record_path(root, task)
  _refuse_if_superseded(path, task, token)
  record = mtsys_pb2.InflightRecord(task=task, holder=holder, token=token,
                                    expiry=clock() + ttl_s, component_ids=ids)
  _makedirs(os.path.dirname(path) if fileio.is_local(path) else path.rsplit("/", 1)[0])
  fileio.write_atomic_durable(path, records.frame(record.SerializeToString()), faults)
  return record


def clear(root: str, task: str, faults: Optional[mfaults.Injector] = None, *,
          token: Optional[int] = None) -> bool:
  """Deletes the in-flight record of `task` (the agent is done); False if there was none.

  With `token`, a record written under a higher token (a successor's) is left alone and
  `LeaseLost` raised.
  """
  path = record_path(root, task)
  if token is not None:
    _refuse_if_superseded(path, task, token)
  if not _exists(path):
    return False
  if not fileio.is_local(path):
    fileio.remove(path, faults or mfaults.Injector())
    return True
  (faults or mfaults.Injector()).point(f"remove {path}")
  try:
    os.unlink(path)
  except FileNotFoundError:
    return False
  except OSError as e:
    raise errors.StoreAccessError(f"Cannot remove {path}: {e.strerror or e}") from e
  return True


def read_all(root: str) -> list[mtsys_pb2.InflightRecord]:
  """Every task's in-flight record in `root`, by task file name.

  Raises:
    CorruptRecordError: naming every corrupt record file (see the module doc: never skipped).
  """
  base = fileio.join(root, INFLIGHT_DIR)
  out, corrupt = [], []
  for entry in sorted(fileio.listdir(base)):
    if not entry.endswith(".pb"):
      continue  # a temporary leftover of a killed writer
    path = fileio.join(base, entry)
    try:
      record = _read(path)
    except errors.CorruptFileError as e:
      corrupt.append(str(e))
      continue
    if record is None:
      continue  # cleared meanwhile
    if not _valid_task(record.task) or names.task_file_stem(record.task) != entry[:-3]:
      corrupt.append(f"{path} holds the in-flight record of task {record.task!r}, not of the "
                     "task its name says: the file is corrupt.")
      continue
    out.append(record)
  if corrupt:
    raise CorruptRecordError(
        f"Corrupt in-flight records in {base} (which components they protect cannot be "
        f"known): {'; '.join(corrupt)}")
  return out


def is_live(record: mtsys_pb2.InflightRecord, now: float,
            max_clock_skew_s: float = leases.MAX_CLOCK_SKEW_S) -> bool:
  """Whether `record` still protects its components at `now` (expiry + skew after it)."""
  return record.expiry + max_clock_skew_s > now


def live_ids(root: str, now: float,
             max_clock_skew_s: float = leases.MAX_CLOCK_SKEW_S) -> set[str]:
  """The components named by the records of `root` that are live at `now`."""
  return {c for r in read_all(root) if is_live(r, now, max_clock_skew_s)
          for c in r.component_ids}


def _valid_task(task: str) -> bool:
  try:
    names.check_task_name(task)
    return True
  except ValueError:
    return False


def _refuse_if_superseded(path: str, task: str, token: int) -> None:
  try:
    stored = _read(path)
  except errors.CorruptFileError:
    return  # the writer replaces a damaged record
  if stored is not None and stored.token > token:
    raise leases.LeaseLost(
        f"The in-flight record of task {task!r} ({path}) was written under token "
        f"{stored.token} by {stored.holder}, higher than this holder's {token}: its lease was "
        "taken over; do not write it.")


def _read(path: str) -> Optional[mtsys_pb2.InflightRecord]:
  """The record at `path`, or None when there is none."""
  try:
    if fileio.is_local(path):
      with open(path, "rb") as f:
        data = f.read()
    else:
      if not _exists(path):
        return None
      data = fileio.read(path)
  except FileNotFoundError:
    return None
  except OSError as e:
    raise errors.StoreAccessError(f"Cannot read {path}: {e.strerror or e}") from e
  return records.parse(data, path, mtsys_pb2.InflightRecord(), legacy_ok=False)


def _exists(path: str) -> bool:
  return os.path.exists(path) if fileio.is_local(path) else fileio.tf.io.gfile.exists(path)


def _makedirs(directory: str) -> None:
  if not fileio.is_local(directory):
    fileio.tf.io.gfile.makedirs(directory)
    return
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    raise errors.StoreAccessError(f"Cannot make {directory}: {e.strerror or e}") from e
