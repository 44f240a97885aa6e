"""Tests for mtsys.pretrained.vit_npz: the original ViT / AugReg and big_vision `.npz` reader.

The fixture (testdata/vit_jax_tiny.npz, a tiny random ViT in the published vit_jax layout) and
its reference pre-logits (testdata/vit_jax_tiny_reference.npz) were produced once by the
ORIGINAL vit_jax model code (tests/pretrained/make_vit_jax_fixture.py, whose docstring gives the
command, the vision_transformer commit and the JAX/Flax versions): the mtsys root built from the
checkpoint must compute them to 1e-5, whole, capped to 2 blocks and resized to image size 24.
"""

import hashlib
import os
import zipfile

import numpy as np
import pytest

from mtsys import errors
from mtsys.pretrained import checkpoint_format as cf
from mtsys.pretrained import root_dir
from mtsys.pretrained import testing as pretrained_testing
from mtsys.pretrained import vit_npz

TESTDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")
FIXTURE = os.path.join(TESTDATA, "vit_jax_tiny.npz")
REFERENCE = os.path.join(TESTDATA, "vit_jax_tiny_reference.npz")
ATOL = 1e-5

BLOCK0 = "Transformer/encoderblock_0/"
LINEN = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
         "LayerNorm_2": "LayerNorm_1", "MlpBlock_3": "MlpBlock_0"}


def _fixture_arrays() -> dict[str, np.ndarray]:
  with np.load(FIXTURE) as data:
    return {key: data[key] for key in data.files}


def _reference() -> dict[str, np.ndarray]:
  with np.load(REFERENCE) as data:
    return {key: data[key] for key in data.files}


def _write(tmp_path, arrays, name="ckpt.npz") -> str:
  path = str(tmp_path / name)
  with open(path, "wb") as f:
    np.savez(f, **arrays)
  return path


def _read_error(path: str) -> str:
  with pytest.raises(errors.CheckpointError) as info:
    vit_npz.read(path)
  return str(info.value)


# --- (a) reading the fixture ----------------------------------------------------------------


def test_fixture_sizes_and_provenance():
  ckpt = vit_npz.read(FIXTURE)
  assert (ckpt.patch_size, ckpt.hidden_size, ckpt.num_layers, ckpt.num_heads, ckpt.mlp_dim,
          ckpt.image_size, ckpt.channels) == (4, 16, 3, 2, 32, 16, 3)
  assert ckpt.pre_logits_size == 8
  assert ckpt.gelu_approximate is True
  assert ckpt.layer_norm_epsilon == 1e-6
  assert ckpt.input_scale == (2.0, 2.0, 2.0) and ckpt.input_offset == (-1.0, -1.0, -1.0)
  assert ckpt.source_kind == "vit_npz"
  assert ckpt.source_file == FIXTURE
  with open(FIXTURE, "rb") as f:
    assert ckpt.source_sha256 == hashlib.sha256(f.read()).hexdigest()
  arrays = _fixture_arrays()
  without_head = {k for k in arrays if not k.startswith("head/")}
  assert len(without_head) == len(arrays) - 2
  assert set(ckpt.params) == without_head
  for key, value in ckpt.params.items():
    assert value.dtype == np.float32, key
    np.testing.assert_array_equal(value, arrays[key], err_msg=key)
  cf.validate(ckpt)


def test_reads_through_tensorflow_file_system_urls():
  ckpt = vit_npz.read("file://" + FIXTURE)
  local = vit_npz.read(FIXTURE)
  assert ckpt.source_file == "file://" + FIXTURE
  assert ckpt.source_sha256 == local.source_sha256
  assert set(ckpt.params) == set(local.params)


def test_reference_records_provenance():
  provenance = str(_reference()["provenance"])
  assert "google-research/vision_transformer c6de1e5378c9831a8477feb30994971bdc409e46" in (
      provenance)
  assert "jax 0.10.2" in provenance and "flax 0.12.8" in provenance


# --- (b) bad input ------------------------------------------------------------------------------


def _missing_key(arrays):
  del arrays["Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"]
  return ("missing key 'Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias' "
          "(expected the original ViT layout)")


def _missing_encoder_norm(arrays):
  del arrays["Transformer/encoder_norm/scale"]
  return "missing key 'Transformer/encoder_norm/scale' (expected the original ViT layout)"


def _missing_position_embedding(arrays):
  del arrays["Transformer/posembed_input/pos_embedding"]
  return ("missing key 'Transformer/posembed_input/pos_embedding' (expected the original ViT "
          "layout, or 'pos_embedding' in big_vision's layout; fixed sin-cos position "
          "embeddings are not supported)")


def _mlp_shape(arrays):
  arrays["Transformer/encoderblock_2/MlpBlock_3/Dense_0/kernel"] = np.zeros((16, 31), np.float32)
  return ("key 'Transformer/encoderblock_2/MlpBlock_3/Dense_0/kernel' has shape (16, 31); "
          "expected (16, 32) (patch 4, 3 channels, width 16 from 'embedding/kernel'; 2 heads, "
          "MLP 32 from block 0; image 16 from the position embedding)")


def _width_shape(arrays):
  arrays["cls"] = np.zeros((1, 1, 12), np.float32)
  return ("key 'cls' has shape (1, 1, 12); expected (1, 1, 16) (patch 4, 3 channels, width 16 "
          "from 'embedding/kernel'; 2 heads, MLP 32 from block 0; image 16 from the position "
          "embedding)")


def _query_shape(arrays):
  arrays[BLOCK0 + "MultiHeadDotProductAttention_1/query/kernel"] = np.zeros((16, 3, 8),
                                                                             np.float32)
  return ("key 'Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel' has "
          "shape (16, 3, 8); expected (width, heads, width / heads) with width 16 (from "
          "'embedding/kernel')")


def _position_grid(arrays):
  arrays["Transformer/posembed_input/pos_embedding"] = np.zeros((1, 18, 16), np.float32)
  return ("key 'Transformer/posembed_input/pos_embedding' has 18 positions; expected 1 + a "
          "square grid (the class token's position, then one per patch)")


def _gap(arrays):
  del arrays["cls"]
  return ("missing key 'cls': the checkpoint has no class token (it pools by global average, "
          "'gap'); only checkpoints that classify from a class token ('token') are supported")


def _map(arrays):
  del arrays["cls"]
  arrays["MAPHead_0/probe"] = np.zeros((1, 1, 16), np.float32)
  arrays["MAPHead_0/MlpBlock_0/Dense_0/kernel"] = np.zeros((16, 32), np.float32)
  return ("key 'MAPHead_0/MlpBlock_0/Dense_0/kernel' is a multihead attention-pooling head "
          "(pooling 'map'); only checkpoints that classify from a class token ('token') are "
          "supported")


def _hybrid(arrays):
  arrays["conv_root/kernel"] = np.zeros((7, 7, 3, 8), np.float32)
  arrays["gn_root/scale"] = np.ones((8,), np.float32)
  arrays["block1/unit1/conv1/kernel"] = np.zeros((1, 1, 8, 8), np.float32)
  arrays["embedding/kernel"] = np.zeros((1, 1, 8, 16), np.float32)
  return ("key 'block1/unit1/conv1/kernel' belongs to a hybrid ResNet stem (an R+ViT "
          "checkpoint); only ViTs whose patch embedding is a plain convolution are supported")


def _hybrid_under_embedding(arrays):
  arrays["embedding/conv_root/kernel"] = np.zeros((7, 7, 3, 8), np.float32)
  return ("key 'embedding/conv_root/kernel' belongs to a hybrid ResNet stem (an R+ViT "
          "checkpoint); only ViTs whose patch embedding is a plain convolution are supported")


def _extra_key(arrays):
  arrays[BLOCK0 + "Adapter_0/kernel"] = np.zeros((16, 4), np.float32)
  return ("unexpected key 'Transformer/encoderblock_0/Adapter_0/kernel' (expected only the "
          "parameters of a class-token ViT in the original ViT layout)")


def _integer_weights(arrays):
  arrays["embedding/bias"] = np.zeros((16,), np.int32)
  return "key 'embedding/bias' has dtype int32; expected floating-point weights"


def _not_a_vit(arrays):
  arrays.clear()
  arrays["weights"] = np.zeros((3,), np.float32)
  return ("missing key 'embedding/kernel' (expected a ViT checkpoint in the original ViT layout "
          "or big_vision's layout)")


BAD_CHECKPOINTS = [_missing_key, _missing_encoder_norm, _missing_position_embedding, _mlp_shape,
                   _width_shape, _query_shape, _position_grid, _gap, _map, _hybrid,
                   _hybrid_under_embedding, _extra_key, _integer_weights, _not_a_vit]


@pytest.mark.parametrize("break_it", BAD_CHECKPOINTS, ids=lambda f: f.__name__.strip("_"))
def test_bad_checkpoint(tmp_path, break_it):
  arrays = _fixture_arrays()
  message = break_it(arrays)
  path = _write(tmp_path, arrays)
  assert _read_error(path) == f"Checkpoint {path}: {message}"


def test_unreadable_file(tmp_path):
  path = str(tmp_path / "garbage.npz")
  with open(path, "wb") as f:
    f.write(b"PK\x03\x04 this is not a zip archive")
  with pytest.raises((ValueError, OSError, EOFError, zipfile.BadZipFile)) as cause:
    np.load(path, allow_pickle=False)
  assert _read_error(path) == (
      f"Checkpoint {path}: cannot be read as an .npz archive of named weights "
      f"({type(cause.value).__name__}: {cause.value})")


def test_single_array_file(tmp_path):
  path = str(tmp_path / "one.npy")
  np.save(path, np.zeros((2, 3), np.float32))
  assert _read_error(path) == (
      f"Checkpoint {path}: holds a single array of shape (2, 3), not an .npz archive of named "
      "weights (expected a ViT checkpoint saved with np.savez)")


def test_missing_file(tmp_path):
  path = str(tmp_path / "absent.npz")
  assert _read_error(path) == f"Checkpoint {path}: no such file or directory."


# --- (c) the same function as vit_jax -------------------------------------------------------


def _assert_matches(ckpt, images01, expected, keep_pre_logits=False):
  got = root_dir.prelogits(root_dir.root_layers(ckpt, keep_pre_logits=keep_pre_logits),
                           images01)
  assert expected.size > 0 and expected.shape[0] == images01.shape[0]
  assert got.shape == expected.shape and got.dtype == np.float32
  np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


def test_matches_vit_jax():
  ref = _reference()
  ckpt = vit_npz.read(FIXTURE)
  _assert_matches(ckpt, ref["images01"], ref["prelogits_full"])
  # The numpy statement of the canonical function agrees with vit_jax too.
  np.testing.assert_allclose(pretrained_testing.reference_prelogits(ckpt, ref["images01"]),
                             ref["prelogits_full"], rtol=0, atol=ATOL)


def test_matches_vit_jax_with_pre_logits_dense():
  ref = _reference()
  _assert_matches(vit_npz.read(FIXTURE), ref["images01"], ref["prelogits_repr"],
                  keep_pre_logits=True)


def test_matches_vit_jax_capped_to_two_blocks():
  ref = _reference()
  ckpt = cf.cap_blocks(vit_npz.read(FIXTURE), 2)
  assert ckpt.num_layers == 2
  _assert_matches(ckpt, ref["images01"], ref["prelogits_cap2"])


def test_matches_vit_jax_resized_to_24():
  ref = _reference()
  ckpt = cf.resize_image(vit_npz.read(FIXTURE), 24)
  assert ckpt.image_size == 24
  np.testing.assert_allclose(ckpt.params[cf.POS_EMBEDDING], ref["pos_embedding_24"], rtol=0,
                             atol=1e-6)
  _assert_matches(ckpt, ref["images01_24"], ref["prelogits_resized24"])


# --- big_vision's layout --------------------------------------------------------------------


def _linen_names(arrays):
  """The fixture with linen block names (big_vision's, or a vit_jax linen tree)."""
  out = {}
  for key, value in arrays.items():
    parts = key.split("/")
    out["/".join(LINEN.get(p, p) for p in parts)] = value
  return out


def _big_vision(arrays, combined=False, scanned=False):
  """The fixture as big_vision's vit.py names it (the same function)."""
  out = _linen_names(arrays)
  pe = out.pop("Transformer/posembed_input/pos_embedding")
  if combined:  # big_vision's "combined cls+posemb": the class token's row kept
    out["pos_embedding"] = pe
  else:  # added before the class token: its position folded into the token
    out["pos_embedding"] = pe[:, 1:]
    out["cls"] = out["cls"] + pe[:, :1]
  if scanned:
    blocks = sorted({k.split("/")[1] for k in out if k.startswith("Transformer/encoderblock_")})
    assert blocks == ["encoderblock_0", "encoderblock_1", "encoderblock_2"]
    leaves = sorted(k[len(BLOCK0):] for k in out if k.startswith(BLOCK0))
    for leaf in leaves:
      out[f"Transformer/encoderblock/{leaf}"] = np.stack(
          [out.pop(f"Transformer/{block}/{leaf}") for block in blocks])
  return out


def _assert_same_as_fixture(ckpt, folded_cls=False):
  expected = vit_npz.read(FIXTURE)
  assert set(ckpt.params) == set(expected.params)
  assert (ckpt.num_layers, ckpt.num_heads, ckpt.mlp_dim, ckpt.image_size) == (3, 2, 32, 16)
  for key, value in expected.params.items():
    if folded_cls and key == cf.CLS:
      value = value + expected.params[cf.POS_EMBEDDING][:, :1]
    elif folded_cls and key == cf.POS_EMBEDDING:
      value = np.concatenate([np.zeros_like(value[:, :1]), value[:, 1:]], axis=1)
    np.testing.assert_array_equal(ckpt.params[key], value, err_msg=key)


@pytest.mark.parametrize("scanned", [False, True], ids=["loop", "scanned"])
def test_big_vision_layout(tmp_path, scanned):
  path = _write(tmp_path, _big_vision(_fixture_arrays(), scanned=scanned))
  ckpt = vit_npz.read(path)
  _assert_same_as_fixture(ckpt, folded_cls=True)
  assert not ckpt.params[cf.POS_EMBEDDING][:, 0].any()
  ref = _reference()
  _assert_matches(ckpt, ref["images01"], ref["prelogits_full"])


def test_big_vision_combined_position_embedding_and_params_prefix(tmp_path):
  arrays = _big_vision(_fixture_arrays(), combined=True, scanned=True)
  path = _write(tmp_path, {f"params/{k}": v for k, v in arrays.items()}
                | {"opt/state/count": np.zeros((), np.float32)})
  _assert_same_as_fixture(vit_npz.read(path))


def test_vit_jax_linen_block_names(tmp_path):
  path = _write(tmp_path, _linen_names(_fixture_arrays()))
  _assert_same_as_fixture(vit_npz.read(path))


def test_bfloat16_arrays_widened(tmp_path):
  arrays = _fixture_arrays()
  bits = (arrays["embedding/kernel"].view(np.uint32) >> 16).astype(np.uint16)
  arrays["embedding/kernel"] = bits.view("V2")
  ckpt = vit_npz.read(_write(tmp_path, arrays))
  widened = (bits.astype(np.uint32) << 16).view(np.float32)
  np.testing.assert_array_equal(ckpt.params["embedding/kernel"], widened)
  assert ckpt.params["embedding/kernel"].dtype == np.float32


def test_big_vision_missing_scanned_key(tmp_path):
  arrays = _big_vision(_fixture_arrays(), scanned=True)
  del arrays["Transformer/encoderblock/MlpBlock_0/Dense_1/bias"]
  path = _write(tmp_path, arrays)
  assert _read_error(path) == (
      f"Checkpoint {path}: missing key 'Transformer/encoderblock/MlpBlock_0/Dense_1/bias' "
      "(expected big_vision's layout)")


def test_big_vision_scanned_shape_disagrees(tmp_path):
  arrays = _big_vision(_fixture_arrays(), scanned=True)
  arrays["Transformer/encoderblock/LayerNorm_1/scale"] = np.ones((3, 15), np.float32)
  path = _write(tmp_path, arrays)
  assert _read_error(path) == (
      f"Checkpoint {path}: key 'Transformer/encoderblock/LayerNorm_1/scale'[0] has shape (15,); "
      "expected (16,) (patch 4, 3 channels, width 16 from 'embedding/kernel'; 2 heads, MLP 32 "
      "from block 0; image 16 from the position embedding)")
