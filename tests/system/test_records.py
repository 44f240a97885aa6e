"""Every stored file kind, damaged every named way, is detected and named, never parsed as valid;
schema-1 systems (bare .pb files) stay readable and are migrated on their first write."""

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


def _as_schema_1(root):
  """Rewrites a system the way schema 1 stored it: bare messages, schema_version 1."""
  for directory, _, files in os.walk(root):
    for name in files:
      if name.endswith(".pb"):
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
          payload = records.unframe(f.read(), path, legacy_ok=False)
        if name == "system.pb":
          state = mtsys_pb2.SystemState.FromString(payload)
          state.schema_version = 1
          payload = state.SerializeToString()
        with open(path, "wb") as f:
          f.write(payload)


def test_schema_1_systems_are_read_and_migrated_on_first_write(pristine, tmp_path):
  root = str(tmp_path / "system")
  shutil.copytree(pristine, root)
  _as_schema_1(root)
  _read_everything(root)  # readable as they are
  store = mstore.Store.open(root)
  assert store.read_state().schema_version == 1
  store.write_path(mtsys_pb2.PathSpec(id="p2", task="u", component_ids=["c1"]))
  migrated = 0
  for directory, _, files in os.walk(root):
    for name in files:
      if name.endswith(".pb"):
        with open(os.path.join(directory, name), "rb") as f:
          assert records.is_framed(f.read()), name
        migrated += 1
  assert migrated == 5  # system, two paths, state, manifest
  assert mstore.Store.open(root).read_state().schema_version == mstore.SCHEMA_VERSION == 2
  _read_everything(root)


def test_schema_2_never_accepts_a_bare_message(pristine, tmp_path):
  root = str(tmp_path / "system")
  shutil.copytree(pristine, root)
  path = os.path.join(root, "paths", "t.pb")
  with open(path, "wb") as f:  # a valid PathSpec, but not a record: e.g. a file copied in
    f.write(mtsys_pb2.PathSpec(id="p", task="t", component_ids=["c1"]).SerializeToString())
  with pytest.raises(errors.CorruptFileError, match=f"{path} has no mtsys record header"):
    mstore.Store.open(root).read_path("t")
