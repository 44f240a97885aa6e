"""Every stored file kind, damaged every named way, is detected and named, never parsed as valid;
schema-1 systems (bare .pb files) and schema-2 systems (optimizer slots of no recorded kind, i.e.
Keras' velocity) stay readable and are migrated on their first write."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mtsys import errors
from mtsys.protos import mtsys_pb2
from mtsys.system import records
from mtsys.system import store as mstore

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_FILES = {
    "system.pb": "system.pb",
    "path": "paths/t.pb",
    "evolution state": "evolution/state.pb",
    "manifest": "components/c1/MANIFEST.pb",
    "weights": "components/c1/weights.npz",
    "optimizer slots": "components/c1/optimizer.npz",
}


def _damage(path, way):
  with open(path, "rb") as f:
    data = f.read()
  if way == "truncated":
    data = data[:len(data) // 2]
  elif way == "flipped byte":
    data = bytearray(data)
    data[len(data) * 2 // 3] ^= 0x01
    data = bytes(data)
  elif way == "zero length":
    data = b""
  else:  # garbage
    data = np.random.default_rng(0).bytes(len(data))
  with open(path, "wb") as f:
    f.write(data)


def _make(root):
  store = mstore.Store.create(root, mtsys_pb2.SystemConfig(name="s"))
  weights = [np.arange(12, dtype=np.float32).reshape(3, 4)]
  store.write_component(mtsys_pb2.ComponentSpec(id="c1", kind="head"), weights,
                        [np.ones((3, 4), np.float32)])
  store.write_path(mtsys_pb2.PathSpec(id="p", task="t", component_ids=["c1"]))
  store.write_evolution_state(mtsys_pb2.EvolutionState(task="t", generations_done=1))
  return store


def _read_everything(root):
  store = mstore.Store.open(root)
  spec = store.read_component_spec("c1")
  store.read_weights(spec)
  store.read_optimizer_slots(spec)
  assert store.read_path("t").id == "p"
  assert store.read_evolution_state().generations_done == 1


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("records") / "system")
  _make(root)
  _read_everything(root)  # the undamaged system reads
  return root


_EXPECTED = {
    "truncated": r"(is truncated|Checksum mismatch in)",
    "flipped byte": r"Checksum mismatch in",
    "zero length": r"(is empty \(zero length\)|Checksum mismatch in)",
    # system.pb is read before the schema is known, so bare bytes are tried as a schema-1 file.
    "garbage": r"(has no mtsys record header|Checksum mismatch in|Cannot parse .* as SystemState)",
}


@pytest.mark.parametrize("way", sorted(_EXPECTED))
@pytest.mark.parametrize("kind", sorted(_FILES))
def test_every_file_kind_damaged_every_way_is_detected_and_named(pristine, tmp_path, kind, way):
  root = str(tmp_path / "system")
  shutil.copytree(pristine, root)
  path = os.path.join(root, _FILES[kind])
  _damage(path, way)
  with pytest.raises(errors.CorruptFileError) as e:
    _read_everything(root)
  message = str(e.value)
  assert path in message, message
  assert re.search(_EXPECTED[way], message), message


def test_the_command_line_refuses_a_corrupt_system_and_overwrites_nothing(pristine, tmp_path):
  root = str(tmp_path / "system")
  shutil.copytree(pristine, root)
  path = os.path.join(root, "paths", "t.pb")
  _damage(path, "flipped byte")
  with open(path, "rb") as f:
    damaged = f.read()
  done = subprocess.run([sys.executable, os.path.join(_REPO, "bin", "export.py"),
                         f"--system_dir={root}", f"--export_base={tmp_path}/out",
                         "--model_name=m"],
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert done.returncode == 2
  assert done.stderr.splitlines()[-1].startswith(f"Error: Checksum mismatch in {path}")
  with open(path, "rb") as f:
    assert f.read() == damaged


def _as_old_schema(root, version):
  """Rewrites a system the way schema `version` (1 or 2) stored it: bare messages (1) or
  records (2), schema_version `version`, manifests without an optimizer slots kind."""
  for directory, _, files in os.walk(root):
    for name in files:
      if name.endswith(".pb"):
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
          payload = records.unframe(f.read(), path, legacy_ok=False)
        if name == "system.pb":
          state = mtsys_pb2.SystemState.FromString(payload)
          state.schema_version = version
          payload = state.SerializeToString()
        elif name == "MANIFEST.pb":
          spec = mtsys_pb2.ComponentSpec.FromString(payload)
          spec.ClearField("optimizer_slots_kind")
          payload = spec.SerializeToString()
        with open(path, "wb") as f:
          f.write(payload if version == 1 else records.frame(payload))


def _pb_files(root):
  """{path relative to root: bytes} of every .pb file."""
  out = {}
  for directory, _, files in os.walk(root):
    for name in files:
      if name.endswith(".pb"):
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
          out[os.path.relpath(path, root)] = f.read()
  return out


def test_schema_1_systems_are_read_and_migrated_on_first_write(pristine, tmp_path):
  root = str(tmp_path / "system")
  shutil.copytree(pristine, root)
  _as_old_schema(root, 1)
  _read_everything(root)  # readable as they are
  store = mstore.Store.open(root)
  assert store.read_state().schema_version == 1
  assert store.read_optimizer_slots(store.read_component_spec("c1")) is None  # Keras velocity
  store.write_path(mtsys_pb2.PathSpec(id="p2", task="u", component_ids=["c1"]))
  migrated = 0
  for directory, _, files in os.walk(root):
    for name in files:
      if name.endswith(".pb"):
        with open(os.path.join(directory, name), "rb") as f:
          assert records.is_framed(f.read()), name
        migrated += 1
  assert migrated == 5  # system, two paths, state, manifest
  assert mstore.Store.open(root).read_state().schema_version == mstore.SCHEMA_VERSION == 3
  _read_everything(root)
  store = mstore.Store.open(root)
  assert store.read_optimizer_slots(store.read_component_spec("c1")) is None  # still legacy


def test_schema_2_systems_are_read_and_migrated_on_first_write(pristine, tmp_path):
  root = str(tmp_path / "system")
  shutil.copytree(pristine, root)
  _as_old_schema(root, 2)
  before = _pb_files(root)
  _read_everything(root)  # readable as they are
  store = mstore.Store.open(root)
  assert store.read_state().schema_version == 2
  legacy = store.read_component_spec("c1")
  assert legacy.optimizer_file and legacy.optimizer_slots_kind == legacy.KERAS_VELOCITY
  # Keras' velocity (learning rate folded in) is not a trace: momentum starts at zero instead.
  assert store.read_optimizer_slots(legacy) is None
  np.testing.assert_array_equal(store.read_weights(legacy)[0].ravel(), np.arange(12))
  assert _pb_files(root) == before  # reading wrote nothing

  weights = [np.zeros((3, 4), np.float32)]
  new = store.write_component(mtsys_pb2.ComponentSpec(id="c2", kind="head"), weights,
                              [np.full((3, 4), 0.5, np.float32)])
  after = _pb_files(root)
  # Only system.pb was rewritten (and the new component's manifest added).
  assert sorted(after) == sorted([*before, "components/c2/MANIFEST.pb"])
  assert {k: v for k, v in after.items() if k not in ("system.pb", "components/c2/MANIFEST.pb")
          } == {k: v for k, v in before.items() if k != "system.pb"}
  assert all(records.is_framed(data) for data in after.values())
  again = mstore.Store.open(root)
  assert again.read_state().schema_version == mstore.SCHEMA_VERSION == 3
  assert new.optimizer_slots_kind == new.LR_FREE_TRACE
  np.testing.assert_array_equal(again.read_optimizer_slots(again.read_component_spec("c2"))[0],
                                0.5)
  assert again.read_optimizer_slots(again.read_component_spec("c1")) is None
  _read_everything(root)


def test_legacy_optimizer_slots_are_still_checksum_verified(pristine, tmp_path):
  root = str(tmp_path / "system")
  shutil.copytree(pristine, root)
  _as_old_schema(root, 2)
  path = os.path.join(root, _FILES["optimizer slots"])
  _damage(path, "flipped byte")
  store = mstore.Store.open(root)
  with pytest.raises(errors.CorruptFileError, match=f"Checksum mismatch in {path}"):
    store.read_optimizer_slots(store.read_component_spec("c1"))


def test_schema_3_never_accepts_a_bare_message(pristine, tmp_path):
  root = str(tmp_path / "system")
  shutil.copytree(pristine, root)
  path = os.path.join(root, "paths", "t.pb")
  with open(path, "wb") as f:  # a valid PathSpec, but not a record: e.g. a file copied in
    f.write(mtsys_pb2.PathSpec(id="p", task="t", component_ids=["c1"]).SerializeToString())
  with pytest.raises(errors.CorruptFileError, match=f"{path} has no mtsys record header"):
    mstore.Store.open(root).read_path("t")
