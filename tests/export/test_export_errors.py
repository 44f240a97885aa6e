"""Bad input to the exporter fails before anything is written, naming the value; a failure after
writing began leaves no version and no temporary directory behind; versions are immutable."""

import os
import subprocess
import sys

import pytest

from mtsys import export
from mtsys import testing
from mtsys.config import loader
from mtsys.export import validate
from mtsys.system import store as mstore
from mtsys.system import synthetic

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CONFIG = """
root { vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 3 }
task { name: "pub" num_classes: 3 files { npz: "x.npz" validation_fraction: 0.2
       test_fraction: 0.2 } }
task { name: "priv" num_classes: 2 files { npz: "x.npz" validation_fraction: 0.2
       test_fraction: 0.2 } access { visibility: PRIVATE } }
task { name: "later" num_classes: 2 files { npz: "x.npz" validation_fraction: 0.2
       test_fraction: 0.2 } }
"""
_QUIET = dict(log=lambda _: None)


@pytest.fixture(scope="module")
def system_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("errors") / "system")
  synthetic.make_system(path, loader.parse(_CONFIG), tasks=["pub", "priv"])
  return path


def _listing(root):
  if not os.path.exists(root):
    return None
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, dirs, files in os.walk(root) for f in files + dirs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(tasks=["nope"]), "Unknown task 'nope'; the system's tasks are ['pub', 'priv', 'later']."),
    (dict(tasks=["later"]), "Task 'later' has no trained path in the system yet"),
    (dict(tasks=["pub", "pub"]), "Tasks named twice in ['pub', 'pub']."),
    (dict(default_task="priv"), "Default task 'priv' is not among the exported tasks ['pub']."),
    (dict(version=0), "Invalid version 0: expected a positive integer."),
    (dict(model_name="a/b"), "Invalid model name 'a/b'"),
    (dict(model_name="7"), "Invalid model name '7'"),
])
def test_bad_input_fails_before_writing_naming_the_value(system_dir, tmp_path, kwargs, message):
  base = str(tmp_path / "serving")
  args = dict(model_name="m", **_QUIET)
  args.update(kwargs)
  with pytest.raises(ValueError) as e:
    export.export(system_dir, base, args.pop("model_name"), **args)
  assert message in str(e.value)
  assert not os.path.exists(base)


def test_no_such_system(tmp_path):
  with pytest.raises(mstore.SystemNotFoundError, match="No mtsys system at"):
    export.export(str(tmp_path / "none"), str(tmp_path / "s"), "m", **_QUIET)
  assert os.listdir(tmp_path) == []


def test_export_base_that_is_a_file(system_dir, tmp_path):
  base = tmp_path / "file"
  base.write_text("not a directory")
  with pytest.raises(ValueError, match=r"Export base '.*file' is a file; expected a directory"):
    export.export(system_dir, str(base), "m", **_QUIET)
  assert base.read_text() == "not a directory"


def test_private_tasks_only_when_named_and_versions_count_up(system_dir, tmp_path):
  base = str(tmp_path / "serving")
  first = export.export(system_dir, base, "m", **_QUIET)
  assert first.tasks == ["pub"] and first.version == 1
  second = export.export(system_dir, base, "m", tasks=["priv", "pub"], **_QUIET)
  assert second.tasks == ["priv", "pub"] and second.version == 2
  assert second.default_task == "priv"
  before = _listing(base)
  with pytest.raises(ValueError, match=r"Version 2 of model 'm' already exists .*\(next free: 3\)\.$"):
    export.export(system_dir, base, "m", version=2, **_QUIET)
  assert _listing(base) == before
  third = export.export(system_dir, base, "other", version=7, **_QUIET)
  assert third.version_dir.endswith("/other/7")
  with open(third.model_config_file) as f:
    text = f.read()
  assert text.count("config {") == 2 and 'name: "m"' in text and 'name: "other"' in text


def test_corrupt_component_fails_naming_it_and_writes_nothing(tmp_path):
  system_dir = str(tmp_path / "system")
  store = synthetic.make_system(system_dir, loader.parse(_CONFIG), tasks=["pub"])
  head = [c for c in store.paths()["pub"].component_ids if ".head." in c][0]
  weights = os.path.join(system_dir, "components", head, "weights.npz")
  testing.corrupt_file(weights)
  base = str(tmp_path / "serving")
  with pytest.raises(mstore.CorruptFileError, match=f"Checksum mismatch in {weights}"):
    export.export(system_dir, base, "m", **_QUIET)
  assert not os.path.exists(base)


def test_failed_validation_leaves_no_version_and_no_temporary(system_dir, tmp_path, monkeypatch):
  def fail(*args, **kwargs):
    raise ValueError("Export validation failed: injected")

  monkeypatch.setattr(validate, "check_export", fail)
  base = str(tmp_path / "serving")
  with pytest.raises(ValueError, match="injected"):
    export.export(system_dir, base, "m", **_QUIET)
  assert os.listdir(os.path.join(base, "m")) == []
  assert not os.path.exists(os.path.join(base, "models.config"))


def test_reserved_task_name_fails_the_export_naming_it(tmp_path):
  config = loader.parse(_CONFIG.replace('name: "pub"', 'name: "routed"'))
  system_dir = str(tmp_path / "system")
  synthetic.make_system(system_dir, config, tasks=["routed"])
  with pytest.raises(ValueError, match="Task 'routed' cannot be exported: its name is the "
                                       "reserved signature key 'routed'"):
    export.export(system_dir, str(tmp_path / "s"), "m", **_QUIET)
  assert not os.path.exists(tmp_path / "s")


def test_cli_reports_errors_in_one_line(system_dir, tmp_path):
  proc = subprocess.run(
      [sys.executable, os.path.join(_REPO, "bin", "export.py"), f"--system_dir={system_dir}",
       f"--export_base={tmp_path}/s", "--model_name=m", "--tasks=nope"],
      capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      "Error: Unknown task 'nope'; the system's tasks are ['pub', 'priv', 'later'].")
