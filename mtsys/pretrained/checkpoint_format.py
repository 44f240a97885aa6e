"""The canonical pretrained ViT checkpoint every reader produces, and what is done to it.

A reader (`vit_npz`, `keras_hub_preset`, `model_garden`) turns its source into a `ViTCheckpoint`:
float32 arrays named as in the original `google-research/vision_transformer` npz files
(un-scanned: one `encoderblock_{i}` per block), without the classifier head, plus the sizes and
the input normalisation the source model expects. The function this names (the contract every
reader's equivalence test relies on, `mtsys.pretrained.testing.reference_prelogits` in numpy):

    x = conv_{p x p, stride p}(images01 * input_scale + input_offset)   # embedding/*
    tokens = [cls; flatten_row_major(x)] + pos_embedding                 # cls, posembed_input
    for each block:  x = x + Attn(LN_0(x));  x = x + Dense_1(gelu(Dense_0(LN_2(x))))
    pre_logits = encoder_norm(tokens)[:, 0]    [then tanh(pre_logits Dense), when kept]

A source that adds its position embedding before prepending the class token (big_vision)
becomes a `pos_embedding` whose class-token row is zero.

`validate` checks a checkpoint against its declared sizes; `cap_blocks` keeps the first blocks;
`resize_image` resamples the position-embedding grid exactly as vit_jax's `checkpoint.py` does;
`file_sha256` fingerprints the source for the components' provenance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
import os
from typing import Optional

import numpy as np

from mtsys import errors
from mtsys.config import checkpoints

EMBEDDING_KERNEL = "embedding/kernel"
EMBEDDING_BIAS = "embedding/bias"
CLS = "cls"
POS_EMBEDDING = "Transformer/posembed_input/pos_embedding"
ENCODER_NORM_SCALE = "Transformer/encoder_norm/scale"
ENCODER_NORM_BIAS = "Transformer/encoder_norm/bias"
PRE_LOGITS_KERNEL = "pre_logits/kernel"
PRE_LOGITS_BIAS = "pre_logits/bias"
ATTENTION = "MultiHeadDotProductAttention_1"
KINDS = checkpoints.KINDS  # ("vit_npz", "keras_hub", "model_garden")


def block_prefix(i: int) -> str:
  """The name prefix of transformer block `i`: `Transformer/encoderblock_{i}/`."""
  return f"Transformer/encoderblock_{i}/"


@dataclasses.dataclass
class ViTCheckpoint:
  """A pretrained ViT in the canonical layout (see the module docstring).

  Attributes:
    params: float32 arrays by vit_jax name; no classifier head.
    patch_size, hidden_size, num_layers, num_heads, mlp_dim: the architecture.
    image_size: the native image size (position-embedding grid * patch_size).
    channels: image channels.
    gelu_approximate: True for GELU's tanh form (flax's default), False for the exact one.
    layer_norm_epsilon: epsilon of every LayerNorm.
    input_scale, input_offset: the source's input, per channel: pixel_in_[0,1] * scale + offset.
    source_kind: "vit_npz", "keras_hub" or "model_garden".
    source_file: the file or directory read, as given.
    source_sha256: `file_sha256(source_file)`.
  """

  params: dict[str, np.ndarray]
  patch_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  image_size: int
  channels: int = 3
  gelu_approximate: bool = True
  layer_norm_epsilon: float = 1e-6
  input_scale: tuple = (2.0, 2.0, 2.0)
  input_offset: tuple = (-1.0, -1.0, -1.0)
  source_kind: str = ""
  source_file: str = ""
  source_sha256: str = ""

  @property
  def grid_size(self) -> int:
    """Patches per side at the native image size."""
    return self.image_size // self.patch_size

  @property
  def pre_logits_size(self) -> int:
    """Width of the optional pre-logits Dense; 0 when the checkpoint has none."""
    kernel = self.params.get(PRE_LOGITS_KERNEL)
    return 0 if kernel is None else int(np.shape(kernel)[-1])

  @property
  def name(self) -> str:
    """How error messages name the checkpoint."""
    return self.source_file or "<in memory>"


def expected_shapes(ckpt: ViTCheckpoint) -> dict[str, tuple[int, ...]]:
  """Every required parameter's name and shape for the checkpoint's declared sizes."""
  p, c, d = ckpt.patch_size, ckpt.channels, ckpt.hidden_size
  h, m = ckpt.num_heads, ckpt.mlp_dim
  k = d // h
  g = ckpt.grid_size
  shapes = {
      EMBEDDING_KERNEL: (p, p, c, d),
      EMBEDDING_BIAS: (d,),
      CLS: (1, 1, d),
      POS_EMBEDDING: (1, 1 + g * g, d),
  }
  for i in range(ckpt.num_layers):
    b = block_prefix(i)
    for norm in ("LayerNorm_0", "LayerNorm_2"):
      shapes[f"{b}{norm}/scale"] = (d,)
      shapes[f"{b}{norm}/bias"] = (d,)
    for proj in ("query", "key", "value"):
      shapes[f"{b}{ATTENTION}/{proj}/kernel"] = (d, h, k)
      shapes[f"{b}{ATTENTION}/{proj}/bias"] = (h, k)
    shapes[f"{b}{ATTENTION}/out/kernel"] = (h, k, d)
    shapes[f"{b}{ATTENTION}/out/bias"] = (d,)
    shapes[f"{b}MlpBlock_3/Dense_0/kernel"] = (d, m)
    shapes[f"{b}MlpBlock_3/Dense_0/bias"] = (m,)
    shapes[f"{b}MlpBlock_3/Dense_1/kernel"] = (m, d)
    shapes[f"{b}MlpBlock_3/Dense_1/bias"] = (d,)
  shapes[ENCODER_NORM_SCALE] = (d,)
  shapes[ENCODER_NORM_BIAS] = (d,)
  return shapes


def _fail(ckpt: ViTCheckpoint, message: str):
  raise errors.CheckpointError(f"Checkpoint {ckpt.name}: {message}")


def _check_sizes(ckpt: ViTCheckpoint) -> None:
  for field in ("patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim", "image_size",
                "channels"):
    value = getattr(ckpt, field)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
      _fail(ckpt, f"{field}={value!r} (expected a positive integer)")
  if ckpt.hidden_size % ckpt.num_heads:
    _fail(ckpt, f"hidden_size={ckpt.hidden_size} is not divisible by "
          f"num_heads={ckpt.num_heads}")
  check_image_size(ckpt, ckpt.image_size)
  eps = ckpt.layer_norm_epsilon
  if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
    _fail(ckpt, f"layer_norm_epsilon={eps!r} (expected a positive float)")
  if not isinstance(ckpt.gelu_approximate, bool):
    _fail(ckpt, f"gelu_approximate={ckpt.gelu_approximate!r} (expected a bool)")
  for field in ("input_scale", "input_offset"):
    values = tuple(getattr(ckpt, field))
    if len(values) != ckpt.channels or not all(
        isinstance(v, numbers.Real) and math.isfinite(v) for v in values):
      _fail(ckpt, f"{field}={values!r} (expected {ckpt.channels} finite numbers, one per "
            "channel)")
  if ckpt.source_kind and ckpt.source_kind not in KINDS:
    _fail(ckpt, f"source_kind={ckpt.source_kind!r} (expected one of {KINDS})")


def check_image_size(ckpt: ViTCheckpoint, image_size: int) -> None:
  """Raises CheckpointError unless `image_size` is a positive multiple of the patch size."""
  if (isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral)
      or image_size <= 0 or image_size % ckpt.patch_size):
    _fail(ckpt, f"image size {image_size!r} is not a multiple of the patch size "
          f"{ckpt.patch_size} (expected a positive multiple, e.g. "
          f"{ckpt.patch_size * max(1, ckpt.grid_size)})")


def validate(ckpt: ViTCheckpoint) -> None:
  """Checks that the checkpoint holds exactly the parameters its declared sizes call for.

  Every expected key must be present with the expected shape; the optional `pre_logits`
  kernel and bias come together (kernel `(D, R)`, bias `(R,)`); no other key is allowed (a
  classifier `head/*`, pooling or stem parameters mean a reader let through what it should
  have refused). Arrays must be float32.

  Raises:
    CheckpointError: naming the checkpoint, the key and the expected vs found shape.
  """
  _check_sizes(ckpt)
  shapes = expected_shapes(ckpt)
  params = ckpt.params
  for key, shape in shapes.items():
    if key not in params:
      _fail(ckpt, f"missing key {key!r} (expected the original ViT layout, shape {shape})")
    found = tuple(np.shape(params[key]))
    if found != shape:
      _fail(ckpt, f"key {key!r} has shape {found}; expected {shape} (patch_size="
            f"{ckpt.patch_size}, hidden_size={ckpt.hidden_size}, num_heads={ckpt.num_heads}, "
            f"mlp_dim={ckpt.mlp_dim}, image_size={ckpt.image_size}, channels={ckpt.channels})")
  has_kernel, has_bias = PRE_LOGITS_KERNEL in params, PRE_LOGITS_BIAS in params
  if has_kernel != has_bias:
    present, absent = ((PRE_LOGITS_KERNEL, PRE_LOGITS_BIAS) if has_kernel
                       else (PRE_LOGITS_BIAS, PRE_LOGITS_KERNEL))
    _fail(ckpt, f"has {present!r} but is missing key {absent!r}")
  if has_kernel:
    kernel = tuple(np.shape(params[PRE_LOGITS_KERNEL]))
    r = kernel[-1] if kernel else 0
    for key, shape in ((PRE_LOGITS_KERNEL, (ckpt.hidden_size, r)), (PRE_LOGITS_BIAS, (r,))):
      found = tuple(np.shape(params[key]))
      if found != shape or r <= 0:
        _fail(ckpt, f"key {key!r} has shape {found}; expected {shape}")
  extra = sorted(set(params) - set(shapes) - {PRE_LOGITS_KERNEL, PRE_LOGITS_BIAS})
  if extra:
    _fail(ckpt, f"unexpected key {extra[0]!r}" + (f" (and {len(extra) - 1} more)"
                                                   if len(extra) > 1 else "")
          + f" for num_layers={ckpt.num_layers} (expected only the original ViT layout "
          "without the classifier head)")
  for key, value in params.items():
    if np.asarray(value).dtype != np.float32:
      _fail(ckpt, f"key {key!r} has dtype {np.asarray(value).dtype}; expected float32")


def cap_blocks(ckpt: ViTCheckpoint, num_blocks: int) -> ViTCheckpoint:
  """The checkpoint with only its first `num_blocks` transformer blocks (0: all of them).

  Raises:
    CheckpointError: `num_blocks` negative or more than the checkpoint has.
  """
  if isinstance(num_blocks, bool) or not isinstance(num_blocks, numbers.Integral) or (
      num_blocks < 0 or num_blocks > ckpt.num_layers):
    _fail(ckpt, f"num_blocks={num_blocks!r} (expected 0 for all, or 1 to "
          f"{ckpt.num_layers}: the checkpoint has {ckpt.num_layers} blocks)")
  if num_blocks in (0, ckpt.num_layers):
    return ckpt
  dropped = tuple(block_prefix(i) for i in range(num_blocks, ckpt.num_layers))
  params = {k: v for k, v in ckpt.params.items() if not k.startswith(dropped)}
  return dataclasses.replace(ckpt, params=params, num_layers=int(num_blocks))


def resize_position_embedding(posemb: np.ndarray, grid_size: int) -> np.ndarray:
  """A `(1, 1 + g*g, D)` embedding resampled to `grid_size`, as vit_jax's `checkpoint.py`.

  The class-token row is kept; the grid is resampled with
  `scipy.ndimage.zoom(grid, (g_new / g_old, g_new / g_old, 1), order=1)`.
  """
  import scipy.ndimage  # pylint: disable=g-import-not-at-top

  posemb = np.asarray(posemb)
  tok, grid = posemb[:, :1], posemb[0, 1:]
  old = math.isqrt(len(grid))
  grid = grid.reshape(old, old, -1)
  zoom = (grid_size / old, grid_size / old, 1)
  grid = scipy.ndimage.zoom(grid, zoom, order=1)
  grid = grid.reshape(1, grid_size * grid_size, -1)
  return np.concatenate([tok, grid], axis=1).astype(posemb.dtype)


def resize_image(ckpt: ViTCheckpoint, image_size: int) -> ViTCheckpoint:
  """The checkpoint for another native image size: its position-embedding grid resampled.

  0 (or the current size) returns the checkpoint unchanged.

  Raises:
    CheckpointError: `image_size` not a positive multiple of the patch size.
  """
  if image_size in (0, ckpt.image_size) and not isinstance(image_size, bool):
    return ckpt
  check_image_size(ckpt, image_size)
  params = dict(ckpt.params)
  params[POS_EMBEDDING] = resize_position_embedding(params[POS_EMBEDDING],
                                                    image_size // ckpt.patch_size)
  return dataclasses.replace(ckpt, params=params, image_size=int(image_size))


def _digest(path: str) -> str:
  sha = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      sha.update(chunk)
  return sha.hexdigest()


def _listing_sha256(files: list[tuple[str, str]]) -> str:
  """SHA-256 of `sha256sum`-style lines "<digest>  <name>\\n" in sorted name order."""
  sha = hashlib.sha256()
  for name, path in sorted(files):
    sha.update(f"{_digest(path)}  {name}\n".encode())
  return sha.hexdigest()


def file_sha256(path: str) -> str:
  """The SHA-256 fingerprint of a checkpoint file, directory or TF checkpoint prefix.

  A file: the SHA-256 of its bytes. A directory: the SHA-256 of the `sha256sum`-style listing
  ("<digest>  <relative name>" lines, sorted by name, "/"-separated) of every file under it. A
  TF checkpoint prefix (`ckpt-1`, whose files are `ckpt-1.index`, `ckpt-1.data-*`): the same
  listing of those files.

  Raises:
    CheckpointError: nothing at `path`.
  """
  if os.path.isfile(path):
    return _digest(path)
  files: list[tuple[str, str]] = []
  if os.path.isdir(path):
    for dirpath, _, names in os.walk(path):
      for name in names:
        full = os.path.join(dirpath, name)
        files.append((os.path.relpath(full, path).replace(os.sep, "/"), full))
  else:
    parent, stem = os.path.split(path)
    if os.path.isdir(parent or "."):
      for name in os.listdir(parent or "."):
        full = os.path.join(parent, name)
        if name.startswith(stem + ".") and os.path.isfile(full):
          files.append((name, full))
    if not files:
      raise errors.CheckpointError(f"Checkpoint {path}: no such file or directory.")
  return _listing_sha256(files)


def summary(ckpt: ViTCheckpoint, source_num_layers: Optional[int] = None,
            keep_pre_logits: Optional[bool] = None) -> str:
  """One line describing the checkpoint (for logs and the import job's output).

  `source_num_layers` adds "(of N)" to a capped block count; `keep_pre_logits` says whether a
  pre-logits layer is kept or dropped (None: just its size).
  """
  pre_logits = ""
  if ckpt.pre_logits_size:
    pre_logits = f", pre-logits {ckpt.pre_logits_size}" + (
        "" if keep_pre_logits is None else " kept" if keep_pre_logits else " dropped")
  layers = ckpt.num_layers
  capped = (f" (of {source_num_layers})" if source_num_layers
            and source_num_layers != layers else "")
  return (f"ViT patch {ckpt.patch_size}, width {ckpt.hidden_size}, {layers} blocks{capped}, "
          f"{ckpt.num_heads} heads, MLP {ckpt.mlp_dim}, image {ckpt.image_size}, "
          f"{'tanh' if ckpt.gelu_approximate else 'exact'} GELU{pre_logits}")
