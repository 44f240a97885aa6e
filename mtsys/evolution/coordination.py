"""How the active-task loop shares its system: alone (the single program) or as one agent of many.

`mtsys.evolution.loop.Evolver` calls these hooks at the points where writers could collide:

| hook | single program (`SingleProgram`) | agent (`AgentCoordination`, issue #12) |
|---|---|---|
| `read_state` / `write_state` | `evolution/state.pb` | `evolution/agents/<task>.pb`, written after checking the task lease |
| `start_generation(read, created)` | nothing | publishes the in-flight record of every component the generation reads or creates, then returns the read ones garbage collection has taken meanwhile (`gc.unusable`): the loop samples again |
| `commit_path(path)` | `Store.write_path` | `fenced_paths.commit_path` under the task lease (a superseded holder cannot commit) |
| `drop_phase_garbage(task)` | deletes what the phase created and no path uses | nothing here (others may read it) |
| `phase_done(task, n)` | nothing | collects the task's own garbage (`gc.collect(only_created_by=task)`), marks barrier n |
| `before_iteration(task, n)` | nothing | synchronised mode: waits until every synchronised agent finished iteration n-1 |

The single program holds the run lock exclusively, so nobody else reads what it deletes; agents
hold it shared, and a component another agent may be reading is deleted only by garbage
collection's protocol (tombstone, then re-read of in-flight records: `mtsys.system.gc`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterable, Optional

from mtsys import errors
from mtsys.evolution import barriers
from mtsys.protos import mtsys_pb2
from mtsys.system import fenced_paths
from mtsys.system import leases
from mtsys.system import store as mstore


class SingleProgram:
  """The single program (`bin/evolve.py`): the only writer of its system."""

  def read_state(self, store: mstore.Store) -> mtsys_pb2.EvolutionState:
    return store.read_evolution_state()

  def write_state(self, store: mstore.Store, state: mtsys_pb2.EvolutionState) -> None:
    store.write_evolution_state(state)

  def start_generation(self, store: mstore.Store, read: Iterable[str],
                       created: Iterable[str]) -> list[str]:
    del store, read, created
    return []

  def commit_path(self, store: mstore.Store, path: mtsys_pb2.PathSpec) -> None:
    store.write_path(path)

  def drop_phase_garbage(self, store: mstore.Store, task: str, source) -> None:
    """Deletes what the phase of `task` created that no path uses (including orphans of a
    killed generation); the system's paths keep what they use."""
    in_use = mstore.component_ids_of(store.paths().values())
    for cid in store.component_ids():
      if cid not in in_use and source.spec(cid).created_by_task == task:
        store.delete_component(cid)
        source.forget(cid)

  def phase_done(self, store: mstore.Store, task: str, iteration: int) -> None:
    del store, task, iteration

  def before_iteration(self, store: mstore.Store, task: str, iteration: int) -> None:
    del store, task, iteration


class LeaseKeeper:
  """Holds a task's lease: renews it (and re-publishes the in-flight record) every ttl/3 on a
  thread, and remembers a loss, which `check` raises in the loop's thread."""

  def __init__(self, lease: leases.Lease, *, on_renew: Callable[[], None] = lambda: None):
    self.lease = lease
    self.lost: Optional[leases.LeaseLost] = None
    self._on_renew = on_renew
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True,
                                    name=f"lease-keeper-{lease.key}")

  def _run(self) -> None:
    while not self._stop.wait(self.lease.ttl_s / 3):
      try:
        with self._lock:
          self.lease = leases.renew(self.lease)
        self._on_renew()
      except leases.LeaseLost as e:
        self.lost = e
        return
      except errors.StoreError:
        continue  # transient: the next period retries before the expiry

  def check(self) -> leases.Lease:
    """The live lease; raises LeaseLost when it was lost (taken over after a stall)."""
    if self.lost is not None:
      raise self.lost
    with self._lock:
      leases.check(self.lease)
      return self.lease

  def start(self) -> "LeaseKeeper":
    self._thread.start()
    return self

  def stop(self, release: bool = True) -> None:
    self._stop.set()
    if self._thread.is_alive():
      self._thread.join()
    if release and self.lost is None:
      try:
        leases.release(self.lease)
      except leases.LeaseError:
        pass  # lost meanwhile: nothing to release


class AgentCoordination:
  """One agent of many: the task's lease holder, sharing the store with other agents."""

  def __init__(self, store: mstore.Store, task: str, keeper: LeaseKeeper,
               record: mtsys_pb2.AgentRecord, *, barrier_timeout_s: float,
               ttl_s: float, log: Callable[[str], None] = print):
    self.store, self.task, self.keeper, self.record = store, task, keeper, record
    self.barrier_timeout_s = barrier_timeout_s
    self.ttl_s = ttl_s
    self.log = log
    self._inflight: list[str] = []
    # Time spent on the coordination's own store I/O (not waiting at barriers): benchmarks.
    self.store_seconds = 0.0
    self.reclaimed_bytes = 0  # by the garbage collections after its phases
    self.barrier_seconds = 0.0  # waiting for other agents at barriers

  @contextlib.contextmanager
  def _timed(self):
    """Times a hook's store I/O (leases, in-flight records, barriers, collection), without
    what the store's own timer counts (`Store.io_seconds`)."""
    start, io = time.perf_counter(), self.store.io_seconds
    try:
      yield
    finally:
      self.store_seconds += (time.perf_counter() - start) - (self.store.io_seconds - io)

  # The in-flight record is re-published with each renewal so it expires only with the agent.
  def renew_inflight(self) -> None:
    if self._inflight:
      self._publish(self._inflight)

  def _publish(self, ids: list[str]) -> None:
    from mtsys.system import inflight
    lease = self.keeper.lease
    inflight.publish(self.store.root, self.task, lease.holder, lease.token, ids, self.ttl_s,
                     faults=self.store.faults)

  def read_state(self, store: mstore.Store) -> mtsys_pb2.EvolutionState:
    return store.read_evolution_state(task=self.task)

  def write_state(self, store: mstore.Store, state: mtsys_pb2.EvolutionState) -> None:
    with self._timed():
      self.keeper.check()
      store.write_evolution_state(state, task=self.task)

  def start_generation(self, store: mstore.Store, read: Iterable[str],
                       created: Iterable[str]) -> list[str]:
    """Publishes what the generation reads and will create; returns the read components a
    collection took meanwhile (the loop samples again)."""
    from mtsys.system import gc
    with self._timed():
      self.keeper.check()
      read = sorted(set(read))
      self._inflight = sorted(set(read) | set(created))
      self._publish(self._inflight)
      return gc.unusable(store, read)

  def commit_path(self, store: mstore.Store, path: mtsys_pb2.PathSpec) -> None:
    with self._timed():
      fenced_paths.commit_path(store, path, self.keeper.check())

  def drop_phase_garbage(self, store: mstore.Store, task: str, source) -> None:
    del store, task, source  # `phase_done` collects once the state no longer holds it

  def phase_done(self, store: mstore.Store, task: str, iteration: int) -> None:
    from mtsys.system import gc
    from mtsys.system import inflight
    self._inflight = []
    with self._timed():
      # The phase's children are in no state now: stop protecting them, then collect them.
      inflight.clear(store.root, task, faults=store.faults, token=self.keeper.lease.token)
      report = gc.collect(store.root, only_created_by=task, faults=store.faults,
                          log=lambda line: None)
      barriers.mark(store.root, iteration, self.record, store.faults)
    self.reclaimed_bytes += report.reclaimed_bytes
    if report.deleted:
      self.log(f"Task '{task}': collected {len(report.deleted)} components its phase left "
               f"({report.reclaimed_bytes} bytes).")

  def before_iteration(self, store: mstore.Store, task: str, iteration: int) -> None:
    if iteration <= 0:
      return
    with self._timed():
      barriers.mark(store.root, iteration - 1, self.record, store.faults)  # a restart re-marks
    if self.record.mode != barriers.SYNC:
      return

    def say(waiting):
      self.log(f"Task '{task}': waiting at the barrier after task-set iteration {iteration} "
               f"for {sorted(r.task for r in waiting)}.")
    start = time.perf_counter()
    try:
      barriers.wait(store.root, iteration - 1, task, self.barrier_timeout_s,
                    removed=store.removed_tasks, on_wait=say)
    finally:
      self.barrier_seconds += time.perf_counter() - start
