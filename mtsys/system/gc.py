"""Garbage collection of a system directory that agents share: deletes the components nothing can
use any more, without racing the agents about to use them (issue #12; `bin/gc.py`).

Live components are those this directory or, recursively, any fork registered in it uses
(`mtsys.system.liveness`: root, paths, highest fenced commits, saved evolution states'
populations, unexpired in-flight records).

Candidates are the components this directory holds itself (never a component source's) that are
not live, and component directories without a manifest (a killed writer's) that no live record
names; with `only_created_by=task` (an agent collecting its own garbage at the end of an active
phase), only components whose spec says that task created them, besides the manifest-less and
the tombstoned ones. A collection reads the fork registrations first, then per directory its
in-flight records, its paths and states (`liveness.uses`), then the component directories.

| file | holds | written how | a kill leaves |
|---|---|---|---|
| `components/<id>/GC.tombstone` | who is deleting the component | exclusive create (`fileio.create_exclusive`) | a tombstone the next collection finishes |
| `gc.claim/leases/gc/<token>.pb` | the collection lease: one collection per directory at a time | `mtsys.system.leases` | a lease taken over after its expiry + skew, or at once when its holder's process is gone |

The race with agents. An agent may take a component from another task's path at any moment,
while that path's owner replaces it and the component becomes garbage. Each side writes first
and reads second, so at least one of them sees the other:

  agent:      publish its in-flight record naming X, THEN `unusable([X])`: X missing or
              tombstoned -> sample again, never use X;
  collection: tombstone X (exclusive create), THEN re-read every in-flight record (this
              directory's and its registered forks'): a live record names X -> remove the
              tombstone and keep X; otherwise delete X: manifest first (invisible at once), then
              the directory, tombstone included.

If the agent's publish came first, the re-read sees it; otherwise its check comes after the
tombstone, which stays until X is gone. `unusable` looks at tombstones before manifests, so a
deletion in progress is always seen as one or the other. Components an agent creates are named
in its record before it writes them, so a new component directory is either named at the re-read
or its creator's record has expired (its creator is gone or must stop). The agent renews its
record before it expires (`inflight.publish`), and stops using what it named once renewal fails.

One collection at a time holds the collection lease (others: `GcBusy`; an agent's collection
skips its turn); it finishes tombstones a killed collection left (deletes the component if it is
still garbage, else removes the tombstone), and a collection that stalls past its lease is, like
any lease holder, the leases' documented risk (`mtsys.system.leases`: renewal, then a check
before each deletion). A fork registered while a collection runs makes it delete nothing.

Readers that are not agents ignore tombstones: a single-program run holds the run lock
exclusively, so no collection runs with it. `collect` takes no lock: `mtsys.jobs.gc` takes the run
lock shared around it, agents call it holding theirs. Local directories only: tombstones need an
exclusive create, which object stores lack in `tf.io.gfile` (`ExclusiveCreateUnsupportedError`).
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from typing import Callable, Iterable, Optional, Union

from mtsys import errors
from mtsys import faults as mfaults
from mtsys.config import names
from mtsys.system import fileio
from mtsys.system import inflight
from mtsys.system import leases
from mtsys.system import liveness
from mtsys.system import store as mstore

TOMBSTONE = "GC.tombstone"
CLAIM_DIR = "gc.claim"
LEASE_TTL_S = 60.0
# Kept, though not live: another task's component (`only_created_by`), and a candidate a live
# in-flight record named at the re-read after its tombstone (the race above).
OTHER_TASK, RACE = "created_by_another_task", "inflight_after_tombstone"
_LEASE_KEY = "gc"
_join = fileio.join


class GcRefused(errors.StoreError):
  """What is live cannot be known (an unreadable registered fork, a corrupt in-flight record);
  nothing was deleted. The message names the file and what to do."""


class GcBusy(GcRefused):
  """Another collection of the directory is running (it holds the collection lease)."""


@dataclasses.dataclass
class GcReport:
  """What `collect` did (or, in a dry run, would do)."""

  dry_run: bool = False
  # Components deleted, sorted; in a dry run those a real run would delete now.
  deleted: list = dataclasses.field(default_factory=list)
  would_delete: list = dataclasses.field(default_factory=list)
  # Bytes of the deleted components' files (dry run: of would_delete's).
  reclaimed_bytes: int = 0
  # This directory's own components kept, by reason (the module doc's, OTHER_TASK, RACE).
  kept: dict = dataclasses.field(default_factory=dict)
  # Components whose tombstone (a killed collection's, or this one's) was removed: live after all.
  tombstones_removed: list = dataclasses.field(default_factory=list)
  # force=True: registered forks that could not be read and were ignored, with the reason.
  ignored_forks: list = dataclasses.field(default_factory=list)
  # Registered forks that no longer read this directory (detached): nothing of theirs kept.
  detached_forks: list = dataclasses.field(default_factory=list)
  # An agent's collection skipped because this holder's collection was running.
  busy: str = ""

  def summary(self) -> list[str]:
    """A few lines for people."""
    if self.busy:
      return [f"Skipped: another garbage collection is running ({self.busy})."]
    ids = self.would_delete if self.dry_run else self.deleted
    verb = "Would delete" if self.dry_run else "Deleted"
    lines = [f"{verb} {_components(len(ids))} ({self.reclaimed_bytes} bytes)"
             + (f": {', '.join(ids)}." if ids and self.dry_run else ".")]
    kept = ", ".join(f"{reason} {n}" for reason, n in sorted(self.kept.items()))
    lines.append(f"Kept {_components(sum(self.kept.values()))}"
                 + (f" ({kept})." if kept else "."))
    lines += [f"Ignored unreadable fork (--force): {f}" for f in self.ignored_forks]
    lines += [f"Registered fork no longer reads this system: {f}" for f in self.detached_forks]
    return lines


def _components(n: int) -> str:
  return f"{n} component" + ("" if n == 1 else "s")


def collect(system_dir: str, *, dry_run: bool = False, force: bool = False,
            only_created_by: Optional[str] = None, clock: leases.Clock = time.time,
            faults: Optional[mfaults.Injector] = None, log: Callable[[str], None] = print,
            max_clock_skew_s: float = leases.MAX_CLOCK_SKEW_S,
            lease_ttl_s: float = LEASE_TTL_S) -> GcReport:
  """Deletes the components of `system_dir` nothing uses (see the module doc for the protocol).

  Takes no lock: the caller holds the run lock shared (`mtsys.jobs.gc`, agents).

  Args:
    system_dir: a local system directory.
    dry_run: list what would be deleted now; write nothing (no lease, no tombstone).
    force: ignore registered forks that cannot be read (named in the report) instead of refusing.
    only_created_by: only collect components this task created (plus leftovers, see above).
    clock: wall-clock seconds, for in-flight expiries and the collection lease.
    faults: fault points of crash tests; inert when None.
    log: where notable events (ignored forks, a skipped turn) are told.
    max_clock_skew_s: the clock skew the in-flight records and the lease allow for.
    lease_ttl_s: the collection lease's ttl (renewed while deleting).

  Raises:
    GcRefused: an unreadable registered fork (without `force`) or a corrupt in-flight record.
    GcBusy: another collection is running (not raised with `only_created_by`: skipped).
    ExclusiveCreateUnsupportedError: `system_dir` is not local.
    SystemNotFoundError, CorruptFileError: no system, or a corrupt path or state.
  """
  root = mstore.normalize_root(system_dir)
  if not fileio.is_local(root):
    raise fileio.ExclusiveCreateUnsupportedError(
        f"Cannot collect garbage in {root}: deleting safely while agents run needs tombstones "
        "made by an exclusive create, which tf.io.gfile lacks on object stores (it needs "
        "ifGenerationMatch=0 on GCS); use a local directory.")
  faults = faults or mfaults.Injector()
  store = mstore.Store.open(root, faults)
  report = GcReport(dry_run=dry_run)
  lease = None
  if not dry_run:
    lease = _take_lease(root, clock, max_clock_skew_s, lease_ttl_s, faults)
    if isinstance(lease, leases.LeaseHeld):
      if only_created_by is None:
        raise GcBusy(f"Garbage collection of {root} is already running: {lease}") from lease
      report.busy = lease.holder
      log(f"Garbage collection of {root} skipped: {lease.holder} is collecting.")
      return report
  try:
    _collect(store, report, lease, only_created_by, force, clock, max_clock_skew_s, log)
  finally:
    if lease is not None:
      _release(lease, clock, faults)
  return report


def unusable(store_or_root: Union[mstore.Store, str], component_ids: Iterable[str]) -> list[str]:
  """The ids of `component_ids` an agent must not use: missing, or tombstoned by a collection.

  Call it after publishing the in-flight record naming them (module doc); tombstones are looked
  at before manifests, so a deletion in progress shows as one or the other.
  """
  store = (store_or_root if isinstance(store_or_root, mstore.Store)
           else mstore.Store.open(store_or_root))
  roots = [store.root] + list(store.component_sources)
  out = []
  for cid in dict.fromkeys(component_ids):
    tombstoned = {r for r in roots if _exists(tombstone_path(r, cid))}
    holder = store.component_root(cid)
    if holder is None or holder in tombstoned:
      out.append(cid)
  return out


def tombstone_path(root: str, component_id: str) -> str:
  return _join(root, "components", names.check_component_id(component_id), TOMBSTONE)


# ----------------------------------------------------------------------------- the collection
def _collect(store, report, lease, only_created_by, force, clock, skew, log) -> None:
  root, faults = store.root, store.faults
  registered = {path for path, _, _ in liveness.registrations(root)}
  live, forks = _live(store, report, force, clock, skew, log)
  candidates = []
  for cid, (complete, tombstoned, leftovers) in sorted(_component_dirs(root).items()):
    if lease is not None:
      for path in leftovers:  # a killed collection's half-made tombstones
        _unlink(path, faults)
    reason = live.get(cid)
    if reason is not None:
      _count(report, reason)
      if tombstoned and lease is not None:
        _unlink(tombstone_path(root, cid), faults)
        report.tombstones_removed.append(cid)
    elif (only_created_by is not None and complete and not tombstoned
          and not _created_by(store, cid, only_created_by)):
      _count(report, OTHER_TASK)
    else:
      candidates.append(cid)
  if lease is None:  # dry run: what a real run would delete now
    protected = _protected_now(root, forks, registered, clock, skew)
    protected = set(candidates) if protected is None else protected
    report.would_delete = [c for c in candidates if c not in protected]
    for _ in set(candidates) - set(report.would_delete):
      _count(report, RACE)
    report.reclaimed_bytes = sum(_size(_cdir(root, c)) for c in report.would_delete)
    return
  marked = [c for c in candidates if _tombstone(root, c, lease, faults)]
  protected = _protected_now(root, forks, registered, clock, skew)
  if protected is None:
    log(f"A fork was registered in {root}, or an in-flight record became unreadable, during the "
        "collection: nothing deleted; run it again.")
    protected = set(marked)
  for cid in marked:
    if cid in protected:
      _unlink(tombstone_path(root, cid), faults)
      report.tombstones_removed.append(cid)
      _count(report, RACE)
      continue
    lease = _still_ours(lease, clock, faults)
    size = _size(_cdir(root, cid))
    store.delete_component(cid)  # manifest first: invisible at once
    report.deleted.append(cid)
    report.reclaimed_bytes += size


def _live(store, report, force, clock, skew, log) -> tuple[dict, list]:
  """Live id -> reason (the module doc's table), and the readable registered forks."""
  fork_ids, forks = _fork_uses(store.root, report, force, clock, skew, log, {store.root})
  live = {}
  for reason, ids in _uses(store, clock, skew).items():
    for cid in ids:
      live.setdefault(cid, reason)
  for cid in fork_ids:
    live.setdefault(cid, liveness.FORK)
  return live, forks


def _uses(store, clock, skew) -> dict:
  """`liveness.uses`, a corrupt in-flight record refused."""
  try:
    return liveness.uses(store, clock(), skew)
  except inflight.CorruptRecordError as e:
    raise GcRefused(f"Garbage collection of {store.root} refused: {e} Its agent's next renewal "
                    "replaces the record; if that agent is gone, delete the file.") from e


def _fork_uses(root, report, force, clock, skew, log, seen) -> tuple[set, list]:
  """What the forks registered in `root` use (recursively), and those forks' directories."""
  ids, forks = set(), []
  for path, record, why in liveness.registrations(root):
    directory = record.directory if record is not None else ""
    if directory and directory in seen:
      continue
    seen.add(directory)
    fork = None
    if record is not None:
      try:
        fork = mstore.Store.open(directory)
        if root not in [mstore.normalize_root(s) for s in fork.component_sources]:
          report.detached_forks.append(directory)
          continue
      except (errors.StoreError, ValueError) as e:
        why = str(e)
    if fork is not None:
      sub_ids, sub_forks = _fork_uses(directory, report, force, clock, skew, log, seen)
      try:
        ids.update(c for used in _uses(fork, clock, skew).values() for c in used)
        ids |= sub_ids
        forks += [directory] + sub_forks
        continue
      except (errors.StoreError, ValueError) as e:
        why = str(e)
    what = (f"the fork {directory} registered in {path}" if directory
            else f"the fork registration {path}")
    if not force:
      raise GcRefused(
          f"Garbage collection of {root} refused: {what} cannot be read ({why}), so what it "
          f"uses cannot be known. Restore the fork (or rerun the command that made it), delete "
          f"{path} if the fork is gone for good, or rerun with --force to ignore it (what only "
          "it uses may then be deleted).")
    report.ignored_forks.append(f"{what}: {why}")
    log(f"Ignoring {what} (--force): {why}")
  return ids, forks


def _protected_now(root, forks, registered, clock, skew) -> Optional[set]:
  """The re-read after the tombstones: ids live records name now; None when a fork registered
  meanwhile or a record became unreadable (then nothing may be deleted)."""
  if {path for path, _, _ in liveness.registrations(root)} - registered:
    return None
  try:
    return {c for d in [root] + forks for c in inflight.live_ids(d, clock(), skew)}
  except errors.StoreError:
    return None


# ---------------------------------------------------------------------------------- helpers
def _cdir(root: str, cid: str) -> str:
  return _join(root, "components", cid)


def _component_dirs(root: str) -> dict[str, tuple[bool, bool, list]]:
  """id -> (has a manifest, has a tombstone, leftover temporaries of tombstones) of every
  component directory `root` holds itself."""
  out = {}
  for cid, (complete, files) in liveness.component_dirs(root).items():
    leftovers = [_join(_cdir(root, cid), f) for f in files
                 if f.startswith(TOMBSTONE + fileio.TMP_MARK)]
    out[cid] = (complete, TOMBSTONE in files, leftovers)
  return out


def _created_by(store, cid: str, task: str) -> bool:
  try:
    return store.read_component_spec(cid).created_by_task == task
  except errors.StoreError:
    return False  # unreadable: not known to be the task's


def _count(report: GcReport, reason: str) -> None:
  report.kept[reason] = report.kept.get(reason, 0) + 1


def _size(directory: str) -> int:
  """Bytes of a component's files (not of a tombstone)."""
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(directory)
             for f in files if not f.startswith(TOMBSTONE))


def _exists(path: str) -> bool:
  return os.path.exists(path) if fileio.is_local(path) else fileio.tf.io.gfile.exists(path)


def _tombstone(root: str, cid: str, lease: leases.Lease, faults) -> bool:
  """Tombstones the component (adopting a killed collection's); False if it is gone."""
  data = f"{lease.holder} token {lease.token}\n".encode()
  try:
    fileio.create_exclusive(tombstone_path(root, cid), data, faults)
  except fileio.AlreadyExists:
    pass  # left by a killed collection: the lease holder finishes it
  except errors.StoreAccessError:
    if os.path.isdir(_cdir(root, cid)):
      raise
    return False
  return True


def _unlink(path: str, faults) -> None:
  faults.point(f"remove {path}")
  try:
    os.unlink(path)
  except FileNotFoundError:
    pass


def _take_lease(root, clock, skew, ttl_s, faults):
  """The collection lease, or the LeaseHeld naming the running collection."""
  holder = f"{leases.holder_id(clock)}/gc-{uuid.uuid4().hex[:8]}"
  try:
    return leases.acquire(_join(root, CLAIM_DIR), _LEASE_KEY, holder, ttl_s, clock,
                          max_clock_skew_s=skew, faults=faults,
                          holder_dead=leases.local_holder_dead)
  except leases.LeaseHeld as e:
    return e


def _still_ours(lease: leases.Lease, clock, faults) -> leases.Lease:
  """The collection lease, renewed when half of it is gone; LeaseLost when it is no longer
  ours (the collection stalled and another took over)."""
  if lease.expiry - clock() < lease.ttl_s / 2:
    lease = leases.renew(lease, clock, faults=faults)
  leases.check(lease, clock)
  return lease


def _release(lease: leases.Lease, clock, faults) -> None:
  try:
    leases.release(lease, clock, faults=faults)
    leases.prune(lease.root, _LEASE_KEY, keep=1, faults=faults)
  except leases.LeaseError:
    pass  # taken over meanwhile: nothing to release
