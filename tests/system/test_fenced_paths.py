"""Fenced path commits: after a takeover the stale holder's commit raises and the stored path is
the new holder's, whichever order their files appear in."""

import pytest

from mtsys.protos import mtsys_pb2
from mtsys.system import fenced_paths
from mtsys.system import leases
from mtsys.system import store as mstore

TASK = "emnist/digits"
T0 = 1_000_000.0


class FakeClock:

  def __init__(self, now=T0):
    self.now = now

  def __call__(self):
    return self.now


def _path(pid):
  return mtsys_pb2.PathSpec(id=pid, task=TASK)


def test_the_stale_holders_commit_raises_and_the_new_holders_path_stays(tmp_path):
  store = mstore.Store.create(str(tmp_path / "s"), mtsys_pb2.SystemConfig(name="t"))
  clock = FakeClock()
  old = leases.acquire(store.root, TASK, "old", 10.0, clock)
  assert fenced_paths.commit_path(store, _path("p1"), old, clock) == (1, 1)
  assert fenced_paths.commit_path(store, _path("p2"), old, clock) == (1, 2)
  clock.now = T0 + 100.0  # past expiry + skew: the old holder stalled
  new = leases.acquire(store.root, TASK, "new", 10.0, clock)
  assert fenced_paths.commit_path(store, _path("n1"), new, clock) == (2, 1)
  with pytest.raises(leases.LeaseLost, match="token 2"):
    fenced_paths.commit_path(store, _path("stale"), old, clock)
  assert fenced_paths.read_path(store, TASK).id == "n1"
  assert store.read_path(TASK).id == "n1"  # the mirror


def test_a_stale_commit_that_passed_its_checks_never_outranks_a_newer_token(tmp_path, monkeypatch):
  store = mstore.Store.create(str(tmp_path / "s"), mtsys_pb2.SystemConfig(name="t"))
  clock = FakeClock()
  old = leases.acquire(store.root, TASK, "old", 10.0, clock)
  clock.now = T0 + 100.0
  new = leases.acquire(store.root, TASK, "new", 10.0, clock)
  fenced_paths.commit_path(store, _path("n1"), new, clock)
  # The old holder passed its lease check (the race window) and then wrote: still refused.
  monkeypatch.setattr(leases, "check", lambda lease, clock=None: None)
  real_highest = fenced_paths.highest
  calls = []

  def stale_first_read(root, task):  # its first read happened before the new holder's commit
    calls.append(1)
    return None if len(calls) == 1 else real_highest(root, task)

  monkeypatch.setattr(fenced_paths, "highest", stale_first_read)
  with pytest.raises(leases.LeaseLost, match="higher than this holder's 1"):
    fenced_paths.commit_path(store, _path("stale"), old, clock)
  monkeypatch.setattr(fenced_paths, "highest", real_highest)
  assert fenced_paths.read_path(store, TASK).id == "n1"
  assert fenced_paths.highest(store.root, TASK) == (2, 1)


def test_a_commit_under_another_tasks_lease_is_refused(tmp_path):
  store = mstore.Store.create(str(tmp_path / "s"), mtsys_pb2.SystemConfig(name="t"))
  lease = leases.acquire(store.root, "other", "a", 10.0)
  with pytest.raises(ValueError, match="lease of 'other'"):
    fenced_paths.commit_path(store, _path("p"), lease)
