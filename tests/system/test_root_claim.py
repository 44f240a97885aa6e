"""The root-creation race: processes started at once on an empty system write one root, the
others wait for it; a dead writer's claim is taken over; a wait is bounded and says for whom."""

import multiprocessing
import os
import time

import pytest

from mtsys.system import leases
from mtsys.system import root_claim

T0 = 1_000_000.0


def _complete(system_dir):
  return os.path.exists(os.path.join(system_dir, "root", "COMPLETE"))


def _fake_root_writer(system_dir, name):
  """Writes a root in parts (slowly, so the others must wait), the marker last."""
  def write():
    with open(os.path.join(system_dir, "writers.log"), "a") as f:
      f.write(name + "\n")
    os.makedirs(os.path.join(system_dir, "root"), exist_ok=True)
    for part in range(3):
      time.sleep(0.1)
      with open(os.path.join(system_dir, "root", f"part{part}"), "w") as f:
        f.write(name)
    with open(os.path.join(system_dir, "root", "COMPLETE"), "w") as f:
      f.write(name)
  return write


def _racer(system_dir, name, start, out):
  start.wait()
  wrote = root_claim.ensure_once(system_dir, lambda: _complete(system_dir),
                                 _fake_root_writer(system_dir, name), holder=name,
                                 ttl_s=5.0, timeout_s=30.0, poll_s=0.02)
  with open(os.path.join(system_dir, "root", "COMPLETE")) as f:
    out.put((name, wrote, f.read()))


def test_processes_started_at_once_create_one_root(tmp_path):
  ctx = multiprocessing.get_context("fork")  # the children need no TensorFlow
  start, out = ctx.Event(), ctx.Queue()
  procs = [ctx.Process(target=_racer, args=(str(tmp_path), f"agent{i}", start, out))
           for i in range(4)]
  for p in procs:
    p.start()
  start.set()
  results = [out.get(timeout=60) for _ in procs]
  for p in procs:
    p.join(timeout=60)
    assert p.exitcode == 0
  with open(tmp_path / "writers.log") as f:
    writers = f.read().split()
  assert len(writers) == 1  # exactly one writer ran
  assert sorted(name for name, wrote, _ in results if wrote) == writers
  assert {root for _, _, root in results} == set(writers)  # all see the same root
  assert all((tmp_path / "root" / f"part{i}").read_text() == writers[0] for i in range(3))


class FakeClock:

  def __init__(self, now=T0):
    self.now = now

  def __call__(self):
    return self.now

  def sleep(self, seconds):
    self.now += seconds


def test_a_dead_writers_claim_is_taken_over_after_expiry_plus_skew(tmp_path):
  clock = FakeClock()
  directory = root_claim.claim_root(str(tmp_path))
  dead = leases.acquire(directory, "root", "dead-host/1/t", 10.0, clock)
  (tmp_path / "root").mkdir()
  (tmp_path / "root" / "part0").write_text("dead")  # a partial root, never completed
  ran = []

  def write():
    ran.append(clock())
    _fake_root_writer(str(tmp_path), "new")()

  assert root_claim.ensure_once(str(tmp_path), lambda: _complete(str(tmp_path)), write,
                                holder="new", ttl_s=1000.0, clock=clock, sleep=clock.sleep,
                                poll_s=1.0, max_clock_skew_s=30.0, timeout_s=100.0)
  assert ran and ran[0] > dead.expiry + 30.0  # not before the skew past the dead one's expiry
  assert (tmp_path / "root" / "COMPLETE").read_text() == "new"
  latest = leases.current(directory, "root")
  assert (latest.token, latest.holder, latest.expiry) == (2, "new", 0.0)  # released


def test_waiting_for_a_live_claim_times_out_naming_the_claim_file_and_holder(tmp_path):
  clock = FakeClock()
  directory = root_claim.claim_root(str(tmp_path))
  held = leases.acquire(directory, "root", "busy-host/7/t", 1000.0, clock)
  with pytest.raises(root_claim.RootClaimTimeout) as e:
    root_claim.ensure_once(str(tmp_path), lambda: False, lambda: pytest.fail("wrote"),
                           holder="me", clock=clock, sleep=clock.sleep, timeout_s=5.0)
  assert held.path in str(e.value) and "busy-host/7/t" in str(e.value)
  assert clock.now == T0 + 5.0


def test_a_complete_root_is_used_without_a_claim(tmp_path):
  assert not root_claim.ensure_once(str(tmp_path), lambda: True, lambda: pytest.fail("wrote"))
  assert not (tmp_path / root_claim.CLAIM_DIR).exists()


def test_a_failed_write_releases_the_claim_for_the_next_process(tmp_path):
  def fail():
    raise OSError("disk full")

  with pytest.raises(OSError):
    root_claim.ensure_once(str(tmp_path), lambda: False, fail, holder="a")
  assert leases.current(root_claim.claim_root(str(tmp_path)), "root").expiry == 0.0
  assert root_claim.ensure_once(str(tmp_path), lambda: _complete(str(tmp_path)),
                                _fake_root_writer(str(tmp_path), "b"), holder="b")
