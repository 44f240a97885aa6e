"""Compare-and-swap on a system's SystemState: updates by concurrent agents are never lost.

`system.pb` is replaced whole, so two agents that each read it, add a task and write it back lose
one addition. `update_state` makes the write conditional on the state it read:

| file | holds | written how |
|---|---|---|
| `system.gen/<gen:012d>.pb` | generation `gen` of the SystemState (a checksummed record) | `fileio.create_exclusive` of generation g+1 by a writer that read generation g: of two writers that read g, one creates g+1, the other gets `ConcurrentUpdateError` and (in `update_state`) re-reads and retries |
| `system.pb` | generation 0 (what `Store.create` wrote), then a mirror of the highest generation for older readers | atomic replace after each commit, re-done while a higher generation appeared meanwhile, so it ends at the highest (it may lag while commits run) |

Readers (`Store.read_state`) take the highest generation file, or `system.pb` when there is
none. A system enters generation mode with its first `update_state`; from then on every
SystemState write of the Store (`write_config`, `set_component_sources`, migrations) is a
conditional commit against the generation it read and raises `ConcurrentUpdateError` on a
conflict instead of overwriting. Assumptions: generation files are never deleted (deleting one
below the highest would let a writer that read it re-create its successor unnoticed; pruning
needs that writers check their generation is the highest after creating it, not done yet); the
single program (which writes `system.pb` directly while no generation exists) and agents do not
run on one system at once. Local directories only (`create_exclusive`); object stores need the
create-only precondition.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Optional

from mtsys import errors
from mtsys import faults as mfaults
from mtsys.system import fileio

GEN_DIR = "system.gen"
_GEN_FILE = re.compile(r"^(\d{12})\.pb$")
_SYSTEM = "system.pb"
# Conflicts `update_state` retries before giving up (each one means another writer committed).
DEFAULT_ATTEMPTS = 100


class ConcurrentUpdateError(errors.StoreError):
  """Another writer committed the generation this write was based on first."""


def gen_path(root: str, generation: int) -> str:
  return os.path.join(root, GEN_DIR, f"{generation:012d}.pb")


def highest(root: str) -> int:
  """The highest committed generation of the system at `root`; 0 when there is none."""
  if not fileio.is_local(root):
    return 0
  try:
    names = os.listdir(os.path.join(root, GEN_DIR))
  except FileNotFoundError:
    return 0
  except OSError as e:
    raise errors.StoreAccessError(f"Cannot list {os.path.join(root, GEN_DIR)}: {e}") from e
  gens = [int(m.group(1)) for m in map(_GEN_FILE.match, names) if m]
  return max(gens, default=0)


def commit(root: str, generation: int, data: bytes,
           faults: Optional[mfaults.Injector] = None) -> None:
  """Creates generation `generation` holding `data` (a framed SystemState), then mirrors it.

  Raises:
    ConcurrentUpdateError: the generation exists (another writer committed first).
  """
  path = gen_path(root, generation)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  try:
    fileio.create_exclusive(path, data, faults)
  except fileio.AlreadyExists:
    raise ConcurrentUpdateError(
        f"{path} exists: another writer updated the system state at {root} after this one "
        f"read generation {generation - 1}; re-read and retry (update_state does).") from None
  mirror(root, faults)


def mirror(root: str, faults: Optional[mfaults.Injector] = None) -> None:
  """Makes `system.pb` hold the highest generation (re-done while a higher one appears)."""
  written = -1
  while True:
    top = highest(root)
    if top == written or top == 0:
      return
    with open(gen_path(root, top), "rb") as f:
      data = f.read()
    fileio.write_atomic_durable(os.path.join(root, _SYSTEM), data, faults)
    written = top


def update_state(store, fn: Callable, *, attempts: int = DEFAULT_ATTEMPTS):
  """Applies `fn` to the store's SystemState and commits it unless another writer came first;
  then re-reads and re-applies `fn`, up to `attempts` times.

  `fn(state)` changes the SystemState in place (it may run several times, each on a fresh read).

  Returns:
    The committed SystemState.

  Raises:
    ConcurrentUpdateError: still conflicting after `attempts` tries.
  """
  store._migrate()  # pylint: disable=protected-access
  for _ in range(attempts):
    state = store.read_state()
    fn(state)
    try:
      store.commit_state(state, force_generation=True)
    except ConcurrentUpdateError:
      continue
    return state
  raise ConcurrentUpdateError(
      f"Could not update the system state at {store.root}: {attempts} attempts each lost to "
      "another writer.")
