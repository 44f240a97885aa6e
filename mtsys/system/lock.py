"""One run per system directory: a run holds `<system>/RUN.lock` while it writes.

Primitive: `fcntl.flock` (an exclusive, non-blocking advisory lock) on a local lock file. The
kernel drops the lock when its process ends, however it ends (`kill -9` included), so a lock
left by a killed run is simply free for the next run: there is no stale state to take over and
no lease to wait out. The file also holds who took it (host, pid, start time) so a second run
can name the holder. The file itself stays after a run; only the flock means "held".

Agents and garbage collection (issue #12) take the same lock *shared* (`acquire_shared`): any
number of them run together, while a single-program run (exclusive) and they exclude each other,
since the single program assumes it is the only writer (it sweeps what it finds unfinished).

Object stores (gs://, s3://) offer no flock and tf.io.gfile no conditional write, so the lock is
not enforced there (an object-store precondition needs the store's own client): run one job per
system directory, or use agents (one writer per task).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from typing import Optional

from mtsys import errors
from mtsys.system import fileio

LOCK_FILE = "RUN.lock"


class RunLock:
  """A held run lock; release it (or use `with`) when the run ends."""

  def __init__(self, path: str, fd: Optional[int]):
    self.path, self._fd = path, fd

  @property
  def enforced(self) -> bool:
    return self._fd is not None

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> "RunLock":
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def holder(system_dir: str) -> Optional[dict]:
  """What the lock file says about its last holder ({host, pid, started}), or None."""
  try:
    with open(os.path.join(system_dir, LOCK_FILE)) as f:
      return json.loads(f.read() or "null")
  except (OSError, ValueError):
    return None


def _open_locked(system_dir: str, mode: int) -> Optional[RunLock]:
  """The lock file of `system_dir` flocked with `mode` (non-blocking); None when another
  process holds it incompatibly. Object stores: an unenforced lock (module doc)."""
  path = os.path.join(system_dir, LOCK_FILE) if fileio.is_local(system_dir) else system_dir
  if not fileio.is_local(system_dir):
    return RunLock(path, None)
  os.makedirs(system_dir, exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, mode | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    return None
  return RunLock(path, fd)


def acquire(system_dir: str) -> RunLock:
  """Takes the run lock of `system_dir` (created if needed) for this process.

  Raises:
    LockHeldError: a live process holds it; the message names its host, pid and start time.
  """
  held = _open_locked(system_dir, fcntl.LOCK_EX)
  if held is None:
    who = holder(system_dir) or {}
    raise errors.LockHeldError(
        f"System directory {system_dir} is in use by another run (host {who.get('host', '?')}, "
        f"pid {who.get('pid', '?')}, started {who.get('started', '?')}) or by agents or garbage "
        "collection; one run may write a system at a time. Wait for it to finish or stop it, "
        "then rerun.")
  if held.enforced:
    info = {"host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    os.ftruncate(held._fd, 0)  # pylint: disable=protected-access
    os.write(held._fd, json.dumps(info).encode())  # pylint: disable=protected-access
  return held


def acquire_shared(system_dir: str, who: str = "agents") -> RunLock:
  """Takes the run lock of `system_dir` shared (agents, garbage collection: many at once).

  Raises:
    LockHeldError: a single-program run holds it exclusively; the message names it.
  """
  held = _open_locked(system_dir, fcntl.LOCK_SH)
  if held is None:
    info = holder(system_dir) or {}
    raise errors.LockHeldError(
        f"System directory {system_dir} is in use by a single-program run (host "
        f"{info.get('host', '?')}, pid {info.get('pid', '?')}, started "
        f"{info.get('started', '?')}); {who} cannot write it at the same time. Wait for it to "
        "finish or stop it, then rerun.")
  return held
