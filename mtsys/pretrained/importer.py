"""Imports a published ViT checkpoint as a root directory (`bin/import_root.py`).

The whole import: detect the source's kind, read it into the canonical checkpoint with its
reader (`vit_npz`, `keras_hub_preset`, `model_garden`), validate it, keep its first blocks,
resample its position embedding for another image size, and write the root directory
(`root_dir.write`). The readers are imported on use: each pulls in its source's library.
"""

from __future__ import annotations

import importlib
import os
from typing import Callable

from mtsys import errors
from mtsys.config import checkpoints
from mtsys.protos import mtsys_pb2
from mtsys.pretrained import checkpoint_format as cf
from mtsys.pretrained import root_dir

AUTO = "auto"
# Source kind -> the module (in mtsys.pretrained) whose `read(path)` reads it.
READERS = {
    checkpoints.VIT_NPZ: "vit_npz",
    checkpoints.KERAS_HUB: "keras_hub_preset",
    checkpoints.MODEL_GARDEN: "model_garden",
}
SOURCE_KINDS = (AUTO,) + tuple(READERS)


def reader(kind: str):
  """The reader module of a source kind (imported now: it pulls in its source's library)."""
  return importlib.import_module(f"mtsys.pretrained.{READERS[kind]}")


def read(source: str, source_kind: str = AUTO) -> cf.ViTCheckpoint:
  """The canonical checkpoint of `source`, read by its kind's reader and validated.

  Provenance fields a reader leaves empty are filled in: the kind, the source as given, and
  its `checkpoint_format.file_sha256`.

  Raises:
    CheckpointError: an unknown kind, or whatever the reader and `validate` refuse.
  """
  if source_kind not in SOURCE_KINDS:
    raise errors.CheckpointError(f"source_kind={source_kind!r}: expected one of "
                                 f"{', '.join(SOURCE_KINDS)}.")
  kind = checkpoints.detect_kind(source) if source_kind == AUTO else source_kind
  ckpt = reader(kind).read(source)
  ckpt.source_kind = ckpt.source_kind or kind
  ckpt.source_file = ckpt.source_file or source
  ckpt.source_sha256 = ckpt.source_sha256 or cf.file_sha256(source)
  cf.validate(ckpt)
  return ckpt


def _check_option(name: str, value: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise errors.CheckpointError(f"{name}={value!r}: expected 0 (keep the source's) or a "
                                 "positive integer.")
  return value


def import_root(source: str, output: str, num_blocks: int = 0, image_size: int = 0,
                keep_pre_logits: bool = False, source_kind: str = AUTO,
                log: Callable[[str], None] = lambda line: None) -> mtsys_pb2.ImportedRoot:
  """Imports the checkpoint at `source` as a root directory at `output`.

  Args:
    source: a `.npz` file, a keras-hub preset directory, or a Model Garden checkpoint.
    output: the root directory to write; must not exist.
    num_blocks: keep only the first N transformer blocks (0: all).
    image_size: the root's native image size; the position embedding is resampled as
      vit_jax's `checkpoint.py` does (0: the source's).
    keep_pre_logits: keep the checkpoint's pre-logits Dense + tanh in the head template.
    source_kind: "auto" (detected), "vit_npz", "keras_hub" or "model_garden".
    log: receives progress lines.

  Returns:
    The ImportedRoot written to `output/ROOT.pbtxt`.

  Raises:
    CheckpointError: a bad option, an existing output, or a checkpoint that cannot be imported
      (the message names the key or value).
  """
  _check_option("num_blocks", num_blocks)
  _check_option("image_size", image_size)
  root_dir.check_output(output)
  ckpt = read(source, source_kind)
  log(f"Read {ckpt.source_kind} checkpoint {ckpt.source_file} (sha256 {ckpt.source_sha256}): "
      f"{cf.summary(ckpt)}")
  if image_size:
    cf.check_image_size(ckpt, image_size)
  source_num_layers, source_image_size = ckpt.num_layers, ckpt.image_size
  ckpt = cf.resize_image(cf.cap_blocks(ckpt, num_blocks), image_size)
  root = root_dir.write(ckpt, output, keep_pre_logits, source_num_layers=source_num_layers,
                        source_image_size=source_image_size)
  log(f"Wrote root {os.path.abspath(output)}: "
      f"{cf.summary(ckpt, source_num_layers, keep_pre_logits)}"
      + (f" (position embedding resampled from {source_image_size})"
         if ckpt.image_size != source_image_size else ""))
  return root
