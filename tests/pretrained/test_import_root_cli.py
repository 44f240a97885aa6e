"""The import: kind detection, options, errors, the job and bin/import_root.py end to end."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from mtsys import errors
from mtsys.config import checkpoints
from mtsys.jobs import import_root as job
from mtsys.pretrained import checkpoint_format as cf
from mtsys.pretrained import importer
from mtsys.pretrained import root_dir
from mtsys.pretrained import testing

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
ATOL = 1e-5


def _npz(tmp_path, ckpt, name="vit.npz"):
  """`ckpt` as an original ViT .npz file (with a classifier head, which the import drops)."""
  path = str(tmp_path / name)
  head = {"head/kernel": np.zeros((ckpt.pre_logits_size or ckpt.hidden_size, 10), np.float32),
          "head/bias": np.zeros((10,), np.float32)}
  np.savez(path, **ckpt.params, **head)
  return path


class _FakeReader:
  """Stands in for a reader module: returns a fixed checkpoint, records the path."""

  def __init__(self, ckpt):
    self.ckpt, self.paths = ckpt, []

  def read(self, path):
    self.paths.append(path)
    return self.ckpt


def test_detect_kind(tmp_path):
  npz = tmp_path / "a.npz"
  npz.write_bytes(b"")
  assert checkpoints.detect_kind(str(npz)) == "vit_npz"
  preset = tmp_path / "preset"
  preset.mkdir()
  (preset / "config.json").write_text("{}")
  (preset / "metadata.json").write_text("{}")
  assert checkpoints.detect_kind(str(preset)) == "keras_hub"
  garden = tmp_path / "garden"
  garden.mkdir()
  (garden / "checkpoint").write_text("")
  assert checkpoints.detect_kind(str(garden)) == "model_garden"
  (garden / "ckpt-3.index").write_text("")
  assert checkpoints.detect_kind(str(garden / "ckpt-3")) == "model_garden"
  with pytest.raises(errors.CheckpointError, match="no such file or directory"):
    checkpoints.detect_kind(str(tmp_path / "missing.npz"))
  other = tmp_path / "weights.h5"
  other.write_bytes(b"")
  with pytest.raises(errors.CheckpointError, match=re.escape("not a checkpoint mtsys reads")):
    checkpoints.detect_kind(str(other))


def test_import_fills_provenance_caps_resizes_and_computes_the_same_function(
    tmp_path, monkeypatch):
  ckpt = testing.random_checkpoint(layers=3, gelu_approximate=False, input_scale=(1.0,) * 3,
                                   input_offset=(0.0,) * 3)
  reader = _FakeReader(ckpt)
  monkeypatch.setattr(importer, "reader", lambda kind: reader)
  source = tmp_path / "preset"
  source.mkdir()
  (source / "config.json").write_text("{}")
  lines = []
  root = importer.import_root(str(source), str(tmp_path / "out"), num_blocks=2, image_size=8,
                              source_kind="keras_hub", log=lines.append)
  assert reader.paths == [str(source)]
  assert root.provenance.source_kind == "keras_hub"
  assert root.provenance.source_file == str(source)
  assert root.provenance.sha256 == cf.file_sha256(str(source))
  assert (root.architecture.num_layers, root.source_num_layers) == (2, 3)
  assert (root.image_size, root.source_image_size) == (8, 16)
  assert "2 blocks (of 3)" in lines[-1] and "resampled from 16" in lines[-1]
  loaded, layers = root_dir.load_layers(str(tmp_path / "out"))
  assert loaded == root
  expected = cf.resize_image(cf.cap_blocks(ckpt, 2), 8)
  images = testing.random_images(expected)
  got = root_dir.prelogits(layers, images)
  assert np.abs(got - testing.reference_prelogits(expected, images)).max() <= ATOL


def test_import_of_a_vit_npz_through_the_job(tmp_path):
  ckpt = testing.random_checkpoint(pre_logits=5, seed=4)
  source = _npz(tmp_path, ckpt)
  lines = []
  root = job.run(source, str(tmp_path / "out"), num_blocks=1, keep_pre_logits=True,
                 out=lines.append)
  assert root.provenance.source_kind == "vit_npz"
  assert root.provenance.sha256 == cf.file_sha256(source)
  assert root.pre_logits_size == 5 and root.gelu_approximate
  assert any("pre-logits 5 kept" in line for line in lines)
  assert lines[-1] == (
      f'Use it as a config\'s root: root {{ checkpoint: "{tmp_path}/out" }}, or pass '
      f"--root_checkpoint={tmp_path}/out to bin/evolve.py, bin/baselines.py, bin/agent.py, "
      "bin/launch_agents.py or bin/group_tasks.py train.")
  _, layers = root_dir.load_layers(str(tmp_path / "out"))
  images = testing.random_images(ckpt)
  want = testing.reference_prelogits(cf.cap_blocks(ckpt, 1), images, keep_pre_logits=True)
  assert np.abs(root_dir.prelogits(layers, images) - want).max() <= ATOL


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 30}, "image size 30 is not a multiple of the patch size 4"),
        ({"num_blocks": 4}, "num_blocks=4 (expected 0 for all, or 1 to 3"),
        ({"num_blocks": -1}, "num_blocks=-1: expected 0"),
        ({"keep_pre_logits": True}, "--keep_pre_logits, but it has no 'pre_logits/kernel'"),
        ({"source_kind": "onnx"}, "source_kind='onnx': expected one of auto, vit_npz"),
    ],
)
def test_bad_options_write_nothing(tmp_path, kwargs, message):
  source = _npz(tmp_path, testing.random_checkpoint())
  with pytest.raises(errors.CheckpointError, match=re.escape(message)):
    importer.import_root(source, str(tmp_path / "out"), **kwargs)
  assert sorted(os.listdir(tmp_path)) == ["vit.npz"]


def test_existing_output_is_refused_before_reading(tmp_path, monkeypatch):
  (tmp_path / "out").mkdir()
  monkeypatch.setattr(importer, "read", lambda *a: pytest.fail("read before checking output"))
  with pytest.raises(errors.CheckpointError, match=re.escape(f"{tmp_path}/out already exists")):
    importer.import_root(str(tmp_path / "missing.npz"), str(tmp_path / "out"))


def _bin(*args):
  return subprocess.run([sys.executable, os.path.join(_REPO, "bin", "import_root.py"), *args],
                        capture_output=True, text=True, timeout=300, env=_ENV)


def test_bin_imports_and_reports(tmp_path):
  source = _npz(tmp_path, testing.random_checkpoint())
  done = _bin(f"--source={source}", f"--output={tmp_path}/root", "--num_blocks=2",
              "--image_size=24")
  assert done.returncode == 0, done.stderr[-3000:]
  assert "Wrote root" in done.stdout
  root = root_dir.read(str(tmp_path / "root"))
  assert (root.architecture.num_layers, root.image_size) == (2, 24)


def test_bin_error_is_one_line_and_exit_status_2(tmp_path):
  source = _npz(tmp_path, testing.random_checkpoint())
  done = _bin(f"--source={source}", f"--output={tmp_path}/root", "--image_size=30")
  assert done.returncode == 2, done.stderr[-3000:]
  assert "Traceback" not in done.stderr
  assert done.stderr.strip().splitlines()[-1] == (
      f"Error: Checkpoint {source}: image size 30 is not a multiple of the patch size 4 "
      "(expected a positive multiple, e.g. 16)")
  assert not (tmp_path / "root").exists()
