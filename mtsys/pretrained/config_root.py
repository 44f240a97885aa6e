"""The root of a system whose config names `root { checkpoint }` (issue #14).

Either an imported root directory (`bin/import_root.py`): its components are copied into the
system as they are (the first `num_blocks` blocks when the config caps them); or a source imported
on the fly (an original ViT `.npz`, a keras-hub preset, a Model Garden checkpoint): read, checked
against the size the config names (`root.vit`/`root.custom`), capped, its position embedding
resampled to `root.image_size` (as `bin/import_root.py` does), and made into components here.
Either way the system gets `mtsys.system.root.stored_root_ids`: the path's root components and
the head template every new head starts from, with their provenance and no optimizer slots
(imported components start with zero momentum).
"""

from __future__ import annotations

from mtsys import errors
from mtsys.config import checkpoints
from mtsys.config import loader
from mtsys.protos import mtsys_pb2
from mtsys.pretrained import checkpoint_format as cf
from mtsys.pretrained import importer
from mtsys.pretrained import root_dir
from mtsys.system import root as mroot

Components = list  # [(ComponentSpec, weights)] in `mroot.stored_root_ids` order


def _sizes(patch, hidden, layers, heads, mlp) -> str:
  return f"patch {patch}, hidden {hidden}, {layers} blocks, {heads} heads, MLP {mlp}"


def _check_directory(config: loader.Config, manifest: mtsys_pb2.ImportedRoot) -> list[str]:
  """The ids to copy from an imported root directory, after checking it fits `config`."""
  root, arch, got = config.proto.root, config.arch, manifest.architecture
  where = f"root.checkpoint={root.checkpoint!r}"
  want = (arch.patch_size, arch.hidden_size, arch.num_heads, arch.mlp_dim)
  if (got.patch_size, got.hidden_size, got.num_heads, got.mlp_dim) != want or (
      got.num_layers < arch.num_layers):
    have = _sizes(got.patch_size, got.hidden_size, got.num_layers, got.num_heads, got.mlp_dim)
    need = _sizes(arch.patch_size, arch.hidden_size, arch.num_layers, arch.num_heads, arch.mlp_dim)
    raise errors.CheckpointError(f"{where}: the imported root is {have}; the config needs {need}.")
  if (manifest.image_size, manifest.channels) != (root.image_size, root.channels):
    raise errors.CheckpointError(
        f"{where}: the imported root is made for {manifest.image_size}x{manifest.image_size} "
        f"images with {manifest.channels} channel(s); the config has root.image_size="
        f"{root.image_size}, root.channels={root.channels}.")
  if bool(manifest.gelu_approximate) != arch.gelu_approximate:
    raise errors.CheckpointError(
        f"{where}: the imported root's blocks use "
        f"{'tanh-approximate' if manifest.gelu_approximate else 'exact'} GELU; the config's "
        f"root.custom.gelu_approximate is {arch.gelu_approximate}.")
  ids = mroot.root_ids(config)
  stored = list(manifest.component_ids)
  if stored[:len(ids)] != ids or manifest.head_template_id != mroot.HEAD_TEMPLATE_ID:
    raise errors.CheckpointError(
        f"{where}: ROOT.pbtxt lists components {stored} and head template "
        f"{manifest.head_template_id!r}; expected {ids} (in that order) and "
        f"{mroot.HEAD_TEMPLATE_ID!r}.")
  return ids + [mroot.HEAD_TEMPLATE_ID]


def _source(config: loader.Config) -> cf.ViTCheckpoint:
  """The on-the-fly source read, checked against the named size, capped and resized."""
  root, arch = config.proto.root, config.arch
  ckpt = importer.read(root.checkpoint)
  named = root.custom  # the loader fills it from root.vit: the size before num_blocks
  have = (ckpt.patch_size, ckpt.hidden_size, ckpt.num_layers, ckpt.num_heads, ckpt.mlp_dim)
  want = (named.patch_size, named.hidden_size, named.num_layers, named.num_heads, named.mlp_dim)
  if have != want:
    raise errors.CheckpointError(
        f"Checkpoint {root.checkpoint} has the shapes of {_sizes(*have)}; root."
        f"{'vit=' + repr(root.vit) if root.vit else 'custom'} names {_sizes(*want)}.")
  if (bool(ckpt.gelu_approximate), float(f"{ckpt.layer_norm_epsilon:.7g}")) != (
      arch.gelu_approximate, arch.layer_norm_epsilon):
    raise errors.CheckpointError(
        f"Checkpoint {root.checkpoint}: its blocks use "
        f"{'tanh-approximate' if ckpt.gelu_approximate else 'exact'} GELU and LayerNorm epsilon "
        f"{ckpt.layer_norm_epsilon:g}; the config's root has gelu_approximate="
        f"{arch.gelu_approximate}, layer_norm_epsilon={arch.layer_norm_epsilon:g}.")
  if ckpt.channels != root.channels:
    raise errors.CheckpointError(
        f"Checkpoint {root.checkpoint} reads {ckpt.channels}-channel images; the config has "
        f"root.channels={root.channels} (set it to {ckpt.channels}: data with other channel "
        "counts is converted).")
  cf.check_image_size(ckpt, root.image_size)
  return cf.resize_image(cf.cap_blocks(ckpt, arch.num_layers), root.image_size)


def check(config: loader.Config) -> None:
  """Checks, writing nothing, that `root_components` can make the root of `config`.

  Raises:
    CheckpointError: naming the checkpoint and what does not fit.
  """
  root = config.proto.root
  manifest = checkpoints.read_manifest(root.checkpoint)
  if manifest is None:
    _source(config)
    return
  files = root_dir.RootFiles(root.checkpoint)
  for cid in _check_directory(config, manifest):
    files.read_component_spec(cid)  # present and intact


def root_components(config: loader.Config) -> Components:
  """The root's components of `config` with their weights (see the module docstring)."""
  root = config.proto.root
  manifest = checkpoints.read_manifest(root.checkpoint)
  if manifest is not None:
    files = root_dir.RootFiles(root.checkpoint)
    out = []
    for cid in _check_directory(config, manifest):
      spec = files.read_component_spec(cid)
      out.append((spec, files.read_weights(spec)))
    return out
  ckpt = _source(config)
  layers = root_dir.root_layers(ckpt)
  specs = root_dir.component_specs(ckpt, layers)
  return [(spec, [w.copy() for w in layer.get_weights()])
          for spec, layer in zip(specs, layers, strict=True)]
