"""An imported root directory: a canonical checkpoint as mtsys components, and its manifest.

    DIR/components/<id>/     one component each, as in a system directory (write-once files:
                             weights.npz + MANIFEST.pb, no optimizer.npz = zero momentum):
                               root.patch_embedding, root.class_token, root.position_embedding,
                               root.transformer_block.<i>, and root.head (the head template)
    DIR/ROOT.pbtxt           `mtsys.ImportedRoot` in text format, written last

The components compute the checkpoint's canonical function (`checkpoint_format`): the patch
embedding holds the source's input normalisation (so every path made from the root applies it),
the blocks its GELU form and LayerNorm epsilon, and the head template (one class) its final
encoder norm, its pre-logits Dense + tanh when kept, and a zero Dense: a new task's head starts
from the pretrained norm. Every spec carries the source's provenance (kind, file, SHA-256).

The directory is written whole or not at all: it is built in a temporary sibling
(`DIR.tmp-<random>`, removed on failure; a killed import leaves it behind) that is renamed into
place; an existing DIR is refused. Local directories only.
"""

from __future__ import annotations

import os
import shutil
import uuid
from typing import Optional, Sequence

import keras
import numpy as np
from google.protobuf import text_format

from mtsys import components
from mtsys import errors
from mtsys import faults as mfaults
from mtsys.config import checkpoints
from mtsys.protos import mtsys_pb2
from mtsys.pretrained import checkpoint_format as cf
from mtsys.system import assembly
from mtsys.system import component_files
from mtsys.system import fileio
from mtsys.system import records

ROOT_FILE = checkpoints.MANIFEST  # "ROOT.pbtxt"
PREFIX = "root"
HEAD_ID = f"{PREFIX}.head"


def component_ids(num_layers: int) -> list[str]:
  """The root's component ids in path order (no head)."""
  return ([f"{PREFIX}.patch_embedding", f"{PREFIX}.class_token", f"{PREFIX}.position_embedding"]
          + [f"{PREFIX}.transformer_block.{i}" for i in range(num_layers)])


class RootFiles(component_files.ComponentFiles):
  """The components of an imported root directory (`ComponentFiles` over plain files).

  Reads `read_component_spec`, `read_weights` (checksum-verified), `component_ids`; writes
  `write_component`. No component sources, no schema migrations.
  """

  def __init__(self, root: str, faults: Optional[mfaults.Injector] = None):
    self.root = root.rstrip("/") if root != "/" else root
    self.faults = faults or mfaults.Injector()

  @property
  def component_sources(self) -> list[str]:
    return []

  def _read(self, path: str) -> bytes:
    return fileio.read(path)

  def _parse(self, path: str, message, root: Optional[str] = None):
    del root
    return records.parse(self._read(path), path, message, legacy_ok=False)

  def _write_pb(self, path: str, message) -> None:
    fileio.write_atomic(path, records.frame(message.SerializeToString()), self.faults)

  def _write_plain(self, path: str, data: bytes) -> None:
    fileio.write_plain(path, data, self.faults)

  def _remove(self, path: str) -> None:
    fileio.remove(path, self.faults)

  def _migrate(self) -> None:
    pass


def _normalisation(values: Sequence[float], identity: float) -> Optional[list[float]]:
  values = [float(v) for v in values]
  return None if all(v == identity for v in values) else values


def _assign(layer: keras.layers.Layer, arrays: dict[str, np.ndarray]) -> None:
  """Sets the layer's weights by their path below the layer (e.g. `ln_1/gamma`)."""
  names = [w.path.split("/", 1)[1] for w in layer.weights]
  if sorted(names) != sorted(arrays):
    raise AssertionError(f"{layer.name}: weights {names}, mapped {sorted(arrays)}")
  layer.set_weights([arrays[n] for n in names])


def _block_arrays(p: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
  b, att = cf.block_prefix(i), f"{cf.block_prefix(i)}{cf.ATTENTION}/"
  out = {
      "ln_1/gamma": p[f"{b}LayerNorm_0/scale"], "ln_1/beta": p[f"{b}LayerNorm_0/bias"],
      "ln_2/gamma": p[f"{b}LayerNorm_2/scale"], "ln_2/beta": p[f"{b}LayerNorm_2/bias"],
      "attention/attention_output/kernel": p[f"{att}out/kernel"],
      "attention/attention_output/bias": p[f"{att}out/bias"],
      "mlp_1/kernel": p[f"{b}MlpBlock_3/Dense_0/kernel"],
      "mlp_1/bias": p[f"{b}MlpBlock_3/Dense_0/bias"],
      "mlp_2/kernel": p[f"{b}MlpBlock_3/Dense_1/kernel"],
      "mlp_2/bias": p[f"{b}MlpBlock_3/Dense_1/bias"],
  }
  for proj in ("query", "key", "value"):
    out[f"attention/{proj}/kernel"] = p[f"{att}{proj}/kernel"]
    out[f"attention/{proj}/bias"] = p[f"{att}{proj}/bias"]
  return out


def root_layers(ckpt: cf.ViTCheckpoint, keep_pre_logits: bool = False
                ) -> list[keras.layers.Layer]:
  """The built mtsys layers holding the checkpoint's weights, in path order.

  Patch embedding (with the input normalisation), class token, position embedding, the
  transformer blocks, and last the head template: a one-class `ClassificationHead` with the
  encoder norm, the pre-logits Dense when `keep_pre_logits` (and the checkpoint has one), and a
  zero Dense. The checkpoint should be valid (`checkpoint_format.validate`).

  Raises:
    CheckpointError: `keep_pre_logits` for a checkpoint without pre-logits.
  """
  if keep_pre_logits and not ckpt.pre_logits_size:
    raise errors.CheckpointError(
        f"Checkpoint {ckpt.name}: --keep_pre_logits, but it has no '{cf.PRE_LOGITS_KERNEL}' "
        "(expected a checkpoint with a pre-logits layer, or leave the option off).")
  d = ckpt.hidden_size
  p = ckpt.params
  layers = [
      components.PatchEmbedding(
          ckpt.patch_size, d, input_scale=_normalisation(ckpt.input_scale, 1.0),
          input_offset=_normalisation(ckpt.input_offset, 0.0), name="patch_embedding"),
      components.ClassToken(d, name="class_token"),
      components.PositionEmbedding(ckpt.grid_size, d, name="position_embedding"),
  ]
  for i in range(ckpt.num_layers):
    layers.append(components.TransformerBlock(
        d, ckpt.num_heads, ckpt.mlp_dim, gelu_approximate=bool(ckpt.gelu_approximate),
        layer_norm_epsilon=float(ckpt.layer_norm_epsilon), name=f"transformer_block_{i}"))
  pre_logits = ckpt.pre_logits_size if keep_pre_logits else 0
  head = components.ClassificationHead(1, d, pre_logits_size=pre_logits,
                                       layer_norm_epsilon=float(ckpt.layer_norm_epsilon),
                                       name="head")
  layers.append(head)
  x = keras.Input((ckpt.image_size, ckpt.image_size, ckpt.channels))
  for layer in layers:  # builds every layer
    x = layer(x)
  _assign(layers[0], {"conv/kernel": p[cf.EMBEDDING_KERNEL], "conv/bias": p[cf.EMBEDDING_BIAS]})
  _assign(layers[1], {"cls": p[cf.CLS]})
  _assign(layers[2], {"pos_embedding": p[cf.POS_EMBEDDING]})
  for i in range(ckpt.num_layers):
    _assign(layers[3 + i], _block_arrays(p, i))
  head_arrays = {"norm/gamma": p[cf.ENCODER_NORM_SCALE], "norm/beta": p[cf.ENCODER_NORM_BIAS],
                 "dense/kernel": np.zeros((pre_logits or d, 1), np.float32),
                 "dense/bias": np.zeros((1,), np.float32)}
  if pre_logits:
    head_arrays["pre_logits/kernel"] = p[cf.PRE_LOGITS_KERNEL]
    head_arrays["pre_logits/bias"] = p[cf.PRE_LOGITS_BIAS]
  _assign(head, head_arrays)
  return layers


def prelogits(layers: Sequence[keras.layers.Layer], images01: np.ndarray) -> np.ndarray:
  """The pre-logits `root_layers` compute for images in [0, 1]: the head's input to `dense`."""
  x = keras.ops.convert_to_tensor(np.asarray(images01, np.float32))
  for layer in layers[:-1]:
    x = layer(x)
  head = layers[-1]
  x = head.norm(x[:, 0])
  if head.pre_logits is not None:
    x = head.pre_logits(x)
  return keras.ops.convert_to_numpy(x)


def _provenance(ckpt: cf.ViTCheckpoint) -> mtsys_pb2.ComponentProvenance:
  return mtsys_pb2.ComponentProvenance(source_kind=ckpt.source_kind,
                                       source_file=ckpt.source_file, sha256=ckpt.source_sha256)


def component_specs(ckpt: cf.ViTCheckpoint, layers: Sequence[keras.layers.Layer]
                    ) -> list[mtsys_pb2.ComponentSpec]:
  """The specs of `root_layers(ckpt, ...)` (ids `component_ids` + HEAD_ID), provenance set.

  No file fields: `ComponentFiles.write_component` adds them with the weights.
  """
  from mtsys.system import root  # pylint: disable=g-import-not-at-top  (root imports this)

  ids = component_ids(ckpt.num_layers) + [HEAD_ID]
  shape = (ckpt.image_size, ckpt.image_size, ckpt.channels)
  specs = []
  for layer, cid in zip(layers, ids, strict=True):
    spec = root.spec_for(layer, cid, input_shape=shape)
    spec.provenance.CopyFrom(_provenance(ckpt))
    specs.append(spec)
    if layer is not layers[-1]:
      shape = tuple(layer.compute_output_shape((1, *shape)))[1:]
  return specs


def manifest(ckpt: cf.ViTCheckpoint, keep_pre_logits: bool = False,
             source_num_layers: int = 0, source_image_size: int = 0) -> mtsys_pb2.ImportedRoot:
  """The ImportedRoot describing the root made from `ckpt`."""
  return mtsys_pb2.ImportedRoot(
      architecture=mtsys_pb2.VitArchitecture(
          patch_size=ckpt.patch_size, hidden_size=ckpt.hidden_size, num_layers=ckpt.num_layers,
          num_heads=ckpt.num_heads, mlp_dim=ckpt.mlp_dim),
      image_size=ckpt.image_size, channels=ckpt.channels,
      component_ids=component_ids(ckpt.num_layers), head_template_id=HEAD_ID,
      provenance=_provenance(ckpt), gelu_approximate=bool(ckpt.gelu_approximate),
      layer_norm_epsilon=float(ckpt.layer_norm_epsilon),
      input_scale=[float(v) for v in ckpt.input_scale],
      input_offset=[float(v) for v in ckpt.input_offset],
      pre_logits_size=ckpt.pre_logits_size if keep_pre_logits else 0,
      source_num_layers=source_num_layers or ckpt.num_layers,
      source_image_size=source_image_size or ckpt.image_size)


def check_output(out_dir: str) -> str:
  """`out_dir` made absolute, after checking it is local and does not exist.

  Raises:
    CheckpointError: naming `out_dir`.
  """
  if not fileio.is_local(out_dir):
    raise errors.CheckpointError(f"Output {out_dir}: only local directories are supported (the "
                                 "root is renamed into place whole).")
  out_dir = os.path.abspath(out_dir)
  if os.path.lexists(out_dir):
    raise errors.CheckpointError(f"Output {out_dir} already exists; expected a new directory "
                                 "(an imported root is written once).")
  return out_dir


def write(ckpt: cf.ViTCheckpoint, out_dir: str, keep_pre_logits: bool = False, *,
          source_num_layers: int = 0, source_image_size: int = 0) -> mtsys_pb2.ImportedRoot:
  """Writes the root directory of `ckpt` at `out_dir` (see the module docstring).

  Args:
    ckpt: a valid canonical checkpoint (already capped and resized as wanted).
    out_dir: a new local directory.
    keep_pre_logits: keep the checkpoint's pre-logits Dense + tanh in the head template.
    source_num_layers, source_image_size: the source's sizes before capping and resizing,
      recorded in ROOT.pbtxt (0: the checkpoint's own).

  Returns:
    The ImportedRoot written.

  Raises:
    CheckpointError: `out_dir` exists or is not local; see also `root_layers`.
  """
  out_dir = check_output(out_dir)
  layers = root_layers(ckpt, keep_pre_logits)
  specs = component_specs(ckpt, layers)
  root = manifest(ckpt, keep_pre_logits, source_num_layers, source_image_size)
  tmp = f"{out_dir}{fileio.TMP_MARK}{uuid.uuid4().hex[:12]}"
  os.makedirs(tmp)
  try:
    files = RootFiles(tmp)
    for spec, layer in zip(specs, layers, strict=True):
      files.write_component(spec, [np.asarray(w) for w in layer.get_weights()])
    fileio.write_atomic(os.path.join(tmp, ROOT_FILE),
                        text_format.MessageToString(root).encode(), files.faults)
    os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return root


def load_layers(root_dir: str) -> tuple[mtsys_pb2.ImportedRoot, list[keras.layers.Layer]]:
  """The root directory's ImportedRoot and its built layers holding the stored weights.

  The layers are in path order, the head template last: what `root_layers` returned when the
  directory was written (checksums verified on reading).
  """
  root = read(root_dir)
  files = RootFiles(root_dir)
  specs = [files.read_component_spec(cid)
           for cid in list(root.component_ids) + [root.head_template_id]]
  layers = [assembly.instantiate(spec) for spec in specs]
  assembly.chain(layers, root.image_size, root.channels, name="root")  # builds every layer
  for layer, spec in zip(layers, specs):
    assembly.set_stored_weights(layer, spec, files.read_weights(spec))
  return root, layers


def is_root_dir(path: str) -> bool:
  """Whether `path` is an imported root directory (holds ROOT.pbtxt)."""
  return os.path.isfile(os.path.join(path, ROOT_FILE))


def read(root_dir: str) -> mtsys_pb2.ImportedRoot:
  """The ImportedRoot of a root directory.

  Raises:
    CheckpointError: no such directory, not a root directory, or an unparsable ROOT.pbtxt.
  """
  if not os.path.isdir(root_dir):
    raise errors.CheckpointError(f"Root directory {root_dir} does not exist; make one with "
                                 "bin/import_root.py --source=CHECKPOINT --output=DIR.")
  path = os.path.join(root_dir, ROOT_FILE)
  if not os.path.isfile(path):
    raise errors.CheckpointError(f"{root_dir} is not an imported root directory: no {ROOT_FILE} "
                                 "(make one with bin/import_root.py).")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    return text_format.Parse(text, mtsys_pb2.ImportedRoot())
  except text_format.ParseError as e:
    raise errors.CheckpointError(f"Cannot parse {path} as ImportedRoot: {e}") from e
