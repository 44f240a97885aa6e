"""Garbage collection: what each kind of reference keeps, what goes (unreferenced, expired
in-flight, killed writers' directories), dry runs, an agent's own collection, the tombstone race
with agents from both sides, kills at every write of a collection (and a real SIGKILL) that the
next collection finishes, fork registration and the refusal to guess what an unreadable fork
uses, and the job behind bin/gc.py."""

import hashlib
import multiprocessing
import os
import shutil
import signal

import numpy as np
import pytest

from mtsys import errors
from mtsys import faults as mfaults
from mtsys.config import loader
from mtsys.jobs import gc as gc_job
from mtsys.protos import mtsys_pb2
from mtsys.system import admin
from mtsys.system import fenced_paths
from mtsys.system import fileio
from mtsys.system import fsck
from mtsys.system import gc
from mtsys.system import inflight
from mtsys.system import leases
from mtsys.system import liveness
from mtsys.system import lock
from mtsys.system import root as mroot
from mtsys.system import store as mstore
from mtsys.system import synthetic

T0 = 1_000_000.0
_CONFIG = """
root { vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 3 }
task { name: "a" num_classes: 3 files { npz: "x.npz" validation_fraction: 0.2
       test_fraction: 0.2 } }
task { name: "b" num_classes: 3 files { npz: "x.npz" validation_fraction: 0.2
       test_fraction: 0.2 } }
"""
_QUIET = dict(log=lambda line: None)


class FakeClock:

  def __init__(self, now=T0):
    self.now = now

  def __call__(self):
    return self.now


class _Killed(BaseException):
  """A fault point's "kill" in process (the collection's state is left as a kill leaves it)."""


class _Points(mfaults.Injector):
  """Counts every fault point (any phase); runs `hook(what)` at each and raises _Killed at the
  `kill_at`-th or where `kill_when(what)` (after cutting a file write in half, as a kill during
  the write leaves it)."""

  def __init__(self, kill_at=0, hook=None, kill_when=lambda what: False):
    super().__init__()
    self.kill_at, self.hook, self.kill_when, self.seen = kill_at, hook, kill_when, []

  def point(self, what, partial=None):
    self.seen.append(what)
    if self.hook is not None:
      self.hook(what)
    if len(self.seen) == self.kill_at or self.kill_when(what):
      if partial is not None:
        partial()
      raise _Killed(what)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """A synthetic system: the root and a path per task (a, b), each with a cloned block and a
  head."""
  path = str(tmp_path_factory.mktemp("gc") / "base")
  synthetic.make_system(path, loader.parse(_CONFIG))
  return path


@pytest.fixture
def system(base, tmp_path):
  shutil.copytree(base, tmp_path / "system")
  return str(tmp_path / "system")


def _comp(store, cid, task="a"):
  spec = mtsys_pb2.ComponentSpec(id=cid, kind="residual_adapter", created_by_task=task)
  store.write_component(spec, [np.arange(4, dtype=np.float32) + len(cid)])


def _manifestless(root, cid):
  os.makedirs(f"{root}/components/{cid}")
  with open(f"{root}/components/{cid}/weights.npz", "wb") as f:
    f.write(b"half a file")


def _dirs(root):
  return sorted(os.listdir(f"{root}/components"))


def _digest(root):
  h = hashlib.sha256()
  for directory, _, files in sorted(os.walk(root)):
    for name in sorted(files):
      path = os.path.join(directory, name)
      h.update(os.path.relpath(path, root).encode())
      with open(path, "rb") as f:
        h.update(f.read())
  return h.hexdigest()


def _size(root, cid):
  d = f"{root}/components/{cid}"
  return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def _assert_paths_complete(root):
  """Every path's components (mirrors and highest fenced commits) exist and verify."""
  store = mstore.Store.open(root)
  report = fsck.check(store)
  assert not report.corrupt and not report.dangling, report.summary()
  used = liveness.uses(store, T0, 0.0)
  checked = 0
  for cid in used[liveness.PATH] | used[liveness.FENCED_PATH] | used[liveness.ROOT]:
    spec = store.read_component_spec(cid)
    store.read_weights(spec)  # checksum-verified
    checked += 1
  assert checked > 0


def _scenario(root, fork_dir):
  """One component kept by each kind of reference, and garbage of each kind."""
  store, clock = mstore.Store.open(root), FakeClock()
  _comp(store, "x.path")
  store.write_path(mtsys_pb2.PathSpec(id="p", task="c", component_ids=["x.path"]))
  _comp(store, "x.fenced")  # only the highest fenced commit names it; the mirror lags
  lease = leases.acquire(root, "f", "h", 10.0, clock)
  fenced_paths.commit_path(store, mtsys_pb2.PathSpec(id="pf", task="f",
                                                     component_ids=["x.fenced"]), lease, clock)
  store.write_path(mtsys_pb2.PathSpec(id="older", task="f"))
  _comp(store, "x.state")
  store.write_evolution_state(mtsys_pb2.EvolutionState(task="s", population=[
      mtsys_pb2.PathSpec(id="q", task="s", component_ids=["x.state"])]), task="s")
  _comp(store, "x.inflight")
  _manifestless(root, "x.new")  # being written by the agent of i
  inflight.publish(root, "i", "h", 1, ["x.inflight", "x.new"], 10.0, clock)
  _comp(store, "x.expired")
  inflight.publish(root, "e", "h", 1, ["x.expired"], 10.0, FakeClock(T0 - 40.1))
  _comp(store, "x.garbage")
  _manifestless(root, "x.killed")
  fork = admin.fork(root, fork_dir)
  _comp(store, "x.fork")  # written to the source after the fork: only the fork's path uses it
  path = fork.read_path("a")
  path.component_ids.append("x.fork")
  fork.write_path(path)
  return clock


_GARBAGE = ["x.expired", "x.garbage", "x.killed"]


def test_each_kind_of_reference_keeps_its_components_and_the_rest_goes(system, tmp_path):
  clock = _scenario(system, str(tmp_path / "fork"))
  sizes = {c: _size(system, c) for c in _GARBAGE}
  before = _digest(system)

  dry = gc.collect(system, dry_run=True, clock=clock, **_QUIET)
  assert _digest(system) == before  # a dry run writes nothing
  assert dry.would_delete == _GARBAGE and dry.deleted == []
  assert dry.reclaimed_bytes == sum(sizes.values())

  report = gc.collect(system, clock=clock, **_QUIET)
  assert report.deleted == dry.would_delete == _GARBAGE
  assert report.reclaimed_bytes == sum(sizes.values())
  # root 4; path: each task's clone + head, and x.path; one of each other kind.
  assert report.kept == {"root": 4, "path": 5, "fenced_path": 1, "evolution_state": 1,
                         "inflight": 2, "fork": 1}
  assert not set(_GARBAGE) & set(_dirs(system))
  assert {"x.path", "x.fenced", "x.state", "x.inflight", "x.new", "x.fork"} <= set(_dirs(system))
  assert not any(os.path.exists(gc.tombstone_path(system, c)) for c in _dirs(system))
  _assert_paths_complete(system)
  _assert_paths_complete(str(tmp_path / "fork"))
  again = gc.collect(system, clock=clock, **_QUIET)
  assert again.deleted == [] and again.kept == report.kept


def test_an_agent_collects_only_its_own_garbage_and_killed_writers_leftovers(system):
  store = mstore.Store.open(system)
  _comp(store, "a.junk", task="a")
  _comp(store, "b.junk", task="b")
  _manifestless(system, "b.killed")
  report = gc.collect(system, only_created_by="a", clock=FakeClock(), **_QUIET)
  assert report.deleted == ["a.junk", "b.killed"]
  assert report.kept["created_by_another_task"] == 1
  assert "b.junk" in _dirs(system)
  assert gc.collect(system, clock=FakeClock(), **_QUIET).deleted == ["b.junk"]


def test_gc_keeps_a_candidate_an_agent_published_before_its_tombstone(system):
  store = mstore.Store.open(system)
  _comp(store, "x.taken")
  _comp(store, "x.free")
  seen = []

  def agent(what):  # the agent publishes while GC is about to tombstone x.taken
    if what.startswith("link ") and what.endswith("x.taken/GC.tombstone") and not seen:
      inflight.publish(system, "agent", "h", 1, ["x.taken"], 10.0, FakeClock())
      seen.append(gc.unusable(system, ["x.taken"]))

  report = gc.collect(system, clock=FakeClock(), faults=_Points(hook=agent), **_QUIET)
  assert seen == [[]]  # the agent found it usable ...
  assert report.deleted == ["x.free"]  # ... and the re-read after the tombstone kept it
  assert report.kept["inflight_after_tombstone"] == 1 and report.tombstones_removed == ["x.taken"]
  assert store.has_component("x.taken")
  assert not os.path.exists(gc.tombstone_path(system, "x.taken"))
  assert gc.unusable(system, ["x.taken"]) == []


def test_an_agent_publishing_after_the_tombstone_is_told_the_component_is_unusable(system):
  store = mstore.Store.open(system)
  _comp(store, "x.doomed")
  manifest = f"{system}/components/x.doomed/MANIFEST.pb"
  checks = []

  def agent(what):  # at the deletion's two steps: manifest removal, then the directory
    if what in (f"remove {manifest}", f"rmtree {system}/components/x.doomed"):
      inflight.publish(system, "agent", "h", 1, ["x.doomed"], 10.0, FakeClock())
      checks.append(gc.unusable(store, ["x.doomed", "root.class_token"]))

  report = gc.collect(system, clock=FakeClock(), faults=_Points(hook=agent), **_QUIET)
  assert report.deleted == ["x.doomed"]
  assert checks == [["x.doomed"], ["x.doomed"]]  # tombstoned, then tombstoned without manifest
  assert gc.unusable(store, ["x.doomed"]) == ["x.doomed"]  # and now missing


def test_a_forks_agent_sees_its_sources_tombstone(system, tmp_path):
  fork = admin.fork(system, str(tmp_path / "fork"))
  cid = fork.read_path("a").component_ids[-1]  # the head, which lives in the source
  fileio.create_exclusive(gc.tombstone_path(system, cid), b"gc")
  assert gc.unusable(fork, [cid, "root.class_token", "nope"]) == [cid, "nope"]


def _kill_scenario(root):
  """Garbage of each kind, and a live component a killed collection tombstoned."""
  store = mstore.Store.open(root)
  for cid in ("x.g1", "x.g2"):
    _comp(store, cid)
  _manifestless(root, "x.killed")
  fileio.create_exclusive(gc.tombstone_path(root, "x.g2"), b"a killed gc")
  live = store.read_path("a").component_ids[-1]
  fileio.create_exclusive(gc.tombstone_path(root, live), b"a killed gc")
  with open(gc.tombstone_path(root, live) + ".tmp-0123abcd", "wb") as f:
    f.write(b"a killed gc's half")
  _comp(store, "x.protected")
  inflight.publish(root, "i", "h", 1, ["x.protected"], 1e10, FakeClock())  # live now too
  return live


def test_a_collection_killed_at_any_write_leaves_paths_whole_and_the_next_finishes(system,
                                                                                   tmp_path):
  live = _kill_scenario(system)
  kills = 0
  for k in range(1, 100):
    root = str(tmp_path / f"k{k}")
    shutil.copytree(system, root)
    points = _Points(kill_at=k)
    try:
      gc.collect(root, clock=FakeClock(), faults=points, **_QUIET)
      shutil.rmtree(root)
      break
    except _Killed:
      kills += 1
    _assert_paths_complete(root)
    assert mstore.Store.open(root).has_component("x.protected")
    # The next collection (the killed one's lease expired) finishes the job.
    report = gc.collect(root, clock=FakeClock(T0 + 1000), **_QUIET)
    assert {"x.g1", "x.g2", "x.killed"} & set(_dirs(root)) == set(), (k, points.seen[-1])
    assert not [c for c in _dirs(root)
                if any(f.startswith(gc.TOMBSTONE) for f in os.listdir(f"{root}/components/{c}"))]
    assert mstore.Store.open(root).has_component(live) and "x.protected" in _dirs(root)
    # No leftover but a killed lease write's temporary file, which `leases.prune` deletes once
    # newer tokens exist (and a single-program run's sweep at once).
    leftovers = fsck.check(mstore.Store.open(root)).leftovers
    assert [f for f in leftovers if f"/{gc.CLAIM_DIR}/leases/gc/" not in f] == [], k
    _assert_paths_complete(root)
    assert set(report.deleted) <= {"x.g1", "x.g2", "x.killed"}
    shutil.rmtree(root)
  assert kills >= 15, kills  # lease, tombstones, deletions and release: every write was hit


def _collect_then_sigkill(root, kill_before):
  class Kill(mfaults.Injector):

    def point(self, what, partial=None):
      if what.startswith("link ") and what.endswith(kill_before):
        os.kill(os.getpid(), signal.SIGKILL)
  gc.collect(root, faults=Kill(), log=lambda line: None)


def test_a_sigkilled_collection_is_taken_over_at_once_and_finished(system):
  _kill_scenario(system)
  # Killed while tombstoning x.g2, after x.g1's tombstone (candidates go in id order).
  child = multiprocessing.get_context("fork").Process(target=_collect_then_sigkill,
                                                      args=(system, "x.g2/GC.tombstone"))
  child.start()
  child.join(60)
  assert child.exitcode == -signal.SIGKILL
  assert os.path.exists(gc.tombstone_path(system, "x.g1"))
  _assert_paths_complete(system)
  # The dead holder's lease is taken over without waiting (its process is gone).
  report = gc.collect(system, **_QUIET)
  assert report.deleted == ["x.g1", "x.g2", "x.killed"]
  _assert_paths_complete(system)


def test_forks_register_in_every_source_idempotently(system, tmp_path):
  b = admin.fork(system, str(tmp_path / "b"))
  c = admin.fork(b.root, str(tmp_path / "c"))
  for source, forks in ((system, [b.root, c.root]), (b.root, [c.root])):
    regs = liveness.registrations(source)
    assert sorted(r.directory for _, r, _ in regs) == sorted(forks)
    assert [p for p, _, _ in regs] == sorted(liveness.registration_file(source, f) for f in forks)
  assert liveness.register_fork(c.root, c.component_sources) == []  # already there
  # The fork of the fork keeps what only it uses in the first source.
  store = mstore.Store.open(system)
  _comp(store, "x.c")
  path = c.read_path("b")
  path.component_ids.append("x.c")
  c.write_path(path)
  report = gc.collect(system, clock=FakeClock(), **_QUIET)
  assert report.deleted == [] and report.kept["fork"] == 1


def test_a_fork_is_not_made_when_its_source_refuses_the_registration(system, tmp_path,
                                                                    monkeypatch):
  def read_only(path, data, faults):
    raise errors.StoreAccessError(f"Cannot write {path}: Permission denied")

  monkeypatch.setattr(fileio, "write_atomic", read_only)
  fork_dir = str(tmp_path / "fork")
  with pytest.raises(errors.StoreAccessError,
                     match=f"Cannot register the fork {fork_dir} in its component source "
                     f"{system} .*Permission denied"):
    admin.fork(system, fork_dir)
  assert not os.path.exists(f"{fork_dir}/system.pb")


def test_an_unreadable_registered_fork_stops_collection_unless_forced(system, tmp_path):
  fork_dir = str(tmp_path / "fork")
  admin.fork(system, fork_dir)
  _comp(mstore.Store.open(system), "x.garbage")
  registration = liveness.registration_file(system, fork_dir)
  shutil.rmtree(fork_dir)
  with pytest.raises(gc.GcRefused) as refused:
    gc.collect(system, clock=FakeClock(), **_QUIET)
  message = str(refused.value)
  assert f"the fork {fork_dir} registered in {registration} cannot be read" in message
  assert "--force" in message and isinstance(refused.value, errors.UserError)
  assert "x.garbage" in _dirs(system)  # nothing deleted
  logged = []
  report = gc.collect(system, force=True, clock=FakeClock(), log=logged.append)
  assert report.deleted == ["x.garbage"]
  assert len(report.ignored_forks) == 1 and fork_dir in report.ignored_forks[0]
  assert logged and fork_dir in logged[0]


def test_a_fork_killed_before_its_system_pb_is_registered_and_blocks_collection(system,
                                                                                tmp_path):
  fork_dir = str(tmp_path / "fork")
  kill = _Points(kill_when=lambda what: what.endswith(f"{fork_dir}/system.pb"))
  with pytest.raises(_Killed):
    admin.fork(system, fork_dir, faults=kill)
  assert any("forks/" in w for w in kill.seen[:2])  # the registration came first
  assert not os.path.exists(f"{fork_dir}/system.pb")
  with pytest.raises(gc.GcRefused, match="No mtsys system at"):
    gc.collect(system, clock=FakeClock(), **_QUIET)
  admin.fork(system, fork_dir)  # rerunning the fork completes it
  assert gc.collect(system, clock=FakeClock(), **_QUIET).deleted == []


def test_a_corrupt_registration_or_detached_fork(system, tmp_path):
  fork = admin.fork(system, str(tmp_path / "fork"))
  admin.detach(fork)
  _comp(mstore.Store.open(system), "x.garbage")
  report = gc.collect(system, dry_run=True, clock=FakeClock(), **_QUIET)
  assert report.detached_forks == [fork.root] and report.would_delete == ["x.garbage"]
  bad = f"{system}/forks/0123.pb"
  with open(bad, "wb") as f:
    f.write(b"garbage")
  with pytest.raises(gc.GcRefused, match=f"the fork registration {bad} cannot be read"):
    gc.collect(system, clock=FakeClock(), **_QUIET)


def test_a_corrupt_inflight_record_stops_collection(system):
  _comp(mstore.Store.open(system), "x.garbage")
  inflight.publish(system, "t", "h", 1, ["x"], 10.0, FakeClock())
  with open(inflight.record_path(system, "t"), "ab") as f:
    f.write(b"!")
  with pytest.raises(gc.GcRefused, match="Checksum mismatch in .*inflight/t.pb.*delete the file"):
    gc.collect(system, clock=FakeClock(), **_QUIET)
  assert "x.garbage" in _dirs(system)


def test_one_collection_at_a_time_and_object_stores_are_refused(system):
  _comp(mstore.Store.open(system), "x.garbage")
  other = leases.acquire(f"{system}/{gc.CLAIM_DIR}", "gc", "elsewhere/1/t", 60.0, FakeClock())
  with pytest.raises(gc.GcBusy, match="is already running: .*held by elsewhere/1/t"):
    gc.collect(system, clock=FakeClock(), **_QUIET)
  skipped = gc.collect(system, only_created_by="a", clock=FakeClock(), **_QUIET)
  assert skipped.busy == "elsewhere/1/t" and skipped.deleted == []
  assert skipped.summary() == ["Skipped: another garbage collection is running (elsewhere/1/t)."]
  leases.release(other, FakeClock())
  assert gc.collect(system, clock=FakeClock(), **_QUIET).deleted == ["x.garbage"]
  with pytest.raises(fileio.ExclusiveCreateUnsupportedError, match="ifGenerationMatch=0"):
    gc.collect("gs://bucket/system", **_QUIET)


def test_the_job_takes_the_lock_shared_and_prints_a_report(system, tmp_path):
  _comp(mstore.Store.open(system), "x.garbage")
  lines = []
  dry = gc_job.run(system, dry_run=True, force=False, out=lines.append)
  assert dry["would_delete"] == ["x.garbage"] and "x.garbage" in _dirs(system)
  assert lines[0].startswith("Would delete 1 component (") and lines[0].endswith(": x.garbage.")
  lines.clear()
  done = gc_job.run(system, dry_run=False, force=False, out=lines.append)
  assert done["deleted"] == ["x.garbage"] and done["reclaimed_bytes"] > 0
  assert lines == [f"Deleted 1 component ({done['reclaimed_bytes']} bytes).",
                   "Kept 8 components (path 4, root 4)."]
  with lock.acquire(system):  # a single-program run
    with pytest.raises(errors.LockHeldError, match="garbage collection cannot write it"):
      gc_job.run(system, dry_run=False, force=False, out=lines.append)
  with pytest.raises(mstore.SystemNotFoundError):
    gc_job.run(str(tmp_path / "nothing"), dry_run=True, force=False)
  assert not os.path.exists(tmp_path / "nothing")
  assert mroot.root_ids(loader.parse(_CONFIG))[0] in _dirs(system)
