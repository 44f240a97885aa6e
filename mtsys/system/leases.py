"""Leases: which one process may commit for a key (a task), with an expiry and a fencing token.

Two processes can claim the same task (a restarted agent whose old process still lives); a lease
lets at most one of them believe it holds the task at any moment, and its token lets what they
commit be told apart. A key's leases live under the system directory:

| file | holds | written how | a kill leaves |
|---|---|---|---|
| `leases/<key>/<token:012d>.pb` | a checksummed record (`mtsys.system.records`) of JSON: key, token, holder, acquired, expiry, ttl_s, written | created once by `fileio.create_exclusive` (token = highest + 1); then only its holder rewrites it (renew, release) by `fileio.write_atomic_durable` | the file whole, or a `*.tmp-<random>` leftover |

A task name's "/" is "~" in `<key>` (`names.task_file_stem`). The current lease of a key is its
highest token file; tokens start at 1 and only grow, since the highest file is never deleted
(`prune` keeps at least one). A holder is a string naming one process (`holder_id`: host, pid,
start time). Times are wall-clock seconds (`time.time`, injectable as `clock` everywhere).

| operation | reads | then | fails with |
|---|---|---|---|
| `acquire` | the clock, THEN the highest token T | creates T+1 exclusively if there is no T, T is expired (expiry + max skew < now) or T is the caller's own | `LeaseHeld` (another holder's T is live); a lost create race re-reads |
| `renew` | the highest token, the clock | if it is still the caller's T, unreleased and unexpired: rewrites T with expiry now + ttl, then reads the clock again: it must still be before the old expiry | `LeaseLost` |
| `check` | the highest token, THEN the clock | passes if it is the caller's T, unreleased, and now < expiry | `LeaseLost` |
| `release` | the highest token | if it is the caller's T: rewrites T with expiry 0 (anyone may take over at once) | - (returns False) |
| `prune` | the token list | deletes all but the newest `keep` (and their temporary leftovers) | - |

Why at most one holder believes at a time. Two claimants of T+1 both create it exclusively: one
wins, the other gets `AlreadyExists`, re-reads and sees the winner's live lease. A holder
believes only while its clock is before T's expiry E; a takeover needs its own clock past
E + `MAX_CLOCK_SKEW_S`, read BEFORE it reads T. If no two clocks differ by more than the skew,
every takeover's read of T happens after the holder stopped believing, whatever the delays. A
renewal keeps this only if the rewritten T is visible before E (so no takeover can have read the
old E as expired): `renew` checks its clock after the write and, when the write finished too
late, gives the lease up (`LeaseLost`) instead of believing. Re-acquiring one's own live lease
also goes through a new token (an exclusive create), never a rewrite, so it cannot race a
takeover either.

Clock assumption: `MAX_CLOCK_SKEW_S` (30 s) is the largest difference between the wall clocks
of any two machines sharing a store that the leases tolerate (NTP keeps them within
milliseconds; a machine whose clock is off by more can take over a live lease). A taken-over
lease is thus unusable for ttl + skew after its holder's last renewal.

The race window, and fencing. `check` followed by a commit is not atomic: a holder paused
between a passing check and its write (swap, a stopped process, a slow disk, a long GC) can
commit after its lease expired and another holder took over and committed. Leases alone cannot
close this; the token does. A fenced commit writes its lease's token into what it commits (the
task's path records the token it was committed under), and the commit itself must be
conditional on that token: readers, and the next committer, who reads before it writes, reject
content carrying a token lower than one already seen, and the write is made one step with its
check by an atomic primitive (an exclusive create of a per-token file, or the generation
precondition of an object store). That commit protocol is the next step of issue #12; this
module only provides the tokens and the check.

Object stores are not supported yet: the leases need `fileio.create_exclusive`, which there
needs the create-only precondition (`ifGenerationMatch=0` on GCS). This module uses no
TensorFlow, so lightweight processes (launchers, GC, tests) can take leases.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import socket
import time
from typing import Callable, Optional

from mtsys import errors
from mtsys import faults as mfaults
from mtsys.config import names
from mtsys.system import fileio
from mtsys.system import records

Clock = Callable[[], float]

# The largest difference between two machines' wall clocks the leases rely on (module doc).
MAX_CLOCK_SKEW_S = 30.0
LEASES_DIR = "leases"
# Lost create races before `acquire` gives up (each loss means another claimant won a token).
_ACQUIRE_ATTEMPTS = 16
_TOKEN_FILE = re.compile(r"^(\d{12})\.pb$")
_TOKEN_TMP = re.compile(r"^(\d{12})\.pb" + re.escape(fileio.TMP_MARK) + r"[0-9a-f]+$")
_FIELDS = {"key": str, "token": int, "holder": str, "acquired": (int, float),
           "expiry": (int, float), "ttl_s": (int, float), "written": (int, float)}


class LeaseError(errors.StoreError):
  """Base of the lease errors."""


class LeaseHeld(LeaseError):
  """Another holder's lease on the key is live; the message names it and its expiry."""

  def __init__(self, message: str, key: str, holder: str, token: int, expiry: float):
    super().__init__(message)
    self.key, self.holder, self.token, self.expiry = key, holder, token, expiry


class LeaseLost(LeaseError):
  """The caller's lease is no longer its to use (superseded, expired or released)."""


@dataclasses.dataclass(frozen=True)
class Lease:
  """One token of a key's lease, as its file says (plus the system directory it is in)."""
  root: str
  key: str
  token: int
  holder: str
  acquired: float  # when the token was created
  expiry: float  # the holder may use it while its clock is before this; 0 once released
  ttl_s: float
  written: float  # when the file was last written (created, renewed or released)

  @property
  def path(self) -> str:
    return _token_path(self.root, self.key, self.token)


def holder_id(clock: Clock = time.time) -> str:
  """A holder naming this process: "host/pid/start time". Make it once per process."""
  started = datetime.datetime.fromtimestamp(clock()).astimezone().isoformat(
      timespec="milliseconds")
  return f"{socket.gethostname()}/{os.getpid()}/{started}"


def local_holder_dead(holder: str) -> bool:
  """True when `holder` (a `holder_id`) names a process of this host that no longer runs.

  Safe for `acquire(holder_dead=...)`: a wrong "dead" (another host with this host's name and
  its own process ids, a container's separate pid namespace) only lets two processes believe
  at once, which fenced commits make harmless (the older token's commits are refused); a pid
  reused by another process reads as alive, and the lease is waited out as usual.
  """
  host, _, rest = holder.partition("/")
  pid = rest.partition("/")[0]
  if host != socket.gethostname() or not pid.isdigit():
    return False
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return True
  except PermissionError:
    return False  # alive, someone else's
  return False


def current(root: str, key: str) -> Optional[Lease]:
  """The key's highest token (live, expired or released), or None if it never had a lease."""
  _require_local(root, key)
  return _highest(root, key)


def acquire(root: str, key: str, holder: str, ttl_s: float, clock: Clock = time.time, *,
            max_clock_skew_s: float = MAX_CLOCK_SKEW_S,
            faults: Optional[mfaults.Injector] = None,
            holder_dead: Callable[[str], bool] = lambda holder: False) -> Lease:
  """Takes the lease of `key` for `holder` for `ttl_s` seconds, with a new, higher token.

  Free (no lease yet, or the highest expired more than `max_clock_skew_s` ago, or released):
  takes the next token. The caller's own lease, live or not, is superseded by the next token at
  once (its old `Lease` then fails `check`). Another holder's live lease: `LeaseHeld`, unless
  `holder_dead(its holder)` says that process is gone for certain (`local_holder_dead`: a
  restarted agent need not wait out the expiry of the lease its killed process left).

  Raises:
    LeaseHeld: naming the key, the holder, its token and when it expires.
    ExclusiveCreateUnsupportedError: `root` is an object store (module doc).
    ValueError: an invalid key or a non-positive ttl.
  """
  if not ttl_s > 0:
    raise ValueError(f"Lease {key!r}: the ttl must be positive, got {ttl_s}.")
  _require_local(root, key)
  directory = _key_dir(root, key)
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    raise errors.StoreAccessError(f"Cannot make {directory}: {e.strerror or e}") from e
  latest = None
  for _ in range(_ACQUIRE_ATTEMPTS):
    now = clock()  # before the read: a takeover must not act on a read older than its clock
    latest = _highest(root, key)
    if (latest is not None and latest.holder != holder
        and not _taken_over(latest, now, max_clock_skew_s) and not holder_dead(latest.holder)):
      raise _held(latest, now, max_clock_skew_s)
    lease = Lease(root=root, key=key, token=latest.token + 1 if latest else 1, holder=holder,
                  acquired=now, expiry=now + ttl_s, ttl_s=ttl_s, written=now)
    try:
      fileio.create_exclusive(lease.path, _encode(lease), faults)
    except fileio.AlreadyExists:
      continue  # another claimant won this token: re-read
    return lease
  latest = _highest(root, key) or latest
  if latest is None:  # every lost race leaves a file: cannot happen unless files are deleted
    raise errors.StoreAccessError(f"Cannot take lease {key!r}: the files in {directory} keep "
                                  "appearing and vanishing.")
  raise _held(latest, clock(), max_clock_skew_s, contended=True)


def renew(lease: Lease, clock: Clock = time.time, *, ttl_s: Optional[float] = None,
          faults: Optional[mfaults.Injector] = None) -> Lease:
  """The lease with its expiry moved to now + ttl (`ttl_s`, or the lease's own).

  Only while it is live: its token still the highest, not released, not expired. The renewal
  must also be written before the old expiry (module doc); one that finished later gives the
  lease up (rewritten as released) and raises.

  Raises:
    LeaseLost: the lease was superseded, released or expired, or renewed too late.
  """
  ttl_s = lease.ttl_s if ttl_s is None else ttl_s
  if not ttl_s > 0:
    raise ValueError(f"Lease {lease.key!r}: the ttl must be positive, got {ttl_s}.")
  latest = _highest(lease.root, lease.key)
  now = clock()
  _require_live(lease, latest, now, "renew")
  renewed = dataclasses.replace(latest, expiry=now + ttl_s, ttl_s=ttl_s, written=now)
  _rewrite(renewed, faults)
  finished = clock()
  if finished >= lease.expiry:
    try:  # nobody can rely on the new expiry: free the key at once rather than at its end
      _rewrite(dataclasses.replace(renewed, expiry=0.0, written=finished), faults)
    except errors.StoreError:
      pass  # best effort: the key is then free only at the new expiry (+ skew)
    raise LeaseLost(
        f"Lease {lease.key!r} (token {lease.token}) in {lease.root} was lost: its renewal "
        f"finished at {_when(finished)}, after the lease's expiry at {_when(lease.expiry)}, "
        "when another holder may already have taken it over; do not commit.")
  return renewed


def check(lease: Lease, clock: Clock = time.time) -> None:
  """The fencing check, right before a commit: the lease is still live and the caller's.

  Passing says the lease was live when the clock was read; a commit that follows is not made
  atomic with it (see the module doc for the race window, and the fencing token that closes it).

  Raises:
    LeaseLost: a higher token exists, or the lease was released or has expired.
  """
  latest = _highest(lease.root, lease.key)
  _require_live(lease, latest, clock(), "commit")  # the clock after the read


def release(lease: Lease, clock: Clock = time.time, *,
            faults: Optional[mfaults.Injector] = None) -> bool:
  """Gives the lease up (expiry 0, so anyone may take over at once) if it is still the highest.

  Returns:
    True if it was released, False if it had already been superseded (nothing to release).
  """
  latest = _highest(lease.root, lease.key)
  if latest is None or latest.token != lease.token or latest.holder != lease.holder:
    return False
  _rewrite(dataclasses.replace(latest, expiry=0.0, written=clock()), faults)
  return True


def prune(root: str, key: str, keep: int = 2, *,
          faults: Optional[mfaults.Injector] = None) -> list[str]:
  """Deletes all but the newest `keep` token files of `key` (and their temporary leftovers).

  The highest token is never deleted, so tokens keep growing. Safe while others acquire: only
  tokens older than the newest `keep` seen are deleted. Time plays no part, hence no clock.

  Returns:
    The deleted paths, sorted.
  """
  if keep < 1:
    raise ValueError(f"prune({key!r}): keep must be at least 1 (the highest token), got {keep}.")
  _require_local(root, key)
  directory = _key_dir(root, key)
  tokens = _tokens(directory)
  if len(tokens) <= keep:
    return []
  oldest_kept = tokens[-keep]
  doomed = []
  for name in fileio.listdir(directory):
    match = _TOKEN_FILE.match(name) or _TOKEN_TMP.match(name)
    if match and int(match.group(1)) < oldest_kept:
      doomed.append(os.path.join(directory, name))
  faults = faults or mfaults.Injector()
  for path in sorted(doomed):
    faults.point(f"remove {path}")
    try:
      os.unlink(path)
    except FileNotFoundError:
      pass  # another pruner was first
    except OSError as e:
      raise errors.StoreAccessError(f"Cannot remove {path}: {e.strerror or e}") from e
  return sorted(doomed)


def _require_local(root: str, key: str) -> None:
  if not fileio.is_local(root):
    raise fileio.ExclusiveCreateUnsupportedError(
        f"Cannot use lease {key!r} in {root}: leases need an exclusive create, and "
        "tf.io.gfile has no create-if-absent; on an object store it needs the create-only "
        "precondition (ifGenerationMatch=0 on GCS), which is not implemented yet; use a local "
        "directory.")


def _key_dir(root: str, key: str) -> str:
  return os.path.join(root, LEASES_DIR, names.task_file_stem(key))


def _token_path(root: str, key: str, token: int) -> str:
  return os.path.join(_key_dir(root, key), f"{token:012d}.pb")


def _tokens(directory: str) -> list[int]:
  """The token numbers present, ascending."""
  return sorted(int(m.group(1)) for m in map(_TOKEN_FILE.match, fileio.listdir(directory)) if m)


def _highest(root: str, key: str) -> Optional[Lease]:
  """The highest token's lease; re-lists when it vanished (pruned after newer ones appeared)."""
  directory = _key_dir(root, key)
  for _ in range(100):
    tokens = _tokens(directory)
    if not tokens:
      return None
    lease = _read(root, key, tokens[-1])
    if lease is not None:
      return lease
  raise errors.StoreAccessError(f"The lease files in {directory} keep vanishing while read.")


def _read(root: str, key: str, token: int) -> Optional[Lease]:
  path = _token_path(root, key, token)
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    return None
  except OSError as e:
    raise errors.StoreAccessError(f"Cannot read {path}: {e.strerror or e}") from e
  return _decode(data, path, root, key, token)


def _encode(lease: Lease) -> bytes:
  fields = {name: getattr(lease, name) for name in _FIELDS}
  return records.frame(json.dumps(fields, sort_keys=True).encode())


def _decode(data: bytes, path: str, root: str, key: str, token: int) -> Lease:
  payload = records.unframe(data, path, legacy_ok=False)
  try:
    fields = json.loads(payload)
  except ValueError as e:
    raise errors.CorruptFileError(f"Cannot parse {path} as a lease (JSON): {e}") from e
  if (not isinstance(fields, dict) or set(fields) != set(_FIELDS)
      or any(not isinstance(fields[name], kind) or isinstance(fields[name], bool)
             for name, kind in _FIELDS.items())):
    raise errors.CorruptFileError(
        f"{path} is not a lease: expected the fields {sorted(_FIELDS)} with their types.")
  if fields["key"] != key or fields["token"] != token:
    raise errors.CorruptFileError(
        f"{path} holds the lease of key {fields['key']!r} token {fields['token']}, not of key "
        f"{key!r} token {token}.")
  return Lease(root=root, **fields)


def _rewrite(lease: Lease, faults: Optional[mfaults.Injector]) -> None:
  """Replaces the lease's own token file; a failure after a takeover (pruned) is a loss."""
  try:
    fileio.write_atomic_durable(lease.path, _encode(lease), faults)
  except errors.StoreAccessError as e:
    latest = _highest(lease.root, lease.key)
    if latest is not None and latest.token > lease.token:
      raise LeaseLost(_superseded(lease, latest)) from e
    raise


def _taken_over(lease: Lease, now: float, max_clock_skew_s: float) -> bool:
  """Whether another holder may take `lease` over at `now` (expired by more than the skew)."""
  return lease.expiry + max_clock_skew_s < now


def _require_live(lease: Lease, latest: Optional[Lease], now: float, what: str) -> None:
  """Raises LeaseLost unless `latest` is `lease`'s own token, unreleased, and now < its expiry."""
  if latest is None or latest.token < lease.token:
    raise LeaseLost(f"Lease {lease.key!r} (token {lease.token}) in {lease.root} was lost: its "
                    f"file {lease.path} is gone; do not {what}.")
  if latest.token > lease.token or latest.holder != lease.holder:
    raise LeaseLost(_superseded(lease, latest) + f"; do not {what}.")
  if latest.expiry <= 0:
    raise LeaseLost(f"Lease {lease.key!r} (token {lease.token}) in {lease.root} was released; "
                    f"do not {what}.")
  if now >= lease.expiry:
    raise LeaseLost(f"Lease {lease.key!r} (token {lease.token}) in {lease.root} expired at "
                    f"{_when(lease.expiry)}, {now - lease.expiry:.3f} s ago; do not {what}.")


def _superseded(lease: Lease, latest: Lease) -> str:
  return (f"Lease {lease.key!r} in {lease.root} was lost: token {lease.token} of "
          f"{lease.holder} was superseded by token {latest.token} of {latest.holder}")


def _held(latest: Lease, now: float, max_clock_skew_s: float, contended: bool = False
          ) -> LeaseHeld:
  why = (f" (still contended after {_ACQUIRE_ATTEMPTS} lost races)" if contended else "")
  return LeaseHeld(
      f"Lease {latest.key!r} in {latest.root} is held by {latest.holder} (token {latest.token})"
      f"{why} until {_when(latest.expiry)}, {latest.expiry - now:.3f} s from now; another "
      f"holder may take it over {max_clock_skew_s:g} s after that (the maximum clock skew). "
      "Wait, or stop that holder.",
      key=latest.key, holder=latest.holder, token=latest.token, expiry=latest.expiry)


def _when(t: float) -> str:
  return datetime.datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")
