"""One run per system directory: a second run stops at once naming the holder; a lock left by a
killed run (kill -9) is free again; the lock file does not count as content for a fork."""

import os
import signal
import subprocess
import sys
import time

import pytest

from mtsys import errors
from mtsys.system import lock

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_HOLD = ("import sys, time\n"
         "from mtsys.system import lock\n"
         "held = lock.acquire(sys.argv[1])\n"
         "print('held', flush=True)\n"
         "time.sleep(120)\n")


def _holder_process(system_dir):
  proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(system_dir)], stdout=subprocess.PIPE,
                          text=True, cwd=_REPO)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_second_run_stops_naming_the_holder_and_a_killed_holder_frees_it(tmp_path):
  proc = _holder_process(tmp_path)
  try:
    with pytest.raises(errors.LockHeldError,
                       match=rf"^System directory {tmp_path} is in use by another run \(host "
                             rf"\S+, pid {proc.pid}, started \d{{4}}-\d\d-\d\dT[^)]+\) or by agents "
                             r"or garbage collection; one run may write a system at a time\."):
      lock.acquire(str(tmp_path))
  finally:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
  # The kernel dropped the killed run's flock: the next run takes over at once.
  with lock.acquire(str(tmp_path)) as held:
    assert held.enforced
    assert lock.holder(str(tmp_path))["pid"] == os.getpid()


def test_released_lock_can_be_taken_again_in_process(tmp_path):
  first = lock.acquire(str(tmp_path))
  with pytest.raises(errors.LockHeldError):
    lock.acquire(str(tmp_path))  # a second open file description conflicts, even in-process
  first.release()
  lock.acquire(str(tmp_path)).release()


def test_object_store_roots_are_not_locked():
  held = lock.acquire("gs://bucket/system")
  assert not held.enforced
  held.release()


def test_evolve_refuses_a_directory_a_live_run_holds(tmp_path):
  proc = _holder_process(tmp_path / "system")
  try:
    start = time.time()
    done = subprocess.run(
        [sys.executable, os.path.join(_REPO, "bin", "evolve.py"), "--config=chars-lite",
         f"--system_dir={tmp_path / 'system'}", "--tasks=digits"],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  finally:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
  assert done.returncode == 2, done.stderr[-2000:]
  assert f"pid {proc.pid}" in done.stderr.splitlines()[-1]
  assert os.listdir(tmp_path / "system") == [lock.LOCK_FILE]
  assert time.time() - start < 240


def test_agents_share_the_lock_and_exclude_a_single_program_run_both_ways(tmp_path):
  first = lock.acquire_shared(str(tmp_path), "agents")
  second = lock.acquire_shared(str(tmp_path), "garbage collection")  # shared: both hold it
  try:
    assert first.enforced and second.enforced
    with pytest.raises(errors.LockHeldError, match=r"or by agents or garbage collection"):
      lock.acquire(str(tmp_path))
  finally:
    first.release()
    second.release()
  proc = _holder_process(tmp_path)  # a single-program run holds it exclusively
  try:
    with pytest.raises(errors.LockHeldError,
                       match=rf"^System directory {tmp_path} is in use by a single-program run "
                             rf"\(host \S+, pid {proc.pid}, started [^)]+\); the agent of task "
                             r"'a' cannot write it at the same time\."):
      lock.acquire_shared(str(tmp_path), "the agent of task 'a'")
  finally:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
  lock.acquire_shared(str(tmp_path)).release()  # the kill freed it
