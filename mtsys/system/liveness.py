"""What a system directory uses: the components garbage collection keeps (`mtsys.system.gc`),
and the registrations of the forks that read a system.

| reason | components a system directory uses |
|---|---|
| `root` | the root of the stored config (`root.stored_root_ids`: an imported root's head template too; every `root.*` id it holds when the stored config does not validate) |
| `path` | every task's path file `paths/<task>.pb` |
| `fenced_path` | every task's highest fenced commit `paths/<task>.fenced/` (`mtsys.system.fenced_paths`), which the path file may not mirror yet |
| `evolution_state` | the population of every saved evolution state (the single program's, each agent's) |
| `inflight` | every in-flight record not expired: expiry + clock skew after now (`mtsys.system.inflight`) |
| `fork` | what every fork registered in it uses, by these same rules (recursively) |

`uses` reads the in-flight records first and the paths and states after: an agent drops an id
from its record only once a path or state naming it is visible, so a component moving from a
record to a path is seen in one or the other.

| file | holds | written how | a kill leaves |
|---|---|---|---|
| `forks/<id>.pb` | ForkRecord: the directory of a fork that reads this system (`<id>`: a hash of it) | atomic replace by `register_fork` (`admin.fork`), before the fork reads the source and writes its own system.pb; idempotent | the registration, or a `*.tmp-<random>` leftover |

A registration outlives its fork: garbage collection refuses while a registered fork cannot be
read (gone, killed before its system.pb, corrupt) unless forced, and ignores one that no longer
reads the system (`admin.detach`).
"""

from __future__ import annotations

import datetime
import hashlib
import os
from typing import Optional, Sequence

from google.protobuf import text_format

from mtsys import errors
from mtsys import faults as mfaults
from mtsys.config import loader
from mtsys.config import names
from mtsys.protos import mtsys_pb2
from mtsys.system import component_files
from mtsys.system import fenced_paths
from mtsys.system import fileio
from mtsys.system import inflight
from mtsys.system import records
from mtsys.system import root as mroot
from mtsys.system import store as mstore

ROOT, PATH, FENCED_PATH, STATE, INFLIGHT, FORK = (
    "root", "path", "fenced_path", "evolution_state", "inflight", "fork")
FORKS_DIR = "forks"
_join = fileio.join


def uses(store: mstore.Store, now: float, max_clock_skew_s: float) -> dict[str, set[str]]:
  """The components `store`'s own directory uses, by reason (ROOT ... INFLIGHT; not its forks').

  Raises:
    inflight.CorruptRecordError: a corrupt in-flight record.
    StoreError: an unreadable system, path or state.
  """
  out = {INFLIGHT: inflight.live_ids(store.root, now, max_clock_skew_s)}  # first: module doc
  config = store.read_state().config
  out[PATH] = mstore.component_ids_of(store.paths().values())
  out[FENCED_PATH] = _fenced_ids(store)
  out[STATE] = {c for s in store.evolution_states().values() for p in s.population
                for c in p.component_ids}
  out[ROOT] = _root_ids(config, store.root)
  return {reason: out[reason] for reason in (ROOT, PATH, FENCED_PATH, STATE, INFLIGHT)}


def component_dirs(root: str) -> dict[str, tuple[bool, list[str]]]:
  """id -> (has a manifest, its file names) of every component directory `root` holds itself
  (local directories; {} for others)."""
  base = _join(root, "components")
  out = {}
  for entry in (os.listdir(base) if os.path.isdir(base) else []):
    try:
      names.check_component_id(entry)
      files = os.listdir(_join(base, entry))
    except (ValueError, NotADirectoryError, FileNotFoundError):
      continue  # not a component directory
    out[entry] = (component_files.MANIFEST in files, files)
  return out


def _root_ids(config: mtsys_pb2.SystemConfig, root: str) -> set[str]:
  try:
    return set(mroot.stored_root_ids(loader.parse(text_format.MessageToString(config),
                                           _join(root, "system.pb"))))
  except errors.ConfigError:
    prefix = mroot.ROOT_PREFIX + "."
    return {c for c in component_dirs(root) if c.startswith(prefix)}


def _fenced_ids(store: mstore.Store) -> set[str]:
  base = _join(store.root, "paths")
  if not os.path.isdir(base):
    return set()  # also every non-local directory: fenced commits are local only
  ids = set()
  for entry in os.listdir(base):
    if not entry.endswith(".fenced"):
      continue
    try:
      task = names.task_from_file_stem(entry[:-len(".fenced")])
    except ValueError:
      continue  # not a task's fenced commits
    for _ in range(100):  # a superseded commit may be unlinked between listing and reading
      try:
        spec = fenced_paths.read_path(store, task)
        break
      except FileNotFoundError:
        continue
    else:
      raise errors.StoreAccessError(f"The fenced commits in {base}/{entry} keep vanishing.")
    ids.update(spec.component_ids if spec is not None else ())
  return ids


# ----------------------------------------------------------------------- fork registrations
def registration_file(source_root: str, fork_root: str) -> str:
  """Where the fork at `fork_root` is registered in `source_root`: `forks/<id>.pb`, `<id>` a
  stable hash of the fork's absolute directory."""
  digest = hashlib.sha256(mstore.normalize_root(fork_root).encode()).hexdigest()[:32]
  return _join(mstore.normalize_root(source_root), FORKS_DIR, f"{digest}.pb")


def register_fork(fork_root: str, sources: Sequence[str],
                  faults: Optional[mfaults.Injector] = None) -> list[str]:
  """Registers the fork at `fork_root` in each of its component `sources`; idempotent.

  Returns:
    The registration files written (not those already in place).
  """
  directory = mstore.normalize_root(fork_root)
  gfile = fileio.tf.io.gfile
  written = []
  for source in sources:
    path = registration_file(source, directory)
    if gfile.exists(path):
      try:
        if _parse(path).directory == directory:
          continue
      except errors.CorruptFileError:
        pass  # replaced whole below
    record = mtsys_pb2.ForkRecord(directory=directory, registered=datetime.datetime.now(
        ).astimezone().isoformat(timespec="seconds"))
    try:
      gfile.makedirs(_join(mstore.normalize_root(source), FORKS_DIR))
      fileio.write_atomic(path, records.frame(record.SerializeToString()),
                          faults or mfaults.Injector())
    except (errors.StoreAccessError, fileio.tf.errors.OpError) as e:
      raise errors.StoreAccessError(
          f"Cannot register the fork {directory} in its component source {source} ({path}), "
          f"which its garbage collection needs to keep what the fork uses: {e}") from e
    written.append(path)
  return written


def registrations(root: str) -> list[tuple[str, Optional[mtsys_pb2.ForkRecord], str]]:
  """(file, record, "") of every fork registered in `root`, or (file, None, why) for a
  registration that cannot be read."""
  base = _join(root, FORKS_DIR)
  gfile = fileio.tf.io.gfile
  if not gfile.isdir(base):
    return []
  out = []
  for entry in sorted(e.rstrip("/") for e in gfile.listdir(base)):
    if entry.endswith(".pb"):
      path = _join(base, entry)
      try:
        out.append((path, _parse(path), ""))
      except errors.StoreError as e:
        out.append((path, None, str(e)))
  return out


def _parse(path: str) -> mtsys_pb2.ForkRecord:
  return records.parse(fileio.read(path), path, mtsys_pb2.ForkRecord(), legacy_ok=False)
