"""Fault injection for crash-consistency tests: SIGKILL the process at a chosen point.

A run marks its multi-file steps as named phases (`PHASES`), and the store reports every write
primitive it performs (a file write, a rename, a deletion) as a *fault point* of the innermost
phase; training reports the end of every epoch of root pretraining too (it writes nothing to the
store, so its epochs are its points). An `Injector` made from a spec "PHASE:K" kills its own
process with SIGKILL at the K-th point of PHASE: a file write is first cut to half its bytes (what
a kill during `write()` leaves), anything else is killed before it happens. Before dying it prints
one line to stderr, `mtsys-fault: SIGKILL at <phase> point <k>: <what>`, so a test can assert the
phase was reached.

The spec comes from the environment variable `MTSYS_FAULT`, read only by `bin/` (see
`bin/common.py`) and passed down explicitly: library code never reads the environment. Without a
spec the injector is inert and costs one comparison per write.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Callable, Iterator, Optional

from mtsys import errors

ENV_VAR = "MTSYS_FAULT"
MARKER = "mtsys-fault:"

# The named phases, outermost first in a run.
ROOT_PRETRAINING = "root_pretraining"
ROOT_WRITE = "root_write"
CHILD_TRAINING = "child_training"
END_OF_PHASE = "end_of_phase"
BASELINES = "baselines"
FORK = "fork"
TASK_REMOVAL = "task_removal"
PHASES = (ROOT_PRETRAINING, ROOT_WRITE, CHILD_TRAINING, END_OF_PHASE, BASELINES, FORK,
          TASK_REMOVAL)


class Injector:
  """Counts fault points per phase and kills the process at the planned one (if any)."""

  def __init__(self, phase: str = "", count: int = 0):
    if phase and phase not in PHASES:
      raise errors.ConfigError(f"{ENV_VAR}: unknown phase '{phase}'; expected one of "
                               f"{list(PHASES)}.")
    if phase and count < 1:
      raise errors.ConfigError(f"{ENV_VAR}: the point number must be >= 1, got {count}.")
    self.phase, self.count = phase, count
    self._stack: list[str] = []
    self._seen = 0

  @classmethod
  def from_spec(cls, spec: Optional[str]) -> "Injector":
    """An injector for "PHASE:K" (K-th point of PHASE, from 1); inert for None or ""."""
    if not spec:
      return cls()
    phase, _, count = spec.partition(":")
    try:
      number = int(count)
    except ValueError:
      raise errors.ConfigError(f"{ENV_VAR}={spec!r}: expected PHASE:K with K a positive "
                               f"integer, e.g. '{CHILD_TRAINING}:3'.") from None
    return cls(phase, number)

  @property
  def armed(self) -> bool:
    return bool(self.phase)

  @contextlib.contextmanager
  def phase_of(self, name: str) -> Iterator[None]:
    """Marks the code inside as phase `name` (phases nest; points count for the innermost)."""
    if not self.phase:  # inert: nothing to count
      yield
      return
    self._stack.append(name)
    try:
      yield
    finally:
      self._stack.pop()

  def point(self, what: str, partial: Optional[Callable[[], None]] = None) -> None:
    """A fault point: kills the process here when it is the planned one.

    `partial`, when given, is called first to leave the half-done state a kill during the
    operation would leave (e.g. half of a file written).
    """
    if not self.phase or not self._stack or self._stack[-1] != self.phase:
      return
    self._seen += 1
    if self._seen != self.count:
      return
    if partial is not None:
      partial()
    print(f"{MARKER} SIGKILL at {self.phase} point {self.count}: {what}", file=sys.stderr,
          flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
