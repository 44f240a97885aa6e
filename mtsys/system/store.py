"""The on-disk store of a system: one directory, local or remote, used only via `tf.io.gfile`.

Layout and protocol (everything below the system directory):

| file | holds | written how | visible to readers when | a kill leaves |
|---|---|---|---|---|
| `system.pb` | SystemState: schema version, config, component sources, removed tasks; once generations exist, a mirror of the highest | atomic replace | renamed into place | old or new file |
| `system.gen/<gen>.pb` | generation `gen` of the SystemState, made by a compare-and-swap (`mtsys.system.state_cas.update_state`, agents); readers take the highest, else system.pb | exclusive create of the generation after the one read (`fileio.create_exclusive`, local only); a conflict re-reads and retries | linked into place whole | the file whole, or a temporary leftover |
| `components/<id>/weights.npz` | weight arrays in the layer's `weights` order (no pickle) | plain write, once | its manifest exists | a manifest-less dir |
| `components/<id>/optimizer.npz` | optimizer slots (SGD momentum traces) aligned with the weights | plain write, once | its manifest exists | a manifest-less dir |
| `components/<id>/MANIFEST.pb` | ComponentSpec with the two files' SHA-256 | atomic replace, LAST | renamed into place | the component whole, or invisible |
| `paths/<task>.pb` | PathSpec of the task's best path | atomic replace | renamed into place | old or new path |
| `paths/<task>.fenced/<token>.<seq>.pb` | agents' path commits under the task's lease token (`mtsys.system.fenced_paths`); the highest (token, seq) is the path, `paths/<task>.pb` mirrors it | exclusive create, refused (`LeaseLost`) when a higher token committed | linked into place whole | the file whole, or a temporary leftover |
| `evolution/state.pb` | EvolutionState: where evolution is, for resuming | atomic replace | renamed into place | old or new state |
| `evolution/agents/<task>.pb` | EvolutionState of one task's agent (`mtsys.evolution.agent`): agents never share a state file | atomic replace by the task's lease holder | renamed into place | old or new state |
| `history/<writer>.<segment>.log` | ChildRecords of the children one program trained (`mtsys.system.history`) | atomic replace of the writer's open segment, once per generation, before `evolution/state.pb`; `admin.remove_task` rewrites each file without a removed task's records (a file left empty is deleted) | renamed into place | old or new file (readers also skip a truncated last record) |
| `tensorboard/<writer>/events.out.tfevents.*` | TensorBoard events of evolution (`mtsys.evolution.events`); no part of the state | TensorFlow's summary writer, flushed once per generation | - (only `admin.remove_task` rewrites them, without a removed task's events) | a truncated last event, which TensorBoard skips |
| `leases/<key>/<token>.pb` | a lease with expiry and fencing token per key, for agents (`mtsys.system.leases`, issue #12: used by fenced path commits and the root claim) | exclusive create of the next token (`fileio.create_exclusive`, local only); renew/release rewrite their own token atomically | a temporary file (the target is never partial) | old or new file |
| `root.claim/leases/root/<token>.pb` | the root claim: which agent writes the root while the others wait (`mtsys.system.root_claim`) | a lease (exclusive create), renewed while the root is written, released after | - | a claim a waiter takes over after expiry + skew |
| `inflight/<task>.pb` | InflightRecord: the components the task's agent's generation reads or creates, with an expiry (`mtsys.system.inflight`) | atomic replace by the task's lease holder, each generation and each lease renewal | renamed into place | old or new record |
| `agents/<task>.pb`, `barriers/<n>/<task>.pb` | AgentRecord of the task's agent; its mark of finishing task-set iteration n (`mtsys.evolution.barriers`) | atomic replace (durable) | renamed into place | old or new file |
| `forks/<id>.pb` | ForkRecord of a fork reading components from this system (`mtsys.system.gc` keeps what it uses) | atomic replace, before the fork's `system.pb` | renamed into place | old or new record |
| `gc.claim/leases/gc/<token>.pb` | the collection lease: one garbage collection at a time (`mtsys.system.gc`) | as `leases/` | a temporary file | old or new file |
| `components/<id>/GC.tombstone` | garbage collection's claim on an unreferenced component (`mtsys.system.gc`) | exclusive create, then the component is deleted or the tombstone removed | - (agents treat a tombstoned component as gone) | a tombstone the next collection finishes |
| `RUN.lock` | who runs here (host, pid, start); `flock`ed while held | `mtsys.system.lock` | - | a free lock (the kernel drops it) |
| `baselines/<method>/` | a whole system per baseline method, same layout | as above | as above | as above |
| `*.tmp-<random>` | a replacement being written | plain write | never | a leftover |

A `<writer>` is one program that evolves the system (`history.writer_id`: start time, author,
host, process id): only it writes its history and TensorBoard files, so agents sharing a store
never contend for a file. Systems made before the history existed have neither directory; they
read as having no history.

Every .pb is a checksummed record (`mtsys.system.records`, since schema 2): a flipped byte, a
truncated or empty file, or garbage is reported as corrupt, naming the file, never parsed as a
different valid message; the .npz files are checked against the SHA-256 in their manifest.
Schema-1 systems (bare .pb files) are read as they are and migrated on their first write (every
.pb rewritten as a record, system.pb last; a kill midway leaves a system schema-1 reading
accepts); schema-2 systems likewise, where the migration only rewrites system.pb.

Components (`mtsys.system.component_files`, the base class of `Store`): the files of one, their
checksums, the meaning of their optimizer slots (schema 3), and a fork's component sources,
whose components a fork reads when it does not hold them.

Primitives (`mtsys.system.fileio`): "atomic replace" is a temporary file `rename(2)`d over the
target on local filesystems, and one object upload on object stores (gs://, s3://), which make
an object visible whole or not at all. `tf.io.gfile` offers no create-if-absent (its
`rename(overwrite=False)` checks, then renames), so on local filesystems the files that must be
created once (a component's MANIFEST.pb, lease tokens, fenced path commits, system-state
generations, an agent-made `system.pb`) use `fileio.create_exclusive` (`link(2)`); on object
stores that needs the store's create-only precondition (`ifGenerationMatch=0` on GCS), not
implemented: there one writer per system (`flock` on `RUN.lock` is local only too) and unique
component ids are what keep writes single.

Writers. The single program (`bin/evolve.py`) holds `RUN.lock` exclusively and is the only
writer. Agents (`bin/agent.py`, issue #12) and garbage collection (`bin/gc.py`) hold it shared;
among them: the root is written by the holder of the root claim (`mtsys.system.root_claim`),
`system.pb` changes by compare-and-swap of generations (`mtsys.system.state_cas`), each task's
path, state and in-flight record by the holder of the task's lease, paths committed fenced by
its token (`mtsys.system.fenced_paths`); components are deleted only by garbage collection's
protocol (`mtsys.system.gc`). Clock assumption: wall clocks within `leases.MAX_CLOCK_SKEW_S`.

Multi-file steps (root, generation, end of an active phase, baselines, fork, task removal, schema
migration) write in an order that lets the next run finish or undo them after a kill; that order,
and the clean-up of what a killed writer left, are in `mtsys.system.recovery`.
"""

from __future__ import annotations

import os
import time
from typing import Iterable, Optional, Sequence

import tensorflow as tf

from mtsys import errors
from mtsys import faults as mfaults
from mtsys.config import names
from mtsys.protos import mtsys_pb2
from mtsys.system import component_files
from mtsys.system import fileio
from mtsys.system import records
from mtsys.system import recovery
from mtsys.system import state_cas

# Bump when the layout or the meaning of saved fields changes incompatibly.
# 1: bare .pb messages. 2: every .pb is a checksummed record (mtsys.system.records).
# 3: components record the meaning of their optimizer slots (ComponentSpec.optimizer_slots_kind);
#    optimizer.npz holds learning-rate-free momentum traces.
SCHEMA_VERSION = 3
# The oldest schema still read; systems of every schema from it on are migrated on first write.
_LEGACY_SCHEMA = 1
# The first schema whose .pb files are checksummed records.
_FRAMED_SCHEMA = 2

_SYSTEM = "system.pb"
_MANIFEST = component_files.MANIFEST


# The store's errors (mtsys.errors), under the names callers have always used.
StoreError = errors.StoreError
CorruptFileError = errors.CorruptFileError
IncompatibleSchemaError = errors.IncompatibleSchemaError
SystemNotFoundError = errors.SystemNotFoundError
StoreAccessError = errors.StoreAccessError
MissingComponentError = errors.MissingComponentError
ConcurrentUpdateError = state_cas.ConcurrentUpdateError

_join = fileio.join


def normalize_root(root: str) -> str:
  """`root` without a trailing "/", made absolute when it is a local path (no "scheme://")."""
  if "://" not in root:
    root = os.path.abspath(root)
  return root.rstrip("/") if root != "/" else root


class Store(component_files.ComponentFiles):
  """Reads and writes one system directory (its components: `component_files.ComponentFiles`)."""

  def __init__(self, root: str, faults: Optional[mfaults.Injector] = None):
    self.root = root.rstrip("/") if root not in ("/",) else root
    # Fault points of crash tests (mtsys.faults); inert unless a test armed it.
    self.faults = faults or mfaults.Injector()
    # Component sources of a fork, read lazily from system.pb (None: not read yet).
    self._sources: Optional[list[str]] = None
    # Seconds spent reading and writing files through this store (`_read`, `_write_*`).
    self.io_seconds = 0.0
    # System directory -> the schema version its system.pb states.
    self._schemas: dict[str, int] = {}
    # System directory -> the generation of the SystemState last read (`mtsys.system.state_cas`).
    self._generations: dict[str, int] = {}

  # ------------------------------------------------------------------ system
  @classmethod
  def create(cls, root: str, config: mtsys_pb2.SystemConfig,
             component_sources: Sequence[str] = (),
             faults: Optional[mfaults.Injector] = None,
             paths: Sequence[mtsys_pb2.PathSpec] = (),
             evolution_state: Optional[mtsys_pb2.EvolutionState] = None,
             exclusive: bool = False) -> "Store":
    """Creates a system at `root`, or opens it if it exists (checking the schema version).

    `component_sources` (for forks, see `mtsys.system.admin.fork`): system directories, nearest
    first, whose components this system reads when it does not hold them. `paths` and
    `evolution_state`: the new system's first contents (a fork's copies). They are written
    before `system.pb`, which makes the system exist: a kill midway leaves no system (see
    `recovery.is_unfinished_create`). All of these are ignored when the system already exists.
    `exclusive` (agents starting at once on an empty directory, local only): `system.pb` is
    created only if absent, so one of them creates the system and the others open it.
    """
    store = cls(root, faults)
    if tf.io.gfile.exists(store._system_file):
      store.read_state()  # Raises on an incompatible or corrupt system.
      return store
    tf.io.gfile.makedirs(store.root)
    store._schemas[store.root] = SCHEMA_VERSION
    if paths:
      tf.io.gfile.makedirs(_join(store.root, "paths"))
    for path in paths:  # the components are checked by the caller (they live in the sources)
      store._write_pb(store._path_file(path.task), path)
    if evolution_state is not None and evolution_state.ByteSize():
      store.write_evolution_state(evolution_state)
    state = mtsys_pb2.SystemState(schema_version=SCHEMA_VERSION, config=config,
                                  component_sources=list(component_sources))
    if exclusive and fileio.is_local(store.root):
      try:
        fileio.create_exclusive(store._system_file, records.frame(state.SerializeToString()),
                                store.faults)
      except fileio.AlreadyExists:
        return cls.open(root, faults)
    else:
      store._write_pb(store._system_file, state)
    store._sources = list(component_sources)
    return store

  @classmethod
  def open(cls, root: str, faults: Optional[mfaults.Injector] = None) -> "Store":
    """Opens an existing system; raises SystemNotFoundError / IncompatibleSchemaError."""
    store = cls(root, faults)
    if not tf.io.gfile.exists(store._system_file):
      raise SystemNotFoundError(f"No mtsys system at {root} (missing {store._system_file}).")
    store.read_state()
    return store

  @property
  def _system_file(self) -> str:
    return _join(self.root, _SYSTEM)

  def read_state(self) -> mtsys_pb2.SystemState:
    """The SystemState header (schema version and config); components/paths not included."""
    state = self._read_system_file(self.root)
    self._sources = list(state.component_sources)
    return state

  def _read_system_file(self, root: str) -> mtsys_pb2.SystemState:
    """A system directory's state (its highest generation file, else system.pb), schema checked;
    notes the system's schema version and the generation read (`mtsys.system.state_cas`)."""
    generation = state_cas.highest(root)
    path = state_cas.gen_path(root, generation) if generation else _join(root, _SYSTEM)
    data = self._read(path)
    state = records.parse(data, path, mtsys_pb2.SystemState(), legacy_ok=True)
    framed = records.is_framed(data)
    if not _LEGACY_SCHEMA <= state.schema_version <= SCHEMA_VERSION:
      raise IncompatibleSchemaError(
          f"The system at {root} was written with schema version {state.schema_version}; "
          f"this mtsys reads versions {_LEGACY_SCHEMA} to {SCHEMA_VERSION}. Use a matching "
          "mtsys release.")
    if framed != (state.schema_version >= _FRAMED_SCHEMA):
      raise CorruptFileError(f"{path} says schema version {state.schema_version} but is "
                             f"{'' if framed else 'not '}a checksummed record: it is corrupt.")
    self._schemas[root] = state.schema_version
    self._generations[root] = generation
    return state

  def commit_state(self, state: mtsys_pb2.SystemState, force_generation: bool = False) -> None:
    """Writes `state` as the successor of the generation last read (`read_state`).

    Without generation files (and not `force_generation`): replaces system.pb, as the single
    program always has. Otherwise a conditional commit (`mtsys.system.state_cas`).

    Raises:
      ConcurrentUpdateError: another writer committed after this store's last read.
    """
    generation = self._generations.get(self.root)
    if generation is None:
      self._read_system_file(self.root)
      generation = self._generations[self.root]
    data = records.frame(state.SerializeToString())
    if generation or force_generation:
      state_cas.commit(self.root, generation + 1, data, self.faults)
      self._generations[self.root] = generation + 1
    else:
      self._write_atomic(self._system_file, data)

  def _schema(self, root: str) -> int:
    if root not in self._schemas:
      self._read_system_file(root)
    return self._schemas[root]

  def _is_legacy(self, root: str) -> bool:
    """True for a schema-1 system (bare .pb files)."""
    return self._schema(root) < _FRAMED_SCHEMA

  def _migrate(self) -> None:
    """Brings an older system to SCHEMA_VERSION, system.pb last.

    Runs before the first write to an older system. Schema 1 -> 2: every .pb file is rewritten
    as a checksummed record. A kill midway leaves system.pb at schema 1 and files of both kinds,
    which schema-1 reading accepts; the next write finishes the job. Schema 2 -> 3: nothing but
    system.pb's version (components written before record no optimizer slots kind, which reads
    as KERAS_VELOCITY, what they hold).
    """
    if self._schema(self.root) == SCHEMA_VERSION:
      return
    if self._is_legacy(self.root):
      self._frame_pb_files()
    state = self._read_system_file(self.root)
    state.schema_version = SCHEMA_VERSION
    self.commit_state(state)
    self._schemas[self.root] = SCHEMA_VERSION

  def _frame_pb_files(self) -> None:
    """Rewrites every .pb file of a schema-1 system except system.pb as a checksummed record."""
    files = [_join(self._component_dir(c), _MANIFEST) for c in self._own_component_ids(self.root)]
    files += [_join(self.root, "paths", e) for e in
              (tf.io.gfile.listdir(_join(self.root, "paths"))
               if tf.io.gfile.isdir(_join(self.root, "paths")) else []) if e.endswith(".pb")]
    if tf.io.gfile.exists(self._evolution_file):
      files.append(self._evolution_file)
    kinds = {_MANIFEST: mtsys_pb2.ComponentSpec, "state.pb": mtsys_pb2.EvolutionState}
    for path in files:
      message = kinds.get(path.rsplit("/", 1)[-1], mtsys_pb2.PathSpec)()
      self._write_atomic(path, records.frame(self._parse(path, message).SerializeToString()))

  def write_config(self, config: mtsys_pb2.SystemConfig,
                   removed_tasks: Optional[Iterable[str]] = None) -> None:
    """Replaces the stored config (e.g. after adding tasks), and the removed tasks if given."""
    self._migrate()
    state = self.read_state()
    state.config.CopyFrom(config)
    if removed_tasks is not None:
      del state.removed_tasks[:]
      state.removed_tasks.extend(sorted(set(removed_tasks)))
    self.commit_state(state)

  def removed_tasks(self) -> list[str]:
    """Tasks removed from the system (see `mtsys.system.admin.remove_task`)."""
    return list(self.read_state().removed_tasks)

  # -------------------------------------------------------------- components
  @property
  def component_sources(self) -> list[str]:
    """The system directories (nearest first) this fork reads components from; [] if none."""
    if self._sources is None:
      if not tf.io.gfile.exists(self._system_file):
        return []  # not created yet: nothing to cache
      self._sources = list(self._read_system_file(self.root).component_sources)
    return list(self._sources)

  def set_component_sources(self, sources: Sequence[str]) -> None:
    """Replaces the component sources recorded in system.pb (e.g. [] once a fork is detached)."""
    self._migrate()
    state = self.read_state()
    del state.component_sources[:]
    state.component_sources.extend(sources)
    self.commit_state(state)
    self._sources = list(sources)

  def sweep_leftovers(self, older_than_seconds: float = 0.0) -> list[str]:
    """Deletes what interrupted writers left here; returns the paths removed (see
    `recovery.sweep_leftovers`: only while holding the run lock, or for files older than
    `older_than_seconds`)."""
    return recovery.sweep_leftovers(self.root, self.faults, older_than_seconds)

  # --------------------------------------------------------------- evolution
  @property
  def _evolution_file(self) -> str:
    return _join(self.root, "evolution", "state.pb")

  def _agent_state_file(self, task: str) -> str:
    return _join(self.root, "evolution", "agents", names.task_file_stem(task) + ".pb")

  def read_evolution_state(self, task: Optional[str] = None) -> mtsys_pb2.EvolutionState:
    """Where evolution is (empty state for a system that has not evolved yet): the single
    program's state, or with `task` the state of that task's agent (one per task)."""
    path = self._evolution_file if task is None else self._agent_state_file(task)
    if not tf.io.gfile.exists(path):
      return mtsys_pb2.EvolutionState()
    return self._parse(path, mtsys_pb2.EvolutionState())

  def write_evolution_state(self, state: mtsys_pb2.EvolutionState,
                            task: Optional[str] = None) -> None:
    """Replaces the evolution state (with `task`: that task's agent's) atomically."""
    path = self._evolution_file if task is None else self._agent_state_file(task)
    tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
    self._write_pb(path, state)

  def evolution_states(self) -> dict[str, mtsys_pb2.EvolutionState]:
    """Every saved evolution state: "" -> the single program's, task -> its agent's."""
    out = {}
    if tf.io.gfile.exists(self._evolution_file):
      out[""] = self.read_evolution_state()
    base = _join(self.root, "evolution", "agents")
    if tf.io.gfile.isdir(base):
      for entry in sorted(tf.io.gfile.listdir(base)):
        if entry.endswith(".pb"):
          state = self._parse(_join(base, entry), mtsys_pb2.EvolutionState())
          out[names.task_from_file_stem(entry[:-3])] = state
    return out

  # ------------------------------------------------------------------- paths
  def _path_file(self, task: str) -> str:
    return _join(self.root, "paths", names.task_file_stem(task) + ".pb")

  def write_path(self, spec: mtsys_pb2.PathSpec) -> None:
    """Replaces the task's path atomically. Every component it names must exist."""
    missing = [c for c in spec.component_ids if not self.has_component(c)]
    if missing:
      raise ValueError(f"Path '{spec.id}' of task '{spec.task}' uses components missing from "
                       f"{self.root}: {missing}.")
    tf.io.gfile.makedirs(_join(self.root, "paths"))
    self._write_pb(self._path_file(spec.task), spec)

  def read_path(self, task: str) -> Optional[mtsys_pb2.PathSpec]:
    path = self._path_file(task)
    if not tf.io.gfile.exists(path):
      return None
    return self._parse(path, mtsys_pb2.PathSpec())

  def paths(self) -> dict[str, mtsys_pb2.PathSpec]:
    """Every task's path, by task name."""
    base = _join(self.root, "paths")
    if not tf.io.gfile.isdir(base):
      return {}
    out = {}
    for entry in sorted(tf.io.gfile.listdir(base)):
      if entry.endswith(".pb"):
        spec = self._parse(_join(base, entry), mtsys_pb2.PathSpec())
        out[spec.task] = spec
    return out

  def delete_path(self, task: str) -> None:
    """Deletes the task's path: its fenced commits (agents') first, then its path file."""
    fileio.rmtree(_join(self.root, "paths", names.task_file_stem(task) + ".fenced"), self.faults)
    self._remove(self._path_file(task))

  def snapshot(self) -> mtsys_pb2.SystemState:
    """The whole system as one SystemState (header, every component and path)."""
    state = self.read_state()
    state.components.extend(self.read_component_spec(c) for c in self.component_ids())
    state.paths.extend(self.paths().values())
    return state

  # --------------------------------------------------------------------- I/O
  def _timed(fn):  # pylint: disable=no-self-argument
    """Adds the call's wall time to `io_seconds` (agents report their share of store I/O)."""
    def timed(self, *args):
      start = time.perf_counter()
      try:
        return fn(self, *args)  # pylint: disable=not-callable
      finally:
        self.io_seconds += time.perf_counter() - start
    return timed

  @_timed
  def _read(self, path: str) -> bytes:
    return fileio.read(path)

  def _parse(self, path: str, message, root: Optional[str] = None):
    """A stored .pb of system `root` (default: this one), checked (see mtsys.system.records)."""
    return records.parse(self._read(path), path, message,
                         legacy_ok=self._is_legacy(root or self.root))

  def _write_pb(self, path: str, message) -> None:
    """Writes a .pb as a checksummed record; a schema-1 system is migrated first."""
    self._migrate()
    self._write_atomic(path, records.frame(message.SerializeToString()))

  @_timed
  def _write_plain(self, path: str, data: bytes) -> None:
    fileio.write_plain(path, data, self.faults)

  @_timed
  def _write_atomic(self, path: str, data: bytes) -> None:
    fileio.write_atomic(path, data, self.faults)

  @_timed
  def _remove(self, path: str) -> None:
    fileio.remove(path, self.faults)


def component_ids_of(paths: Iterable[mtsys_pb2.PathSpec]) -> set[str]:
  """Every component id used by `paths`."""
  return {c for p in paths for c in p.component_ids}


def reset_active_phase(state: mtsys_pb2.EvolutionState, task: str = "") -> None:
  """Makes `task` the active task ("" for none) with no generation, population or parent
  selections yet (starting, finishing or discarding an active phase)."""
  state.task = task
  state.generations_done = 0
  del state.population[:]
  state.selections.clear()