"""Fenced path commits: a task's path is committed only under the task's lease, and a stale
holder's commit never replaces a newer holder's (issue #12; tokens from `mtsys.system.leases`).

| file | holds | written how |
|---|---|---|
| `paths/<task>.fenced/<token:012d>.<seq:06d>.pb` | the PathSpec committed by the lease holder with fencing token `token`, its `seq`-th commit under that token | `fileio.create_exclusive` (never rewritten) |
| `paths/<task>.pb` | a mirror of the highest commit, for readers that do not know fencing | atomic replace after each commit, re-done while a higher commit appeared |

The committed path is the highest (token, seq): a lower token is rejected by ordering, whatever
the order the files appeared in. `commit_path` reads the highest commit, refuses (`LeaseLost`)
when its token is higher than the caller's lease, creates the next name exclusively (a lost
create race re-reads), and reads again after: if a higher token appeared meanwhile its own file
is deleted and it raises `LeaseLost`. A stale holder whose create lands before the new holder's
first commit has committed while its lease may have expired (the check-then-write window of the
leases' module doc); the new holder's commit, with a higher token, supersedes it, so it never
survives a newer holder's commit. `read_path` gives the highest commit (or the plain path file
of a task never committed fenced). Local only; fenced files are never pruned yet.
"""

from __future__ import annotations

import os
import re
import time
from typing import Optional

from mtsys.config import names
from mtsys.protos import mtsys_pb2
from mtsys.system import fileio
from mtsys.system import leases
from mtsys.system import records

_ENTRY = re.compile(r"^(\d{12})\.(\d{6})\.pb$")
_ATTEMPTS = 100


def fence_dir(root: str, task: str) -> str:
  return os.path.join(root, "paths", names.task_file_stem(task) + ".fenced")


def _commits(root: str, task: str) -> list[tuple[int, int]]:
  try:
    entries = os.listdir(fence_dir(root, task))
  except FileNotFoundError:
    return []
  return sorted((int(m.group(1)), int(m.group(2))) for m in map(_ENTRY.match, entries) if m)


def _file(root: str, task: str, token: int, seq: int) -> str:
  return os.path.join(fence_dir(root, task), f"{token:012d}.{seq:06d}.pb")


def highest(root: str, task: str) -> Optional[tuple[int, int]]:
  """The (token, seq) of the task's current commit, or None."""
  commits = _commits(root, task)
  return commits[-1] if commits else None


def read_path(store, task: str) -> Optional[mtsys_pb2.PathSpec]:
  """The task's committed path: the highest fenced commit, else the plain path file."""
  top = highest(store.root, task)
  if top is None:
    return store.read_path(task)
  path = _file(store.root, task, *top)
  with open(path, "rb") as f:
    return records.parse(f.read(), path, mtsys_pb2.PathSpec(), legacy_ok=False)


def commit_path(store, spec: mtsys_pb2.PathSpec, lease: leases.Lease,
                clock: leases.Clock = time.time) -> tuple[int, int]:
  """Commits `spec` as its task's path under `lease` (the task's); returns its (token, seq).

  Raises:
    LeaseLost: the lease is no longer live, or a holder with a higher token has committed.
    ValueError: the lease is another key's, or the path names missing components.
  """
  if lease.key != spec.task:
    raise ValueError(f"Path of task {spec.task!r} cannot be committed under the lease of "
                     f"{lease.key!r}.")
  missing = [c for c in spec.component_ids if not store.has_component(c)]
  if missing:
    raise ValueError(f"Path '{spec.id}' of task '{spec.task}' uses components missing from "
                     f"{store.root}: {missing}.")
  root, task = store.root, spec.task
  os.makedirs(fence_dir(root, task), exist_ok=True)
  data = records.frame(spec.SerializeToString())
  for _ in range(_ATTEMPTS):
    leases.check(lease, clock)
    top = highest(root, task)
    _refuse_if_superseded(lease, top, root, task)
    seq = top[1] + 1 if top and top[0] == lease.token else 1
    path = _file(root, task, lease.token, seq)
    try:
      fileio.create_exclusive(path, data, store.faults)
    except fileio.AlreadyExists:
      continue
    top = highest(root, task)
    if top[0] > lease.token:
      os.unlink(path)
      _refuse_if_superseded(lease, top, root, task)
    _mirror(store, task)
    return lease.token, seq
  raise leases.LeaseLost(f"Could not commit the path of {task!r} in {root}: {_ATTEMPTS} "
                         "create races lost.")


def _refuse_if_superseded(lease, top, root, task) -> None:
  if top is not None and top[0] > lease.token:
    raise leases.LeaseLost(
        f"The path of task {task!r} in {root} was committed under token {top[0]} "
        f"({_file(root, task, *top)}), higher than this holder's {lease.token} "
        f"({lease.holder}): its lease was taken over; do not commit.")


def _mirror(store, task: str) -> None:
  written = None
  while True:
    top = highest(store.root, task)
    if top == written:
      return
    with open(_file(store.root, task, *top), "rb") as f:
      data = f.read()
    fileio.write_atomic_durable(store._path_file(task), data, store.faults)  # pylint: disable=protected-access
    written = top
