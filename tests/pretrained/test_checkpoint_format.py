import dataclasses
import hashlib
import re

import numpy as np
import pytest
import scipy.ndimage

from mtsys import errors
from mtsys.pretrained import checkpoint_format as cf
from mtsys.pretrained import testing


def _ckpt(**kwargs):
  return testing.random_checkpoint(**kwargs)


def test_random_checkpoint_validates():
  cf.validate(_ckpt())
  cf.validate(_ckpt(pre_logits=5, channels=1, patch=2, image=8))
  assert _ckpt(pre_logits=5).pre_logits_size == 5
  assert _ckpt().pre_logits_size == 0
  assert _ckpt().grid_size == 4


def test_missing_key_is_named():
  ckpt = _ckpt()
  del ckpt.params[cf.ENCODER_NORM_SCALE]
  ckpt.source_file = "/x.npz"
  message = ("Checkpoint /x.npz: missing key 'Transformer/encoder_norm/scale' "
             "(expected the original ViT layout, shape (16,))")
  with pytest.raises(errors.CheckpointError, match=re.escape(message)):
    cf.validate(ckpt)


def test_shape_that_disagrees_with_the_named_size_is_named():
  ckpt = dataclasses.replace(_ckpt(), mlp_dim=64)
  with pytest.raises(errors.CheckpointError, match=re.escape(
      "key 'Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel' has shape (16, 32); "
      "expected (16, 64)")):
    cf.validate(ckpt)


def test_extra_keys_are_refused():
  ckpt = _ckpt()
  ckpt.params["head/kernel"] = np.zeros((16, 10), np.float32)
  with pytest.raises(errors.CheckpointError, match=re.escape("unexpected key 'head/kernel'")):
    cf.validate(ckpt)
  more_blocks = dataclasses.replace(_ckpt(), num_layers=2)
  with pytest.raises(errors.CheckpointError,
                     match=re.escape("unexpected key 'Transformer/encoderblock_2/")):
    cf.validate(more_blocks)


def test_half_a_pre_logits_layer_is_refused():
  ckpt = _ckpt(pre_logits=4)
  del ckpt.params[cf.PRE_LOGITS_BIAS]
  with pytest.raises(errors.CheckpointError, match=re.escape("missing key 'pre_logits/bias'")):
    cf.validate(ckpt)


def test_bad_sizes_and_dtypes_are_refused():
  with pytest.raises(errors.CheckpointError, match="not divisible by num_heads=3"):
    cf.validate(dataclasses.replace(_ckpt(), num_heads=3))
  with pytest.raises(errors.CheckpointError, match=re.escape("image size 18 is not a multiple")):
    cf.validate(dataclasses.replace(_ckpt(), image_size=18))
  with pytest.raises(errors.CheckpointError, match=re.escape("input_scale=(2.0,)")):
    cf.validate(dataclasses.replace(_ckpt(), input_scale=(2.0,)))
  ckpt = _ckpt()
  ckpt.params[cf.CLS] = ckpt.params[cf.CLS].astype(np.float64)
  with pytest.raises(errors.CheckpointError, match="key 'cls' has dtype float64"):
    cf.validate(ckpt)


def test_cap_blocks_keeps_the_first_blocks():
  ckpt = _ckpt(layers=3)
  capped = cf.cap_blocks(ckpt, 2)
  cf.validate(capped)
  assert capped.num_layers == 2 and ckpt.num_layers == 3
  assert not any(k.startswith("Transformer/encoderblock_2/") for k in capped.params)
  key = "Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"
  assert capped.params[key] is ckpt.params[key]
  assert cf.cap_blocks(ckpt, 0) is ckpt
  assert cf.cap_blocks(ckpt, 3) is ckpt
  for bad in (4, -1):
    with pytest.raises(errors.CheckpointError, match=re.escape(f"num_blocks={bad}")):
      cf.cap_blocks(ckpt, bad)


def test_resize_image_resamples_the_grid_like_vit_jax():
  ckpt = _ckpt(patch=4, image=16)
  resized = cf.resize_image(ckpt, 24)
  cf.validate(resized)
  assert resized.image_size == 24
  posemb = ckpt.params[cf.POS_EMBEDDING]
  new = resized.params[cf.POS_EMBEDDING]
  assert new.shape == (1, 37, 16) and new.dtype == np.float32
  np.testing.assert_array_equal(new[:, :1], posemb[:, :1])
  grid = scipy.ndimage.zoom(posemb[0, 1:].reshape(4, 4, 16), (1.5, 1.5, 1), order=1)
  np.testing.assert_array_equal(new[0, 1:], grid.reshape(36, 16))
  assert cf.resize_image(ckpt, 0) is ckpt
  assert cf.resize_image(ckpt, 16) is ckpt


def test_resize_to_a_size_not_a_multiple_of_the_patch_names_it():
  message = "image size 30 is not a multiple of the patch size 4"
  with pytest.raises(errors.CheckpointError, match=re.escape(message)):
    cf.resize_image(_ckpt(), 30)


def test_file_sha256_of_files_directories_and_prefixes(tmp_path):
  (tmp_path / "a.npz").write_bytes(b"abc")
  assert cf.file_sha256(str(tmp_path / "a.npz")) == hashlib.sha256(b"abc").hexdigest()
  preset = tmp_path / "preset"
  (preset / "assets").mkdir(parents=True)
  (preset / "config.json").write_bytes(b"{}")
  (preset / "assets" / "x").write_bytes(b"x")
  listing = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n"
                    for name, data in (("assets/x", b"x"), ("config.json", b"{}")))
  assert cf.file_sha256(str(preset)) == hashlib.sha256(listing.encode()).hexdigest()
  (tmp_path / "ckpt-1.index").write_bytes(b"i")
  (tmp_path / "ckpt-1.data-00000-of-00001").write_bytes(b"d")
  (tmp_path / "ckpt-10.index").write_bytes(b"other")
  listing = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n"
                    for name, data in (("ckpt-1.data-00000-of-00001", b"d"),
                                       ("ckpt-1.index", b"i")))
  assert cf.file_sha256(str(tmp_path / "ckpt-1")) == hashlib.sha256(listing.encode()).hexdigest()
  with pytest.raises(errors.CheckpointError, match="no such file or directory"):
    cf.file_sha256(str(tmp_path / "missing"))


def test_reference_prelogits_normalises_inputs_and_reads_token_zero():
  ckpt = _ckpt()
  images = testing.random_images(ckpt)
  out = testing.reference_prelogits(ckpt, images)
  assert out.shape == (2, 16)
  shifted = dataclasses.replace(ckpt, input_scale=(1.0,) * 3, input_offset=(0.0,) * 3)
  np.testing.assert_allclose(testing.reference_prelogits(shifted, images * 2 - 1), out,
                             atol=1e-6)
  with_pre = _ckpt(pre_logits=5)
  assert testing.reference_prelogits(with_pre, images, keep_pre_logits=True).shape == (2, 5)
