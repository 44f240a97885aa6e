"""Model Garden (tf-models-official) ViT checkpoints (issue #14): a small random
`official.vision.modeling.backbones.vit.VisionTransformer` (tf-keras) saved with
`tf.train.Checkpoint` is read by variable name, and the mtsys root (Keras 3) computes the Model
Garden model's own pre-logits on images normalised by Model Garden's own `normalize_image`;
also capped, resized and with its `pre_logits` Dense. Nothing downloads."""

import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from official.vision.modeling.backbones import vit
from official.vision.ops import preprocess_ops

from mtsys import errors
from mtsys.pretrained import checkpoint_format as cf
from mtsys.pretrained import model_garden
from mtsys.pretrained import root_dir
from mtsys.pretrained import testing

ATOL = 1e-5
SUFFIX = model_garden.SUFFIX


def _vit(image=16, layers=3, representation_size=0, pooler="token"):
  return vit.VisionTransformer(
      mlp_dim=32, num_heads=2, num_layers=layers, hidden_size=16, patch_size=4,
      input_specs=tf_keras.layers.InputSpec(shape=[None, image, image, 3]), dropout_rate=0.0,
      attention_dropout_rate=0.0, representation_size=representation_size, pooler=pooler)


def _perturb(model, seed=0):
  """Random weights with every part mattering (Model Garden initialises cls, biases, betas to
  zero and gammas to one); kernels keep their random initialisation."""
  rng = np.random.default_rng(seed)
  for w in model.weights:
    name, shape = w.name.split(":")[0], tuple(w.shape)
    if name.endswith("gamma"):
      w.assign(1 + 0.1 * rng.normal(size=shape))
    elif name.endswith(("beta", "bias")):
      w.assign(0.1 * rng.normal(size=shape))
    elif name.endswith(("/cls", "pos_embedding")):
      w.assign(0.5 * rng.normal(size=shape))
  return model


def _parts(model):
  """(patch Conv2D, TokenLayer, Encoder, pre_logits Dense or None) of a VisionTransformer."""
  conv = [l for l in model.layers if isinstance(l, tf_keras.layers.Conv2D)][0]
  token = [l for l in model.layers if isinstance(l, vit.TokenLayer)][0]
  encoder = [l for l in model.layers if isinstance(l, vit.Encoder)][0]
  dense = [l for l in model.layers if isinstance(l, tf_keras.layers.Dense)]
  return conv, token, encoder, (dense[0] if dense else None)


def _normalised(images01):
  """Model Garden's own input: `normalize_image` (MEAN_RGB, STDDEV_RGB) on [0, 255] pixels."""
  return preprocess_ops.normalize_image(tf.constant(images01 * 255.0),
                                        offset=preprocess_ops.MEAN_RGB,
                                        scale=preprocess_ops.STDDEV_RGB)


def _source_prelogits(model, images01):
  """The final-normalised class token of the Model Garden model."""
  encoder = _parts(model)[2]
  tokens = tf_keras.Model(model.inputs, encoder.output)(_normalised(images01))
  return tokens.numpy()[:, 0]


def _assert_equivalent(source, ckpt, images01, keep_pre_logits=False):
  got = root_dir.prelogits(root_dir.root_layers(ckpt, keep_pre_logits), images01)
  assert source.size > 0 and got.shape == source.shape
  assert np.abs(got - source).max() <= ATOL
  want = testing.reference_prelogits(ckpt, images01, keep_pre_logits)
  assert np.abs(want - source).max() <= ATOL


def _images(size=16, batch=3, seed=1):
  return np.random.default_rng(seed).uniform(size=(batch, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def garden(tmp_path_factory):
  """(directory, prefix, model) of a 3-block ViT with a pre_logits Dense, saved as TF2 does."""
  directory = tmp_path_factory.mktemp("garden")
  model = _perturb(_vit(representation_size=8))
  prefix = tf.train.Checkpoint(backbone=model).save(str(directory / "ckpt"))
  return str(directory), prefix, model


def test_reads_sizes_gelu_epsilon_normalisation_and_provenance(garden):
  directory, prefix, _ = garden
  ckpt = model_garden.read(prefix)
  assert (ckpt.patch_size, ckpt.hidden_size, ckpt.num_layers, ckpt.num_heads, ckpt.mlp_dim,
          ckpt.image_size, ckpt.channels, ckpt.pre_logits_size) == (4, 16, 3, 2, 32, 16, 3, 8)
  assert ckpt.gelu_approximate is True and ckpt.layer_norm_epsilon == 1e-6
  np.testing.assert_allclose(ckpt.input_scale, [1 / s for s in preprocess_ops.STDDEV_NORM])
  np.testing.assert_allclose(ckpt.input_offset, [-m / s for m, s in zip(
      preprocess_ops.MEAN_NORM, preprocess_ops.STDDEV_NORM)])
  assert ckpt.source_kind == "model_garden" and ckpt.source_file == prefix
  assert ckpt.source_sha256 == cf.file_sha256(prefix)
  by_directory = model_garden.read(directory)  # Its `checkpoint` file names the prefix.
  assert by_directory.source_sha256 == ckpt.source_sha256
  assert all(np.array_equal(by_directory.params[k], v) for k, v in ckpt.params.items())
  overridden = model_garden.read(prefix, input_scale=(2, 2, 2), input_offset=(-1, -1, -1))
  assert overridden.input_scale == (2.0,) * 3 and overridden.input_offset == (-1.0,) * 3


def test_root_computes_the_models_prelogits(garden):
  _, prefix, model = garden
  ckpt = model_garden.read(prefix)
  images = _images()
  source = _source_prelogits(model, images)
  _assert_equivalent(source, ckpt, images)
  # The comparison can fail: Keras' exact GELU differs measurably from Model Garden's tanh one.
  exact = cf.ViTCheckpoint(**{**ckpt.__dict__, "gelu_approximate": False})
  assert np.abs(testing.reference_prelogits(exact, images) - source).max() > 10 * ATOL
  # With the checkpoint's pre_logits Dense + tanh kept: the model's own `pre_logits` output.
  with_dense = model(_normalised(images))["pre_logits"].numpy().reshape(len(images), 8)
  _assert_equivalent(with_dense, ckpt, images, keep_pre_logits=True)


def _copy(dst, src, blocks):
  """Copies the patch embedding, class token, the first `blocks` blocks and the final norm."""
  (dst_conv, dst_token, dst_encoder, _), (conv, token, encoder, _) = _parts(dst), _parts(src)
  dst_conv.set_weights(conv.get_weights())
  dst_token.set_weights(token.get_weights())
  for i in range(blocks):
    dst_encoder._encoder_layers[i].set_weights(encoder._encoder_layers[i].get_weights())
  dst_encoder._norm.set_weights(encoder._norm.get_weights())
  return dst_encoder


def test_capped_root_computes_a_two_block_model(garden):
  _, prefix, model = garden
  small = _vit(layers=2)
  _copy(small, model, 2)._pos_embed.set_weights(_parts(model)[2]._pos_embed.get_weights())
  capped = cf.cap_blocks(model_garden.read(prefix), 2)
  images = _images()
  _assert_equivalent(_source_prelogits(small, images), capped, images)


def test_resized_root_computes_the_model_at_another_size(garden):
  """Model Garden's own interpolation (`AddPositionEmbs._interpolate`, bilinear over the whole
  embedding) cannot keep a class-token row, so the source at 24 pixels gets the scipy-zoomed
  (order 1) embedding and every other weight of the 16-pixel model."""
  _, prefix, model = garden
  ckpt = cf.resize_image(model_garden.read(prefix), 24)
  large = _vit(image=24)
  _copy(large, model, 3)._pos_embed.pos_embedding.assign(ckpt.params[cf.POS_EMBEDDING])
  assert ckpt.params[cf.POS_EMBEDDING].shape == (1, 37, 16)
  images = _images(size=24)
  _assert_equivalent(_source_prelogits(large, images), ckpt, images)


def _write(prefix, arrays):
  """A TF2 checkpoint whose object graph names exactly `arrays`' keys (TF checkpoint names)."""
  tree = {}
  for name, value in arrays.items():
    node = tree
    parts = name[:-len(SUFFIX)].split("/")
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = value

  def build(node):
    if not isinstance(node, dict):
      return tf.Variable(node)
    module = tf.Module()
    for key, child in node.items():
      setattr(module, key, build(child))
    return module

  tf.train.Checkpoint(**{k: build(v) for k, v in tree.items()}).write(prefix)
  return prefix


def _arrays(prefix):
  reader = tf.train.load_checkpoint(prefix)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if name.endswith(SUFFIX) and not name.startswith("save_counter")}


def _raises(path, message):
  with pytest.raises(errors.CheckpointError, match="^" + re.escape(message) + "$"):
    model_garden.read(path)


def test_synthetic_checkpoint_with_the_same_names_reads_the_same(garden, tmp_path):
  _, prefix, _ = garden
  copy = _write(str(tmp_path / "copy"), _arrays(prefix))
  ckpt, same = model_garden.read(prefix), model_garden.read(copy)
  assert sorted(ckpt.params) == sorted(same.params)
  assert all(np.array_equal(same.params[k], v) for k, v in ckpt.params.items())


def test_missing_key_is_refused(garden, tmp_path):
  _, prefix, _ = garden
  arrays = _arrays(prefix)
  missing = "backbone/layer_with_weights-2/_encoder_layers/1/_output_layer_norm/beta" + SUFFIX
  del arrays[missing]
  path = _write(str(tmp_path / "missing"), arrays)
  _raises(path, f"Checkpoint {path}: missing key '{missing}' (expected every variable of a "
          "Model Garden ViT encoder with 3 blocks)")


def test_layer_scale_is_refused(garden, tmp_path):
  _, prefix, _ = garden
  arrays = _arrays(prefix)
  extra = "backbone/layer_with_weights-2/_encoder_layers/0/_layer_scale_attn/gamma" + SUFFIX
  arrays[extra] = np.ones(16, np.float32)
  path = _write(str(tmp_path / "scaled"), arrays)
  _raises(path, f"Checkpoint {path}: unexpected variable '{extra}' in the ViT encoder "
          "(expected a standard Model Garden ViT block: no layer scale, no separate key/value "
          "norm)")


def test_gap_pooling_is_refused(tmp_path):
  model = _vit(layers=1, pooler="gap")
  path = tf.train.Checkpoint(backbone=model).write(str(tmp_path / "gap"))
  _raises(path, f"Checkpoint {path}: no class token variable 'cls' (the ViT was built with "
          "pooler 'gap' or 'none'; expected pooler='token': mtsys's head reads the "
          "final-normalised class token)")


def test_non_vit_checkpoints_and_paths_are_refused(tmp_path):
  path = tf.train.Checkpoint(step=tf.Variable(1), kernel=tf.Variable(tf.zeros([3, 3]))).write(
      str(tmp_path / "other"))
  _raises(path, f"Checkpoint {path}: no Model Garden ViT encoder variables (expected "
          "'.../_encoder_layers/0/_attention_layer/_query_dense/kernel' from "
          "official.vision.modeling.backbones.vit.VisionTransformer)")
  missing = str(tmp_path / "nothing")
  _raises(missing, f"Checkpoint {missing}: no such TensorFlow checkpoint (expected a prefix "
          "with its .index file, or a directory with a 'checkpoint' file)")
  empty = tmp_path / "empty"
  empty.mkdir()
  _raises(str(empty), f"Checkpoint {empty}: directory has no TensorFlow checkpoint (expected a "
          "'checkpoint' file naming one, as tf.train.CheckpointManager writes)")
