"""The root-creation race: N processes started at once on an empty system write ONE root.

Agents (issue #12) start without a run lock, so each finds the root missing. Writing it is a
claim: the first process to take the lease of the key "root" under `<system>/root.claim/`
(`mtsys.system.leases`: an exclusive create of token 1, its holder and expiry inside) writes the
root; every other process waits until the root is complete and then uses it.

| file | holds | written how |
|---|---|---|
| `root.claim/leases/root/<token>.pb` | the claim: holder (host/pid/start), expiry, fencing token | `leases.acquire` (exclusive create); renewed every ttl/3 by a thread while the root is written; released (expiry 0) when done |

The claim lives in its own directory so the key "root" never collides with a task's lease (a
task may be called "root").

Completeness is the caller's: `pretrain.ensure_root_claimed` passes "every root component's
manifest exists" (a component is visible only once whole, `mtsys.system.component_files`).

Waiting is bounded: after `timeout_s` the waiter raises `RootClaimTimeout`, naming the claim file
and its holder. A claim whose holder died (its lease expired more than the maximum clock skew
ago, `leases.MAX_CLOCK_SKEW_S`, and the root still incomplete) is taken over by the next waiter
with a higher token; that writer's `ensure_root` deletes the dead writer's partial root and
writes it whole. Assumption: a holder that is alive renews in time (a process stopped for longer
than ttl + skew can find its claim taken over; it then learns it from the failed renewal and
raises `LeaseLost` after its write instead of reporting success).

Local directories only, like the leases. No TensorFlow is imported here.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable, Optional

from mtsys import errors
from mtsys.system import leases

CLAIM_DIR = "root.claim"
KEY = "root"
DEFAULT_TTL_S = 60.0


class RootClaimTimeout(errors.StoreError):
  """The root did not become complete in time while another process held the claim."""


def claim_root(system_dir: str) -> str:
  """The directory the root claim's lease lives under."""
  return os.path.join(system_dir, CLAIM_DIR)


class _Renewer:
  """Renews a lease every ttl/3 on a thread while the root is written; remembers a loss."""

  def __init__(self, lease: leases.Lease, clock: leases.Clock):
    self.lease, self._clock = lease, clock
    self.lost: Optional[leases.LeaseLost] = None
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True, name="root-claim-renewer")

  def _run(self) -> None:
    while not self._stop.wait(self.lease.ttl_s / 3):
      try:
        self.lease = leases.renew(self.lease, self._clock)
      except leases.LeaseLost as e:
        self.lost = e
        return
      except errors.StoreError:
        continue  # a transient failure: the next period retries before the expiry

  def __enter__(self) -> "_Renewer":
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()


def ensure_once(system_dir: str, is_complete: Callable[[], bool], write: Callable[[], None], *,
                holder: Optional[str] = None, ttl_s: float = DEFAULT_TTL_S,
                timeout_s: float = 3600.0, poll_s: float = 0.5,
                clock: leases.Clock = time.time, sleep: Callable[[float], None] = time.sleep,
                max_clock_skew_s: float = leases.MAX_CLOCK_SKEW_S) -> bool:
  """Makes the root exist, written by exactly one of the processes calling this at once.

  Args:
    system_dir: the (local) system directory.
    is_complete: whether the root is whole (cheap; called while polling).
    write: writes the root (must finish or leave what the next writer's `write` cleans up).
    holder: this process's name (`leases.holder_id()` when None).
    ttl_s: the claim's lease time; renewed every ttl_s / 3 while `write` runs.
    timeout_s: how long to wait for another holder's root.
    poll_s: the wait between two looks at the root.
    clock, sleep, max_clock_skew_s: injectable for tests (see `mtsys.system.leases`).

  Returns:
    True if this process wrote the root, False if it found it complete.

  Raises:
    RootClaimTimeout: another live holder's root did not complete within `timeout_s`; names the
      claim file and its holder.
    LeaseLost: this process's claim was taken over while it wrote (it stalled past its lease).
  """
  holder = holder or leases.holder_id(clock)
  directory = claim_root(system_dir)
  deadline = clock() + timeout_s
  while True:
    if is_complete():
      return False
    try:
      lease = leases.acquire(directory, KEY, holder, ttl_s, clock,
                             max_clock_skew_s=max_clock_skew_s)
    except leases.LeaseHeld as held:
      now = clock()
      if now >= deadline:
        claim = leases.current(directory, KEY)
        raise RootClaimTimeout(
            f"Waited {timeout_s:g} s for the root of {system_dir}, which {held.holder} is "
            f"writing (claim file {claim.path if claim else directory}, token {held.token}); "
            "it is still incomplete. If that process is gone, its claim can be taken over "
            f"{max_clock_skew_s:g} s after its lease expires; otherwise wait longer.") from None
      sleep(min(poll_s, max(deadline - now, 0.0)))
      continue
    renewer = _Renewer(lease, clock)
    try:
      if is_complete():  # finished by the previous holder between our look and our claim
        return False
      with renewer:
        write()
      if renewer.lost is not None:
        raise renewer.lost
      leases.check(renewer.lease, clock)
      return True
    finally:
      leases.release(renewer.lease, clock)  # a no-op once superseded
