"""Leases: one holder at a time per key, takeover only after expiry plus the clock skew, a fencing
token that only grows, and a stale holder that learns it lost; then many processes racing."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from mtsys import errors
from mtsys.system import fileio
from mtsys.system import leases
from mtsys.system import records

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY = "emnist/digits"
T0 = 1_000_000.0


class FakeClock:
  """A clock tests move by hand; `then` queues the values the next calls return."""

  def __init__(self, now=T0):
    self.now, self._queued = now, []

  def __call__(self):
    if self._queued:
      self.now = self._queued.pop(0)
    return self.now

  def then(self, *values):
    self._queued.extend(values)


def _files(root):
  directory = os.path.join(root, "leases", "emnist~digits")
  return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def _acquire(root, holder, clock, ttl_s=10.0, skew=30.0):
  return leases.acquire(str(root), KEY, holder, ttl_s, clock, max_clock_skew_s=skew)


def test_acquire_writes_token_one_as_a_checksummed_record(tmp_path):
  clock = FakeClock()
  lease = _acquire(tmp_path, "A", clock)
  assert (lease.token, lease.holder, lease.acquired, lease.expiry) == (1, "A", T0, T0 + 10)
  assert lease.path == str(tmp_path / "leases" / "emnist~digits" / "000000000001.pb")
  with open(lease.path, "rb") as f:
    payload = records.unframe(f.read(), lease.path, legacy_ok=False)
  assert json.loads(payload) == {"key": KEY, "token": 1, "holder": "A", "acquired": T0,
                                 "expiry": T0 + 10, "ttl_s": 10.0, "written": T0}
  assert leases.current(str(tmp_path), KEY) == lease
  assert leases.current(str(tmp_path), "other") is None


def test_a_live_lease_of_another_holder_is_held_naming_key_holder_and_expiry(tmp_path):
  clock = FakeClock()
  _acquire(tmp_path, "A", clock)
  clock.now = T0 + 4
  with pytest.raises(leases.LeaseHeld) as raised:
    _acquire(tmp_path, "B", clock)
  expiry = re.escape(leases._when(T0 + 10))
  assert re.fullmatch(
      rf"Lease 'emnist/digits' in {re.escape(str(tmp_path))} is held by A \(token 1\) until "
      rf"{expiry}, 6\.000 s from now; another holder may take it over 30 s after that \(the "
      r"maximum clock skew\)\. Wait, or stop that holder\.", str(raised.value))
  held = raised.value
  assert (held.key, held.holder, held.token, held.expiry) == (KEY, "A", 1, T0 + 10)
  assert isinstance(held, errors.StoreError)
  assert _files(tmp_path) == ["000000000001.pb"]


def test_takeover_only_after_expiry_plus_the_skew_and_the_stale_holder_loses(tmp_path):
  clock = FakeClock()
  stale = _acquire(tmp_path, "A", clock)
  for now in (T0 + 10, T0 + 25, T0 + 40):  # expired, but within the 30 s skew: still held
    clock.now = now
    with pytest.raises(leases.LeaseHeld):
      _acquire(tmp_path, "B", clock)
  clock.now = T0 + 40.001
  fresh = _acquire(tmp_path, "B", clock)
  assert (fresh.token, fresh.expiry) == (2, T0 + 50.001)
  superseded = (f"Lease 'emnist/digits' in {tmp_path} was lost: token 1 of A was superseded "
                f"by token 2 of B")
  with pytest.raises(leases.LeaseLost, match=f"^{re.escape(superseded)}; do not commit\\.$"):
    leases.check(stale, clock)
  with pytest.raises(leases.LeaseLost, match=f"^{re.escape(superseded)}; do not renew\\.$"):
    leases.renew(stale, clock)
  assert not leases.release(stale, clock)  # nothing of A's left to release
  leases.check(fresh, clock)
  assert leases.current(str(tmp_path), KEY) == fresh


def test_a_smaller_skew_allows_an_earlier_takeover(tmp_path):
  clock = FakeClock()
  _acquire(tmp_path, "A", clock, skew=0.5)
  clock.now = T0 + 10.5
  with pytest.raises(leases.LeaseHeld, match=r"take it over 0\.5 s after that"):
    _acquire(tmp_path, "B", clock, skew=0.5)
  clock.now = T0 + 10.6
  assert _acquire(tmp_path, "B", clock, skew=0.5).token == 2


def test_the_same_holder_gets_its_lease_back_under_a_new_token(tmp_path):
  clock = FakeClock()
  first = _acquire(tmp_path, "A", clock)
  clock.now = T0 + 1
  again = _acquire(tmp_path, "A", clock)  # live and its own: no wait, but a new token
  assert (again.token, again.expiry) == (2, T0 + 11)
  with pytest.raises(leases.LeaseLost, match="token 1 of A was superseded by token 2 of A"):
    leases.check(first, clock)
  leases.check(again, clock)


def test_renew_extends_a_live_lease_and_refuses_an_expired_one(tmp_path):
  clock = FakeClock()
  lease = _acquire(tmp_path, "A", clock)
  clock.now = T0 + 8
  renewed = leases.renew(lease, clock)
  assert (renewed.token, renewed.expiry, renewed.acquired) == (1, T0 + 18, T0)
  assert leases.current(str(tmp_path), KEY) == renewed
  clock.now = T0 + 17
  renewed = leases.renew(renewed, clock, ttl_s=2.0)
  assert renewed.expiry == T0 + 19
  clock.now = T0 + 45  # past the first expiry + skew, not the renewed one
  with pytest.raises(leases.LeaseHeld):
    _acquire(tmp_path, "B", clock)
  with pytest.raises(leases.LeaseLost, match=r"\(token 1\) in .* expired at .*, 26\.000 s ago; "
                                             r"do not renew\.$"):
    leases.renew(renewed, clock)
  assert _files(tmp_path) == ["000000000001.pb"]  # renewal rewrote it, no temporary left
  clock.now = T0 + 49.001
  assert _acquire(tmp_path, "B", clock).token == 2


def test_a_renewal_that_finishes_after_the_expiry_gives_the_lease_up(tmp_path):
  clock = FakeClock()
  lease = _acquire(tmp_path, "A", clock)
  clock.then(T0 + 9, T0 + 10)  # read before the expiry, write finished at it
  with pytest.raises(leases.LeaseLost, match=r"its renewal finished at .*, after the lease's "
                                             r"expiry at .*; do not commit\.$"):
    leases.renew(lease, clock)
  assert leases.current(str(tmp_path), KEY).expiry == 0  # released: nobody relies on it
  assert _acquire(tmp_path, "B", clock).token == 2  # at once, no skew to wait out


def test_check_passes_until_the_expiry_and_fails_once_released(tmp_path):
  clock = FakeClock()
  lease = _acquire(tmp_path, "A", clock)
  clock.now = T0 + 9.999
  leases.check(lease, clock)
  clock.now = T0 + 10
  with pytest.raises(leases.LeaseLost, match=r"expired at .*; do not commit\.$"):
    leases.check(lease, clock)
  clock.now = T0 + 5
  assert leases.release(lease, clock)
  with pytest.raises(leases.LeaseLost, match=r"\(token 1\) in .* was released; do not commit"):
    leases.check(lease, clock)
  with pytest.raises(leases.LeaseLost, match="was released; do not renew"):
    leases.renew(lease, clock)


def test_release_lets_another_holder_take_over_at_once(tmp_path):
  clock = FakeClock()
  lease = _acquire(tmp_path, "A", clock)
  clock.now = T0 + 1
  assert leases.release(lease, clock)
  assert leases.current(str(tmp_path), KEY).written == T0 + 1
  assert _acquire(tmp_path, "B", clock).token == 2  # no skew to wait out
  assert not leases.release(lease, clock)


def test_the_fencing_token_strictly_increases_across_holders_and_ways_of_ending(tmp_path):
  clock = FakeClock()
  tokens = []
  for i in range(12):
    lease = _acquire(tmp_path, f"H{i % 3}", clock, skew=1.0)
    tokens.append(lease.token)
    if i % 3 == 0:
      leases.release(lease, clock)
    clock.now += 11.5  # past expiry + skew for those not released
  assert tokens == list(range(1, 13))


def test_prune_keeps_the_newest_and_tokens_keep_growing(tmp_path):
  clock = FakeClock()
  for _ in range(5):
    leases.release(_acquire(tmp_path, "A", clock), clock)
  directory = os.path.join(tmp_path, "leases", "emnist~digits")
  for token in (1, 5):  # what a kill during a renewal leaves
    open(os.path.join(directory, f"{token:012d}.pb{fileio.TMP_MARK}{'a' * 32}"), "wb").close()
  removed = leases.prune(str(tmp_path), KEY, keep=2)
  assert [os.path.basename(p) for p in removed] == [
      "000000000001.pb", f"000000000001.pb{fileio.TMP_MARK}{'a' * 32}", "000000000002.pb",
      "000000000003.pb"]
  assert _files(tmp_path) == ["000000000004.pb", "000000000005.pb",
                              f"000000000005.pb{fileio.TMP_MARK}{'a' * 32}"]
  assert leases.prune(str(tmp_path), KEY, keep=2) == []
  assert leases.prune(str(tmp_path), "never-leased") == []
  assert _acquire(tmp_path, "B", clock).token == 6
  with pytest.raises(ValueError, match="keep must be at least 1"):
    leases.prune(str(tmp_path), KEY, keep=0)


def test_a_corrupt_lease_file_is_reported_naming_it(tmp_path):
  clock = FakeClock()
  lease = _acquire(tmp_path, "A", clock)
  with open(lease.path, "r+b") as f:
    f.seek(-3, os.SEEK_END)
    f.write(b"XYZ")
  with pytest.raises(errors.CorruptFileError,
                     match=f"^Checksum mismatch in {re.escape(lease.path)}"):
    _acquire(tmp_path, "B", clock)


def test_object_store_roots_bad_keys_and_ttls_are_refused(tmp_path):
  with pytest.raises(fileio.ExclusiveCreateUnsupportedError) as raised:
    leases.acquire("gs://bucket/system", KEY, "A", 10.0)
  assert str(raised.value) == (
      "Cannot use lease 'emnist/digits' in gs://bucket/system: leases need an exclusive "
      "create, and tf.io.gfile has no create-if-absent; on an object store it needs the "
      "create-only precondition (ifGenerationMatch=0 on GCS), which is not implemented yet; "
      "use a local directory.")
  with pytest.raises(ValueError, match="Invalid task name '../x'"):
    leases.acquire(str(tmp_path), "../x", "A", 10.0)
  with pytest.raises(ValueError, match="the ttl must be positive, got 0"):
    leases.acquire(str(tmp_path), KEY, "A", 0)


def test_holder_id_names_host_pid_and_start():
  holder = leases.holder_id(lambda: T0)
  host, pid, started = holder.split("/")
  assert host and int(pid) == os.getpid() and started.startswith("1970-01-1")


# A racer: from `start_at` for `duration` seconds, takes the lease whenever it can (short ttls,
# a 5 ms skew: one machine, one clock), holds it a random while renewing or checking, then
# releases it or walks away (a crash: the next holder waits out expiry + skew). It logs every
# token it held with the span it believed it held it: from after the acquire to the release (or
# to the last confirmed expiry when it walked away or lost it).
_RACER = r"""
import json, random, sys, time
from mtsys.system import leases
root, key, me, seed, start_at, duration = sys.argv[1:7]
rng = random.Random(int(seed))
skew, generation = 0.005, 0
holder = f"{me}.{generation}"
held, stats = [], {"held_errors": 0, "lost": 0, "released": 0, "abandoned": 0}
while time.time() < float(start_at):
  time.sleep(0.001)
end_at = float(start_at) + float(duration)
while time.time() < end_at:
  ttl = rng.uniform(0.02, 0.08)
  try:
    lease = leases.acquire(root, key, holder, ttl, max_clock_skew_s=skew)
  except leases.LeaseHeld:
    stats["held_errors"] += 1
    time.sleep(rng.uniform(0, 0.01))
    continue
  start, believed, ended = time.time(), lease.expiry, None
  for _ in range(rng.randint(1, 4)):
    time.sleep(rng.uniform(0, ttl * 0.8))
    try:
      if rng.random() < 0.6:
        lease = leases.renew(lease)
        believed = lease.expiry
      else:
        leases.check(lease)
    except leases.LeaseLost:
      stats["lost"] += 1
      ended = believed
      break
  if ended is None and rng.random() < 0.7:
    ended = min(believed, time.time())
    if leases.release(lease):
      stats["released"] += 1
    if rng.random() < 0.3:
      leases.prune(root, key, keep=2)
  elif ended is None:
    stats["abandoned"] += 1
    ended = believed
    generation += 1
    holder = f"{me}.{generation}"  # the restarted process is another holder
  held.append({"token": lease.token, "holder": lease.holder, "start": start, "end": ended})
print(json.dumps({"held": held, "stats": stats}))
"""


def test_racing_processes_never_hold_a_key_at_once(tmp_path):
  racers, duration = 6, 3.0
  start_at = time.time() + 1.0  # every racer started and waiting
  procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path), KEY, f"r{i}",
                             str(1234 + i), str(start_at), str(duration)], cwd=_REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(racers)]
  held, stats = [], []
  for proc in procs:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    report = json.loads(out)
    held.extend(report["held"])
    stats.append(report["stats"])
  held.sort(key=lambda h: h["token"])
  tokens = [h["token"] for h in held]
  # Every token was held once, none skipped, and the highest file is the last one held.
  assert tokens == list(range(1, len(held) + 1)), tokens
  assert leases.current(str(tmp_path), KEY).token == tokens[-1]
  # Tokens grow in the order the holds began ...
  assert [h["token"] for h in sorted(held, key=lambda h: h["start"])] == tokens
  # ... and at every moment at most one holder believed it held the key: each hold began
  # after every earlier token's hold had ended (a hold paused past its expiry before it began
  # is empty: end < start).
  ended = float("-inf")
  for h in held:
    assert h["start"] >= ended, (h, ended)
    ended = max(ended, h["end"])
  # The race was real: contention, several winners, releases and takeovers after expiry.
  assert len(held) >= 10, stats
  assert len({h["holder"].split(".")[0] for h in held}) >= 2, held
  assert sum(s["held_errors"] for s in stats) > 0, stats
  assert sum(s["released"] for s in stats) > 0, stats
  assert sum(s["abandoned"] + s["lost"] for s in stats) > 0, stats
  leftovers = [f for f in _files(tmp_path) if fileio.TMP_MARK in f]
  assert leftovers == []
