"""Parent sampling.

µ2Net 3.1 (default): walk the active population in decreasing score, accepting each path with
probability 0.5^#selections(m, t); then the other tasks' paths in random order, with the same
rule; finally a path drawn uniformly among all candidates. This exploits high scorers that had few
tries and drifts to exploration when they stop producing improvements.

muNet (Algorithm 1): the seed parents (the root and every task's best path) are tried first, each
once, drawn uniformly and left unmutated but for a trainable head; then the task's own paths are
walked in decreasing score with the same 0.5^#selections rule; finally a parent is drawn uniformly
among the task's paths and the system's.

`selections` counts, per path id, how often a path was a parent for the active task. µ2Net keeps
the counts across the task's active phases (#selections(m, t)); muNet counts within a phase. The
loop stores them per (task, path) under `selection_key`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from mtsys.protos import mtsys_pb2


def selection_key(task: str, path_id: str) -> str:
  """The key of #selections(path, task) in `EvolutionState.selections`."""
  return f"{task}|{path_id}"


def selection_counts(selections: Mapping[str, int], task: str) -> dict[str, int]:
  """path id -> #selections(path, task), from `EvolutionState.selections`."""
  prefix = selection_key(task, "")
  return {k[len(prefix):]: v for k, v in selections.items() if k.startswith(prefix)}


def _accept(path: mtsys_pb2.PathSpec, selections: Mapping[str, int],
            rng: np.random.Generator) -> bool:
  return rng.random() < 0.5 ** selections.get(path.id, 0)


def sample_mu2net(population: Sequence[mtsys_pb2.PathSpec],
                  others: Sequence[mtsys_pb2.PathSpec], selections: Mapping[str, int],
                  rng: np.random.Generator) -> mtsys_pb2.PathSpec:
  """µ2Net's parent: `population` is the active task's, `others` every other usable path."""
  for path in sorted(population, key=lambda p: -p.score):
    if _accept(path, selections, rng):
      return path
  shuffled = [others[i] for i in rng.permutation(len(others))]
  for path in shuffled:
    if _accept(path, selections, rng):
      return path
  everything = list(population) + list(others)
  if not everything:
    raise ValueError("No parent to sample: the population and the system are empty.")
  return everything[int(rng.integers(len(everything)))]


def sample_munet(seeds: Sequence[mtsys_pb2.PathSpec], active: Sequence[mtsys_pb2.PathSpec],
                 system: Sequence[mtsys_pb2.PathSpec], selections: Mapping[str, int],
                 rng: np.random.Generator) -> tuple[mtsys_pb2.PathSpec, bool]:
  """muNet's parent (Algorithm 1, lines 10-24); returns (parent, whether it is an untried seed).

  Args:
    seeds: the phase's seed parents (the root and the system's paths the task may use).
    active: the active population (the task's own paths, its current one included).
    system: the system's paths the task may use, and the root.
    selections: path id -> times selected as a parent in this phase.
  """
  untried = [p for p in seeds if selections.get(p.id, 0) == 0]
  if untried:
    return untried[int(rng.integers(len(untried)))], True
  for path in sorted(active, key=lambda p: -p.score):
    if _accept(path, selections, rng):
      return path, False
  everything = list(active) + [p for p in system if p.id not in {a.id for a in active}]
  if not everything:
    raise ValueError("No parent to sample: the population and the system are empty.")
  return everything[int(rng.integers(len(everything)))], False
