"""`root { checkpoint }` in a config (issue #14): what the loader fills in from an imported root's
manifest, what it needs for a source imported on the fly, and its errors."""

import os

import numpy as np
import pytest
from google.protobuf import text_format

from mtsys.config import checkpoints
from mtsys.config import loader
from mtsys.protos import mtsys_pb2

_TASK = 'task { name: "a" num_classes: 3 builtin { name: "sklearn_digits" } }'


def _manifest_dir(tmp_path, **overrides):
  manifest = mtsys_pb2.ImportedRoot(
      architecture=mtsys_pb2.VitArchitecture(patch_size=4, hidden_size=16, num_layers=3,
                                             num_heads=2, mlp_dim=32),
      image_size=16, channels=3, head_template_id="root.head", gelu_approximate=True,
      layer_norm_epsilon=1e-6)
  for key, value in overrides.items():
    setattr(manifest, key, value)
  directory = tmp_path / "imported"
  directory.mkdir()
  (directory / checkpoints.MANIFEST).write_text(text_format.MessageToString(manifest))
  return str(directory)


def _parse(root_text):
  return loader.parse(root_text + _TASK, "/some/dir/my.textproto")


def test_imported_root_gives_architecture_image_size_and_channels(tmp_path):
  directory = _manifest_dir(tmp_path)
  config = _parse(f'root {{ checkpoint: "{directory}" }}')
  assert (config.arch.patch_size, config.arch.hidden_size, config.arch.num_layers,
          config.arch.num_heads, config.arch.mlp_dim) == (4, 16, 3, 2, 32)
  assert config.arch.gelu_approximate is True
  assert config.arch.layer_norm_epsilon == 1e-6  # not float32's 9.99999997e-07
  assert (config.proto.root.image_size, config.proto.root.channels) == (16, 3)
  # The filled proto is what a system stores: it parses without the directory.
  stored = text_format.MessageToString(config.proto)
  os.remove(os.path.join(directory, checkpoints.MANIFEST))
  again = loader.parse(stored, "system.pb")
  assert again.arch == config.arch


def test_num_blocks_caps_an_imported_root(tmp_path):
  config = _parse(f'root {{ checkpoint: "{_manifest_dir(tmp_path)}" num_blocks: 2 }}')
  assert config.arch.num_layers == 2


def test_image_size_other_than_the_imported_one_says_how_to_resize(tmp_path):
  directory = _manifest_dir(tmp_path)
  with pytest.raises(loader.ConfigError) as e:
    _parse(f'root {{ checkpoint: "{directory}" image_size: 32 }}')
  assert str(e.value) == (
      "my.textproto: root.image_size: expected the imported root's 16 (or unset); import the "
      "checkpoint again with --image_size=32 to resize its position embedding, got 32")


def test_named_size_must_agree_with_the_imported_root(tmp_path):
  directory = _manifest_dir(tmp_path)
  with pytest.raises(loader.ConfigError, match=r"root.vit: expected the imported root's size "
                     r"\(patch 4, hidden 16, 2 heads, MLP 32; or leave it unset\), got 'Ti/16'"):
    _parse(f'root {{ checkpoint: "{directory}" vit: "Ti/16" }}')


def test_source_imported_on_the_fly_needs_its_size_named(tmp_path):
  source = tmp_path / "ViT-Ti_16.npz"
  np.savez(source, cls=np.zeros((1, 1, 192), np.float32))
  with pytest.raises(loader.ConfigError, match=r"root.vit: expected the ViT size the vit_npz "
                     r"checkpoint has"):
    _parse(f'root {{ checkpoint: "{source}" image_size: 32 }}')
  config = _parse(f'root {{ checkpoint: "{source}" vit: "Ti/16" image_size: 32 }}')
  assert config.arch.hidden_size == 192 and config.arch.gelu_approximate is True
  assert config.proto.root.custom.gelu_approximate


def test_missing_checkpoint_is_named(tmp_path):
  missing = tmp_path / "nothing-here"
  with pytest.raises(loader.ConfigError) as e:
    _parse(f'root {{ checkpoint: "{missing}" vit: "Ti/16" image_size: 32 }}')
  assert f"Checkpoint {missing}: no such file or directory." in str(e.value)
  assert str(e.value).startswith("my.textproto: root.checkpoint: expected a root directory made by "
                                 "bin/import_root.py or a checkpoint")


def test_unknown_directory_kind_is_named(tmp_path):
  with pytest.raises(loader.ConfigError, match=r"not a checkpoint mtsys reads"):
    _parse(f'root {{ checkpoint: "{tmp_path}" vit: "Ti/16" image_size: 32 }}')


def test_checkpoint_and_pretrain_exclude_each_other(tmp_path):
  directory = _manifest_dir(tmp_path)
  with pytest.raises(loader.ConfigError, match=r"either root.checkpoint or root.pretrain"):
    _parse(f'root {{ checkpoint: "{directory}" pretrain {{ task {{ name: "p" num_classes: 2 '
           'builtin { name: "sklearn_digits" } } } }')
