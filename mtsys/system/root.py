"""The root model's components, and fresh components for new tasks.

The root is a ViT decomposed into components (µ2Net section 3.5): patch embedding, class token,
position embedding and N transformer blocks, randomly initialised from the config's seed. Heads
are per task and always fresh (zero-initialised) for a new task.
"""

from __future__ import annotations

import time
import uuid
from typing import Optional, Sequence

import keras
import numpy as np

from mtsys import components
from mtsys.config import loader
from mtsys.config import names
from mtsys.protos import mtsys_pb2
from mtsys.system import assembly

ROOT_PREFIX = "root"
# An imported root's head template (issue #14): a one-class head holding the source's final
# encoder norm (and pre-logits, when kept); every new head starts from it. Not on any path.
HEAD_TEMPLATE_ID = f"{ROOT_PREFIX}.head"


def now_ms() -> int:
  return int(time.time() * 1000)


def new_component_id(task: str, kind: str) -> str:
  """A unique id for a component a task's child creates."""
  stem = names.task_file_stem(task).replace("~", ".")
  return names.check_component_id(f"{stem}.{kind}.{uuid.uuid4().hex[:12]}")


def spec_for(layer: keras.layers.Layer, component_id: str, *, input_shape: Sequence[int],
             created_by_task: str = "", cloned_from: str = "",
             trained_on: Optional[dict] = None,
             access: Optional[mtsys_pb2.ComponentAccess] = None) -> mtsys_pb2.ComponentSpec:
  """A ComponentSpec describing a built layer (weights are added by the store)."""
  spec = mtsys_pb2.ComponentSpec(
      id=names.check_component_id(component_id), kind=type(layer).kind,
      config_json=assembly.component_config_json(layer), cloned_from=cloned_from,
      param_count=int(layer.param_count()),
      flops=int(layer.flops_per_example(tuple(input_shape))),
      weight_names=[w.path for w in layer.weights], created_by_task=created_by_task,
      created_at_ms=now_ms())
  spec.trained_on.update(trained_on or {})
  spec.access.CopyFrom(access or mtsys_pb2.ComponentAccess(public=True))
  return spec


def root_layers(config: loader.Config) -> list[keras.layers.Layer]:
  """Fresh, unbuilt root layers in path order (no head)."""
  arch, root = config.arch, config.proto.root
  seed = int(root.seed)
  grid = root.image_size // arch.patch_size
  layers = [
      components.PatchEmbedding(arch.patch_size, arch.hidden_size, seed=seed),
      components.ClassToken(arch.hidden_size),
      components.PositionEmbedding(grid, arch.hidden_size, seed=seed + 1),
  ]
  for i in range(arch.num_layers):
    layers.append(new_block(arch, seed + 2 + i))
  return layers


def new_block(arch, seed: Optional[int]) -> components.TransformerBlock:
  """An unbuilt, randomly initialised transformer block of the root's form (`arch`)."""
  return components.TransformerBlock(arch.hidden_size, arch.num_heads, arch.mlp_dim, seed=seed,
                                     gelu_approximate=arch.gelu_approximate,
                                     layer_norm_epsilon=arch.layer_norm_epsilon)


def root_ids(config: loader.Config) -> list[str]:
  """The root's component ids in path order, as `make_root` names them."""
  blocks = [f"{ROOT_PREFIX}.transformer_block.{i}" for i in range(config.arch.num_layers)]
  return [f"{ROOT_PREFIX}.{kind}" for kind in ("patch_embedding", "class_token",
                                               "position_embedding")] + blocks


def stored_root_ids(config: loader.Config) -> list[str]:
  """Every component id the root stores: `root_ids`, plus an imported root's head template."""
  return root_ids(config) + ([HEAD_TEMPLATE_ID] if config.proto.root.checkpoint else [])


def make_root(config: loader.Config) -> list[tuple[mtsys_pb2.ComponentSpec, list[np.ndarray]]]:
  """The random root components with their initial weights, ids 'root.<kind>[.i]'.

  An imported root (`root.checkpoint`) comes from `mtsys.pretrained.config_root` instead, through
  `mtsys.train.pretrain.root_components`.
  """
  if config.proto.root.checkpoint:
    raise ValueError(f"root.checkpoint={config.proto.root.checkpoint!r}: an imported root is "
                     "made by mtsys.pretrained.config_root, not make_root.")
  layers = root_layers(config)
  size, channels = config.proto.root.image_size, config.proto.root.channels
  assembly.chain(layers, size, channels, name="root")  # builds every layer
  shape = (size, size, channels)
  out = []
  for layer, cid in zip(layers, root_ids(config), strict=True):
    out.append((spec_for(layer, cid, input_shape=shape), [np.array(w) for w in layer.get_weights()]))
    shape = tuple(layer.compute_output_shape((1, *shape)))[1:]
  return out


HeadTemplate = tuple  # (ComponentSpec, weights) of HEAD_TEMPLATE_ID


def head_template(source, root: mtsys_pb2.RootModel) -> Optional[HeadTemplate]:
  """An imported root's head template from `source` (a store holding the root of a system whose
  config has this `root`), or None for other roots."""
  if not root.checkpoint:
    return None
  spec = source.read_component_spec(HEAD_TEMPLATE_ID)
  return spec, source.read_weights(spec)


def new_head(task: mtsys_pb2.TaskSpec, hidden_size: int, num_tokens: int,
             access: mtsys_pb2.ComponentAccess, template: Optional[HeadTemplate] = None
             ) -> tuple[mtsys_pb2.ComponentSpec, list[np.ndarray]]:
  """A fresh head for `task` (spec and weights): a zero-initialised Dense after the norm.

  With an imported root's `template` (`head_template`) the norm (and pre-logits Dense, when the
  import kept it) start as the template's: the source's pretrained final encoder norm.
  """
  if template is None:
    head = components.ClassificationHead(task.num_classes, hidden_size)
    head.build((None, num_tokens, hidden_size))
  else:
    t_spec, t_weights = template
    pretrained = assembly.instantiate(t_spec)
    pretrained.build((None, num_tokens, hidden_size))
    pretrained.set_weights(list(t_weights))
    head = components.ClassificationHead(
        task.num_classes, hidden_size, pre_logits_size=pretrained.pre_logits_size,
        layer_norm_epsilon=pretrained.layer_norm_epsilon)
    head.build((None, num_tokens, hidden_size))
    head.norm.set_weights(pretrained.norm.get_weights())
    if pretrained.pre_logits_size:
      head.pre_logits.set_weights(pretrained.pre_logits.get_weights())
  spec = spec_for(head, new_component_id(task.name, "head"),
                  input_shape=(num_tokens, hidden_size), created_by_task=task.name, access=access)
  return spec, [np.array(w) for w in head.get_weights()]


def new_adapter(task: str, hidden_size: int, inner_dim: int, num_tokens: int,
                access: mtsys_pb2.ComponentAccess, seed: Optional[int] = None
                ) -> tuple[mtsys_pb2.ComponentSpec, list[np.ndarray]]:
  """A fresh residual adapter (the identity at initialisation)."""
  adapter = components.ResidualAdapter(hidden_size, inner_dim, seed=seed)
  adapter.build((None, num_tokens, hidden_size))
  spec = spec_for(adapter, new_component_id(task, "residual_adapter"),
                  input_shape=(num_tokens, hidden_size), created_by_task=task, access=access)
  return spec, [np.array(w) for w in adapter.get_weights()]


def task_access(task: mtsys_pb2.TaskSpec) -> mtsys_pb2.ComponentAccess:
  """Who may use components trained on `task`, from its Access setting."""
  vis = task.access.visibility
  if vis == mtsys_pb2.Access.PRIVATE:
    return mtsys_pb2.ComponentAccess(public=False, tasks=[task.name])
  if vis == mtsys_pb2.Access.GROUPS:
    return mtsys_pb2.ComponentAccess(public=False, tasks=[task.name], groups=list(task.access.groups))
  return mtsys_pb2.ComponentAccess(public=True)
