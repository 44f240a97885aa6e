"""The garbage collection job behind `bin/gc.py`: one collection of a system directory.

The system must exist (checked before the lock, so a mistyped directory is not created). The run
lock is taken shared (`lock.acquire_shared`): collections run beside agents, never beside a
single-program run, which assumes it is the only writer. The protocol is `mtsys.system.gc`'s.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from mtsys.system import gc
from mtsys.system import lock
from mtsys.system import store as mstore


# Temporary files older than this are a killed writer's: no write takes an hour.
DEFAULT_LEFTOVER_AGE_S = 3600.0


def run(system_dir: str, *, dry_run: bool, force: bool,
        leftover_age_s: float = DEFAULT_LEFTOVER_AGE_S,
        out: Callable[[str], None] = print) -> dict:
  """Collects the garbage of `system_dir` (or lists it, `dry_run`) and prints a short report.

  Then (not with `dry_run`) deletes the temporary files and manifest-less component directories
  older than `leftover_age_s` that killed writers left (`Store.sweep_leftovers`): agents never
  sweep, since another agent may be writing, so the collection does it by age.

  Returns:
    The report (`gc.GcReport`) as a dict.

  Raises:
    SystemNotFoundError: no system at `system_dir`.
    LockHeldError: a single-program run holds the system.
    GcRefused, GcBusy: see `gc.collect`.
  """
  store = mstore.Store.open(system_dir)
  swept = []
  with lock.acquire_shared(system_dir, "garbage collection"):
    report = gc.collect(system_dir, dry_run=dry_run, force=force, log=out)
    if not dry_run:
      swept = store.sweep_leftovers(older_than_seconds=leftover_age_s)
  for line in report.summary():
    out(line)
  if swept:
    out(f"Removed {len(swept)} files killed writers left (older than {leftover_age_s:g} s).")
  return dict(dataclasses.asdict(report), swept=swept)
