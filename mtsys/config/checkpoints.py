"""What a `root.checkpoint` names, decided without reading weights (and without TensorFlow for
local paths): an imported root directory or one of the three source kinds.

The config loader uses this to fill in an imported root's architecture; the importer
(`mtsys.pretrained.importer`) to pick the reader.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from google.protobuf import text_format

from mtsys import errors
from mtsys.config import vit_sizes
from mtsys.protos import mtsys_pb2

# The manifest of an imported root directory, written last (`mtsys.pretrained.root_dir`).
MANIFEST = "ROOT.pbtxt"

VIT_NPZ, KERAS_HUB, MODEL_GARDEN = "vit_npz", "keras_hub", "model_garden"
KINDS = (VIT_NPZ, KERAS_HUB, MODEL_GARDEN)

# What each source's transformer blocks compute (GELU form), from their model code: the original
# ViT's flax `nn.gelu` and Model Garden's `official.modeling.activations.gelu` (approximate=True)
# are the tanh approximation; keras-hub's ViT MLP uses Keras' "gelu", the exact erf form.
GELU_APPROXIMATE = {VIT_NPZ: True, KERAS_HUB: False, MODEL_GARDEN: True}
_DEFAULT_EPSILON = 1e-6


def layer_norm_epsilon(path: str, kind: str) -> float:
  """The LayerNorm epsilon of a source: keras-hub presets record theirs in config.json (their
  default 1e-6); the original ViT and Model Garden use 1e-6."""
  if kind != KERAS_HUB:
    return _DEFAULT_EPSILON
  try:
    config = json.loads(_read_text(path.rstrip("/") + "/config.json"))
    return float(config.get("config", {}).get("layer_norm_epsilon", _DEFAULT_EPSILON))
  except (ValueError, AttributeError, TypeError) as e:
    raise errors.CheckpointError(f"Checkpoint {path}: config.json is not a keras-hub preset "
                                 f"config ({e}).") from None


def _exists(path: str) -> bool:
  if "://" in path:
    import tensorflow as tf  # remote paths only
    return tf.io.gfile.exists(path)
  return os.path.exists(path)


def _isdir(path: str) -> bool:
  if "://" in path:
    import tensorflow as tf
    return tf.io.gfile.isdir(path)
  return os.path.isdir(path)


def _read_text(path: str) -> str:
  if "://" in path:
    import tensorflow as tf
    with tf.io.gfile.GFile(path, "r") as f:
      return f.read()
  with open(path, encoding="utf-8") as f:
    return f.read()


def manifest_path(root_dir: str) -> str:
  return root_dir.rstrip("/") + "/" + MANIFEST


def read_manifest(path: str) -> Optional[mtsys_pb2.ImportedRoot]:
  """The ImportedRoot of an imported root directory; None when `path` is not one.

  Raises:
    CheckpointError: the directory's manifest does not parse.
  """
  file = manifest_path(path)
  if not _isdir(path) or not _exists(file):
    return None
  try:
    return text_format.Parse(_read_text(file), mtsys_pb2.ImportedRoot())
  except text_format.ParseError as e:
    raise errors.CheckpointError(f"{file}: not an imported root manifest ({e}).") from None


def detect_kind(path: str) -> str:
  """The source kind of a checkpoint path (not an imported root directory).

  A `.npz` file is an original ViT/AugReg/big_vision checkpoint; a directory holding keras-hub's
  `config.json` and `metadata.json` a keras-hub preset; a TensorFlow checkpoint (a directory with
  a `checkpoint` file, or a prefix with its `.index` file) a Model Garden one.

  Raises:
    CheckpointError: naming the path, when it is none of them.
  """
  stripped = path.rstrip("/")
  if stripped.endswith(".npz") and _exists(stripped) and not _isdir(stripped):
    return VIT_NPZ
  if _isdir(stripped):
    if _exists(stripped + "/config.json") and _exists(stripped + "/metadata.json"):
      return KERAS_HUB
    if _exists(stripped + "/checkpoint"):
      return MODEL_GARDEN
  elif _exists(stripped + ".index"):
    return MODEL_GARDEN
  if not _exists(stripped) and not _exists(stripped + ".index"):
    raise errors.CheckpointError(f"Checkpoint {path}: no such file or directory.")
  raise errors.CheckpointError(
      f"Checkpoint {path}: not a checkpoint mtsys reads; expected a root directory made by "
      "bin/import_root.py (with ROOT.pbtxt), an original ViT/AugReg/big_vision .npz file, a "
      "keras-hub preset directory (config.json, metadata.json) or a Model Garden TensorFlow "
      "checkpoint (a directory with a 'checkpoint' file, or a prefix with its .index file).")


def resolve_root(root: mtsys_pb2.RootModel, fail) -> None:
  """Fills in what `root.checkpoint` determines (issue #14), before the sizes are validated.

  An imported root directory gives `root.custom` (its architecture and block form), and the
  image size and channels when unset; a set `root.vit` must agree with it. A source imported on
  the fly needs the size named (`vit` or `custom`); its block form follows its kind. The filled
  proto is what a system stores, so reading a stored config never needs the directory again.
  """
  if root.HasField("custom"):
    return
  try:
    manifest = read_manifest(root.checkpoint)
    kind = None if manifest is not None else detect_kind(root.checkpoint)
  except errors.CheckpointError as e:
    fail("root.checkpoint", f"a root directory made by bin/import_root.py or a checkpoint ({e})",
         root.checkpoint)
  if manifest is None:
    if not root.vit:
      fail("root.vit", f"the ViT size the {kind} checkpoint has (e.g. 'Ti/16'; or root.custom), "
           "as root.checkpoint names a source imported on the fly, not a directory made by "
           "bin/import_root.py", "")
    try:
      arch = vit_sizes.parse(root.vit)
    except ValueError as e:
      fail("root.vit", f"a ViT name like 'Ti/16' ({e})", root.vit)
    root.custom.CopyFrom(mtsys_pb2.VitArchitecture(
        patch_size=arch.patch_size, hidden_size=arch.hidden_size, num_layers=arch.num_layers,
        num_heads=arch.num_heads, mlp_dim=arch.mlp_dim,
        gelu_approximate=GELU_APPROXIMATE[kind],
        layer_norm_epsilon=layer_norm_epsilon(root.checkpoint, kind)))
    return
  got = manifest.architecture
  if root.vit:
    try:
      named = vit_sizes.parse(root.vit)
    except ValueError as e:
      fail("root.vit", f"a ViT name like 'Ti/16' ({e})", root.vit)
    have = (got.patch_size, got.hidden_size, got.num_heads, got.mlp_dim)
    if (named.patch_size, named.hidden_size, named.num_heads, named.mlp_dim) != have:
      fail("root.vit", f"the imported root's size (patch {got.patch_size}, hidden "
           f"{got.hidden_size}, {got.num_heads} heads, MLP {got.mlp_dim}; or leave it unset)",
           root.vit)
  root.custom.CopyFrom(got)
  root.custom.gelu_approximate = manifest.gelu_approximate
  root.custom.layer_norm_epsilon = manifest.layer_norm_epsilon
  for field in ("image_size", "channels"):
    value, imported = getattr(root, field), getattr(manifest, field)
    if not value:
      setattr(root, field, imported)
    elif value != imported:
      hint = (f"; import the checkpoint again with --image_size={value} to resize its position "
              "embedding" if field == "image_size" else "")
      fail(f"root.{field}", f"the imported root's {imported} (or unset){hint}", value)
