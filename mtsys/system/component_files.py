"""The components of a system directory: their files, checksums and optimizer slots, and a
fork's component sources. The component half of `mtsys.system.store.Store` (its base class).

A component is the directory `components/<id>/`: `weights.npz` (the layer's weight arrays in its
`weights` order, no pickle), `optimizer.npz` (optimizer slots aligned with the weights, optional)
and `MANIFEST.pb` (the ComponentSpec with the two files' SHA-256), written last: a component
exists for readers only once its manifest does, and components are write-once.

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
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from mtsys import errors
from mtsys import faults as mfaults
from mtsys.config import names
from mtsys.protos import mtsys_pb2
from mtsys.system import fileio
from mtsys.system import records

MANIFEST = "MANIFEST.pb"
_WEIGHTS = "weights.npz"
_OPTIMIZER = "optimizer.npz"
_join = fileio.join


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
    raise errors.CorruptFileError(f"Cannot read weights file {path}: {e}") from e


class ComponentFiles:
  """Reads and writes the components of one system directory and of its component sources.

  The base class of `mtsys.system.store.Store`, which provides the rest: `root`, `faults`,
  `component_sources`, and the I/O `_read`, `_parse`, `_write_pb`, `_write_plain`, `_remove`,
  `_migrate`.
  """

  root: str
  faults: mfaults.Injector

  def _component_dir(self, component_id: str, root: Optional[str] = None) -> str:
    return _join(root or self.root, "components", names.check_component_id(component_id))

  def component_root(self, component_id: str) -> Optional[str]:
    """The system directory holding the component: this one, a component source, or None."""
    for root in [self.root] + self.component_sources:
      if tf.io.gfile.exists(_join(self._component_dir(component_id, root), MANIFEST)):
        return root
    return None

  def holds_component(self, component_id: str) -> bool:
    """True when the component is in this directory itself (not only in a component source)."""
    return tf.io.gfile.exists(_join(self._component_dir(component_id), MANIFEST))

  def has_component(self, component_id: str) -> bool:
    return self.component_root(component_id) is not None

  def _own_component_ids(self, root: str) -> list[str]:
    base = _join(root, "components")
    if not tf.io.gfile.isdir(base):
      return []
    ids = []
    for entry in tf.io.gfile.listdir(base):
      cid = entry.rstrip("/")
      if tf.io.gfile.exists(_join(base, cid, MANIFEST)):
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
    # The manifest makes the component visible: it must be the last write. Locally it is an
    # exclusive create, so of two writers of one id (agents, issue #12) exactly one succeeds;
    # object stores need the create-only precondition tf.io.gfile lacks (ifGenerationMatch=0 on
    # GCS): there write-once rests on the ids being unique (random, per task).
    manifest = _join(cdir, MANIFEST)
    if fileio.is_local(manifest):
      self._migrate()
      try:
        fileio.create_exclusive(manifest, records.frame(out.SerializeToString()), self.faults)
      except fileio.AlreadyExists:
        raise FileExistsError(f"Component '{spec.id}' already exists in {self.root}; "
                              "components are write-once.") from None
    else:
      self._write_pb(manifest, out)
    return out

  def read_component_spec(self, component_id: str) -> mtsys_pb2.ComponentSpec:
    return self._read_spec_at(component_id, self._locate(component_id))

  def _locate(self, component_id: str) -> str:
    """component_root, raising KeyError when no directory holds the component."""
    root = self.component_root(component_id)
    if root is None:
      raise errors.MissingComponentError(
          f"No component '{component_id}' in {self.root}"
          + (f" or its component sources {self.component_sources}."
             if self.component_sources else "."))
    return root

  def _read_spec_at(self, component_id: str, root: str) -> mtsys_pb2.ComponentSpec:
    return self._parse(_join(self._component_dir(component_id, root), MANIFEST),
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
      raise errors.CorruptFileError(f"Checksum mismatch in {path}: the file is corrupt "
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
    self._write_pb(_join(dst_dir, MANIFEST), spec)
    return True

  def delete_component(self, component_id: str) -> None:
    """Removes a component: manifest first, so it disappears for readers at once.

    Only this directory's own copy is deleted: in a fork, deleting a component that lives only
    in a component source is a no-op (sources are never written to).
    """
    cdir = self._component_dir(component_id)
    manifest = _join(cdir, MANIFEST)
    self._remove(manifest)
    fileio.rmtree(cdir, self.faults)
