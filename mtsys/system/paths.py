"""Paths in the store: loading them for use and committing newly trained ones.

Committing writes the child's own components first (each write-once, visible only when complete)
and the path last, so a crash at any point leaves the previous path in force.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np

from mtsys.config import hparams as hp
from mtsys.protos import mtsys_pb2
from mtsys.system import assembly
from mtsys.system import root as mroot
from mtsys.system import store as mstore


def hparams_to_proto(values: Mapping[str, hp.Value]) -> dict:
  out = {}
  for name, v in values.items():
    if isinstance(v, bool):
      out[name] = mtsys_pb2.HParamValue(flag=v)
    elif isinstance(v, str):
      out[name] = mtsys_pb2.HParamValue(choice=v)
    else:
      out[name] = mtsys_pb2.HParamValue(number=float(v))
  return out


def hparams_from_proto(values) -> dict:
  return {name: getattr(v, v.WhichOneof("kind")) for name, v in values.items()
          if v.WhichOneof("kind")}


def load_frozen(store: mstore.Store, path: mtsys_pb2.PathSpec) -> list[assembly.PlannedComponent]:
  """The path's components with stored weights, all frozen (for evaluation or as a parent)."""
  out = []
  for cid in path.component_ids:
    spec = store.read_component_spec(cid)
    out.append(assembly.PlannedComponent(spec, store.read_weights(spec), None, trainable=False))
  return out


def clone(spec: mtsys_pb2.ComponentSpec, weights: Sequence[np.ndarray],
          optimizer_slots: Optional[Sequence[np.ndarray]], task: str,
          access: mtsys_pb2.ComponentAccess) -> assembly.PlannedComponent:
  """A trainable copy of a stored component for a child of `task`.

  The copy keeps the ancestor's knowledge record (`trained_on`) and optimizer state; its access
  is the intersection of the ancestor's and the task's, so private knowledge never widens.
  """
  new = mtsys_pb2.ComponentSpec()
  new.CopyFrom(spec)
  new.id = mroot.new_component_id(task, spec.kind)
  new.cloned_from = spec.id
  new.created_by_task = task
  new.created_at_ms = mroot.now_ms()
  new.access.CopyFrom(intersect_access(spec.access, access))
  if not new.access.public and task not in new.access.tasks:
    # The cloning task may use the ancestor (it was allowed to) and its own knowledge.
    new.access.tasks.append(task)
  for f in ("weights_file", "weights_sha256", "optimizer_file", "optimizer_sha256"):
    new.ClearField(f)
  return assembly.PlannedComponent(new, list(weights), optimizer_slots, trainable=True)


def intersect_access(a: mtsys_pb2.ComponentAccess,
                     b: mtsys_pb2.ComponentAccess) -> mtsys_pb2.ComponentAccess:
  """An access no wider than either `a` or `b`: tasks and groups both name are kept.

  Conservative where group membership would be needed to be exact (a task named by one side and
  in a group of the other is dropped); callers add the task doing the cloning.
  """
  if a.public:
    return _copy(b)
  if b.public:
    return _copy(a)
  # Restricted on both sides: keep only what both name.
  return mtsys_pb2.ComponentAccess(
      public=False, tasks=sorted(set(a.tasks) & set(b.tasks)),
      groups=sorted(set(a.groups) & set(b.groups)))


def _copy(msg):
  out = type(msg)()
  out.CopyFrom(msg)
  return out


@dataclasses.dataclass(frozen=True)
class Trained:
  """The outcome of training a path, as the store needs it."""

  weights: Mapping[str, Sequence[np.ndarray]]
  optimizer_slots: Mapping[str, Sequence[np.ndarray]]
  steps: int  # training steps behind the kept weights


def write_components(store: mstore.Store, task: str,
                     planned: Sequence[assembly.PlannedComponent],
                     trained: Trained) -> list[mtsys_pb2.ComponentSpec]:
  """Writes a trained path's own components with their knowledge record; returns their specs."""
  written = []
  for p in planned:
    if not p.trainable:
      continue
    spec = mtsys_pb2.ComponentSpec()
    spec.CopyFrom(p.spec)
    spec.trained_on[task] = spec.trained_on[task] + trained.steps
    written.append(store.write_component(spec, trained.weights[p.spec.id],
                                         trained.optimizer_slots[p.spec.id]))
  return written


def make_path(task: str, planned: Sequence[assembly.PlannedComponent], *, path_id: str,
              hparams: Mapping[str, hp.Value], metrics: mtsys_pb2.PathMetrics, score: float,
              parent_id: str = "", generation: int = 0, author: str = "",
              class_names: Sequence[str] = ()) -> mtsys_pb2.PathSpec:
  """The PathSpec of a path whose own components are the trainable ones of `planned`."""
  path = mtsys_pb2.PathSpec(
      id=path_id, task=task, component_ids=[p.spec.id for p in planned], parent_id=parent_id,
      score=score, generation=generation, created_at_ms=mroot.now_ms(), author=author,
      trained_component_ids=[p.spec.id for p in planned if p.trainable],
      class_names=list(class_names))
  path.metrics.CopyFrom(metrics)
  for name, value in hparams_to_proto(hparams).items():
    path.hparams[name].CopyFrom(value)
  return path


def commit(store: mstore.Store, task: str, planned: Sequence[assembly.PlannedComponent],
           trained: Trained, **path_fields) -> mtsys_pb2.PathSpec:
  """Writes the trainable components and then, making them the task's, the path."""
  write_components(store, task, planned, trained)
  path = make_path(task, planned, **path_fields)
  store.write_path(path)
  return path
