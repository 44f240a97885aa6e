"""Administrative operations on a whole system: removing a task, forking a system.

Removing a task (µ2Net section 3.4: "remove the knowledge learned from the private dataset at any
future date by simply removing its components") deletes the task's path, every component only it
may use and every component it created that no remaining path uses, what evolution recorded about
it (its history records and TensorBoard events: hyperparameters, scores, curves), and forgets the
task in the stored config and the evolution state. Components are immutable and other tasks'
paths keep every component they use, so no other task's predictions change.

A fork is a cheap copy of a system: its own `system.pb`, paths and evolution state, but no
component files; it reads the (write-once) components it does not hold from its sources (see
`mtsys.system.component_files`). It registers itself in each source (`forks/<id>.pb`), whose
garbage collection (`mtsys.system.gc`) then keeps what the fork uses. Run these operations while
no evolution or agent writes to the system.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from typing import Callable, Optional

import tensorflow as tf
from google.protobuf import message
from tensorflow.core.util import event_pb2

from mtsys import errors
from mtsys import faults as mfaults
from mtsys.protos import mtsys_pb2
from mtsys.system import fileio
from mtsys.system import history
from mtsys.system import liveness
from mtsys.system import lock as mlock
from mtsys.system import recovery
from mtsys.system import root as mroot
from mtsys.system import store as mstore

ROOT_COMPONENT_PREFIX = mroot.ROOT_PREFIX + "."
# Where evolution writes TensorBoard events, and the tags it writes about a task after
# "<task>/" (`mtsys.evolution.events`, which this package cannot import; a test pins both).
TENSORBOARD = "tensorboard"
_TASK_TAGS = re.compile(r"child_score|child_validation_accuracy|best_score|"
                        r"children/\d+\.\d+\.\d+/"
                        r"(train_loss|train_accuracy|validation_loss|validation_accuracy)")
# A TFRecord (an event file's framing): length (8 bytes), its masked CRC-32C (4), the data and
# the data's masked CRC-32C (4).
_LENGTH = struct.Struct("<Q")
_FRAMING = _LENGTH.size + 8


@dataclasses.dataclass
class RemovalReport:
  """What `remove_task` did."""

  task: str
  # Id of the task's path that was deleted; "" when the task had none.
  removed_path_id: str = ""
  # Components deleted from the store, sorted.
  removed_components: list = dataclasses.field(default_factory=list)
  # Components the rules would remove but a remaining path (or the active population) uses.
  kept_in_use: list = dataclasses.field(default_factory=list)
  # Components to remove that a fork only reads from a component source, which it never
  # changes: they are no longer used here but remain in (and readable through) the source.
  retained_in_sources: list = dataclasses.field(default_factory=list)
  # The task was in the stored config and has been taken out.
  removed_from_config: bool = False
  # The task's in-progress active phase was discarded.
  cleared_active_phase: bool = False
  # The task had been removed completely before: nothing was done.
  already_removed: bool = False
  # The task's history records deleted from the writers' files (`mtsys.system.history`).
  removed_history_records: int = 0
  # The task's TensorBoard events deleted from the event files under tensorboard/.
  removed_events: int = 0


def known_tasks(store: mstore.Store) -> list[str]:
  """Tasks the system knows: the stored config's (in order), then any other with a path or
  evolution state, sorted."""
  config_tasks = [t.name for t in store.read_state().config.task]
  evo = store.read_evolution_state()
  others = set(store.paths()) | set(evo.iterations_done) | ({evo.task} if evo.task else set())
  return config_tasks + sorted(others - set(config_tasks))


def _only_for(access: mtsys_pb2.ComponentAccess, task: str) -> bool:
  """True when `access` lets `task` and no other task use the component."""
  return (not access.public and not access.groups and len(access.tasks) > 0
          and set(access.tasks) == {task})


def remove_task(store: mstore.Store, task_name: str) -> RemovalReport:
  """Removes `task_name` and the knowledge only it may use from the system in `store`.

  Deleted: the task's path; every component whose access allows this task alone, and every
  component the task created, unless a remaining path uses it (other tasks' paths, and the
  population of another task's active phase in progress); the task's entry in the stored config;
  its `iterations_done` and, when it is the active task, the active phase in progress; its
  records in the history files and its events in the TensorBoard event files (both rewritten
  whole without them; a history file left empty is deleted). Public or shared components the
  task trained stay when another task uses them.

  Crash-safe: the task is first recorded as removed in `system.pb` (so no run evolves it again
  meanwhile, and history readers skip its records), then deleted step by step: what evolution
  recorded first (while its path still makes the task known, so a rerun finds it), its config
  entry last. A removal a kill interrupted is finished by rerunning it, or by `finish_removals`
  (every run calls it first). Removing a task that was removed already changes nothing (`already_removed` in the report) but deletes the
  history records and events of it that an older mtsys kept.

  Raises:
    UnknownTaskError: `task_name` is not a task of the system (nothing is changed).
    CorruptFileError: a history file is corrupt (naming it); the removal stays recorded and
      finishes on a rerun once the file is deleted or restored.
  """
  known = known_tasks(store)
  removed = store.removed_tasks()
  if task_name not in known:
    if task_name in removed:
      report = RemovalReport(task=task_name, already_removed=True)
      with store.faults.phase_of(mfaults.TASK_REMOVAL):
        _drop_records(store, task_name, report)
      return report
    raise errors.UnknownTaskError(f"Unknown task '{task_name}'; expected one of {known}.")
  report = RemovalReport(task=task_name)
  with store.faults.phase_of(mfaults.TASK_REMOVAL):
    _remove(store, task_name, removed, report)
  return report


def _remove(store: mstore.Store, task_name: str, removed: list,
            report: RemovalReport) -> None:
  # 0. The intent, first: from now on the task counts as removed.
  if task_name not in removed:
    removed = removed + [task_name]
    store.write_config(store.read_state().config, removed_tasks=removed)

  # 1. What evolution recorded about the task. Each file is replaced whole, so a rerun after a
  #    kill finds every file either done (nothing to drop) or untouched.
  _drop_records(store, task_name, report)

  # 2. The evolution state: forget the task, and discard its active phase.
  evo = store.read_evolution_state()
  path = store.read_path(task_name)
  changed = False
  if task_name in evo.iterations_done:
    del evo.iterations_done[task_name]
    changed = True
  if evo.task == task_name:
    mstore.reset_active_phase(evo)
    report.cleared_active_phase = changed = True
  # #selections counts of the task, and of its path as another task's parent ("task|path id").
  stale = [k for k in evo.selections
           if k.startswith(f"{task_name}|") or (path is not None and k.endswith(f"|{path.id}"))
           or (path is not None and k == path.id)]
  for key in stale:
    del evo.selections[key]
    changed = True
  if changed:
    store.write_evolution_state(evo)

  # 3. The path.
  if path is not None:
    report.removed_path_id = path.id
    store.delete_path(task_name)

  # 4. The components only this task may use or that it created, unless still in use.
  remaining = [p for t, p in store.paths().items() if t != task_name]
  if evo.task and evo.task != task_name:
    remaining.extend(evo.population)
  in_use = mstore.component_ids_of(remaining)
  for cid in store.component_ids():
    spec = store.read_component_spec(cid)
    if not (_only_for(spec.access, task_name) or spec.created_by_task == task_name):
      continue
    if cid in in_use:
      report.kept_in_use.append(cid)
    elif store.holds_component(cid):
      store.delete_component(cid)
      report.removed_components.append(cid)
    else:
      report.retained_in_sources.append(cid)

  # 5. The stored config, last: the removal is complete.
  config = mtsys_pb2.SystemConfig()
  config.CopyFrom(store.read_state().config)
  kept = [t for t in config.task if t.name != task_name]
  report.removed_from_config = len(kept) != len(config.task)
  if report.removed_from_config:
    del config.task[:]
    config.task.extend(kept)
    store.write_config(config, removed_tasks=removed)


def _drop_records(store: mstore.Store, task_name: str, report: RemovalReport) -> None:
  report.removed_history_records = _drop_history(store, task_name)
  report.removed_events = _drop_events(store, task_name)


def _drop_history(store: mstore.Store, task_name: str) -> int:
  """Rewrites every history file holding records of `task_name` without them (deleting a file
  left empty); returns the number of records dropped."""
  dropped = 0
  for path in history.files(store.root):
    records = history.decode(fileio.read(path), path)
    kept = [r for r in records if r.task != task_name]
    if len(kept) == len(records):
      continue
    dropped += len(records) - len(kept)
    if kept:
      fileio.write_atomic(path, history.encode(kept), store.faults)
    else:
      fileio.remove(path, store.faults)
  return dropped


def _is_task_tag(tag: str, task_name: str) -> bool:
  prefix = task_name + "/"
  return tag.startswith(prefix) and _TASK_TAGS.fullmatch(tag[len(prefix):]) is not None


def _without_task_events(data: bytes, task_name: str) -> tuple[bytes, int]:
  """An event file's bytes without the events of `task_name`, and how many were dropped.

  The other records are copied byte for byte, checksums included, so nothing is re-encoded.
  Evolution writes one value per event; an event with any value of the task goes whole. A
  truncated last record (a kill mid-write) is dropped, as TensorBoard skips it; a record whose
  payload does not parse as an Event is kept as it is.
  """
  kept, dropped, offset = [], 0, 0
  while offset + _FRAMING <= len(data):
    (length,) = _LENGTH.unpack_from(data, offset)
    end = offset + _FRAMING + length
    if end > len(data):
      break
    event = event_pb2.Event()
    try:
      event.ParseFromString(data[offset + _LENGTH.size + 4:end - 4])
      ours = any(_is_task_tag(v.tag, task_name) for v in event.summary.value)
    except message.DecodeError:
      ours = False
    if ours:
      dropped += 1
    else:
      kept.append(data[offset:end])
    offset = end
  return b"".join(kept), dropped


def _drop_events(store: mstore.Store, task_name: str) -> int:
  """Rewrites every TensorBoard event file holding events of `task_name` without them;
  returns the number of events dropped."""
  base = fileio.join(store.root, TENSORBOARD)
  if not tf.io.gfile.isdir(base):
    return 0
  dropped = 0
  for directory, _, names in sorted(tf.io.gfile.walk(base)):
    for name in sorted(names):
      if ".tfevents." not in name or fileio.TMP_MARK in name:
        continue
      path = fileio.join(directory, name)
      data, count = _without_task_events(fileio.read(path), task_name)
      if count:
        fileio.write_atomic(path, data, store.faults)
        dropped += count
  return dropped


def finish_removals(store: mstore.Store) -> list[RemovalReport]:
  """Completes every task removal a kill interrupted (a task recorded as removed that the
  system still knows); returns their reports. Call it holding the run lock."""
  known = set(known_tasks(store))
  return [remove_task(store, t) for t in store.removed_tasks() if t in known]


def sweep_then_remove(store: mstore.Store, task_name: str,
                      log: Callable[[str], None] = print) -> RemovalReport:
  """`remove_task` after sweeping an interrupted run's leftovers (each path logged); the
  caller holds the system's run lock."""
  for path in store.sweep_leftovers():
    log(f"Removed {path}, left by an interrupted run.")
  return remove_task(store, task_name)


def remove_task_from_baselines(baselines_dir: str, task_name: str,
                               faults: Optional[mfaults.Injector] = None,
                               log: Callable[[str], None] = print
                               ) -> list[tuple[str, RemovalReport]]:
  """Removes `task_name` from every baseline system under `baselines_dir` that knows it.

  `bin/evolve.py --with_baselines` trains each baseline method in its own system,
  `<system>/baselines/<method>/` (`mtsys.train.baselines`); each holds the task's path and the
  components it trained. Each such system is handled as `--remove_task` handles the main one:
  under its own run lock, its interrupted writers' leftovers swept first (each path logged),
  then `remove_task`. A directory that holds no system, or a system that does not know the task
  (never had it, or its removal is complete), is not written. A removal a kill interrupted is
  finished by calling this again: the task stays known until its config entry goes, last.
  Returns (method directory name, report) per system the task was removed from, in name order.

  Raises:
    LockHeldError: a run holds a baseline system's lock (those before it in name order are
      done; rerun once it has finished).
  """
  if not tf.io.gfile.isdir(baselines_dir):
    return []
  done = []
  for name in sorted(entry.rstrip("/") for entry in tf.io.gfile.listdir(baselines_dir)):
    directory = fileio.join(baselines_dir, name)
    try:
      store = mstore.Store.open(directory, faults)
    except mstore.SystemNotFoundError:
      continue  # a file, or a baseline a kill stopped before its system.pb
    if task_name not in known_tasks(store):
      continue
    with mlock.acquire(directory):
      report = sweep_then_remove(store, task_name, log)
    if not report.already_removed:
      done.append((name, report))
  return done


def is_fork_of(dst_root: str, src_root: str) -> bool:
  """True when `dst_root` holds a system forked from `src_root` (its nearest component source)."""
  try:
    sources = mstore.Store.open(dst_root).component_sources
  except mstore.SystemNotFoundError:
    return False
  return bool(sources) and sources[0] == mstore.normalize_root(src_root)


def fork(src_root: str, dst_root: str,
         faults: Optional[mfaults.Injector] = None) -> mstore.Store:
  """Makes `dst_root` a fork of the system at `src_root` and returns its store.

  The fork gets its own `system.pb` (the source's config; `component_sources` = [src_root] +
  the source's own sources, nearest first), copies of the source's paths and evolution state, and
  no component files: components are write-once, so the fork reads the source's. What the fork
  writes goes to `dst_root` only; of the sources only their registration of the fork is written.
  `dst_root` must be new or empty, or hold what a fork killed before its end left (it is
  discarded and the fork made again): the paths and state are written first and `system.pb`,
  which makes the fork exist, last.

  First of all the fork is registered in each source (`forks/<id>.pb`,
  `liveness.register_fork`), before the source's paths and state are read, so a kill never
  leaves an unregistered fork: the sources' garbage collection (`mtsys.system.gc`) keeps what
  registered forks use, and refuses while one cannot be read (e.g. a fork killed before its
  `system.pb`, until its command is rerun). A single-program run's end-of-phase clean-up of the
  source still deletes the components its own paths no longer use, which a fork may use (its
  copy of an older path, or of an in-progress population): stop evolving the source with
  `bin/evolve.py`, or call `detach(fork)` first.

  Raises:
    SystemNotFoundError: no system at `src_root`.
    IncompatibleSystemError: `dst_root` is `src_root` or is not empty.
    StoreAccessError: a source cannot be written (read-only): the fork is not made.
  """
  src = mstore.Store.open(src_root)
  if mstore.normalize_root(src_root) == mstore.normalize_root(dst_root):
    raise errors.IncompatibleSystemError(f"Cannot fork {src_root} into itself.")
  if not recovery.is_unfinished_create(dst_root, allowed=[mlock.LOCK_FILE]):
    raise errors.IncompatibleSystemError(
        f"Cannot fork into {dst_root}: it exists and is not empty.")
  faults = faults or mfaults.Injector()
  with faults.phase_of(mfaults.FORK):
    recovery.discard_unfinished_create(dst_root, faults)
    state = src.read_state()
    sources = [mstore.normalize_root(src.root)] + src.component_sources
    liveness.register_fork(dst_root, sources, faults)
    return mstore.Store.create(dst_root, state.config, component_sources=sources, faults=faults,
                               paths=list(src.paths().values()),
                               evolution_state=src.read_evolution_state())


def detach(store: mstore.Store) -> list[str]:
  """Makes a fork independent of its sources; returns the ids of the components copied.

  Copies into `store` (byte for byte, checksums verified) every component it uses but only reads
  from a source: those of its paths, of the active population in its evolution state, and the
  root's. Then the fork forgets its sources, so other source-only components are no longer
  visible. A store that is no fork is left as it is.
  """
  if not store.component_sources:
    return []
  evo = store.read_evolution_state()
  wanted = mstore.component_ids_of(list(store.paths().values()) + list(evo.population))
  wanted |= {c for c in store.component_ids() if c.startswith(ROOT_COMPONENT_PREFIX)}
  copied = [cid for cid in sorted(wanted) if store.materialize_component(cid)]
  store.set_component_sources([])
  return copied
