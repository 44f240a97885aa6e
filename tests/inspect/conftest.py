"""Systems to inspect: a small evolved one (tasks a and b public, s private) and synthetic ones of
any size built in memory from specs, with no training."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from mtsys import testing
from mtsys.config import loader
from mtsys.evolution import loop
from mtsys.protos import mtsys_pb2
from mtsys.system import store as mstore

EVOLVED_TASKS = ("a", "b", "s")  # s is private


def _config(directory, tasks, private=()):
  parts = ["""
  name: "inspect-test"
  root { vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 5 }
  evolution { task_iterations: 1 generations: 2 children_per_generation: 1 epochs_per_child: 1
              max_batches_per_epoch: 2 batch_size: 16 seed: 3 }
  """]
  for i, name in enumerate(tasks):
    npz = testing.write_band_npz(str(directory), name, i, n=90)
    access = " access { visibility: PRIVATE }" if name in private else ""
    parts.append(f'task {{ name: "{name}" num_classes: 3 files {{ npz: "{npz}" '
                 f'validation_fraction: 0.2 test_fraction: 0.2 }}{access} }}')
  return loader.parse("\n".join(parts))


@pytest.fixture(scope="session")
def evolved(tmp_path_factory):
  """The directory of a µ2Net system evolved on tasks a, b and the private s (a few seconds)."""
  work = tmp_path_factory.mktemp("inspect")
  config = _config(work, EVOLVED_TASKS, private=("s",))
  system_dir = str(work / "system")
  store = mstore.Store.create(system_dir, config.proto)
  loop.Evolver.with_root(config, store, log=lambda m: None).run()
  return system_dir


def tree_digest(directory) -> dict:
  """relative path -> (SHA-256, mtime) of every file under `directory`, and None for every
  directory, to prove that nothing was written there."""
  out = {}
  for base, dirs, files in os.walk(directory):
    for name in dirs:
      out[os.path.relpath(os.path.join(base, name), directory) + "/"] = None
    for name in files:
      path = os.path.join(base, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = (hashlib.sha256(f.read()).hexdigest(),
                                                 os.stat(path).st_mtime_ns)
  return out


@pytest.fixture(scope="session")
def digest():
  return tree_digest


_ROOT = [("root.patch_embedding", "patch_embedding", 1088),
         ("root.class_token", "class_token", 64),
         ("root.position_embedding", "position_embedding", 1088)] + [
             (f"root.transformer_block.{i}", "transformer_block", 12_000) for i in range(3)]


def synthetic_state(num_tasks: int, seed: int = 0, private=()) -> mtsys_pb2.SystemState:
  """A system of `num_tasks` tasks grown like evolution grows one, without training: each task
  starts from the root or an earlier task's path, clones some of its components (keeping their
  knowledge record and adding its own steps), sometimes inserts an adapter, and gets a head.
  Tasks named in `private` (by index) are private, with private components."""
  rng = np.random.default_rng(seed)
  state = mtsys_pb2.SystemState(schema_version=mstore.SCHEMA_VERSION)
  state.config.name = f"synthetic-{num_tasks}"
  specs = {}
  for cid, kind, params in _ROOT:
    specs[cid] = mtsys_pb2.ComponentSpec(id=cid, kind=kind, param_count=params, flops=params * 17,
                                         access=mtsys_pb2.ComponentAccess(public=True))
  paths = []
  for i in range(num_tasks):
    task = f"task{i:02d}"
    is_private = i in private
    spec = state.config.task.add(name=task, num_classes=10)
    spec.builtin.name = "sklearn_digits"
    if is_private:
      spec.access.visibility = mtsys_pb2.Access.PRIVATE
    access = (mtsys_pb2.ComponentAccess(public=False, tasks=[task]) if is_private
              else mtsys_pb2.ComponentAccess(public=True))
    public_parents = [p for p in paths if p.task not in [f"task{j:02d}" for j in private]]
    if public_parents and rng.random() < 0.75:
      parent = list(public_parents[rng.integers(len(public_parents))].component_ids[:-1])
    else:
      parent = [cid for cid, _, _ in _ROOT]
    steps = int(rng.integers(50, 500))
    ids = []

    def new(kind, params, n, origin=None):
      cid = f"{task}.{kind}.{n}"
      made = mtsys_pb2.ComponentSpec(id=cid, kind=kind, param_count=params, flops=params * 17,
                                     created_by_task=task, access=access)
      if origin is not None:
        made.cloned_from = origin.id
        made.trained_on.update(origin.trained_on)
      made.trained_on[task] = made.trained_on[task] + steps
      specs[cid] = made
      return cid

    for n, cid in enumerate(parent):
      ids.append(new(specs[cid].kind, specs[cid].param_count, n, specs[cid])
                 if rng.random() < 0.3 else cid)
      if specs[cid].kind == "transformer_block" and rng.random() < 0.15:
        ids.append(new("residual_adapter", 2_100, 100 + n))
    ids.append(new("head", 650, 99))
    path = mtsys_pb2.PathSpec(id=f"{task}.path", task=task, component_ids=ids,
                              generation=int(rng.integers(0, 5)), score=0.5)
    path.metrics.validation_accuracy = float(rng.uniform(0.5, 1.0))
    path.metrics.test_accuracy = float(rng.uniform(0.5, 1.0))
    paths.append(path)
  state.components.extend(specs[c] for c in sorted(specs))
  state.paths.extend(paths)
  return state


@pytest.fixture(scope="session")
def synthetic():
  return synthetic_state
