"""The store: write-once components, atomic paths, checksums, safe names, schema versions — on a
local directory and on TensorFlow's ram:// filesystem (proving all I/O goes through tf.io.gfile)."""

import uuid

import numpy as np
import pytest
import tensorflow as tf

from mtsys import testing
from mtsys.protos import mtsys_pb2
from mtsys.system import records
from mtsys.system import store as mstore


@pytest.fixture(params=["local", "ram"])
def root(request, tmp_path):
  if request.param == "local":
    return str(tmp_path / "system")
  return f"ram://mtsys-test-{uuid.uuid4().hex}/system"


def _store(root):
  return mstore.Store.create(root, mtsys_pb2.SystemConfig(name="t"))


def _component(store, cid="c1", slots=True):
  weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)]
  opt = [np.full((2, 3), 0.5, np.float32), np.zeros(3, np.float32)] if slots else None
  spec = mtsys_pb2.ComponentSpec(id=cid, kind="head", param_count=9)
  spec.trained_on["a"] = 7
  return store.write_component(spec, weights, opt), weights, opt


def test_component_round_trip(root):
  store = _store(root)
  spec, weights, opt = _component(store)
  assert store.component_ids() == ["c1"]
  again = mstore.Store.open(root)
  read = again.read_component_spec("c1")
  assert read == spec and read.trained_on["a"] == 7 and len(read.weights_sha256) == 64
  assert read.optimizer_slots_kind == mtsys_pb2.ComponentSpec.LR_FREE_TRACE
  for a, b in zip(again.read_weights(read), weights):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(again.read_optimizer_slots(read), opt):
    np.testing.assert_array_equal(a, b)


def test_component_without_optimizer_slots(root):
  store = _store(root)
  spec, _, _ = _component(store, slots=False)
  assert store.read_optimizer_slots(spec) is None
  assert not spec.optimizer_file
  assert spec.optimizer_slots_kind == mtsys_pb2.ComponentSpec.KERAS_VELOCITY  # i.e. unset


def test_the_store_sets_the_slots_kind_whatever_the_spec_says(root):
  """Slots handed to the store are traces (the trainer's, or read back by the store, which
  hands out nothing else); a spec copied from a legacy component does not make them legacy."""
  store = _store(root)
  weights = [np.ones(3, np.float32)]
  legacy = mtsys_pb2.ComponentSpec(id="a", kind="head")  # KERAS_VELOCITY
  written = store.write_component(legacy, weights, [np.full(3, 0.5, np.float32)])
  assert written.optimizer_slots_kind == mtsys_pb2.ComponentSpec.LR_FREE_TRACE
  np.testing.assert_array_equal(store.read_optimizer_slots(written)[0], 0.5)
  traced = mtsys_pb2.ComponentSpec(id="b", kind="head",
                                   optimizer_slots_kind=mtsys_pb2.ComponentSpec.LR_FREE_TRACE)
  written = store.write_component(traced, weights)  # no slots: no kind either
  assert written.optimizer_slots_kind == mtsys_pb2.ComponentSpec.KERAS_VELOCITY
  assert not written.optimizer_file and store.read_optimizer_slots(written) is None


def test_components_are_write_once(root):
  store = _store(root)
  spec, _, _ = _component(store)
  with pytest.raises(FileExistsError, match="'c1' already exists.*write-once"):
    _component(store)
  np.testing.assert_array_equal(store.read_weights(spec)[1], np.ones(3))


def test_component_invisible_until_manifest_written(root):
  store = _store(root)
  # A crash after the weights but before the manifest: the component does not exist.
  tf.io.gfile.makedirs(f"{root}/components/half")
  with tf.io.gfile.GFile(f"{root}/components/half/weights.npz", "wb") as f:
    f.write(b"partial")
  assert store.component_ids() == []
  assert not store.has_component("half")
  # ... and it can still be written properly afterwards.
  _component(store, "half")
  assert store.component_ids() == ["half"]


def test_corrupt_weights_name_the_file(root):
  store = _store(root)
  spec, _, _ = _component(store)
  path = f"{root}/components/c1/weights.npz"
  testing.corrupt_file(path)
  with pytest.raises(mstore.CorruptFileError, match=f"Checksum mismatch in {path}"):
    store.read_weights(spec)


def test_corrupt_manifest_names_the_file(root):
  store = _store(root)
  _component(store)
  path = f"{root}/components/c1/MANIFEST.pb"
  tf.io.gfile.remove(path)  # ram:// does not truncate a file opened with "wb"
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(b"\xff\xff\xff garbage")
  with pytest.raises(mstore.CorruptFileError, match=f"{path} has no mtsys record header"):
    store.read_component_spec("c1")


def test_path_replaced_whole(root):
  store = _store(root)
  _component(store)
  store.write_path(mtsys_pb2.PathSpec(id="p1", task="emnist/digits", component_ids=["c1"]))
  store.write_path(mtsys_pb2.PathSpec(id="p2", task="emnist/digits", component_ids=["c1"],
                                      score=0.5))
  assert store.read_path("emnist/digits").id == "p2"
  assert list(store.paths()) == ["emnist/digits"]
  # No temporary files are left behind.
  assert tf.io.gfile.listdir(f"{root}/paths") == ["emnist~digits.pb"]
  assert store.read_path("other") is None


def test_path_with_missing_component_is_rejected(root):
  store = _store(root)
  with pytest.raises(ValueError, match=r"missing from .*\['nope'\]"):
    store.write_path(mtsys_pb2.PathSpec(id="p", task="a", component_ids=["nope"]))
  assert store.paths() == {}


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "a..b", "x" * 200])
def test_component_ids_cannot_escape(root, bad):
  store = _store(root)
  with pytest.raises(ValueError, match="Invalid component id"):
    store.write_component(mtsys_pb2.ComponentSpec(id=bad, kind="head"), [np.zeros(1)])


@pytest.mark.parametrize("bad", ["../x", "a/../b", "/abs", "a//b", "a/", "./a", "a b", "a~b"])
def test_task_names_cannot_escape(root, bad):
  store = _store(root)
  with pytest.raises(ValueError, match="Invalid task name"):
    store.read_path(bad)


def test_incompatible_schema_version(root):
  store = _store(root)
  state = store.read_state()
  state.schema_version = mstore.SCHEMA_VERSION + 1
  tf.io.gfile.remove(f"{root}/system.pb")  # ram:// does not truncate on "wb"
  with tf.io.gfile.GFile(f"{root}/system.pb", "wb") as f:
    f.write(records.frame(state.SerializeToString()))
  with pytest.raises(mstore.IncompatibleSchemaError, match="schema version 4; this mtsys reads "
                                                           "versions 1 to 3"):
    mstore.Store.open(root)
  with pytest.raises(mstore.IncompatibleSchemaError):
    mstore.Store.create(root, mtsys_pb2.SystemConfig())


def test_open_missing_system(root):
  with pytest.raises(mstore.SystemNotFoundError, match="No mtsys system"):
    mstore.Store.open(root)


def test_snapshot_and_delete(root):
  store = _store(root)
  _component(store, "c1")
  _component(store, "c2")
  store.write_path(mtsys_pb2.PathSpec(id="p", task="a", component_ids=["c1"]))
  state = store.snapshot()
  assert [c.id for c in state.components] == ["c1", "c2"]
  assert [p.id for p in state.paths] == ["p"]
  store.delete_component("c2")
  store.delete_path("a")
  assert store.component_ids() == ["c1"] and store.paths() == {}


def test_sweep_removes_only_what_interrupted_writers_left(root):
  store = _store(root)
  _component(store)
  store.write_path(mtsys_pb2.PathSpec(id="p", task="t", component_ids=["c1"]))
  leftovers = [f"{root}/paths/t.pb.tmp-0123abcd", f"{root}/system.pb.tmp-99"]
  for path in leftovers:
    with tf.io.gfile.GFile(path, "wb") as f:
      f.write(b"half a write")
  tf.io.gfile.makedirs(f"{root}/components/killed")
  with tf.io.gfile.GFile(f"{root}/components/killed/weights.npz", "wb") as f:
    f.write(b"no manifest yet")
  if not root.startswith("ram://"):  # ram:// keeps no modification times
    assert store.sweep_leftovers(older_than_seconds=3600) == []  # too recent for that lease
  removed = store.sweep_leftovers()
  assert removed == sorted(leftovers + [f"{root}/components/killed"])
  assert store.component_ids() == ["c1"] and store.read_path("t").id == "p"
  store.read_weights(store.read_component_spec("c1"))
  assert store.sweep_leftovers() == []
