"""The system's sharing as the active task sees it: who uses each component, what stays frozen,
which paths the task may use, and the paths' scores under the current sharing.

The bookkeeping `mtsys.evolution.loop.Evolver` does around training children. Scores follow
the current sharing (`mtsys.evolution.scoring`): a path's score is recomputed for every
comparison, never cached; only its FLOPs, which depend on nothing but its components and image
size, are kept.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from mtsys.config import loader
from mtsys.evolution import access as maccess
from mtsys.evolution import scoring
from mtsys.protos import mtsys_pb2
from mtsys.system import component_source
from mtsys.system import paths as mpaths


class Sharing:
  """Sharing, locks, access and scores of paths for the active task, over stored components."""

  def __init__(self, config: loader.Config, source: component_source.ComponentSource,
               root: Sequence[mtsys_pb2.ComponentSpec]):
    """`root`: the specs of the root's components (the system's first path)."""
    self.config = config
    self.ev = config.proto.evolution
    self.source = source
    self.root_ids = [spec.id for spec in root]
    self.root_params = sum(spec.param_count for spec in root)
    self.root_flops = max(1, sum(spec.flops for spec in root))
    # (component ids, image size) -> FLOPs of the path there.
    self._flops: dict = {}

  @staticmethod
  def users(system: Mapping[str, mtsys_pb2.PathSpec], task: str) -> dict:
    """component id -> the other tasks using it. The active task's own path is left out: the
    task always counts itself, and its path changes at the end of the phase, which must not
    change the scores the end compares (a rerun after a kill there must pick the same path)."""
    return scoring.users_by_component({t: p for t, p in system.items() if t != task})

  def locked(self, system: Mapping[str, mtsys_pb2.PathSpec], task: str):
    """The reference's locks: what another task's path or the root uses stays frozen."""
    held = set(self.root_ids)
    for other, path in system.items():
      if other != task:
        held.update(path.component_ids)
    return held.__contains__

  def allowed(self, path: mtsys_pb2.PathSpec, task: mtsys_pb2.TaskSpec) -> bool:
    """True when `task` may use every component of `path` (`mtsys.evolution.access`)."""
    return maccess.path_allowed(path.component_ids, _SpecView(self.source), task)

  def score(self, quality: float, specs, image_size, task: str, users) -> tuple:
    """(score, accounted parameters, FLOPs) of a path for `task` under the current sharing."""
    ids = [s.id for s in specs]
    accounted = scoring.accounted_params(ids, {s.id: s for s in specs}, task, users)
    key = (tuple(ids), int(image_size))
    if key not in self._flops:
      self._flops[key] = scoring.path_flops(specs, int(image_size),
                                            self.config.proto.root.channels)
    flops = self._flops[key]
    sc = scoring.score(quality, accounted, self.root_params, self.ev.score.scale_factor, flops,
                       self.root_flops, self.ev.score.flops_factor)
    return sc, accounted, flops

  def rescored(self, path: mtsys_pb2.PathSpec, task: str, users) -> mtsys_pb2.PathSpec:
    """A copy of the task's own `path` scored with the current sharing (others: unchanged)."""
    if path.task != task:
      return path
    specs = [self.source.spec(c) for c in path.component_ids]
    size = mpaths.hparams_from_proto(path.hparams).get("image_size",
                                                       self.config.proto.root.image_size)
    out = mtsys_pb2.PathSpec()
    out.CopyFrom(path)
    out.score = self.score(path.metrics.validation_accuracy, specs, size, task, users)[0]
    return out


class _SpecView(Mapping):
  """A read-only mapping id -> ComponentSpec over a ComponentSource."""

  def __init__(self, source: component_source.ComponentSource):
    self._source = source

  def __getitem__(self, cid):
    return self._source.spec(cid)

  def __iter__(self):
    raise TypeError("not iterable")

  def __len__(self):
    raise TypeError("no length")
