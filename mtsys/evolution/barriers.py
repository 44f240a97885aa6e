"""Agents' registrations and the barriers of synchronised task-set iterations (issue #12).

µ3Net's synchronised mode: an agent starts task-set iteration n only after every agent finished
iteration n-1. Agents communicate through nothing but the store, so the barrier is files:

| file | holds | written how |
|---|---|---|
| `agents/<task>.pb` | AgentRecord: the task's agent (holder, mode, task iterations, devices) | atomic replace by the task's lease holder when it starts |
| `barriers/<n:06d>/<task>.pb` | the AgentRecord of the agent that finished iteration n (0-based) | atomic replace, idempotent (a restarted agent writes it again) |

Waiting at barrier n (before starting iteration n+1) means: for every registered synchronised
agent whose task will run iteration n (its `task_iterations` > n) and which is not removed, the
marker `barriers/<n>/<task>.pb` exists. An agent that joins later starts at its iteration 0 and
the others wait for it to catch up at their next barrier (task-set iterations stay aligned);
asynchronous agents neither wait nor are waited for. A stopped agent is waited for until the
timeout, whose error names the tasks (and holders) still missing: restart it (anywhere: the
store is all it needs) or run the others with `--mode=async`.

No TensorFlow is imported here.
"""

from __future__ import annotations

import datetime
import os
import time
from typing import Callable, Iterable, Optional

from mtsys import errors
from mtsys import faults as mfaults
from mtsys.config import names
from mtsys.protos import mtsys_pb2
from mtsys.system import fileio
from mtsys.system import records

SYNC = "sync"
ASYNC = "async"
MODES = (SYNC, ASYNC)
AGENTS_DIR = "agents"
BARRIERS_DIR = "barriers"


class BarrierTimeout(errors.UserError):
  """A synchronised agent waited longer than its timeout for other agents."""


def _agent_file(root: str, task: str) -> str:
  return os.path.join(root, AGENTS_DIR, names.task_file_stem(task) + ".pb")


def _marker(root: str, iteration: int, task: str) -> str:
  return os.path.join(root, BARRIERS_DIR, f"{iteration:06d}", names.task_file_stem(task) + ".pb")


def _write(path: str, message, faults: Optional[mfaults.Injector]) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fileio.write_atomic_durable(path, records.frame(message.SerializeToString()),
                              faults or mfaults.Injector())


def register(root: str, task: str, holder: str, mode: str, task_iterations: int,
             devices: str = "", faults: Optional[mfaults.Injector] = None
             ) -> mtsys_pb2.AgentRecord:
  """Records the task's agent (called by the holder of the task's lease)."""
  if mode not in MODES:
    raise ValueError(f"Unknown agent mode {mode!r}; expected one of {list(MODES)}.")
  record = mtsys_pb2.AgentRecord(
      task=task, holder=holder, mode=mode, task_iterations=int(task_iterations),
      started=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
      devices=devices)
  _write(_agent_file(root, task), record, faults)
  return record


def registered(root: str) -> list[mtsys_pb2.AgentRecord]:
  """Every registered agent, by task name."""
  base = os.path.join(root, AGENTS_DIR)
  try:
    entries = sorted(os.listdir(base))
  except FileNotFoundError:
    return []
  out = []
  for entry in entries:
    if entry.endswith(".pb"):
      path = os.path.join(base, entry)
      out.append(records.parse(fileio.read(path), path, mtsys_pb2.AgentRecord(),
                               legacy_ok=False))
  return out


def mark(root: str, iteration: int, record: mtsys_pb2.AgentRecord,
         faults: Optional[mfaults.Injector] = None) -> None:
  """Says the agent of `record.task` finished task-set iteration `iteration` (0-based)."""
  path = _marker(root, iteration, record.task)
  if not os.path.exists(path):
    _write(path, record, faults)


def missing(root: str, iteration: int, removed: Iterable[str] = ()
            ) -> list[mtsys_pb2.AgentRecord]:
  """The synchronised agents that will finish `iteration` but have not yet."""
  gone = set(removed)
  return [r for r in registered(root)
          if r.mode == SYNC and r.task_iterations > iteration and r.task not in gone
          and not os.path.exists(_marker(root, iteration, r.task))]


def wait(root: str, iteration: int, task: str, timeout_s: float, *,
         removed: Callable[[], Iterable[str]] = tuple,
         on_wait: Callable[[list], None] = lambda waiting: None,
         poll_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> None:
  """Returns once every synchronised agent finished `iteration` (see the module doc).

  `removed()` names removed tasks (re-read while waiting); `on_wait(records)` is told, once,
  whom the agent waits for.

  Raises:
    BarrierTimeout: after `timeout_s`, naming the tasks and holders still missing.
  """
  deadline = clock() + timeout_s
  told = False
  while True:
    waiting = missing(root, iteration, removed())
    if not waiting:
      return
    if not told:
      on_wait(waiting)
      told = True
    if clock() >= deadline:
      who = ", ".join(f"'{r.task}' ({r.holder})" for r in waiting)
      raise BarrierTimeout(
          f"The agent of task '{task}' waited {timeout_s:g} s at the barrier after task-set "
          f"iteration {iteration + 1} in {root} for the agents of {who}, which have not "
          "finished it. Restart them (the store is all they need), or run the agents with "
          "--mode=async, or raise --barrier_timeout_s.")
    sleep(min(poll_s, max(0.0, deadline - clock())))
