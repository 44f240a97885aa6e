"""Builds the tiny vit_jax fixture the `.npz` reader's equivalence tests compare against.

A tiny random ViT (patch 4, hidden 16, 3 layers, 2 heads, MLP 32, image 16, 3 channels, class
token, representation size 8, 5 classes) is built with the ORIGINAL model code of the public
repository google-research/vision_transformer (`vit_jax/models_vit.py`), its parameters are
saved in the layout of the published ViT / AugReg `.npz` files (flat '/'-joined names, the
pre-linen block names `MultiHeadDotProductAttention_1`, `LayerNorm_2`, `MlpBlock_3`), the file is
read back with vit_jax's own `checkpoint.load` (which must restore the model's tree exactly), and
the model's pre-logits are recorded on fixed inputs:

  prelogits_full       the class token after `encoder_norm` (the model with
                       `representation_size=None`, i.e. the `pre_logits` Dense dropped the way
                       vit_jax's `checkpoint.load_pretrained` drops it), on `images01 * 2 - 1`;
  prelogits_repr       the model's `pre_logits` output with the Dense + tanh kept;
  prelogits_cap2       the same weights in a model with only the first 2 blocks;
  prelogits_resized24  the model at image size 24, its position embedding resized by
                       `checkpoint.load_pretrained` (`interpolate_posembed`: scipy zoom, order 1),
                       on `images01_24 * 2 - 1`; `pos_embedding_24` is that resized embedding.

Outputs (small, committed): testdata/vit_jax_tiny.npz (the checkpoint, with its `head`) and
testdata/vit_jax_tiny_reference.npz (inputs in [0, 1], the references, a provenance string).

vit_jax has no `checkpoint.save` any more; the published files are `np.savez` archives of the
flattened parameters (as in `vit_jax/test_utils.py`), which `checkpoint.load` reads back through
flax's `convert_pre_linen` (so the block names of the published files and of a linen model tree
both load). vit_jax's `checkpoint.py` imports `tensorflow.io.gfile`; when TensorFlow is not
installed (it is not needed here) a stub with `GFile = open` is put in its place.

Run once, in a separate venv (never mtsys's own), e.g. as the committed fixture was made:

  python3 -m venv /tmp/jaxenv
  /tmp/jaxenv/bin/pip install jax==0.10.2 jaxlib==0.10.2 flax==0.12.8 numpy==2.4.6 \
      scipy==1.17.1 ml_collections==1.1.0 absl-py==2.5.1 pandas==3.1.1 tqdm==4.70.1 packaging
  # a checkout of google-research/vision_transformer at commit
  # c6de1e5378c9831a8477feb30994971bdc409e46 (2024-05-21) in /tmp/vision_transformer
  /tmp/jaxenv/bin/python tests/pretrained/make_vit_jax_fixture.py \
      --vit_jax_dir=/tmp/vision_transformer \
      --vit_jax_commit=c6de1e5378c9831a8477feb30994971bdc409e46
"""

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import types

import numpy as np

PATCH, HIDDEN, LAYERS, HEADS, MLP, IMAGE, CHANNELS = 4, 16, 3, 2, 32, 16, 3
REPRESENTATION, CLASSES, RESIZED_IMAGE, CAPPED_LAYERS, BATCH = 8, 5, 24, 2, 4
SEED = 14

# vit_jax's files the model and its loader need (models_vit imports models_resnet).
_MODEL_FILES = ("__init__.py", "models_vit.py", "models_resnet.py", "checkpoint.py")

# Linen module names -> the names of the published (pre-linen) `.npz` files, inside a block.
_PUBLISHED_BLOCK_NAMES = {
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}


def _import_vit_jax(vit_jax_dir: str, tmp: str):
  """Copies vit_jax's model files into `tmp` and imports them (models_vit, checkpoint)."""
  pkg = os.path.join(tmp, "vit_jax")
  os.makedirs(pkg)
  for name in _MODEL_FILES:
    shutil.copy(os.path.join(vit_jax_dir, "vit_jax", name), pkg)
  try:
    import tensorflow  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
  except ImportError:
    # flax.io looks for TensorFlow itself: import it first, so it sees none (not the stub).
    import flax.training.checkpoints  # noqa: F401  pylint: disable=import-outside-toplevel
    tf_stub = types.ModuleType("tensorflow")
    tf_stub.io = types.ModuleType("tensorflow.io")
    tf_stub.io.gfile = types.SimpleNamespace(GFile=open, stat=os.stat)
    sys.modules.update({"tensorflow": tf_stub, "tensorflow.io": tf_stub.io})
  sys.path.insert(0, tmp)
  return (importlib.import_module("vit_jax.models_vit"),
          importlib.import_module("vit_jax.checkpoint"))


def _model(models_vit, num_layers=LAYERS, representation_size=None, num_classes=0):
  """vit_jax's VisionTransformer with the fixture's sizes (dropout off)."""
  return models_vit.VisionTransformer(
      num_classes=num_classes,
      patches=types.SimpleNamespace(size=(PATCH, PATCH)),
      transformer=dict(num_layers=num_layers, mlp_dim=MLP, num_heads=HEADS,
                       dropout_rate=0.0, attention_dropout_rate=0.0),
      hidden_size=HIDDEN,
      representation_size=representation_size,
      classifier="token")


def _randomised(flat_params, rng):
  """Random values for every parameter, so that no bias, scale or token is trivially zero/one."""
  out = {}
  for path, value in sorted(flat_params.items()):
    value = np.asarray(value, np.float32)
    name = path[-1]
    if name == "scale":
      value = 1.0 + 0.2 * rng.standard_normal(value.shape)
    elif name in ("bias", "cls", "pos_embedding"):
      value = 0.3 * rng.standard_normal(value.shape)
    elif not value.any():  # the zero-initialised head kernel
      value = 0.2 * rng.standard_normal(value.shape)
    out[path] = np.asarray(value, np.float32)
  return out


def _published_name(path) -> str:
  return "/".join(_PUBLISHED_BLOCK_NAMES.get(p, p) for p in path)


def _prelogits(model, params, images01):
  """The model's output (num_classes=0: its pre-logits) on images in [0, 1] scaled to [-1, 1]."""
  x = np.asarray(images01, np.float32) * 2.0 - 1.0
  return np.asarray(model.apply({"params": params}, x, train=False), np.float32)


def _without(tree, *keys):
  return {k: v for k, v in tree.items() if k not in keys}


def _vit_jax_commit(vit_jax_dir: str, given: str) -> str:
  if given:
    return given
  try:
    return subprocess.run(["git", "-C", vit_jax_dir, "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--vit_jax_dir", required=True,
                      help="a checkout of google-research/vision_transformer")
  parser.add_argument("--vit_jax_commit", default="",
                      help="its commit, for the record (default: git rev-parse HEAD)")
  parser.add_argument("--out_dir", default=os.path.join(os.path.dirname(__file__), "testdata"))
  args = parser.parse_args()

  # pylint: disable=import-outside-toplevel
  import flax
  import jax
  import ml_collections

  with tempfile.TemporaryDirectory() as tmp:
    models_vit, checkpoint = _import_vit_jax(args.vit_jax_dir, tmp)
    rng = np.random.default_rng(SEED)

    model = _model(models_vit, representation_size=REPRESENTATION, num_classes=CLASSES)
    init = model.init(jax.random.PRNGKey(0), np.ones((1, IMAGE, IMAGE, CHANNELS), np.float32),
                      train=False)["params"]
    flat = _randomised(flax.traverse_util.flatten_dict(flax.core.unfreeze(init)), rng)
    params = flax.traverse_util.unflatten_dict(flat)

    os.makedirs(args.out_dir, exist_ok=True)
    ckpt_path = os.path.join(args.out_dir, "vit_jax_tiny.npz")
    with open(ckpt_path, "wb") as f:
      np.savez(f, **{_published_name(path): value for path, value in flat.items()})

    # vit_jax's own loader must give back exactly the model's tree.
    loaded = flax.traverse_util.flatten_dict(flax.core.unfreeze(checkpoint.load(ckpt_path)))
    assert loaded.keys() == flat.keys(), (sorted(loaded), sorted(flat))
    for path, value in flat.items():
      np.testing.assert_array_equal(np.asarray(loaded[path]), value, err_msg=str(path))
    loaded = flax.traverse_util.unflatten_dict(loaded)

    images01 = rng.uniform(0.0, 1.0, (BATCH, IMAGE, IMAGE, CHANNELS)).astype(np.float32)
    images01_24 = rng.uniform(
        0.0, 1.0, (BATCH, RESIZED_IMAGE, RESIZED_IMAGE, CHANNELS)).astype(np.float32)
    drop_head = ml_collections.ConfigDict({"representation_size": None, "classifier": "token"})

    # Full model, the pre_logits Dense dropped by vit_jax's own fine-tuning loader.
    head_init = _model(models_vit, num_classes=CLASSES).init(
        jax.random.PRNGKey(1), images01[:1], train=False)["params"]
    restored = flax.core.unfreeze(checkpoint.load_pretrained(
        pretrained_path=ckpt_path, init_params=head_init, model_config=drop_head))
    assert not restored.get("pre_logits"), restored["pre_logits"]
    full_params = _without(restored, "head")
    prelogits_full = _prelogits(_model(models_vit), full_params, images01)

    # With the representation layer (pre_logits Dense + tanh) kept.
    prelogits_repr = _prelogits(_model(models_vit, representation_size=REPRESENTATION),
                                _without(loaded, "head"), images01)

    # The first CAPPED_LAYERS blocks only, same weights.
    transformer = {k: v for k, v in full_params["Transformer"].items()
                   if not k.startswith("encoderblock_")
                   or int(k.rsplit("_", 1)[1]) < CAPPED_LAYERS}
    capped_params = {**full_params, "Transformer": transformer}
    prelogits_cap2 = _prelogits(_model(models_vit, num_layers=CAPPED_LAYERS), capped_params,
                                images01)

    # Image size 24: the position embedding resized by vit_jax's loader.
    init24 = _model(models_vit, num_classes=CLASSES).init(
        jax.random.PRNGKey(2), images01_24[:1], train=False)["params"]
    restored24 = flax.core.unfreeze(checkpoint.load_pretrained(
        pretrained_path=ckpt_path, init_params=init24, model_config=drop_head))
    pos_embedding_24 = np.asarray(
        restored24["Transformer"]["posembed_input"]["pos_embedding"], np.float32)
    grid = RESIZED_IMAGE // PATCH
    assert pos_embedding_24.shape == (1, 1 + grid * grid, HIDDEN), pos_embedding_24.shape
    prelogits_resized24 = _prelogits(_model(models_vit), _without(restored24, "head"),
                                     images01_24)

  provenance = (f"google-research/vision_transformer "
                f"{_vit_jax_commit(args.vit_jax_dir, args.vit_jax_commit)}; "
                f"jax {jax.__version__}; flax {flax.__version__}; numpy {np.__version__}; "
                f"made by tests/pretrained/make_vit_jax_fixture.py")
  reference = dict(
      images01=images01, images01_24=images01_24, prelogits_full=prelogits_full,
      prelogits_repr=prelogits_repr, prelogits_cap2=prelogits_cap2,
      prelogits_resized24=prelogits_resized24, pos_embedding_24=pos_embedding_24,
      provenance=np.array(provenance))
  ref_path = os.path.join(args.out_dir, "vit_jax_tiny_reference.npz")
  with open(ref_path, "wb") as f:
    np.savez(f, **reference)
  for path in (ckpt_path, ref_path):
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")
  print(provenance)


if __name__ == "__main__":
  main()
