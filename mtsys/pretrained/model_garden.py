"""Reads a Model Garden (tf-models-official) ViT checkpoint into the canonical `ViTCheckpoint`.

The checkpoint is a TF2 object-based checkpoint of `official.vision.modeling.backbones.vit
.VisionTransformer` (a tf-keras functional model), saved on its own (`tf.train.Checkpoint(
backbone=model)`) or inside a bigger object (a Model Garden trainer's `model/...`). It is read
with `tf.train.load_checkpoint`, by variable name only: no tf-keras model is built and only numpy
arrays leave this module. The variables are found by their object-graph names under the
`Encoder` layer (`.../_encoder_layers/<i>/_attention_layer/_query_dense/kernel/...`); the model
that holds that encoder holds the patch `Conv2D` (the one rank-4 kernel), the `TokenLayer`'s
`cls` and the optional `pre_logits` Dense (`representation_size`).

What Model Garden's ViT computes (tf-models-official 2.20):

- `VisionTransformer.__init__` (`official/vision/modeling/backbones/vit.py`): patch `Conv2D`,
  reshape row-major, `TokenLayer` prepends `cls` (only when `pooler == 'token'`), then the
  `Encoder` adds `posembed_input/pos_embedding` over all `1 + g*g` positions: the class token's
  row first, as in the original ViT. `pooler='gap'`/`'none'` checkpoints have no `cls`: refused.
- `Encoder.build`: `nn_blocks.TransformerEncoderBlock(inner_activation=activations.gelu,
  norm_first=True, norm_epsilon=1e-6, ...)` and a final `LayerNormalization(epsilon=1e-6)`;
  `official/modeling/activations/gelu.py`: `tf_keras.activations.gelu(x, approximate=True)`,
  the TANH approximation (as flax's default).
- `TransformerEncoderBlock.call` (`official/nlp/modeling/layers/transformer_encoder_block.py`,
  via `official/vision/modeling/layers/nn_blocks.py`): pre-LN, `x + attn(LN(x))` then
  `x + output(gelu(intermediate(LN(x))))`; attention is `tf_keras.layers.MultiHeadAttention`
  (kernels `(D, H, D/H)`, output `(H, D/H, D)`). A block with layer scale
  (`layer_scale_init_value > 0`) has extra variables and is refused.
- Input: Model Garden's classification input pipeline
  (`official/vision/dataloaders/classification_input.py`, also `inference_fn`) feeds
  `normalize_image(image, offset=MEAN_RGB, scale=STDDEV_RGB)` on [0, 255] pixels, i.e.
  `(x01 - MEAN_NORM) / STDDEV_NORM` with ImageNet's mean (0.485, 0.456, 0.406) and std
  (0.229, 0.224, 0.225) (`official/vision/ops/preprocess_ops.py`). The checkpoint does not record
  it, so that is the default; `input_scale`/`input_offset` override it (e.g. 2 and -1 for a
  checkpoint converted from the original ViT, which expects [-1, 1]).
"""

from __future__ import annotations

import math
import re
from typing import Optional, Sequence

import numpy as np

from mtsys import errors
from mtsys.pretrained import checkpoint_format as cf

# official/vision/ops/preprocess_ops.py: MEAN_NORM, STDDEV_NORM (ImageNet, pixels in [0, 1]).
MEAN_NORM = (0.485, 0.456, 0.406)
STDDEV_NORM = (0.229, 0.224, 0.225)
DEFAULT_SCALE = tuple(1.0 / s for s in STDDEV_NORM)
DEFAULT_OFFSET = tuple(-m / s for m, s in zip(MEAN_NORM, STDDEV_NORM))

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_QUERY = re.compile(r"^(.*/)?_encoder_layers/0/_attention_layer/_query_dense/kernel"
                    + re.escape(SUFFIX) + "$")
_BLOCK = re.compile(r"^_encoder_layers/(\d+)/(.*)$")

# Block variables (relative to `_encoder_layers/<i>/`, without SUFFIX) -> canonical names.
BLOCK_NAMES = {
    "_attention_layer_norm/gamma": "LayerNorm_0/scale",
    "_attention_layer_norm/beta": "LayerNorm_0/bias",
    "_output_layer_norm/gamma": "LayerNorm_2/scale",
    "_output_layer_norm/beta": "LayerNorm_2/bias",
    "_intermediate_dense/kernel": "MlpBlock_3/Dense_0/kernel",
    "_intermediate_dense/bias": "MlpBlock_3/Dense_0/bias",
    "_output_dense/kernel": "MlpBlock_3/Dense_1/kernel",
    "_output_dense/bias": "MlpBlock_3/Dense_1/bias",
}
for _proj in ("query", "key", "value"):
  for _kind in ("kernel", "bias"):
    BLOCK_NAMES[f"_attention_layer/_{_proj}_dense/{_kind}"] = f"{cf.ATTENTION}/{_proj}/{_kind}"
BLOCK_NAMES["_attention_layer/_output_dense/kernel"] = f"{cf.ATTENTION}/out/kernel"
BLOCK_NAMES["_attention_layer/_output_dense/bias"] = f"{cf.ATTENTION}/out/bias"

ENCODER_NAMES = {
    "_pos_embed/pos_embedding": cf.POS_EMBEDDING,
    "_norm/gamma": cf.ENCODER_NORM_SCALE,
    "_norm/beta": cf.ENCODER_NORM_BIAS,
}


def _fail(path: str, message: str):
  raise errors.CheckpointError(f"Checkpoint {path}: {message}")


def checkpoint_prefix(path: str) -> str:
  """The checkpoint prefix: `path` itself, or a directory's latest checkpoint."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if tf.io.gfile.isdir(path):
    prefix = tf.train.latest_checkpoint(path)
    if not prefix:
      _fail(path, "directory has no TensorFlow checkpoint (expected a 'checkpoint' file naming "
            "one, as tf.train.CheckpointManager writes)")
    return prefix
  if not tf.io.gfile.exists(path + ".index"):
    _fail(path, "no such TensorFlow checkpoint (expected a prefix with its .index file, or a "
          "directory with a 'checkpoint' file)")
  return path


def _variables(path: str, prefix: str):
  """(reader, {name: shape}) of the checkpoint's model variables (no optimizer slots)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  try:
    reader = tf.train.load_checkpoint(prefix)
  except (tf.errors.OpError, ValueError) as e:
    _fail(path, f"cannot read the TensorFlow checkpoint {prefix} ({e})")
  shapes = {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()
            if name.endswith(SUFFIX) and ".OPTIMIZER_SLOT" not in name}
  return reader, shapes


def _encoder_prefix(path: str, shapes: dict) -> str:
  """The object path of the checkpoint's one ViT `Encoder` (`backbone/layer_with_weights-2/`)."""
  found = sorted((m.group(1) or "") for m in map(_QUERY.match, shapes) if m)
  if not found:
    _fail(path, "no Model Garden ViT encoder variables (expected "
          "'.../_encoder_layers/0/_attention_layer/_query_dense/kernel' from "
          "official.vision.modeling.backbones.vit.VisionTransformer)")
  if len(found) > 1:
    _fail(path, f"{len(found)} ViT encoders ({', '.join(repr(f) for f in found)}); expected one")
  return found[0]


def _parent(prefix: str) -> str:
  """The object path of the layer holding the one at `prefix` ('' at the root)."""
  parts = prefix.rstrip("/").split("/")
  return "/".join(parts[:-1]) + "/" if len(parts) > 1 else ""


def _model_variables(path: str, shapes: dict, model: str, encoder: str) -> dict[str, str]:
  """The canonical names of the model's own (non-encoder) variables: conv, cls, pre_logits."""
  names: dict[str, str] = {}
  direct = {}
  for name, shape in shapes.items():
    if not name.startswith(model) or name.startswith(encoder):
      continue
    rest = name[len(model):-len(SUFFIX)].split("/")
    if len(rest) == 2:
      direct.setdefault(rest[0], {})[rest[1]] = (name, shape)
  for layer, variables in sorted(direct.items()):
    if "cls" in variables and len(variables["cls"][1]) == 3:
      names[variables["cls"][0]] = cf.CLS
    elif "kernel" in variables and len(variables["kernel"][1]) == 4:
      if cf.EMBEDDING_KERNEL in names.values():
        _fail(path, f"two patch-embedding kernels under {model!r} (expected one ViT)")
      names[variables["kernel"][0]] = cf.EMBEDDING_KERNEL
      if "bias" not in variables:
        _fail(path, f"missing key '{model}{layer}/bias{SUFFIX}' (the patch Conv2D's bias)")
      names[variables["bias"][0]] = cf.EMBEDDING_BIAS
    elif "kernel" in variables and len(variables["kernel"][1]) == 2 and "bias" in variables:
      names[variables["kernel"][0]] = cf.PRE_LOGITS_KERNEL
      names[variables["bias"][0]] = cf.PRE_LOGITS_BIAS
  if cf.EMBEDDING_KERNEL not in names.values():
    _fail(path, f"missing the patch Conv2D kernel (a rank-4 'kernel' variable beside the encoder "
          f"under {model or 'the checkpoint root'!r})")
  if cf.CLS not in names.values():
    _fail(path, "no class token variable 'cls' (the ViT was built with pooler 'gap' or 'none'; "
          "expected pooler='token': mtsys's head reads the final-normalised class token)")
  if list(names.values()).count(cf.PRE_LOGITS_KERNEL) > 1:
    _fail(path, f"more than one Dense beside the encoder under {model!r} (expected at most the "
          "'pre_logits' Dense)")
  return names


def _encoder_variables(path: str, shapes: dict, encoder: str) -> dict[str, str]:
  """The canonical names of the encoder's variables; unknown ones (layer scale, ...) refused."""
  names: dict[str, str] = {}
  for name in shapes:
    if not name.startswith(encoder):
      continue
    rest = name[len(encoder):-len(SUFFIX)]
    if rest in ENCODER_NAMES:
      names[name] = ENCODER_NAMES[rest]
      continue
    match = _BLOCK.match(rest)
    if not match or match.group(2) not in BLOCK_NAMES:
      _fail(path, f"unexpected variable {name!r} in the ViT encoder (expected a standard "
            "Model Garden ViT block: no layer scale, no separate key/value norm)")
    names[name] = cf.block_prefix(int(match.group(1))) + BLOCK_NAMES[match.group(2)]
  return names


def _check_complete(path: str, names: dict[str, str], encoder: str) -> int:
  """The number of blocks; raises naming the first Model Garden variable a block or the
  encoder lacks."""
  blocks = {int(m.group(1)) for m in map(_BLOCK.match, (
      n[len(encoder):] for n in names if n.startswith(encoder))) if m}
  num_layers = max(blocks) + 1
  expected = [f"{encoder}{rest}" for rest in ENCODER_NAMES]
  expected += [f"{encoder}_encoder_layers/{i}/{rest}" for i in range(num_layers)
               for rest in BLOCK_NAMES]
  for name in expected:
    if name + SUFFIX not in names:
      _fail(path, f"missing key '{name}{SUFFIX}' (expected every variable of a Model Garden "
            f"ViT encoder with {num_layers} blocks)")
  return num_layers


def read(path: str, input_scale: Optional[Sequence[float]] = None,
         input_offset: Optional[Sequence[float]] = None) -> cf.ViTCheckpoint:
  """Reads a Model Garden ViT checkpoint (a prefix, or a directory with a `checkpoint` file).

  Args:
    path: the checkpoint prefix (`.../ckpt-1`) or its directory.
    input_scale, input_offset: per-channel model input for pixels in [0, 1]; default Model
      Garden's ImageNet mean/std normalisation (the checkpoint does not record it).

  Returns:
    The validated canonical checkpoint (tanh GELU, LayerNorm epsilon 1e-6).

  Raises:
    CheckpointError: not a TF checkpoint, no ViT encoder, no class token, unknown or missing
      variables, or shapes that disagree with each other.
  """
  prefix = checkpoint_prefix(path)
  reader, shapes = _variables(path, prefix)
  encoder = _encoder_prefix(path, shapes)
  names = _encoder_variables(path, shapes, encoder)
  names.update(_model_variables(path, shapes, _parent(encoder), encoder))
  num_layers = _check_complete(path, names, encoder)
  params = {canon: np.asarray(reader.get_tensor(name), dtype=np.float32)
            for name, canon in names.items()}
  patch, _, channels, hidden = params[cf.EMBEDDING_KERNEL].shape
  query = params[cf.block_prefix(0) + f"{cf.ATTENTION}/query/kernel"]
  mlp = params[cf.block_prefix(0) + "MlpBlock_3/Dense_0/kernel"]
  positions = params[cf.POS_EMBEDDING].shape[1] - 1
  grid = math.isqrt(max(positions, 0))
  if positions < 1 or grid * grid != positions:
    _fail(path, f"position embedding of shape {params[cf.POS_EMBEDDING].shape} has "
          f"{positions + 1} positions (expected 1 class-token position + a square grid)")
  scale = DEFAULT_SCALE if input_scale is None else tuple(float(v) for v in input_scale)
  offset = DEFAULT_OFFSET if input_offset is None else tuple(float(v) for v in input_offset)
  ckpt = cf.ViTCheckpoint(
      params=params,
      patch_size=int(patch),
      hidden_size=int(hidden),
      num_layers=num_layers,
      num_heads=int(query.shape[1]),
      mlp_dim=int(mlp.shape[1]),
      image_size=int(grid * patch),
      channels=int(channels),
      gelu_approximate=True,
      layer_norm_epsilon=1e-6,
      input_scale=scale,
      input_offset=offset,
      source_kind="model_garden",
      source_file=path,
      source_sha256=cf.file_sha256(prefix))  # the files read: `.index` and `.data-*`
  cf.validate(ckpt)
  return ckpt
