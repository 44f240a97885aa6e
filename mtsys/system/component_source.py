"""A read-through cache of a store's components for code that reads the same ones often."""

from __future__ import annotations

from typing import Optional

from mtsys.protos import mtsys_pb2


class ComponentSource:
  """Read-through cache of stored components: they are immutable, so caching is always safe."""

  def __init__(self, store):
    self._store = store
    self._specs: dict[str, mtsys_pb2.ComponentSpec] = {}
    self._weights: dict[str, list] = {}
    self._slots: dict[str, Optional[list]] = {}

  def spec(self, cid: str) -> mtsys_pb2.ComponentSpec:
    if cid not in self._specs:
      self._specs[cid] = self._store.read_component_spec(cid)
    return self._specs[cid]

  def weights(self, cid: str) -> list:
    if cid not in self._weights:
      self._weights[cid] = self._store.read_weights(self.spec(cid))
    return self._weights[cid]

  def slots(self, cid: str) -> Optional[list]:
    if cid not in self._slots:
      self._slots[cid] = self._store.read_optimizer_slots(self.spec(cid))
    return self._slots[cid]

  def add(self, spec, weights, slots) -> None:
    self._specs[spec.id], self._weights[spec.id], self._slots[spec.id] = spec, weights, slots

  def forget(self, cid: str) -> None:
    for d in (self._specs, self._weights, self._slots):
      d.pop(cid, None)
