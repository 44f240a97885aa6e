"""Compare-and-swap on the SystemState: concurrent additions of tasks are never lost, a write
based on a stale read conflicts, and the single program's system.pb writes are unchanged."""

import multiprocessing
import os

import pytest

from mtsys.protos import mtsys_pb2
from mtsys.system import records
from mtsys.system import state_cas
from mtsys.system import store as mstore


def _add_tasks(root, names, start, out):
  try:
    start.wait()
    store = mstore.Store.open(root)
    for name in names:
      state_cas.update_state(store, lambda s, n=name: s.config.task.add(name=n, num_classes=2))
    out.put(None)
  except BaseException as e:  # pylint: disable=broad-except
    out.put(repr(e))


def test_processes_adding_tasks_at_once_lose_no_update(tmp_path):
  root = str(tmp_path / "system")
  mstore.Store.create(root, mtsys_pb2.SystemConfig(name="t"))
  ctx = multiprocessing.get_context("fork")
  start, out = ctx.Event(), ctx.Queue()
  wanted = {i: [f"agent{i}_task{j}" for j in range(5)] for i in range(3)}
  procs = [ctx.Process(target=_add_tasks, args=(root, names, start, out))
           for names in wanted.values()]
  for p in procs:
    p.start()
  start.set()
  assert [out.get(timeout=120) for _ in procs] == [None] * len(procs)
  for p in procs:
    p.join(timeout=60)
  state = mstore.Store.open(root).read_state()
  assert sorted(t.name for t in state.config.task) == sorted(n for v in wanted.values() for n in v)
  assert state_cas.highest(root) == 15  # one generation per update, none overwritten
  with open(os.path.join(root, "system.pb"), "rb") as f:  # the mirror ends at the highest
    mirrored = records.parse(f.read(), "system.pb", mtsys_pb2.SystemState(), legacy_ok=False)
  assert mirrored == state


def test_a_write_based_on_a_stale_read_conflicts_and_update_state_retries(tmp_path):
  root = str(tmp_path / "system")
  mstore.Store.create(root, mtsys_pb2.SystemConfig(name="t"))
  a, b = mstore.Store.open(root), mstore.Store.open(root)
  state_cas.update_state(a, lambda s: s.config.task.add(name="x"))
  stale = b.read_state()
  state_cas.update_state(a, lambda s: s.config.task.add(name="y"))
  stale.config.task.add(name="z")
  with pytest.raises(mstore.ConcurrentUpdateError, match="000000000002.pb exists"):
    b.commit_state(stale)
  calls = []
  state_cas.update_state(b, lambda s: calls.append(1) or s.config.task.add(name="z"))
  assert [t.name for t in mstore.Store.open(root).read_state().config.task] == ["x", "y", "z"]
  assert len(calls) == 1  # update_state reads before it applies, so no conflict here
  # Once in generation mode, the Store's own writes are conditional too.
  b.write_config(b.read_state().config, removed_tasks=["x"])
  assert mstore.Store.open(root).removed_tasks() == ["x"]
  assert state_cas.highest(root) == 4


def test_without_update_state_system_pb_is_written_as_before(tmp_path):
  root = str(tmp_path / "system")
  store = mstore.Store.create(root, mtsys_pb2.SystemConfig(name="t"))
  store.write_config(mtsys_pb2.SystemConfig(name="u"), removed_tasks=["a"])
  assert not os.path.exists(os.path.join(root, state_cas.GEN_DIR))
  assert mstore.Store.open(root).read_state().config.name == "u"
