"""Checks before a run's first write: a failed check leaves the system directory as it was.

`check` (a run's step 1, see `mtsys.jobs.evolve`) loads and checks every task's data, the
system directory's and a fork source's compatibility with the config, the root's source and the
removed tasks; `load_tasks` loads and checks tasks' data alone.
"""

from __future__ import annotations

from typing import Optional, Sequence

from mtsys import data as mdata
from mtsys import errors
from mtsys.config import loader
from mtsys.system import compat
from mtsys.system import store as mstore
from mtsys.train import pretrain


def load_tasks(config: loader.Config, names: Sequence[str]) -> dict:
  """Loads and checks the data of `names` (unknown names, bad data, bad image sizes raise).

  Call before touching a store, so bad input fails before any work starts.
  """
  out = {}
  for name in names:
    spec = config.task(name)
    mdata.check_image_size(spec.name, config.proto.root.image_size, config.arch.patch_size)
    out[name] = mdata.load_task(spec)
  return out


def check(config: loader.Config, system_dir: str, names: Sequence[str],
          fork_from: Optional[str] = None,
          readd: Sequence[str] = ()) -> tuple[dict, Optional[mstore.Store]]:
  """Checks everything a run needs before its first write to `system_dir`.

  The tasks' data (shapes, labels, splits), the system directory's compatibility with `config`,
  and the root's source (a pretraining task's data, or an importable checkpoint) when the system
  does not hold the root yet. A failed check leaves the directory exactly as it was. With
  `fork_from`, the system to fork must exist and be compatible too (it holds the root the fork
  will read). A task the system records as removed may only run when named in `readd`.

  Returns:
    The tasks' data by name, and the existing system's store (None for a new system).
  """
  task_data = load_tasks(config, names)
  try:
    existing = mstore.Store.open(system_dir)
  except mstore.SystemNotFoundError:
    existing = None
  if existing is not None:
    compat.check_compatible(existing.read_state().config, config)
    removed = set(existing.removed_tasks())
    for name in names:
      if name in removed and name not in readd:
        raise errors.IncompatibleSystemError(
            f"Task '{name}' was removed from this system (--remove_task={name}) but the config "
            f"still lists it. Remove it from the config (or run other tasks with --tasks), or "
            f"pass --readd_task={name} to evolve it again from scratch.")
  source = mstore.Store.open(fork_from) if fork_from else None
  if source is not None:
    compat.check_compatible(source.read_state().config, config)
  pretrain.check_root_source(config, [existing, source])
  return task_data, existing
