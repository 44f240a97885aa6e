"""Reads a local keras-hub `ViTBackbone` preset directory into the canonical `ViTCheckpoint`.

A preset directory (what `ViTBackbone.save_to_preset` or `keras_hub.models.ViTImageClassifier
.save_to_preset` writes, or a downloaded Kaggle/Hugging Face preset) holds `config.json` (the
backbone's class and arguments), `metadata.json`, `model.weights.h5` (or sharded weights with
`model.weights.json`) and, when saved with its preprocessor, `image_converter.json`.

What keras-hub 0.32's ViT computes (`keras_hub/src/models/vit/vit_layers.py`):

- Patches: `Conv2D(hidden_dim, patch_size, strides=patch_size, use_bias=use_patch_bias)`,
  flattened row-major; `ViTPatchingAndEmbedding.call` concatenates `[class_token, patches]` and
  then adds `position_embedding` over all `num_patches + 1` positions (the class token's row
  first), exactly the original ViT's order. Without `use_class_token` there is no class token
  and no class-token position: not importable (mtsys's head reads token 0).
- Blocks (`ViTEncoderBlock.call`): `x = x + mha(ln_1(x)); x + mlp(ln_2(x))`, where `MLP.dense_1`
  is `Dense(mlp_dim, activation="gelu")`: Keras 3's `gelu(x, approximate=False)`, the EXACT erf
  form (`keras/src/activations/activations.py: def gelu(x, approximate=False)`); biases follow
  `use_mha_bias` / `use_mlp_bias` (absent biases are read as zeros).
- Every LayerNorm (`ln_1`, `ln_2`, the encoder's final `ln`) uses the config's
  `layer_norm_epsilon` (default 1e-6); the backbone's output is the final-normalised sequence,
  whose token 0 is the pre-logits.
- Input: the image converter (`ImageConverter._call_python`) computes `pixels * scale + offset`
  on raw pixels in [0, 255] (its documented use: `scale=1 / 255` gives [0, 1]); the ViT presets
  converted from Hugging Face use `scale=1/127.5, offset=-1` ([-1, 1]). For mtsys's [0, 1]
  pixels that is `input_scale = 255 * scale`, `input_offset = offset` per channel; the legacy
  `mean`/`variance` converter arguments are converted as keras-hub's `ImageConverter.__init__`
  does. A preset without a converter keeps the ViT convention [-1, 1] unless `input_scale` /
  `input_offset` are given.

The weights are read by building the backbone with `ViTBackbone.from_preset` on the local
directory (keras-hub's own loader: it handles sharded and lower-precision weights); the path must
be an existing local directory, so nothing is ever downloaded. Only numpy arrays leave this
module.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional, Sequence

from absl import logging
import numpy as np

from mtsys import errors
from mtsys.pretrained import checkpoint_format as cf

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.weights.h5"
SHARDED_WEIGHTS_FILE = "model.weights.json"
IMAGE_CONVERTER_FILE = "image_converter.json"
PREPROCESSOR_FILE = "preprocessor.json"
BACKBONE_CLASS = "ViTBackbone"
# Model input for pixels in [0, 1] when the preset has no image converter: the ViT convention.
DEFAULT_SCALE, DEFAULT_OFFSET = 2.0, -1.0


def _fail(path: str, message: str):
  raise errors.CheckpointError(f"Checkpoint {path}: {message}")


def _load_json(path: str, name: str) -> dict:
  file = os.path.join(path, name)
  try:
    with open(file, encoding="utf-8") as f:
      value = json.load(f)
  except (OSError, ValueError) as e:
    _fail(path, f"cannot read {name} ({e}); expected a keras-hub preset's JSON file")
  if not isinstance(value, dict):
    _fail(path, f"{name} is not a JSON object (expected a keras-hub serialized config)")
  return value


def _backbone_config(path: str) -> dict:
  """The `config` of the preset's `config.json`, checked to be a class-token ViTBackbone."""
  config = _load_json(path, CONFIG_FILE)
  class_name = config.get("class_name")
  if class_name != BACKBONE_CLASS:
    registered = config.get("registered_name")
    _fail(path, f"config.json names backbone class {class_name!r}"
          + (f" ({registered!r})" if registered and registered != class_name else "")
          + f"; expected keras-hub's {BACKBONE_CLASS!r}")
  cfg = config.get("config")
  if not isinstance(cfg, dict):
    _fail(path, "config.json has no 'config' object (expected ViTBackbone's arguments)")
  for key in ("image_shape", "patch_size", "num_layers", "num_heads", "hidden_dim", "mlp_dim"):
    if key not in cfg:
      _fail(path, f"config.json is missing ViTBackbone argument {key!r}")
  if not cfg.get("use_class_token", True):
    _fail(path, "use_class_token=False: the ViTBackbone has no class token (expected a "
          "class-token ViT; mtsys's head reads the final-normalised class token)")
  if cfg.get("data_format", "channels_last") not in (None, "channels_last"):
    _fail(path, f"data_format={cfg['data_format']!r} (expected 'channels_last')")
  return cfg


def _image_size(path: str, cfg: dict) -> tuple[int, int, int]:
  """(image size, patch size, channels) from a square channels-last config."""
  shape = list(cfg["image_shape"])
  patch = cfg["patch_size"]
  patch = [patch, patch] if isinstance(patch, int) else list(patch)
  if len(shape) != 3 or shape[0] != shape[1] or shape[0] is None:
    _fail(path, f"image_shape={shape} (expected a square (size, size, channels) image)")
  if len(patch) != 2 or patch[0] != patch[1]:
    _fail(path, f"patch_size={cfg['patch_size']} (expected square patches)")
  return int(shape[0]), int(patch[0]), int(shape[2])


def _check_weights(path: str) -> None:
  if not (os.path.isfile(os.path.join(path, WEIGHTS_FILE))
          or os.path.isfile(os.path.join(path, SHARDED_WEIGHTS_FILE))):
    _fail(path, f"missing weights file {WEIGHTS_FILE!r} (expected a preset saved with "
          "its weights, e.g. by ViTBackbone.save_to_preset)")


def _per_channel(path: str, name: str, value, channels: int) -> tuple[float, ...]:
  values = [value] * channels if isinstance(value, (int, float)) else list(value)
  if len(values) != channels or not all(isinstance(v, (int, float)) for v in values):
    _fail(path, f"image converter {name}={value!r} (expected a number or {channels} numbers)")
  return tuple(float(v) for v in values)


def _converter_config(path: str) -> Optional[dict]:
  """The image converter's config: `image_converter.json`, else the preprocessor's nested one."""
  if os.path.isfile(os.path.join(path, IMAGE_CONVERTER_FILE)):
    return _load_json(path, IMAGE_CONVERTER_FILE).get("config") or {}
  if os.path.isfile(os.path.join(path, PREPROCESSOR_FILE)):
    nested = (_load_json(path, PREPROCESSOR_FILE).get("config") or {}).get("image_converter")
    if isinstance(nested, dict):
      return nested.get("config") or {}
  return None


def input_normalisation(path: str, channels: int) -> Optional[tuple[tuple, tuple]]:
  """(input_scale, input_offset) for pixels in [0, 1] from the preset's image converter.

  None when the preset has no image converter. The converter multiplies raw [0, 255] pixels by
  `scale` and adds `offset` (either may be None: skipped); the legacy `mean`/`variance`
  arguments become `scale / sqrt(variance)` and `-mean / sqrt(variance)` as in keras-hub.
  """
  cfg = _converter_config(path)
  if cfg is None:
    return None
  scale, offset = cfg.get("scale"), cfg.get("offset")
  if "mean" in cfg and "variance" in cfg:
    std = [math.sqrt(v) for v in _per_channel(path, "variance", cfg["variance"], channels)]
    mean = _per_channel(path, "mean", cfg["mean"], channels)
    base = _per_channel(path, "scale", 1.0 if scale is None else scale, channels)
    scale = [b / s for b, s in zip(base, std)]
    offset = [-m / s for m, s in zip(mean, std)]
  scale = (1.0,) * channels if scale is None else _per_channel(path, "scale", scale, channels)
  offset = (0.0,) * channels if offset is None else _per_channel(path, "offset", offset, channels)
  return tuple(255.0 * s for s in scale), offset


def _array(variable) -> np.ndarray:
  return np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable,
                    dtype=np.float32)


def _bias(layer, size) -> np.ndarray:
  """A layer's bias, or zeros of `size` when it was built without one."""
  bias = getattr(layer, "bias", None)
  return np.zeros(size, np.float32) if bias is None else _array(bias)


def _load_backbone(path: str):
  try:
    import keras_hub  # pylint: disable=g-import-not-at-top  (heavy; only when reading a preset)
  except ImportError as e:
    _fail(path, f"reading a keras-hub preset needs the keras-hub package ({e}); expected it "
          "installed from requirements.txt (keras-hub==0.32.0)")
  try:
    return keras_hub.models.ViTBackbone.from_preset(path, dtype="float32")
  except (ValueError, KeyError, OSError) as e:
    _fail(path, f"keras-hub could not load the ViTBackbone preset ({type(e).__name__}: {e})")


def _params(backbone) -> dict[str, np.ndarray]:
  """The canonical parameters of a built keras-hub ViTBackbone."""
  embed = backbone.get_layer("vit_patching_and_embedding")
  encoder = backbone.get_layer("vit_encoder")
  d = int(embed.hidden_dim)
  params = {
      cf.EMBEDDING_KERNEL: _array(embed.patch_embedding.kernel),
      cf.EMBEDDING_BIAS: _bias(embed.patch_embedding, (d,)),
      cf.CLS: _array(embed.class_token),
      cf.POS_EMBEDDING: _array(embed.position_embedding.embeddings)[None],
      cf.ENCODER_NORM_SCALE: _array(encoder.layer_norm.gamma),
      cf.ENCODER_NORM_BIAS: _array(encoder.layer_norm.beta),
  }
  for i, block in enumerate(encoder.encoder_layers):
    b = cf.block_prefix(i)
    h, k = int(block.num_heads), int(block.key_dim)
    m = int(block.mlp_dim)
    for norm, layer in (("LayerNorm_0", block.layer_norm_1), ("LayerNorm_2", block.layer_norm_2)):
      params[f"{b}{norm}/scale"] = _array(layer.gamma)
      params[f"{b}{norm}/bias"] = _array(layer.beta)
    mha = block.mha
    for proj, dense in (("query", mha.query_dense), ("key", mha.key_dense),
                        ("value", mha.value_dense)):
      params[f"{b}{cf.ATTENTION}/{proj}/kernel"] = _array(dense.kernel)
      params[f"{b}{cf.ATTENTION}/{proj}/bias"] = _bias(dense, (h, k))
    params[f"{b}{cf.ATTENTION}/out/kernel"] = _array(mha.output_dense.kernel)
    params[f"{b}{cf.ATTENTION}/out/bias"] = _bias(mha.output_dense, (d,))
    params[f"{b}MlpBlock_3/Dense_0/kernel"] = _array(block.mlp.dense_1.kernel)
    params[f"{b}MlpBlock_3/Dense_0/bias"] = _bias(block.mlp.dense_1, (m,))
    params[f"{b}MlpBlock_3/Dense_1/kernel"] = _array(block.mlp.dense_2.kernel)
    params[f"{b}MlpBlock_3/Dense_1/bias"] = _bias(block.mlp.dense_2, (d,))
  return params


def read(path: str, input_scale: Optional[Sequence[float]] = None,
         input_offset: Optional[Sequence[float]] = None) -> cf.ViTCheckpoint:
  """Reads a local keras-hub ViTBackbone preset directory.

  Args:
    path: the preset directory (config.json, metadata.json, model.weights.h5).
    input_scale, input_offset: per-channel overrides of the input normalisation for [0, 1]
      pixels (default: from the preset's image converter, else the ViT convention [-1, 1]).

  Returns:
    The validated canonical checkpoint (`gelu_approximate=False`: keras-hub's exact GELU).

  Raises:
    CheckpointError: not a local preset directory, another backbone class, no class token,
      missing weights, or weights that disagree with the config.
  """
  if "://" in path or not os.path.isdir(path):
    _fail(path, "not a local keras-hub preset directory (expected a directory holding "
          f"{CONFIG_FILE}, {METADATA_FILE} and {WEIGHTS_FILE}; presets are never downloaded)")
  for name in (CONFIG_FILE, METADATA_FILE):
    if not os.path.isfile(os.path.join(path, name)):
      _fail(path, f"missing {name} (expected a keras-hub preset directory)")
  cfg = _backbone_config(path)
  image_size, patch_size, channels = _image_size(path, cfg)
  _check_weights(path)
  normalisation = input_normalisation(path, channels)
  if normalisation is None:
    logging.info("keras-hub preset %s has no image converter; assuming inputs in [-1, 1].", path)
    normalisation = ((DEFAULT_SCALE,) * channels, (DEFAULT_OFFSET,) * channels)
  scale = tuple(float(v) for v in input_scale) if input_scale is not None else normalisation[0]
  offset = (tuple(float(v) for v in input_offset) if input_offset is not None
            else normalisation[1])
  backbone = _load_backbone(os.path.abspath(path))
  ckpt = cf.ViTCheckpoint(
      params=_params(backbone),
      patch_size=patch_size,
      hidden_size=int(cfg["hidden_dim"]),
      num_layers=int(cfg["num_layers"]),
      num_heads=int(cfg["num_heads"]),
      mlp_dim=int(cfg["mlp_dim"]),
      image_size=image_size,
      channels=channels,
      gelu_approximate=False,
      layer_norm_epsilon=float(cfg.get("layer_norm_epsilon", 1e-6)),
      input_scale=scale,
      input_offset=offset,
      source_kind="keras_hub",
      source_file=path,
      source_sha256=cf.file_sha256(path))
  cf.validate(ckpt)
  return ckpt
