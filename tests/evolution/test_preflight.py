"""Everything a run needs is checked before its first write: a failed run leaves the system
directory exactly as it was (here: absent), so fixing the config and rerunning just works."""

import os
import subprocess
import sys

import numpy as np
import pytest

from mtsys import errors
from mtsys import testing
from mtsys.config import loader
from mtsys.evolution import preflight
from mtsys.system import synthetic

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(tmp_path, root_extra="", pretrain_npz=None):
  npz = testing.write_band_npz(str(tmp_path), "t", 0)
  pretrain = ""
  if pretrain_npz is not None:
    pretrain = (f'pretrain {{ task {{ name: "pre" num_classes: 3 files {{ npz: "{pretrain_npz}" '
                'validation_fraction: 0.2 test_fraction: 0.2 } } epochs: 1 }')
  return (f'root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 5 {root_extra} '
          f'{pretrain} }}\n'
          f'task {{ name: "t" num_classes: 3 files {{ npz: "{npz}" validation_fraction: 0.2 '
          'test_fraction: 0.2 } }\n')


def _bad_checkpoint(tmp_path):
  """An original-ViT .npz that lacks all but the class token (issue #14's readers refuse it)."""
  path = tmp_path / "vit.npz"
  np.savez(path, cls=np.zeros((1, 1, 64), np.float32))
  return str(path)


def test_checkpoint_root_fails_before_the_system_exists(tmp_path):
  with pytest.raises(errors.ConfigError, match=r"root.checkpoint: expected a root directory made "
                     r"by bin/import_root.py or a checkpoint \(Checkpoint /ckpt/vit: no such file"):
    loader.parse(_config(tmp_path, 'checkpoint: "/ckpt/vit"'))
  bad = _bad_checkpoint(tmp_path)
  config = loader.parse(_config(tmp_path, f'checkpoint: "{bad}"'))
  with pytest.raises(errors.CheckpointError, match=f"Checkpoint {bad}: missing key"):
    preflight.check(config, str(tmp_path / "system"), ["t"])
  assert not (tmp_path / "system").exists()


def test_bad_pretraining_data_fails_before_the_system_exists(tmp_path):
  config = loader.parse(_config(tmp_path, pretrain_npz=str(tmp_path / "missing.npz")))
  with pytest.raises(errors.DataFileNotFoundError, match=r"Task 'pre': file not found"):
    preflight.check(config, str(tmp_path / "system"), ["t"])
  assert not (tmp_path / "system").exists()


def test_a_system_that_holds_the_root_needs_no_root_source(tmp_path):
  config = loader.parse(_config(tmp_path))
  synthetic.make_system(str(tmp_path / "system"), config)
  with_checkpoint = loader.parse(_config(tmp_path, f'checkpoint: "{_bad_checkpoint(tmp_path)}"'))
  # The root config differs, so the stored system is incompatible: said before any write.
  with pytest.raises(errors.IncompatibleSystemError, match="The system was made with root"):
    preflight.check(with_checkpoint, str(tmp_path / "system"), ["t"])
  task_data, existing = preflight.check(config, str(tmp_path / "system"), ["t"])
  assert existing is not None and sorted(task_data) == ["t"]


def test_cli_leaves_no_directory_then_the_fixed_config_runs(tmp_path):
  path = tmp_path / "c.textproto"
  bad = _bad_checkpoint(tmp_path)
  path.write_text(_config(tmp_path, f'checkpoint: "{bad}"'))
  cmd = [sys.executable, os.path.join(_REPO, "bin", "evolve.py"), f"--config={path}",
         f"--system_dir={tmp_path / 'system'}", "--task_iterations=0"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
  assert done.returncode == 2, done.stderr[-2000:]
  assert f"Checkpoint {bad}: missing key" in done.stderr.splitlines()[-1]
  assert not (tmp_path / "system").exists()
  path.write_text(_config(tmp_path))
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
  assert done.returncode == 0, done.stderr[-2000:]
  assert (tmp_path / "system" / "system.pb").exists()


def test_removed_tasks_stay_removed_unless_readded(tmp_path):
  from mtsys.system import admin  # pylint: disable=g-import-not-at-top
  text = _config(tmp_path) + _config(tmp_path).split("\n")[1].replace('name: "t"', 'name: "u"')
  config = loader.parse(text)
  store = synthetic.make_system(str(tmp_path / "system"), config)
  admin.remove_task(store, "u")
  assert store.removed_tasks() == ["u"]
  with pytest.raises(errors.IncompatibleSystemError,
                     match=r"^Task 'u' was removed from this system \(--remove_task=u\) but the "
                           r"config still lists it\. .* pass --readd_task=u to evolve it again "
                           r"from scratch\.$"):
    preflight.check(config, str(tmp_path / "system"), ["t", "u"])
  preflight.check(config, str(tmp_path / "system"), ["t"])
  preflight.check(config, str(tmp_path / "system"), ["t", "u"], readd=["u"])
