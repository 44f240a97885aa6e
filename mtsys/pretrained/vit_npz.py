"""Reads original ViT / AugReg `.npz` checkpoints and big_vision's ViT checkpoints.

Two layouts of flat, '/'-joined parameter names are understood, both mapped to the canonical
`checkpoint_format.ViTCheckpoint` (the vit_jax names):

- the original `google-research/vision_transformer` (vit_jax) and AugReg files: the canonical
  names, with the published (pre-linen) block names `LayerNorm_0`, `MultiHeadDotProductAttention_1`,
  `LayerNorm_2`, `MlpBlock_3`, or the linen ones (`..._0`, `LayerNorm_1`, `MlpBlock_0`) of a tree
  saved from the linen model (vit_jax's `checkpoint.load` accepts both through flax's
  `convert_pre_linen`);
- big_vision (`big_vision/models/vit.py`): linen block names; `pos_embedding` at the top level
  (older files: `Transformer/pos_embedding`) added to the patch tokens before the class token is
  prepended, which becomes a canonical embedding whose class-token row is zero (an embedding that
  already has the class-token row, big_vision's "combined cls+posemb", is kept as it is);
  scanned encoders (`Transformer/encoderblock/...` with a leading layer axis) are split into
  blocks; a training checkpoint's `params/` (or `opt/target/`) subtree is used, as
  big_vision's `utils.load_params` does; bfloat16 arrays (stored by numpy as 2-byte void) are
  widened to float32.

The classifier `head/*` is dropped and an optional `pre_logits` Dense kept. Sizes come from the
shapes: patch size, channels and width from `embedding/kernel`, heads from the query kernel, MLP
width from `Dense_0`, blocks from the `encoderblock` names, image size from the position grid.
The models compute GELU's tanh form (flax's `nn.gelu`) on inputs in [-1, 1]. Global-average or
MAP pooling, hybrid ResNet stems, missing keys and disagreeing shapes are refused with a
`CheckpointError` naming the key.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import zipfile

import numpy as np

from mtsys import errors
from mtsys.pretrained import checkpoint_format as cf

SOURCE_KIND = "vit_npz"

# Canonical block sub-modules (the published names) and their linen (big_vision) names.
_LINEN_NAMES = {
    "LayerNorm_0": "LayerNorm_0",
    cf.ATTENTION: "MultiHeadDotProductAttention_0",
    "LayerNorm_2": "LayerNorm_1",
    "MlpBlock_3": "MlpBlock_0",
}
_BLOCK_LEAVES = (
    ("LayerNorm_0", "scale"), ("LayerNorm_0", "bias"),
    *((cf.ATTENTION, f"{proj}/{leaf}") for proj in ("query", "key", "value", "out")
      for leaf in ("kernel", "bias")),
    ("LayerNorm_2", "scale"), ("LayerNorm_2", "bias"),
    *(("MlpBlock_3", f"{dense}/{leaf}") for dense in ("Dense_0", "Dense_1")
      for leaf in ("kernel", "bias")),
)
_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/")
_SCANNED = "Transformer/encoderblock/"
_BIG_VISION_POSEMB = ("pos_embedding", "Transformer/pos_embedding")
_HYBRID = re.compile(r"^(conv_root|gn_root|block\d+)$")
_ORIGINAL, _BIG_VISION = "the original ViT layout", "big_vision's layout"


def _fail(path: str, message: str):
  raise errors.CheckpointError(f"Checkpoint {path}: {message}")


def _float32(path: str, key: str, value: np.ndarray) -> np.ndarray:
  """The array as float32; numpy stores bfloat16 as 2-byte void (big_vision's `recover_dtype`)."""
  if value.dtype.kind == "V" and value.dtype.itemsize == 2:
    bits = value.view(np.uint16).astype(np.uint32) << 16
    return bits.view(np.float32)
  if not np.issubdtype(value.dtype, np.floating):
    _fail(path, f"key {key!r} has dtype {value.dtype}; expected floating-point weights")
  return value.astype(np.float32)


def _read_remote(path: str) -> bytes:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      return f.read()
  except tf.errors.OpError as err:
    raise errors.CheckpointError(
        f"Checkpoint {path}: cannot be read ({type(err).__name__}: {err.message})") from err


def _load(path: str) -> tuple[dict[str, np.ndarray], str]:
  """The archive's arrays (float32) by name and the file's SHA-256."""
  try:
    if "://" in path:  # a remote file: read through TensorFlow's file system, hash the bytes
      data = _read_remote(path)
      sha256, source = hashlib.sha256(data).hexdigest(), io.BytesIO(data)
    else:
      sha256, source = cf.file_sha256(path), path
    loaded = np.load(source, allow_pickle=False)
    if not hasattr(loaded, "files"):
      _fail(path, f"holds a single array of shape {loaded.shape}, not an .npz archive of named "
            "weights (expected a ViT checkpoint saved with np.savez)")
    with loaded:
      arrays = {key: loaded[key] for key in loaded.files}
  except errors.CheckpointError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
    raise errors.CheckpointError(
        f"Checkpoint {path}: cannot be read as an .npz archive of named weights "
        f"({type(err).__name__}: {err})") from err
  return {key: _float32(path, key, value) for key, value in arrays.items()}, sha256


def _parameters(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The parameter subtree of a training checkpoint (`params/` or `opt/target/`), else all."""
  for prefix in ("params/", "opt/target/"):
    if cf.EMBEDDING_KERNEL not in arrays and any(k.startswith(prefix) for k in arrays):
      return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
  return arrays


def _reject_unsupported(path: str, arrays: dict[str, np.ndarray]) -> None:
  """Refuses hybrid ResNet stems, MAP heads and checkpoints without a class token."""
  for key in sorted(arrays):
    parts = key.split("/")
    if parts[0] != "Transformer" and any(_HYBRID.match(part) for part in parts[:-1]):
      _fail(path, f"key {key!r} belongs to a hybrid ResNet stem (an R+ViT checkpoint); only "
            "ViTs whose patch embedding is a plain convolution are supported")
  for key in sorted(arrays):
    if key.startswith("MAPHead_0/") or key == "probe":
      _fail(path, f"key {key!r} is a multihead attention-pooling head (pooling 'map'); only "
            "checkpoints that classify from a class token ('token') are supported")
  if cf.EMBEDDING_KERNEL not in arrays:
    _fail(path, f"missing key {cf.EMBEDDING_KERNEL!r} (expected a ViT checkpoint in "
          f"{_ORIGINAL} or {_BIG_VISION})")
  if cf.CLS not in arrays:
    _fail(path, f"missing key {cf.CLS!r}: the checkpoint has no class token (it pools by "
          "global average, 'gap'); only checkpoints that classify from a class token ('token') "
          "are supported")


def _unscan(path: str, arrays: dict[str, np.ndarray]) -> tuple[dict, dict, bool]:
  """Splits a scanned encoder into `encoderblock_{i}` arrays.

  Returns:
    The arrays, how messages name each (its source key, `'...'[i]` for a scanned block's
    slice), and whether the encoder was scanned.
  """
  labels = {key: repr(key) for key in arrays}
  scanned = sorted(k for k in arrays if k.startswith(_SCANNED))
  if not scanned:
    return arrays, labels, False
  looped = sorted(k for k in arrays if _BLOCK.match(k))
  if looped:
    _fail(path, f"has both a scanned encoder ({scanned[0]!r}) and per-block keys "
          f"({looped[0]!r}); expected one of them")
  depth = arrays[scanned[0]].shape[0] if arrays[scanned[0]].ndim else 0
  out = {k: v for k, v in arrays.items() if not k.startswith(_SCANNED)}
  for key in scanned:
    value = arrays[key]
    if value.ndim < 2 or value.shape[0] != depth:
      _fail(path, f"scanned key {key!r} has shape {value.shape}; expected a leading layer axis "
            f"of {depth} (as {scanned[0]!r}) over the per-block shape")
    rest = key[len(_SCANNED):]
    for i in range(depth):
      name = f"{cf.block_prefix(i)}{rest}"
      out[name], labels[name] = value[i], f"{key!r}[{i}]"
  return out, labels, True


def _posemb(path: str, arrays: dict[str, np.ndarray], labels: dict[str, str], layout: str):
  """The canonical position embedding (class-token row first), its label and source key."""
  found = [k for k in (cf.POS_EMBEDDING, *_BIG_VISION_POSEMB) if k in arrays]
  if not found:
    _fail(path, f"missing key {cf.POS_EMBEDDING!r} (expected {_ORIGINAL}, or 'pos_embedding' "
          f"in {_BIG_VISION}; fixed sin-cos position embeddings are not supported)")
  if len(found) > 1:
    _fail(path, f"has position embeddings under both {found[0]!r} and {found[1]!r}; expected one")
  key = found[0]
  value = arrays[key]
  width = arrays[cf.EMBEDDING_KERNEL].shape[-1]
  if value.ndim != 3 or value.shape[0] != 1 or value.shape[2] != width or value.shape[1] < 1:
    _fail(path, f"key {labels[key]} has shape {value.shape}; expected (1, positions, {width}) "
          f"(width {width} from {cf.EMBEDDING_KERNEL!r}, in {layout})")
  n = value.shape[1]
  if key != cf.POS_EMBEDDING and math.isqrt(n) ** 2 == n:
    # Added before the class token is prepended: the class token's position adds zero.
    value = np.concatenate([np.zeros_like(value[:, :1]), value], axis=1)
  elif math.isqrt(n - 1) ** 2 != n - 1:
    _fail(path, f"key {labels[key]} has {n} positions; expected 1 + a square grid "
          "(the class token's position, then one per patch)")
  return value, labels[key], key


def _canonical(path: str, arrays: dict[str, np.ndarray], labels: dict[str, str],
               scanned: bool):
  """Canonical params (no head), how messages name each, and the number of blocks."""
  blocks = {int(m.group(1)) for m in map(_BLOCK.match, arrays) if m}
  big_vision = scanned or any(k in arrays for k in _BIG_VISION_POSEMB)
  layout = _BIG_VISION if big_vision else _ORIGINAL
  # Block names: linen's numbering (big_vision, a linen tree) unless the published one is used.
  linen = not any(k.startswith(f"{cf.block_prefix(0)}{cf.ATTENTION}/") for k in arrays) and (
      big_vision or any(k.startswith(f"{cf.block_prefix(0)}{_LINEN_NAMES[cf.ATTENTION]}/")
                        for k in arrays))
  params, sources = {}, {}

  def take(canonical: str, source: str) -> None:
    if source not in arrays:
      missing = _BLOCK.sub(_SCANNED, source) if scanned else source
      _fail(path, f"missing key {missing!r} (expected {layout})")
    params[canonical], sources[canonical] = arrays[source], source

  for key in (cf.EMBEDDING_KERNEL, cf.EMBEDDING_BIAS, cf.CLS):
    take(key, key)
  params[cf.POS_EMBEDDING], pos_label, pos_key = _posemb(path, arrays, labels, layout)
  sources[cf.POS_EMBEDDING] = pos_key
  num_layers = max(blocks) + 1 if blocks else 1
  for i in range(num_layers):
    for module, leaf in _BLOCK_LEAVES:
      name = _LINEN_NAMES[module] if linen else module
      take(f"{cf.block_prefix(i)}{module}/{leaf}", f"{cf.block_prefix(i)}{name}/{leaf}")
  for key in (cf.ENCODER_NORM_SCALE, cf.ENCODER_NORM_BIAS):
    take(key, key)
  if cf.PRE_LOGITS_KERNEL in arrays or cf.PRE_LOGITS_BIAS in arrays:
    for key in (cf.PRE_LOGITS_KERNEL, cf.PRE_LOGITS_BIAS):
      take(key, key)
  used = set(sources.values())
  extra = sorted(k for k in arrays if k not in used and not k.startswith("head/"))
  if extra:
    _fail(path, f"unexpected key {labels[extra[0]]}"
          + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
          + f" (expected only the parameters of a class-token ViT in {layout})")
  out_labels = {k: labels[s] for k, s in sources.items()}
  out_labels[cf.POS_EMBEDDING] = pos_label
  return params, out_labels, num_layers


def _sizes(path: str, params: dict[str, np.ndarray], labels: dict[str, str]) -> dict:
  """Patch, channels, width, heads, MLP width and image size, from the shapes."""
  kernel = params[cf.EMBEDDING_KERNEL]
  if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1]:
    _fail(path, f"key {labels[cf.EMBEDDING_KERNEL]} has shape {kernel.shape}; expected "
          "(patch, patch, channels, width) with square patches")
  patch, _, channels, width = kernel.shape
  query_key = f"{cf.block_prefix(0)}{cf.ATTENTION}/query/kernel"
  query = params[query_key]
  if query.ndim != 3 or query.shape[0] != width or query.shape[1] * query.shape[2] != width:
    _fail(path, f"key {labels[query_key]} has shape {query.shape}; expected (width, heads, "
          f"width / heads) with width {width} (from {cf.EMBEDDING_KERNEL!r})")
  mlp_key = f"{cf.block_prefix(0)}MlpBlock_3/Dense_0/kernel"
  mlp = params[mlp_key]
  if mlp.ndim != 2 or mlp.shape[0] != width:
    _fail(path, f"key {labels[mlp_key]} has shape {mlp.shape}; expected (width, mlp_dim) with "
          f"width {width} (from {cf.EMBEDDING_KERNEL!r})")
  grid = math.isqrt(params[cf.POS_EMBEDDING].shape[1] - 1)
  return dict(patch_size=patch, channels=channels, hidden_size=width, num_heads=query.shape[1],
              mlp_dim=mlp.shape[1], image_size=grid * patch)


def _check_shapes(path: str, ckpt: cf.ViTCheckpoint, labels: dict[str, str]) -> None:
  """Every parameter's shape must agree with the sizes inferred from the first ones."""
  expected = cf.expected_shapes(ckpt)
  if cf.PRE_LOGITS_KERNEL in ckpt.params:
    kernel = ckpt.params[cf.PRE_LOGITS_KERNEL]
    size = kernel.shape[-1] if kernel.ndim else 0
    expected[cf.PRE_LOGITS_KERNEL] = (ckpt.hidden_size, size)
    expected[cf.PRE_LOGITS_BIAS] = (size,)
  for key, shape in expected.items():
    found = ckpt.params[key].shape
    if found != shape:
      _fail(path, f"key {labels[key]} has shape {found}; expected {shape} (patch "
            f"{ckpt.patch_size}, {ckpt.channels} channels, width {ckpt.hidden_size} from "
            f"{cf.EMBEDDING_KERNEL!r}; {ckpt.num_heads} heads, MLP {ckpt.mlp_dim} from block 0; "
            f"image {ckpt.image_size} from the position embedding)")


def read(path: str) -> cf.ViTCheckpoint:
  """Reads an original ViT / AugReg or big_vision `.npz` checkpoint.

  Args:
    path: the `.npz` file (a local path, or a URL TensorFlow's file system reads).

  Returns:
    The canonical checkpoint: float32 params without the classifier head, the sizes inferred
    from the shapes, tanh-form GELU, inputs in [-1, 1] (scale 2, offset -1 per channel), and
    the provenance (`source_kind` "vit_npz", the file, its SHA-256).

  Raises:
    CheckpointError: the file cannot be read; a key is missing or a shape disagrees with the
      sizes the others imply; the checkpoint pools by global average or MAP instead of a class
      token; it has a hybrid ResNet stem. The message names the file and the key.
  """
  arrays, sha256 = _load(path)
  arrays = _parameters(arrays)
  _reject_unsupported(path, arrays)
  arrays, labels, scanned = _unscan(path, arrays)
  params, labels, num_layers = _canonical(path, arrays, labels, scanned)
  sizes = _sizes(path, params, labels)
  source_file = path if "://" in path else os.path.abspath(path)
  channels = sizes["channels"]
  ckpt = cf.ViTCheckpoint(
      params=params, num_layers=num_layers, gelu_approximate=True, layer_norm_epsilon=1e-6,
      input_scale=(2.0,) * channels, input_offset=(-1.0,) * channels, source_kind=SOURCE_KIND,
      source_file=source_file, source_sha256=sha256, **sizes)
  _check_shapes(path, ckpt, labels)
  cf.validate(ckpt)
  return ckpt
