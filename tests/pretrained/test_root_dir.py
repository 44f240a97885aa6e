import dataclasses
import json
import os
import re

import numpy as np
import pytest
import scipy.ndimage

from mtsys import components
from mtsys import errors
from mtsys.protos import mtsys_pb2
from mtsys.pretrained import checkpoint_format as cf
from mtsys.pretrained import root_dir
from mtsys.pretrained import testing
from mtsys.system import assembly

ATOL = 1e-5


def _max_diff(ckpt, images, keep_pre_logits=False):
  got = root_dir.prelogits(root_dir.root_layers(ckpt, keep_pre_logits), images)
  want = testing.reference_prelogits(ckpt, images, keep_pre_logits)
  assert got.shape == want.shape and got.dtype == np.float32
  return float(np.abs(got - want).max())


@pytest.mark.parametrize("gelu_approximate", [True, False])
def test_matches_the_canonical_numpy_vit(gelu_approximate):
  ckpt = testing.random_checkpoint(gelu_approximate=gelu_approximate)
  assert _max_diff(ckpt, testing.random_images(ckpt)) <= ATOL


def test_gelu_form_and_input_normalisation_matter():
  ckpt = testing.random_checkpoint(gelu_approximate=True)
  images = testing.random_images(ckpt)
  got = root_dir.prelogits(root_dir.root_layers(ckpt), images)
  exact = dataclasses.replace(ckpt, gelu_approximate=False)
  assert np.abs(got - testing.reference_prelogits(exact, images)).max() > 10 * ATOL
  unscaled = dataclasses.replace(ckpt, input_scale=(1.0,) * 3, input_offset=(0.0,) * 3)
  assert np.abs(got - testing.reference_prelogits(unscaled, images)).max() > 100 * ATOL


def test_matches_with_other_sizes_epsilon_and_pre_logits():
  ckpt = testing.random_checkpoint(patch=2, hidden=12, layers=2, heads=3, mlp=20, image=8,
                                   channels=1, pre_logits=6, seed=3, layer_norm_epsilon=1e-5,
                                   input_scale=(1 / 0.3,), input_offset=(-0.5 / 0.3,))
  images = testing.random_images(ckpt, batch=3)
  assert _max_diff(ckpt, images) <= ATOL
  assert _max_diff(ckpt, images, keep_pre_logits=True) <= ATOL


def test_matches_with_capping():
  ckpt = testing.random_checkpoint(layers=3)
  images = testing.random_images(ckpt)
  capped = cf.cap_blocks(ckpt, 1)
  assert len(root_dir.root_layers(capped)) == 3 + 1 + 1
  assert _max_diff(capped, images) <= ATOL
  # The numpy model of the first block only, from the uncapped weights.
  first = dataclasses.replace(ckpt, num_layers=1)
  np.testing.assert_allclose(testing.reference_prelogits(first, images),
                             testing.reference_prelogits(capped, images))


@pytest.mark.parametrize("image_size", [8, 24, 32])
def test_matches_with_resizing(image_size):
  ckpt = testing.random_checkpoint(patch=4, image=16, gelu_approximate=True)
  resized = cf.resize_image(cf.cap_blocks(ckpt, 2), image_size)
  images = testing.random_images(ckpt, image_size=image_size)
  # The numpy model given the embedding scipy.ndimage.zoom (order 1) resamples.
  posemb = ckpt.params[cf.POS_EMBEDDING]
  g = image_size // 4
  grid = scipy.ndimage.zoom(posemb[0, 1:].reshape(4, 4, -1), (g / 4, g / 4, 1), order=1)
  params = dict(ckpt.params)
  params[cf.POS_EMBEDDING] = np.concatenate([posemb[:, :1], grid.reshape(1, g * g, -1)], 1)
  source = dataclasses.replace(ckpt, params=params, image_size=image_size, num_layers=2)
  got = root_dir.prelogits(root_dir.root_layers(resized), images)
  assert np.abs(got - testing.reference_prelogits(source, images)).max() <= ATOL


def test_keep_pre_logits_without_them_raises():
  with pytest.raises(errors.CheckpointError, match=re.escape("has no 'pre_logits/kernel'")):
    root_dir.root_layers(testing.random_checkpoint(), keep_pre_logits=True)


def _written(tmp_path, keep_pre_logits=False, **kwargs):
  ckpt = testing.random_checkpoint(pre_logits=5, **kwargs)
  ckpt = dataclasses.replace(ckpt, source_kind="vit_npz", source_file="/ckpts/Ti_16.npz",
                             source_sha256="ab" * 32)
  out = str(tmp_path / "root")
  written = root_dir.write(ckpt, out, keep_pre_logits, source_num_layers=12,
                           source_image_size=224)
  return ckpt, out, written


def test_write_and_read_the_root_directory(tmp_path):
  ckpt, out, written = _written(tmp_path)
  assert sorted(os.listdir(tmp_path)) == ["root"]  # no temporary sibling left
  root = root_dir.read(out)
  assert root == written
  assert list(root.component_ids) == [
      "root.patch_embedding", "root.class_token", "root.position_embedding",
      "root.transformer_block.0", "root.transformer_block.1", "root.transformer_block.2"]
  assert root.head_template_id == "root.head"
  assert root.architecture == mtsys_pb2.VitArchitecture(patch_size=4, hidden_size=16,
                                                        num_layers=3, num_heads=2, mlp_dim=32)
  assert (root.image_size, root.channels) == (16, 3)
  assert (root.source_num_layers, root.source_image_size) == (12, 224)
  assert root.gelu_approximate and root.pre_logits_size == 0
  assert list(root.input_scale) == [2.0] * 3 and list(root.input_offset) == [-1.0] * 3
  assert root.layer_norm_epsilon == pytest.approx(1e-6)
  assert root.provenance == mtsys_pb2.ComponentProvenance(
      source_kind="vit_npz", source_file="/ckpts/Ti_16.npz", sha256="ab" * 32)
  with open(os.path.join(out, root_dir.ROOT_FILE)) as f:
    assert "head_template_id" in f.read()  # text format


def test_written_components_rebuild_to_the_same_function(tmp_path):
  ckpt, out, written = _written(tmp_path, keep_pre_logits=True)
  files = root_dir.RootFiles(out)
  ids = list(written.component_ids) + [written.head_template_id]
  assert files.component_ids() == sorted(ids)
  layers = []
  for cid in ids:
    spec = files.read_component_spec(cid)
    assert spec.provenance == written.provenance
    assert not spec.optimizer_file  # zero momentum
    assert spec.param_count > 0
    layer = components.from_config(spec.kind, json.loads(spec.config_json))
    layers.append(layer)
  assembly.chain(layers, 16, 3)
  for cid, layer in zip(ids, layers):
    spec = files.read_component_spec(cid)
    assembly.set_stored_weights(layer, spec, files.read_weights(spec))
  images = testing.random_images(ckpt)
  want = testing.reference_prelogits(ckpt, images, keep_pre_logits=True)
  assert np.abs(root_dir.prelogits(layers, images) - want).max() <= ATOL
  head = files.read_component_spec("root.head")
  assert json.loads(head.config_json)["pre_logits_size"] == 5
  assert json.loads(head.config_json)["num_classes"] == 1
  patch = json.loads(files.read_component_spec("root.patch_embedding").config_json)
  assert patch["input_scale"] == [2.0] * 3 and patch["input_offset"] == [-1.0] * 3
  block = json.loads(files.read_component_spec("root.transformer_block.0").config_json)
  assert block["gelu_approximate"] is True and "layer_norm_epsilon" not in block
  assert files.read_weights(head)[-2].any() == False  # noqa: E712  (zero Dense)


def test_identity_normalisation_keeps_the_default_config(tmp_path):
  ckpt = testing.random_checkpoint(input_scale=(1.0,) * 3, input_offset=(0.0,) * 3,
                                   gelu_approximate=False)
  root_dir.write(ckpt, str(tmp_path / "r"))
  files = root_dir.RootFiles(str(tmp_path / "r"))
  patch = json.loads(files.read_component_spec("root.patch_embedding").config_json)
  assert "input_scale" not in patch and "input_offset" not in patch
  block = json.loads(files.read_component_spec("root.transformer_block.0").config_json)
  assert "gelu_approximate" not in block


def test_existing_output_is_refused(tmp_path):
  (tmp_path / "root").mkdir()
  message = f"Output {tmp_path / 'root'} already exists"
  with pytest.raises(errors.CheckpointError, match=re.escape(message)):
    root_dir.write(testing.random_checkpoint(), str(tmp_path / "root"))
  assert sorted(os.listdir(tmp_path)) == ["root"]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
  def fail(*args, **kwargs):
    raise OSError("disk full")
  monkeypatch.setattr(root_dir.fileio, "write_atomic", fail)
  with pytest.raises(OSError, match="disk full"):
    root_dir.write(testing.random_checkpoint(), str(tmp_path / "root"))
  assert os.listdir(tmp_path) == []


def test_read_errors(tmp_path):
  with pytest.raises(errors.CheckpointError, match="does not exist"):
    root_dir.read(str(tmp_path / "missing"))
  with pytest.raises(errors.CheckpointError, match="is not an imported root directory"):
    root_dir.read(str(tmp_path))
  (tmp_path / root_dir.ROOT_FILE).write_text("no_such_field: 1\n")
  with pytest.raises(errors.CheckpointError, match="Cannot parse"):
    root_dir.read(str(tmp_path))
  assert root_dir.is_root_dir(str(tmp_path))
