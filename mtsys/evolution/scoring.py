"""Scores (muNet eq. 2-3, µ3Net's reward): quality discounted by size and, optionally, compute.

    score(m) = q(m) * s ** (accounted_params(m) / root_params) [* f ** (flops(m) / root_flops)]

Accounted parameters divide each shared component's parameters among the tasks using it, so a
path that reuses what others already pay for is cheap, and one that adds its own weights is not.
Sharing changes as other tasks adopt or drop components, so a path's score is recomputed with
the current sharing whenever it is compared (µ2Net's reference does the same), never cached.
FLOPs are counted at the path's own image size (`path_flops`), not at each component's native
one, so an image-size mutation changes the FLOPs factor.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from mtsys.protos import mtsys_pb2
from mtsys.system import assembly

# Kinds whose output has another shape than their input (the others map tokens to tokens).
_RESHAPING = ("patch_embedding", "class_token")


def users_by_component(system_paths: Mapping[str, mtsys_pb2.PathSpec]) -> dict[str, set]:
  """component id -> the tasks whose system path uses it."""
  users: dict[str, set] = {}
  for task, path in system_paths.items():
    for cid in path.component_ids:
      users.setdefault(cid, set()).add(task)
  return users


def accounted_params(component_ids: Sequence[str],
                     specs: Mapping[str, mtsys_pb2.ComponentSpec], task: str,
                     users: Mapping[str, set]) -> float:
  """Parameters of a path for `task`, each component's shared among the tasks using it."""
  total = 0.0
  for cid in component_ids:
    sharing = len(users.get(cid, set()) | {task})
    total += specs[cid].param_count / sharing
  return total


def score(quality: float, accounted: float, root_params: float, scale_factor: float,
          flops: float = 0.0, root_flops: float = 1.0, flops_factor: float = 0.0) -> float:
  """muNet eq. 3 with µ3Net's optional FLOPs factor (0 or 1 disables it)."""
  value = quality * scale_factor ** (accounted / root_params)
  if 0 < flops_factor < 1:
    value *= flops_factor ** (flops / root_flops)
  return value


def path_flops(specs: Sequence[mtsys_pb2.ComponentSpec], image_size: int,
               channels: int) -> int:
  """Inference FLOPs of one example through the components `specs` (in path order) at
  `image_size`: each component's `flops_per_example` at the shape it receives there."""
  shape = (int(image_size), int(image_size), int(channels))
  total = 0
  for spec in specs:
    layer = assembly.instantiate(spec)
    total += int(layer.flops_per_example(shape))
    if spec.kind in _RESHAPING:
      shape = tuple(layer.compute_output_shape((None,) + shape)[1:])
  return total
