"""keras-hub ViTBackbone presets (issue #14): a small random ViTBackbone saved with
`save_to_preset` is read, and the mtsys root computes the backbone's own pre-logits (its final
normalised class token) on the images its own image converter makes; also capped and resized,
and without biases. Nothing downloads: every preset is a temporary directory."""

import json
import os
import re
import shutil

import keras
import keras_hub
import numpy as np
import pytest

from mtsys import errors
from mtsys.pretrained import checkpoint_format as cf
from mtsys.pretrained import keras_hub_preset
from mtsys.pretrained import root_dir
from mtsys.pretrained import testing

ATOL = 1e-5
SIZES = dict(patch_size=4, num_heads=2, hidden_dim=16, mlp_dim=32)
# Per-channel ImageNet normalisation of raw [0, 255] pixels, as a keras-hub converter does it.
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SCALE = [1 / (255 * s) for s in STD]
OFFSET = [-m / s for m, s in zip(MEAN, STD)]
EPSILON = 1e-3  # Not keras-hub's default: the reader must take it from config.json.


def _backbone(image=16, layers=3, **kwargs):
  kwargs = {**SIZES, "layer_norm_epsilon": EPSILON, **kwargs}
  return keras_hub.models.ViTBackbone(image_shape=(image, image, 3), num_layers=layers, **kwargs)


def _perturb(backbone, seed=0):
  """Random weights with every part mattering: LayerNorm scales ~1, biases, tokens, positions."""
  rng = np.random.default_rng(seed)
  for w in backbone.weights:
    shape = tuple(w.shape)
    if w.path.endswith("gamma"):
      value = 1 + 0.1 * rng.normal(size=shape)
    elif w.path.endswith(("beta", "bias")):
      value = 0.1 * rng.normal(size=shape)
    elif w.path.endswith(("class_token", "embeddings")):
      value = 0.5 * rng.normal(size=shape)
    else:
      continue  # Kernels keep their random (Glorot) initialisation.
    w.assign(value.astype("float32"))
  return backbone


def _source_prelogits(backbone, converter, images01):
  """The keras-hub model's pre-logits: its converter on [0, 255] pixels, token 0 of the output."""
  pixels = converter(images01 * 255.0) if converter is not None else images01 * 2.0 - 1.0
  return keras.ops.convert_to_numpy(backbone(pixels))[:, 0]


def _mtsys_prelogits(ckpt, images01):
  return root_dir.prelogits(root_dir.root_layers(ckpt), images01)


def _assert_equivalent(source, ckpt, images01):
  got = _mtsys_prelogits(ckpt, images01)
  assert source.size > 0 and got.shape == source.shape == (len(images01), ckpt.hidden_size)
  assert np.abs(got - source).max() <= ATOL
  # The reader alone, against the numpy model of the canonical layout.
  assert np.abs(testing.reference_prelogits(ckpt, images01) - source).max() <= ATOL


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
  """(directory, backbone, converter) of a 3-block preset saved with its image converter."""
  directory = str(tmp_path_factory.mktemp("hub") / "vit_preset")
  backbone = _perturb(_backbone())
  backbone.save_to_preset(directory)
  converter = keras_hub.layers.ViTImageConverter(image_size=None, scale=SCALE, offset=OFFSET)
  converter.save_to_preset(directory)
  return directory, backbone, converter


def _images(size=16, batch=3, seed=1):
  return np.random.default_rng(seed).uniform(size=(batch, size, size, 3)).astype("float32")


def test_reads_sizes_gelu_epsilon_normalisation_and_provenance(preset):
  directory, _, _ = preset
  ckpt = keras_hub_preset.read(directory)
  assert (ckpt.patch_size, ckpt.hidden_size, ckpt.num_layers, ckpt.num_heads, ckpt.mlp_dim,
          ckpt.image_size, ckpt.channels) == (4, 16, 3, 2, 32, 16, 3)
  assert ckpt.gelu_approximate is False and ckpt.layer_norm_epsilon == EPSILON
  np.testing.assert_allclose(ckpt.input_scale, [1 / s for s in STD], rtol=1e-12)
  np.testing.assert_allclose(ckpt.input_offset, OFFSET, rtol=1e-12)
  assert ckpt.source_kind == "keras_hub" and ckpt.source_file == directory
  assert ckpt.source_sha256 == cf.file_sha256(directory) and len(ckpt.source_sha256) == 64
  assert cf.PRE_LOGITS_KERNEL not in ckpt.params
  cf.validate(ckpt)


def test_root_computes_the_backbones_prelogits(preset):
  directory, backbone, converter = preset
  ckpt = keras_hub_preset.read(directory)
  images = _images()
  source = _source_prelogits(backbone, converter, images)
  _assert_equivalent(source, ckpt, images)
  # The comparison can fail: the tanh GELU or keras-hub's default epsilon differ measurably.
  for wrong in (dict(gelu_approximate=True), dict(layer_norm_epsilon=1e-6)):
    other = cf.ViTCheckpoint(**{**ckpt.__dict__, **wrong})
    assert np.abs(testing.reference_prelogits(other, images) - source).max() > 10 * ATOL


def test_capped_root_computes_a_two_block_backbone(preset):
  directory, backbone, converter = preset
  small = _backbone(layers=2)
  small.get_layer("vit_patching_and_embedding").set_weights(
      backbone.get_layer("vit_patching_and_embedding").get_weights())
  big_encoder, small_encoder = backbone.get_layer("vit_encoder"), small.get_layer("vit_encoder")
  for i in range(2):
    small_encoder.encoder_layers[i].set_weights(big_encoder.encoder_layers[i].get_weights())
  small_encoder.layer_norm.set_weights(big_encoder.layer_norm.get_weights())
  images = _images()
  capped = cf.cap_blocks(keras_hub_preset.read(directory), 2)
  assert capped.num_layers == 2
  _assert_equivalent(_source_prelogits(small, converter, images), capped, images)


def test_resized_root_computes_the_backbone_at_another_size(preset):
  """keras-hub's ViT cannot interpolate its position embedding, so the source at 24 pixels gets
  the scipy-zoomed (order 1) embedding and every other weight of the 16-pixel backbone."""
  directory, backbone, converter = preset
  ckpt = cf.resize_image(keras_hub_preset.read(directory), 24)
  large = _backbone(image=24)
  large.get_layer("vit_encoder").set_weights(backbone.get_layer("vit_encoder").get_weights())
  embed, source_embed = (large.get_layer("vit_patching_and_embedding"),
                         backbone.get_layer("vit_patching_and_embedding"))
  embed.class_token.assign(source_embed.class_token)
  embed.patch_embedding.set_weights(source_embed.patch_embedding.get_weights())
  embed.position_embedding.embeddings.assign(ckpt.params[cf.POS_EMBEDDING][0])
  assert ckpt.params[cf.POS_EMBEDDING].shape == (1, 1 + 36, 16)
  images = _images(size=24)
  _assert_equivalent(_source_prelogits(large, converter, images), ckpt, images)


def test_preset_without_biases_or_converter(tmp_path):
  """Absent biases read as zeros; without an image converter the ViT's [-1, 1] is assumed."""
  backbone = _perturb(_backbone(layers=1, use_mha_bias=False, use_mlp_bias=False,
                                use_patch_bias=False), seed=2)
  directory = str(tmp_path / "nobias")
  backbone.save_to_preset(directory)
  ckpt = keras_hub_preset.read(directory)
  assert ckpt.input_scale == (2.0,) * 3 and ckpt.input_offset == (-1.0,) * 3
  zero_keys = [k for k in ckpt.params if k.endswith("bias") and "LayerNorm" not in k
               and "encoder_norm" not in k]
  assert len(zero_keys) == 1 + 6 and all(not ckpt.params[k].any() for k in zero_keys)
  images = _images()
  _assert_equivalent(_source_prelogits(backbone, None, images), ckpt, images)
  overridden = keras_hub_preset.read(directory, input_scale=(1, 1, 1), input_offset=(0, 0, 0))
  assert overridden.input_scale == (1.0,) * 3 and overridden.input_offset == (0.0,) * 3


def _copy(preset, tmp_path, edit_config=None, remove=()):
  directory = str(tmp_path / "edited")
  shutil.copytree(preset[0], directory)
  if edit_config:
    path = os.path.join(directory, "config.json")
    with open(path) as f:
      config = json.load(f)
    edit_config(config)
    with open(path, "w") as f:
      json.dump(config, f)
  for name in remove:
    os.remove(os.path.join(directory, name))
  return directory


def _raises(directory, message):
  with pytest.raises(errors.CheckpointError, match="^" + re.escape(message) + "$"):
    keras_hub_preset.read(directory)


def test_another_backbone_class_is_refused(preset, tmp_path):
  def edit(config):
    config["class_name"] = "DINOV2Backbone"
    config["registered_name"] = "keras_hub>DINOV2Backbone"
  directory = _copy(preset, tmp_path, edit)
  _raises(directory, f"Checkpoint {directory}: config.json names backbone class "
          "'DINOV2Backbone' ('keras_hub>DINOV2Backbone'); expected keras-hub's 'ViTBackbone'")


def test_no_class_token_is_refused(preset, tmp_path):
  directory = _copy(preset, tmp_path, lambda c: c["config"].update(use_class_token=False))
  _raises(directory, f"Checkpoint {directory}: use_class_token=False: the ViTBackbone has no "
          "class token (expected a class-token ViT; mtsys's head reads the final-normalised "
          "class token)")


def test_missing_weights_are_refused(preset, tmp_path):
  directory = _copy(preset, tmp_path, remove=["model.weights.h5"])
  _raises(directory, f"Checkpoint {directory}: missing weights file 'model.weights.h5' "
          "(expected a preset saved with its weights, e.g. by ViTBackbone.save_to_preset)")


def test_missing_config_and_non_directories_are_refused(preset, tmp_path):
  directory = _copy(preset, tmp_path, remove=["metadata.json"])
  _raises(directory, f"Checkpoint {directory}: missing metadata.json (expected a keras-hub "
          "preset directory)")
  name = "vit_base_patch16_224_imagenet"  # A preset handle: must not be downloaded.
  _raises(name, f"Checkpoint {name}: not a local keras-hub preset directory (expected a "
          "directory holding config.json, metadata.json and model.weights.h5; presets are "
          "never downloaded)")


def test_weights_that_disagree_with_the_config_are_refused(preset, tmp_path):
  directory = _copy(preset, tmp_path, lambda c: c["config"].update(mlp_dim=24))
  with pytest.raises(errors.CheckpointError,
                     match=f"^Checkpoint {re.escape(directory)}: keras-hub could not load the "
                     "ViTBackbone preset "):
    keras_hub_preset.read(directory)
