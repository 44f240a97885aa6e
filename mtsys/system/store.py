"""The on-disk store of a system: one directory, local or remote, used only via `tf.io.gfile`.

Layout and protocol (everything below the system directory):

| file | holds | written how | visible to readers when | a kill leaves |
|---|---|---|---|---|
| `system.pb` | SystemState: schema version, config, component sources, removed tasks | atomic replace | renamed into place | old or new file |
| `components/<id>/weights.npz` | weight arrays in the layer's `weights` order (no pickle) | plain write, once | its manifest exists | a manifest-less dir |
| `components/<id>/optimizer.npz` | optimizer slots (SGD momentum traces) aligned with the weights | plain write, once | its manifest exists | a manifest-less dir |
| `components/<id>/MANIFEST.pb` | ComponentSpec with the two files' SHA-256 | atomic replace, LAST | renamed into place | the component whole, or invisible |
| `paths/<task>.pb` | PathSpec of the task's best path | atomic replace | renamed into place | old or new path |
| `evolution/state.pb` | EvolutionState: where evolution is, for resuming | atomic replace | renamed into place | old or new state |
| `RUN.lock` | who runs here (host, pid, start); `flock`ed while held | `mtsys.system.lock` | - | a free lock (the kernel drops it) |
| `baselines/<method>/` | a whole system per baseline method, same layout | as above | as above | as above |
| `*.tmp-<random>` | a replacement being written | plain write | never | a leftover |

Every .pb is a checksummed record (`mtsys.system.records`, since schema 2): a flipped byte, a
truncated or empty file, or garbage is reported as corrupt, naming the file, never parsed as a
different valid message; the .npz files are checked against the SHA-256 in their manifest.
Schema-1 systems (bare .pb files) are read as they are and migrated on their first write (every
.pb rewritten as a record, system.pb last; a kill midway leaves a system schema-1 reading
accepts); schema-2 systems likewise, where the migration only rewrites system.pb.

Optimizer slots. A manifest records what its optimizer.npz holds (`optimizer_slots_kind`, since
schema 3). Components written since hold LR_FREE_TRACE slots: the learning-rate-free momentum
trace t <- g + momentum * t of the papers' optax SGD (`mtsys.train.optimizer.TraceSGD`), which a
cloned component carries into its child as the starting momentum. `write_component` marks every
component it writes slots for LR_FREE_TRACE: mtsys trains with nothing else, and
`read_optimizer_slots` hands out nothing else. Components written before (every component of a
schema-1 or schema-2 system) recorded no kind, which reads as KERAS_VELOCITY: Keras' SGD velocity
m <- momentum * m - lr * g, the learning rate folded in. Read as a trace it would be wrong by a
factor of -lr, so `read_optimizer_slots` returns None for them (after checking their checksum)
and a child cloning one starts from zero momentum, which is about what such a velocity is at the
end of a cosine schedule, where the learning rate has decayed to about zero.

Primitives (`mtsys.system.fileio`): "atomic replace" is a temporary file `rename(2)`d over the
target on local filesystems, and one object upload on object stores (gs://, s3://), which make
an object visible whole or not at all. `tf.io.gfile` offers no create-if-absent (its
`rename(overwrite=False)` checks, then renames), so write-once is not enforced by the filesystem:
it holds because one process writes a system at a time, by `flock` on `RUN.lock` (local; a
kill frees it). Object stores have no flock and `tf.io.gfile` no generation precondition: there
the lock is not enforced (documented in `mtsys.system.lock`).

Multi-file steps, each finished or undone by the next run (which holds the lock and first
deletes `*.tmp-*` files and manifest-less component directories, `sweep_leftovers`):

| step | order of writes | the next run after a kill |
|---|---|---|
| root (`pretrain.ensure_root`) | components one by one; paths only after the whole root | finds no partial root: one with some components and no path is deleted and written again whole from one pretraining run |
| generation (`loop.Evolver`) | kept children's components, then the state (population) | redoes the generation; components of an unfinished one are orphans the end of the phase deletes |
| end of active phase | the task's path, deletion of the phase's unused components, then the state | redoes the end (the state still names the phase); reuses the path when written already |
| baselines (`train.baselines`) | per task: the components, then the path | skips tasks with a stored path of the same budget; deletes the task's unused components |
| fork (`admin.fork`) | paths and state, then `system.pb`, which makes the fork exist | discards the unfinished fork (no `system.pb`) and forks again |
| task removal (`admin.remove_task`) | `removed_tasks` in system.pb first, then state, path, components, config entry last | finishes the removal (`admin.finish_removals`) before anything else |
| schema migration | from schema 1: every .pb as a record, `system.pb` last; from 2: `system.pb` | continues the migration |

A component exists for readers only once its manifest does, so a crash mid-write leaves nothing
visible, and components are write-once. Crash tests: `tests/system/test_crash.py` kills real
runs at the writes of every step above (`mtsys.faults`) and at random times.

Forks. A system made by `mtsys.system.admin.fork` holds no component files at first: its
`system.pb` lists `component_sources`, the system directories (nearest first) it reads the
components it does not hold from. Components are write-once, so sharing them is safe. Reads
(`has_component`, `component_ids`, `read_component_spec`, `read_weights`,
`read_optimizer_slots`) look in the fork's own directory and then in each source; writes go to
the fork's own directory only, and `delete_component` deletes only the fork's own copy: deleting
a component that lives only in a source is a no-op (the component stays visible through the
source). A fork relies on its sources keeping the components it uses; `materialize_component`
(or `admin.detach`) copies them into the fork.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from typing import Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf

from mtsys import errors
from mtsys import faults as mfaults
from mtsys.config import names
from mtsys.protos import mtsys_pb2
from mtsys.system import fileio
from mtsys.system import records

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
_MANIFEST = "MANIFEST.pb"
_WEIGHTS = "weights.npz"
_OPTIMIZER = "optimizer.npz"


# The store's errors (mtsys.errors), under the names callers have always used.
StoreError = errors.StoreError
CorruptFileError = errors.CorruptFileError
IncompatibleSchemaError = errors.IncompatibleSchemaError
SystemNotFoundError = errors.SystemNotFoundError
StoreAccessError = errors.StoreAccessError
MissingComponentError = errors.MissingComponentError


def _join(*parts: str) -> str:
  return "/".join(p.rstrip("/") for p in parts)


def normalize_root(root: str) -> str:
  """`root` without a trailing "/", made absolute when it is a local path (no "scheme://")."""
  if "://" not in root:
    root = os.path.abspath(root)
  return root.rstrip("/") if root != "/" else root


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _npz_bytes(arrays: Sequence[np.ndarray], prefix: str) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, **{f"{prefix}{i:04d}": np.asarray(a) for i, a in enumerate(arrays)})
  return buf.getvalue()


def _npz_arrays(data: bytes, path: str) -> list[np.ndarray]:
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
      return [npz[k] for k in sorted(npz.files)]
  except Exception as e:  # zipfile/ValueError: any unreadable archive is corruption.
    raise CorruptFileError(f"Cannot read weights file {path}: {e}") from e


class Store:
  """Reads and writes one system directory."""

  def __init__(self, root: str, faults: Optional[mfaults.Injector] = None):
    self.root = root.rstrip("/") if root not in ("/",) else root
    # Fault points of crash tests (mtsys.faults); inert unless a test armed it.
    self.faults = faults or mfaults.Injector()
    # Component sources of a fork, read lazily from system.pb (None: not read yet).
    self._sources: Optional[list[str]] = None
    # System directory -> the schema version its system.pb states.
    self._schemas: dict[str, int] = {}

  # ------------------------------------------------------------------ system
  @classmethod
  def create(cls, root: str, config: mtsys_pb2.SystemConfig,
             component_sources: Sequence[str] = (),
             faults: Optional[mfaults.Injector] = None,
             paths: Sequence[mtsys_pb2.PathSpec] = (),
             evolution_state: Optional[mtsys_pb2.EvolutionState] = None) -> "Store":
    """Creates a system at `root`, or opens it if it exists (checking the schema version).

    `component_sources` (for forks, see `mtsys.system.admin.fork`): system directories, nearest
    first, whose components this system reads when it does not hold them. `paths` and
    `evolution_state`: the new system's first contents (a fork's copies). They are written
    before `system.pb`, which makes the system exist: a kill midway leaves no system (see
    `is_unfinished_create`). All of these are ignored when the system already exists.
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
    store._write_pb(store._system_file, state)
    store._sources = list(component_sources)
    return store

  @staticmethod
  def is_unfinished_create(root: str, allowed: Sequence[str] = ()) -> bool:
    """True when `root` is absent, empty, or holds only what a `create` killed before its
    `system.pb` leaves (.pb files under paths/ and evolution/, temporary files), besides the
    entries named in `allowed`."""
    if not tf.io.gfile.exists(root):
      return True
    if not tf.io.gfile.isdir(root):
      return False
    for entry in tf.io.gfile.listdir(root):
      name = entry.rstrip("/")
      if name in allowed or fileio.TMP_MARK in name:
        continue
      if name not in ("paths", "evolution"):
        return False
      sub = _join(root, name)
      if not tf.io.gfile.isdir(sub) or not all(
          e.endswith(".pb") or fileio.TMP_MARK in e for e in tf.io.gfile.listdir(sub)):
        return False
    return True

  def discard_unfinished_create(self) -> None:
    """Deletes what a `create` killed before its `system.pb` left (see `is_unfinished_create`)."""
    for name in ("paths", "evolution"):
      fileio.rmtree(_join(self.root, name), self.faults)
    if tf.io.gfile.isdir(self.root):
      for entry in tf.io.gfile.listdir(self.root):
        if fileio.TMP_MARK in entry:
          self._remove(_join(self.root, entry))

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
    """A system directory's system.pb, schema checked; notes the system's schema version."""
    path = _join(root, _SYSTEM)
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
    return state

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
    self._write_atomic(self._system_file, records.frame(state.SerializeToString()))
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
    self._write_pb(self._system_file, state)

  def removed_tasks(self) -> list[str]:
    """Tasks removed from the system (see `mtsys.system.admin.remove_task`)."""
    return list(self.read_state().removed_tasks)

  # -------------------------------------------------------------- components
  def _component_dir(self, component_id: str, root: Optional[str] = None) -> str:
    return _join(root or self.root, "components", names.check_component_id(component_id))

  @property
  def component_sources(self) -> list[str]:
    """The system directories (nearest first) this fork reads components from; [] if none."""
    if self._sources is None:
      if not tf.io.gfile.exists(self._system_file):
        return []  # not created yet: nothing to cache
      self._sources = list(self._read_system_file(self.root).component_sources)
    return list(self._sources)

  def component_root(self, component_id: str) -> Optional[str]:
    """The system directory holding the component: this one, a component source, or None."""
    for root in [self.root] + self.component_sources:
      if tf.io.gfile.exists(_join(self._component_dir(component_id, root), _MANIFEST)):
        return root
    return None

  def holds_component(self, component_id: str) -> bool:
    """True when the component is in this directory itself (not only in a component source)."""
    return tf.io.gfile.exists(_join(self._component_dir(component_id), _MANIFEST))

  def has_component(self, component_id: str) -> bool:
    return self.component_root(component_id) is not None

  def _own_component_ids(self, root: str) -> list[str]:
    base = _join(root, "components")
    if not tf.io.gfile.isdir(base):
      return []
    ids = []
    for entry in tf.io.gfile.listdir(base):
      cid = entry.rstrip("/")
      if tf.io.gfile.exists(_join(base, cid, _MANIFEST)):
        ids.append(cid)
    return ids

  def held_component_ids(self) -> list[str]:
    """Ids of the complete components in this directory itself (not a fork's sources)."""
    return self._own_component_ids(self.root)

  def component_ids(self) -> list[str]:
    """Ids of every completely written component (a fork's sources' included), sorted."""
    ids = set()
    for root in [self.root] + self.component_sources:
      ids.update(self._own_component_ids(root))
    return sorted(ids)

  def write_component(self, spec: mtsys_pb2.ComponentSpec, weights: Sequence[np.ndarray],
                      optimizer_slots: Optional[Sequence[np.ndarray]] = None
                      ) -> mtsys_pb2.ComponentSpec:
    """Writes a new component; returns its spec with file names and checksums filled in.

    Args:
      spec: the component's spec; its file fields and `optimizer_slots_kind` are set here.
      weights: the layer's weight arrays, in its `weights` order.
      optimizer_slots: the momentum traces aligned with `weights` (`TrainResult.optimizer_slots`,
        `read_optimizer_slots`), recorded as LR_FREE_TRACE; None for none.

    Raises:
      FileExistsError: a component with this id is already in the store (write-once).
      ValueError: optimizer slots that do not match the weights' shapes.
    """
    cdir = self._component_dir(spec.id)
    holder = self.component_root(spec.id)
    if holder is not None:
      raise FileExistsError(f"Component '{spec.id}' already exists in {holder}; "
                            "components are write-once.")
    if optimizer_slots is not None:
      if len(optimizer_slots) != len(weights) or any(
          np.shape(s) != np.shape(w) for s, w in zip(optimizer_slots, weights)):
        raise ValueError(f"Optimizer slots of component '{spec.id}' do not match its weights: "
                         f"expected shapes {[np.shape(w) for w in weights]}, got "
                         f"{[np.shape(s) for s in optimizer_slots]}.")
    out = mtsys_pb2.ComponentSpec()
    out.CopyFrom(spec)
    tf.io.gfile.makedirs(cdir)
    data = _npz_bytes(weights, "w")
    self._write_plain(_join(cdir, _WEIGHTS), data)
    out.weights_file, out.weights_sha256 = _WEIGHTS, _sha256(data)
    out.ClearField("optimizer_file")
    out.ClearField("optimizer_sha256")
    out.ClearField("optimizer_slots_kind")
    if optimizer_slots is not None:
      data = _npz_bytes(optimizer_slots, "m")
      self._write_plain(_join(cdir, _OPTIMIZER), data)
      out.optimizer_file, out.optimizer_sha256 = _OPTIMIZER, _sha256(data)
      out.optimizer_slots_kind = mtsys_pb2.ComponentSpec.LR_FREE_TRACE
    # The manifest makes the component visible: it must be the last write.
    self._write_pb(_join(cdir, _MANIFEST), out)
    return out

  def read_component_spec(self, component_id: str) -> mtsys_pb2.ComponentSpec:
    return self._read_spec_at(component_id, self._locate(component_id))

  def _locate(self, component_id: str) -> str:
    """component_root, raising KeyError when no directory holds the component."""
    root = self.component_root(component_id)
    if root is None:
      raise MissingComponentError(f"No component '{component_id}' in {self.root}"
                     + (f" or its component sources {self.component_sources}."
                        if self.component_sources else "."))
    return root

  def _read_spec_at(self, component_id: str, root: str) -> mtsys_pb2.ComponentSpec:
    return self._parse(_join(self._component_dir(component_id, root), _MANIFEST),
                       mtsys_pb2.ComponentSpec(), root)

  def read_weights(self, spec: mtsys_pb2.ComponentSpec) -> list[np.ndarray]:
    """The component's weight arrays, checksum-verified."""
    return self._read_checked(spec.id, spec.weights_file, spec.weights_sha256)

  def read_optimizer_slots(self, spec: mtsys_pb2.ComponentSpec) -> Optional[list[np.ndarray]]:
    """The component's momentum traces, checksum-verified; None if it was saved without.

    Also None for a component written before schema 3, whose slots are Keras' SGD velocity
    (KERAS_VELOCITY, learning rate folded in), not a trace: its file is still checked (a corrupt
    one raises), but a child cloning it starts from zero momentum, which is about what that
    velocity is at the end of a cosine schedule (see the module docstring).
    """
    if not spec.optimizer_file:
      return None
    slots = self._read_checked(spec.id, spec.optimizer_file, spec.optimizer_sha256)
    if spec.optimizer_slots_kind != mtsys_pb2.ComponentSpec.LR_FREE_TRACE:
      return None
    return slots

  def _read_checked(self, component_id: str, file_name: str, sha: str) -> list[np.ndarray]:
    root = self.component_root(component_id) or self.root  # missing: name the own file
    path = _join(self._component_dir(component_id, root), file_name)
    return _npz_arrays(self._read_verified(path, sha), path)

  def _read_verified(self, path: str, sha: str) -> bytes:
    """The file's bytes; CorruptFileError naming it when they do not match `sha`."""
    data = self._read(path)
    if _sha256(data) != sha:
      raise CorruptFileError(f"Checksum mismatch in {path}: the file is corrupt "
                             f"(expected sha256 {sha}, got {_sha256(data)}).")
    return data

  def materialize_component(self, component_id: str) -> bool:
    """Copies a component this fork reads from a component source into its own directory.

    The files are copied byte for byte (checksums unchanged), the manifest last. Returns True
    when a copy was made, False when the component is already held here.

    Raises:
      KeyError: no such component here or in any component source.
    """
    if self.holds_component(component_id):
      return False
    root = self._locate(component_id)
    spec = self._read_spec_at(component_id, root)
    src_dir, dst_dir = self._component_dir(component_id, root), self._component_dir(component_id)
    tf.io.gfile.makedirs(dst_dir)
    for name, sha in ((spec.weights_file, spec.weights_sha256),
                      (spec.optimizer_file, spec.optimizer_sha256)):
      if name:  # verified first: never copy corruption into the fork
        self._write_plain(_join(dst_dir, name), self._read_verified(_join(src_dir, name), sha))
    self._write_pb(_join(dst_dir, _MANIFEST), spec)
    return True

  def set_component_sources(self, sources: Sequence[str]) -> None:
    """Replaces the component sources recorded in system.pb (e.g. [] once a fork is detached)."""
    self._migrate()
    state = self.read_state()
    del state.component_sources[:]
    state.component_sources.extend(sources)
    self._write_pb(self._system_file, state)
    self._sources = list(sources)

  def sweep_leftovers(self, older_than_seconds: float = 0.0) -> list[str]:
    """Deletes what interrupted writers left here; returns the paths removed.

    Leftovers are temporary files (`*.tmp-*`, from a write killed before its rename) and component
    directories without a manifest (a component killed before its manifest, invisible to readers).
    Nothing a complete step wrote is touched. Call it only when no other process can be writing
    here: while holding the run lock (`mtsys.system.lock`), or with `older_than_seconds` longer
    than any write can take. Only this directory is swept, never a fork's sources.
    """
    now = time.time()

    def old_enough(path: str) -> bool:
      return now - tf.io.gfile.stat(path).mtime_nsec / 1e9 >= older_than_seconds

    removed = []
    for directory, _, files in tf.io.gfile.walk(self.root):
      for name in files:
        path = _join(directory, name)
        if fileio.TMP_MARK in name and old_enough(path):
          self._remove(path)
          removed.append(path)
    base = _join(self.root, "components")
    if tf.io.gfile.isdir(base):
      for entry in tf.io.gfile.listdir(base):
        cdir = _join(base, entry.rstrip("/"))
        if (tf.io.gfile.isdir(cdir) and not tf.io.gfile.exists(_join(cdir, _MANIFEST))
            and old_enough(cdir)):
          fileio.rmtree(cdir, self.faults)
          removed.append(cdir)
    return sorted(removed)

  def delete_component(self, component_id: str) -> None:
    """Removes a component: manifest first, so it disappears for readers at once.

    Only this directory's own copy is deleted: in a fork, deleting a component that lives only
    in a component source is a no-op (sources are never written to).
    """
    cdir = self._component_dir(component_id)
    manifest = _join(cdir, _MANIFEST)
    self._remove(manifest)
    fileio.rmtree(cdir, self.faults)

  # --------------------------------------------------------------- evolution
  @property
  def _evolution_file(self) -> str:
    return _join(self.root, "evolution", "state.pb")

  def read_evolution_state(self) -> mtsys_pb2.EvolutionState:
    """Where evolution is (empty state for a system that has not evolved yet)."""
    if not tf.io.gfile.exists(self._evolution_file):
      return mtsys_pb2.EvolutionState()
    return self._parse(self._evolution_file, mtsys_pb2.EvolutionState())

  def write_evolution_state(self, state: mtsys_pb2.EvolutionState) -> None:
    """Replaces the evolution state atomically."""
    tf.io.gfile.makedirs(_join(self.root, "evolution"))
    self._write_pb(self._evolution_file, state)

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
    self._remove(self._path_file(task))

  def snapshot(self) -> mtsys_pb2.SystemState:
    """The whole system as one SystemState (header, every component and path)."""
    state = self.read_state()
    state.components.extend(self.read_component_spec(c) for c in self.component_ids())
    state.paths.extend(self.paths().values())
    return state

  # --------------------------------------------------------------------- I/O
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

  def _write_plain(self, path: str, data: bytes) -> None:
    fileio.write_plain(path, data, self.faults)

  def _write_atomic(self, path: str, data: bytes) -> None:
    fileio.write_atomic(path, data, self.faults)

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
