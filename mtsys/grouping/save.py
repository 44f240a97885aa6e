"""A chosen grouping saved as one mtsys system (`bin/group_tasks.py select --save_system`).

Each trained candidate network is a system of its own (`OUT/candidates/<network>/`: its trunk and
heads are components, one path per task it solves). The grouping chosen at a budget is the
union of the chosen networks' paths for the tasks each serves (its best tasks), with their
components: exactly a system whose paths share components, which the rest of mtsys inspects,
exports and serves. Component ids are unique across candidates (`grouping.<kind>.<hex>` clones
and per-task heads), so they are copied as they are.

The system is written whole or not at all: locally it is built in a temporary sibling directory
that is renamed into place at the end (a kill leaves only that temporary directory, which the
next save removes); an existing destination is refused. It has no root (its trunks are trained
clones of it), so `bin/evolve.py` cannot grow it; export, serving and inspection can.
"""

from __future__ import annotations

import os
import shutil
from typing import Callable, Mapping

from mtsys import errors
from mtsys.protos import mtsys_pb2
from mtsys.system import fileio
from mtsys.system import store as mstore

CANDIDATES_DIR = "candidates"


def candidates_root(candidates_csv: str) -> str:
  """The `train` output directory holding the candidates a VAL.csv (or the directory) names."""
  directory = candidates_csv if os.path.isdir(candidates_csv) else os.path.dirname(
      os.path.abspath(candidates_csv))
  # Approximations' CSVs (hoa/, tag/, esa/) sit one level below the candidates.
  for root in (directory, os.path.dirname(directory)):
    if os.path.isdir(os.path.join(root, CANDIDATES_DIR)):
      return root
  raise errors.DataError(
      f"--save_system needs candidates trained by `bin/group_tasks.py train`: no "
      f"{CANDIDATES_DIR}/ directory beside {candidates_csv} or its parent.")


def save(candidates_root_dir: str, assignment: Mapping[str, str], system_dir: str, *,
         log: Callable[[str], None] = print) -> mstore.Store:
  """Writes the system serving each task of `assignment` (task -> network) at `system_dir`."""
  if not fileio.is_local(system_dir):
    raise errors.ConfigError(f"--save_system={system_dir}: only local directories are supported "
                             "(the system is renamed into place whole).")
  system_dir = os.path.abspath(system_dir)
  if os.path.exists(system_dir) and os.listdir(system_dir):
    raise errors.ConfigError(f"--save_system={system_dir} exists and is not empty; expected a "
                             "new directory.")
  sources = {}
  for task, network in sorted(assignment.items()):
    directory = os.path.join(candidates_root_dir, CANDIDATES_DIR, network)
    if network not in sources:
      try:
        sources[network] = mstore.Store.open(directory)
      except errors.SystemNotFoundError:
        raise errors.DataError(
            f"Network '{network}' (chosen for task '{task}') has no trained system at "
            f"{directory}: train it (`bin/group_tasks.py train`) before saving.") from None
    if sources[network].read_path(task) is None:
      raise errors.DataError(f"Network '{network}' at {directory} has no path for task "
                             f"'{task}'.")
  config = _config(sources, assignment)
  tmp = f"{system_dir}{fileio.TMP_MARK}save"
  shutil.rmtree(tmp, ignore_errors=True)  # what a killed save left
  os.makedirs(os.path.dirname(system_dir), exist_ok=True)
  dst = mstore.Store.create(tmp, config)
  for task, network in sorted(assignment.items()):
    src = sources[network]
    path = src.read_path(task)
    for cid in path.component_ids:
      if not dst.holds_component(cid):
        spec = src.read_component_spec(cid)
        dst.write_component(spec, src.read_weights(spec), src.read_optimizer_slots(spec))
    dst.write_path(path)
    log(f"  task '{task}': network {network} ({len(path.component_ids)} components)")
  if os.path.isdir(system_dir):
    os.rmdir(system_dir)  # empty (checked above)
  os.rename(tmp, system_dir)
  return mstore.Store.open(system_dir)


def _config(sources: Mapping[str, mstore.Store], assignment: Mapping[str, str]
            ) -> mtsys_pb2.SystemConfig:
  """The first chosen network's config with the assignment's tasks (specs from their systems)."""
  configs = {net: store.read_state().config for net, store in sources.items()}
  config = mtsys_pb2.SystemConfig()
  config.CopyFrom(next(iter(configs.values())))
  del config.task[:]
  for task, network in assignment.items():
    spec = next((t for t in configs[network].task if t.name == task), None)
    if spec is None:
      raise errors.DataError(f"Network '{network}' does not define task '{task}'.")
    config.task.append(spec)
  return config
