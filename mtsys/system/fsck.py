"""Checks a whole system directory the way the crash tests need it, writing nothing.

`check(store)` reads every stored file through the store (so every record's checksum and every
weights/optimizer file's SHA-256 is verified) and lists what a complete step never leaves: a
temporary file, a component directory without a manifest, a path naming a missing component, an
incomplete root, and orphans (components of this directory that neither a path, the root nor the
active phase's population uses). A system between runs has no problem at all; right after a kill
only leftovers (temporary files, manifest-less directories, orphans of the interrupted step) may
be listed, which the next run removes.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from mtsys import errors
from mtsys.system import fileio
from mtsys.system import root as mroot
from mtsys.system import store as mstore

ROOT_PREFIX = mroot.ROOT_PREFIX + "."


@dataclasses.dataclass
class Report:
  """What `check` found."""

  # Files read and verified (records parsed, weights checksummed).
  files_checked: int = 0
  # Corrupt or unreadable files: "<path>: <error>".
  corrupt: list = dataclasses.field(default_factory=list)
  # Temporary files and manifest-less component directories.
  leftovers: list = dataclasses.field(default_factory=list)
  # Components of this directory no path, root or active population uses.
  orphans: list = dataclasses.field(default_factory=list)
  # Paths naming components that do not exist, and an incomplete root.
  dangling: list = dataclasses.field(default_factory=list)

  @property
  def ok(self) -> bool:
    return not (self.corrupt or self.leftovers or self.orphans or self.dangling)

  def summary(self) -> str:
    if self.ok:
      return f"OK: {self.files_checked} files verified."
    parts = [f"{name}: {items}" for name, items in
             (("corrupt", self.corrupt), ("leftovers", self.leftovers),
              ("orphans", self.orphans), ("dangling", self.dangling)) if items]
    return f"{self.files_checked} files verified; " + "; ".join(parts)


def check(store: mstore.Store) -> Report:
  """Verifies every file of `store`'s own directory; see the module doc."""
  report = Report()

  def verified(read, what):
    try:
      value = read()
      report.files_checked += 1
      return value
    except errors.StoreError as e:
      report.corrupt.append(f"{what}: {e}")
      return None

  if verified(store.read_state, "system.pb") is None:
    return report
  paths = verified(store.paths, "paths") or {}
  evo = verified(store.read_evolution_state, "evolution state")
  in_use = mstore.component_ids_of(paths.values())
  if evo is not None and evo.task:
    in_use |= mstore.component_ids_of(evo.population)
  own = set(store.held_component_ids())
  for cid in sorted(own):
    spec = verified(lambda c=cid: store.read_component_spec(c), f"component {cid} manifest")
    if spec is None:
      continue
    verified(lambda s=spec: store.read_weights(s), f"component {cid} weights")
    if spec.optimizer_file:
      verified(lambda s=spec: store.read_optimizer_slots(s), f"component {cid} optimizer")
    if cid not in in_use and not cid.startswith(ROOT_PREFIX):
      report.orphans.append(cid)
  for task, path in sorted(paths.items()):
    missing = [c for c in path.component_ids if not store.has_component(c)]
    if missing:
      report.dangling.append(f"path of '{task}' names missing components {missing}")
  root = [c for c in store.component_ids() if c.startswith(ROOT_PREFIX)]
  used_root = {c for c in in_use if c.startswith(ROOT_PREFIX)}
  if used_root - set(root):
    report.dangling.append(f"root components {sorted(used_root - set(root))} are missing")
  for directory, subdirs, files in tf.io.gfile.walk(store.root):
    report.leftovers.extend(f"{directory}/{f}" for f in files if fileio.TMP_MARK in f)
    if directory.rstrip("/") == f"{store.root}/components":
      report.leftovers.extend(f"{directory}/{d.rstrip('/')}" for d in subdirs
                              if d.rstrip("/") not in own)
  report.leftovers.sort()
  return report
