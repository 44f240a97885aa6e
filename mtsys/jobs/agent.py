"""The agent behind `bin/agent.py`: one task's active-task loop, sharing one system with others.

µ3Net (issue #12): one agent per task, each a separate program on its own hardware, extending
the same system through the store and nothing else. Order of an agent's start (each step
before the next):

1. Checks before any write (`preflight.check`): the task is the config's, its data loads, the
   system directory (if any) is compatible and does not record the task as removed.
2. The run lock, shared (`lock.acquire_shared`): agents run together; a single-program run
   (`bin/evolve.py`, exclusive) and agents exclude each other.
3. The system: created by exclusive create of `system.pb` if absent (of N agents started at once
   one creates it), then the task added to the stored config by compare-and-swap
   (`state_cas.update_state`: concurrent additions are never lost).
4. The root: written by the one holder of the root claim, waited for by the others
   (`pretrain.ensure_root_claimed`).
5. The task's lease (`mtsys.system.leases`, key = the task): a second agent of the task waits up
   to `lease_wait_s` for it (a dead holder's lease is taken over once it expired, plus the
   maximum clock skew) and fails naming the holder otherwise. A thread renews it every ttl/3.
   Every path commit is fenced by its token (`fenced_paths`), so an old process of a restarted
   agent can never replace the new one's path.
6. Registration (`barriers.register`), then the loop (`loop.Evolver` with
   `coordination.AgentCoordination`): per-task state, in-flight records, own garbage collected
   after each phase, barriers in synchronised mode.

A killed agent is restarted with the same command (anywhere: the store is all it needs); it
resumes from its task's last completed generation.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

from mtsys import errors
from mtsys import faults as mfaults
from mtsys.config import loader
from mtsys.protos import mtsys_pb2
from mtsys.system import leases

# Lease of the task: renewed every ttl/3; a dead agent's is taken over after ttl + skew.
DEFAULT_LEASE_TTL_S = 60.0


@dataclasses.dataclass
class Options:
  """What `bin/agent.py`'s flags ask for (see their help texts)."""

  system_dir: str
  task: str
  distribution: mtsys_pb2.DistributionConfig
  cpu_devices: int = 0
  mode: str = "sync"
  task_iterations: Optional[int] = None
  barrier_timeout_s: float = 3600.0
  lease_ttl_s: float = DEFAULT_LEASE_TTL_S
  lease_wait_s: Optional[float] = None  # default: ttl + the maximum clock skew + 10 s
  results_json: Optional[str] = None


def _merge_task(config: loader.Config, task: str):
  """A `state_cas.update_state` function adding the task's spec to the stored config."""
  spec = config.task(task)

  def fn(state: mtsys_pb2.SystemState) -> None:
    for stored in state.config.task:
      if stored.name == task:
        if stored != spec:
          raise errors.IncompatibleSystemError(
              f"Task '{task}' is defined differently in the system at hand than in this "
              "agent's config (its source, classes or access differ); one task name must mean "
              "one task in a system. Use the stored definition or another task name.")
        return
    state.config.task.append(spec)
  return fn


def _take_lease(system_dir: str, task: str, holder: str, options: Options,
                out: Callable[[str], None]) -> leases.Lease:
  wait_s = (options.lease_wait_s if options.lease_wait_s is not None
            else options.lease_ttl_s + leases.MAX_CLOCK_SKEW_S + 10.0)
  deadline = time.monotonic() + wait_s
  told = False
  while True:
    try:
      return leases.acquire(system_dir, task, holder, options.lease_ttl_s,
                            holder_dead=leases.local_holder_dead)
    except leases.LeaseHeld as e:
      if time.monotonic() >= deadline:
        raise errors.LockHeldError(
            f"Task '{task}' already has a live agent: {e} Waited {wait_s:g} s for it. One agent "
            "per task: stop the other one, or wait until its lease expires.") from None
      if not told:
        out(f"Task '{task}': its lease is held ({e}); waiting up to {wait_s:g} s for it to be "
            "released or expire.")
        told = True
      time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))


def run(config: loader.Config, options: Options, *,
        faults: Optional[mfaults.Injector] = None,
        out: Callable[[str], None] = print) -> dict:
  """Runs the agent of `options.task` until its task finished its iterations.

  Returns a summary (task, iterations, seconds, store seconds, train steps)."""
  from mtsys.evolution import barriers
  if options.mode not in barriers.MODES:
    raise errors.ConfigError(f"Unknown --mode={options.mode!r}; expected one of "
                             f"{list(barriers.MODES)}.")
  config.task(options.task)  # unknown task: fails before anything else
  from mtsys.system import fileio
  if not fileio.is_local(options.system_dir):
    raise errors.ConfigError(
        f"--system_dir={options.system_dir}: agents need exclusive creates (leases, fenced "
        "paths, components written once), which tf.io.gfile lacks on object stores; the "
        "create-only precondition (ifGenerationMatch=0 on GCS) is not implemented yet. Use a "
        "directory on a filesystem every agent's machine shares (local disk, NFS, Lustre).")
  from mtsys.evolution import coordination
  from mtsys.evolution import loop
  from mtsys.evolution import preflight
  from mtsys.system import lock
  from mtsys.system import state_cas
  from mtsys.system import store as mstore
  from mtsys.train import pretrain
  from mtsys.train import strategy as mstrategy
  faults = faults or mfaults.Injector()
  if options.cpu_devices:
    mstrategy.split_cpu(options.cpu_devices)
  task, system_dir = options.task, options.system_dir
  start = time.perf_counter()
  task_data, existing = preflight.check(config, system_dir, [task])
  with lock.acquire_shared(system_dir, f"the agent of task '{task}'"):
    store = existing or mstore.Store.create(system_dir, config.proto, faults=faults,
                                            exclusive=True)
    store.faults = faults
    stored = store.read_state()
    _merge_task(config, task)(stored)  # raises on a conflicting definition
    if len(stored.config.task) > len(store.read_state().config.task):
      state_cas.update_state(store, _merge_task(config, task))  # new task: compare-and-swap
    if task in store.removed_tasks():  # removed between the check and now
      raise errors.IncompatibleSystemError(f"Task '{task}' was removed from {system_dir}.")
    strategy = mstrategy.make_strategy(options.distribution)
    devices = (list(strategy.extended.worker_devices) if strategy.num_replicas_in_sync > 1
               else [])
    pretrain.ensure_root_claimed(store, config, strategy=strategy, log=out)
    holder = leases.holder_id()
    lease = _take_lease(system_dir, task, holder, options, out)
    keeper = coordination.LeaseKeeper(lease)
    target = int(options.task_iterations or config.proto.evolution.task_iterations)
    try:
      record = barriers.register(system_dir, task, holder, options.mode, target,
                                 devices=",".join(devices) or "default", faults=faults)
      coord = coordination.AgentCoordination(
          store, task, keeper, record, barrier_timeout_s=options.barrier_timeout_s,
          ttl_s=options.lease_ttl_s, log=out)
      keeper._on_renew = coord.renew_inflight  # pylint: disable=protected-access
      keeper.start()
      evolver = loop.Evolver(config, store, strategy=strategy, devices=devices,
                             author=f"agent:{task}", task_data=task_data, log=out,
                             on_child=_report_child(out), coordination=coord)
      out(f"Agent of task '{task}' ({options.mode}, {target} task iterations, devices "
          f"{record.devices}) on {system_dir}.")
      state = evolver.run(tasks=[task], task_iterations=target)
    finally:
      keeper.stop(release=True)
      _clear_inflight(system_dir, task, keeper.lease.token)
  summary = {"task": task, "iterations": int(state.iterations_done[task]),
             "seconds": time.perf_counter() - start,
             "training_seconds": evolver.timing.training,
             # Reading and writing the store: the coordination's I/O and the store's own.
             "store_seconds": coord.store_seconds + store.io_seconds,
             "gc_reclaimed_bytes": coord.reclaimed_bytes,
             "barrier_seconds": coord.barrier_seconds,
             "train_steps": int(state.train_steps)}
  path = store.read_path(task)
  if path is not None:
    summary.update(validation_accuracy=path.metrics.validation_accuracy,
                   test_accuracy=path.metrics.test_accuracy)
  out(f"Agent of task '{task}' done: {summary['iterations']} task iterations in "
      f"{summary['seconds']:.1f} s.")
  if options.results_json:
    from mtsys.system import fileio
    fileio.write_json(options.results_json, summary)
  return summary


def _clear_inflight(system_dir: str, task: str, token: int) -> None:
  from mtsys.system import inflight
  try:
    inflight.clear(system_dir, task, token=token)
  except errors.StoreError:
    pass  # it expires anyway


def _report_child(out: Callable[[str], None]):
  from mtsys.jobs import evolve
  return evolve._report_child(out)  # pylint: disable=protected-access


def task_from_flags(task: Optional[str], tasks, task_index_env: Optional[str], environ) -> str:
  """The agent's task: `--task`, or `--tasks` indexed by the environment variable named by
  `--task_index_env` (schedulers' array indices)."""
  if task and (tasks or task_index_env):
    raise errors.ConfigError("Pass either --task or --tasks with --task_index_env, not both.")
  if task:
    return task
  if not tasks or not task_index_env:
    raise errors.ConfigError("Pass --task=T, or --tasks=a,b,... with --task_index_env=VAR.")
  from mtsys.jobs import agent_manifests
  return agent_manifests.task_for_index(list(tasks), environ, task_index_env)
