"""Crash recovery of a system directory: the order of every multi-file step's writes, and the
clean-up of what a killed writer left.

Each multi-file step is finished or undone by the next run, which holds the run lock
(`mtsys.system.lock`) and first deletes `*.tmp-*` files and manifest-less component directories
(`sweep_leftovers`, also `Store.sweep_leftovers`):

| step | order of writes | the next run after a kill |
|---|---|---|
| root (`pretrain.ensure_root`) | components one by one; paths only after the whole root | finds no partial root: one with some components and no path is deleted and written again whole from one pretraining run |
| generation (`loop.Evolver`) | kept children's components, then the writer's history file, then the state (population) | redoes the generation (its history records are rewritten under the same sequence numbers; readers keep the latest); components of an unfinished one are orphans the end of the phase deletes |
| end of active phase | the task's path, deletion of the phase's unused components, then the state | redoes the end (the state still names the phase); reuses the path when written already |
| baselines (`train.baselines`) | per task: the components, then the path | skips tasks with a stored path of the same budget; deletes the task's unused components |
| fork (`admin.fork`) | paths and state, then `system.pb`, which makes the fork exist | discards the unfinished fork (no `system.pb`) and forks again |
| task removal (`admin.remove_task`) | `removed_tasks` in system.pb first, then the task's history records and TensorBoard events (each file rewritten whole), state, path, components, config entry last; `--remove_task` then does the same in each baseline system that still knows the task (`baselines/<method>/`, `admin.remove_task_from_baselines`) | finishes the removal (`admin.finish_removals`) before anything else; a rerun of `--remove_task` finishes the baselines' |
| schema migration | from schema 1: every .pb as a record, `system.pb` last; from 2: `system.pb` | continues the migration |

A component exists for readers only once its manifest does, so a crash mid-write leaves nothing
visible, and components are write-once. A `Store.create` (a fork's) killed before its
`system.pb` leaves no system, only files `is_unfinished_create` recognizes and
`discard_unfinished_create` deletes. Crash tests: `tests/system/test_crash.py` kills real runs at
the writes of every step above (`mtsys.faults`) and at random times.
"""

from __future__ import annotations

import time
from typing import Sequence

import tensorflow as tf

from mtsys import faults as mfaults
from mtsys.system import component_files
from mtsys.system import fileio

_join = fileio.join


def is_unfinished_create(root: str, allowed: Sequence[str] = ()) -> bool:
  """True when `root` is absent, empty, or holds only what a `Store.create` killed before its
  `system.pb` leaves (.pb files under paths/ and evolution/, temporary files), besides the
  entries named in `allowed`."""
  if not tf.io.gfile.exists(root):
    return True
  if not tf.io.gfile.isdir(root):
    return False
  for entry in tf.io.gfile.listdir(root):
    name = entry.rstrip("/")
    if name in allowed or fileio.TMP_MARK in name:
      continue
    if name not in ("paths", "evolution"):
      return False
    sub = _join(root, name)
    if not tf.io.gfile.isdir(sub) or not all(
        e.endswith(".pb") or fileio.TMP_MARK in e for e in tf.io.gfile.listdir(sub)):
      return False
  return True


def discard_unfinished_create(root: str, faults: mfaults.Injector) -> None:
  """Deletes what a `Store.create` killed before its `system.pb` left (see
  `is_unfinished_create`)."""
  for name in ("paths", "evolution"):
    fileio.rmtree(_join(root, name), faults)
  if tf.io.gfile.isdir(root):
    for entry in tf.io.gfile.listdir(root):
      if fileio.TMP_MARK in entry:
        fileio.remove(_join(root, entry), faults)


def sweep_leftovers(root: str, faults: mfaults.Injector,
                    older_than_seconds: float = 0.0) -> list[str]:
  """Deletes what interrupted writers left in the system directory `root`; returns the paths
  removed.

  Leftovers are temporary files (`*.tmp-*`, from a write killed before its rename) and component
  directories without a manifest (a component killed before its manifest, invisible to readers).
  Nothing a complete step wrote is touched. Call it only when no other process can be writing
  there: while holding the run lock (`mtsys.system.lock`), or with `older_than_seconds` longer
  than any write can take. Only `root` is swept, never a fork's sources.
  """
  now = time.time()

  def old_enough(path: str) -> bool:
    return now - tf.io.gfile.stat(path).mtime_nsec / 1e9 >= older_than_seconds

  removed = []
  for directory, _, files in tf.io.gfile.walk(root):
    for name in files:
      path = _join(directory, name)
      if fileio.TMP_MARK in name and old_enough(path):
        fileio.remove(path, faults)
        removed.append(path)
  base = _join(root, "components")
  if tf.io.gfile.isdir(base):
    for entry in tf.io.gfile.listdir(base):
      cdir = _join(base, entry.rstrip("/"))
      if (tf.io.gfile.isdir(cdir) and not tf.io.gfile.exists(_join(cdir, component_files.MANIFEST))
          and old_enough(cdir)):
        fileio.rmtree(cdir, faults)
        removed.append(cdir)
  return sorted(removed)
