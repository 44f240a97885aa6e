"""Turning component specs into Keras layers and paths into `keras.Model`s.

A path is a chain: patch embedding -> class token -> position embedding -> transformer blocks and
residual adapters -> head. Frozen (system) components get `trainable = False`, so Keras computes no
weight gradient for them, while gradients still flow through them to trainable components below.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Optional, Sequence

import keras
import numpy as np

from mtsys import components
from mtsys.protos import mtsys_pb2


@dataclasses.dataclass(frozen=True)
class PlannedComponent:
  """One component of a path about to be built.

  `weights` None means: keep the layer's fresh initialisation (a new head or block). Components
  that are `trainable` are the child's own (new or cloned); all others are shared and frozen.
  """

  spec: mtsys_pb2.ComponentSpec
  weights: Optional[Sequence[np.ndarray]] = None
  optimizer_slots: Optional[Sequence[np.ndarray]] = None
  trainable: bool = False


def layer_name(component_id: str) -> str:
  # Keras names may not contain "/"; ids never do, but keep names tidy for TensorBoard.
  return re.sub(r"[^A-Za-z0-9_.\-]", "_", component_id)


def instantiate(spec: mtsys_pb2.ComponentSpec) -> keras.layers.Layer:
  """A new (unbuilt) layer from a component spec."""
  config = json.loads(spec.config_json)
  config["name"] = layer_name(spec.id)
  return components.from_config(spec.kind, config)


def component_config_json(layer: keras.layers.Layer) -> str:
  """The JSON stored in ComponentSpec.config_json (name excluded: the id names the layer)."""
  config = dict(layer.get_config())
  for key in ("name", "trainable", "dtype"):
    config.pop(key, None)
  return json.dumps(config, sort_keys=True)


def chain(layers: Sequence[keras.layers.Layer], image_size: int, channels: int,
          name: str = "path") -> keras.Model:
  """A functional model applying `layers` in order to (image_size, image_size, channels) images."""
  inputs = keras.Input((image_size, image_size, channels), name="image")
  x = inputs
  for layer in layers:
    x = layer(x)
  return keras.Model(inputs, x, name=layer_name(name))


def build_path_model(planned: Sequence[PlannedComponent], image_size: int, channels: int,
                     name: str = "path") -> tuple[keras.Model, list[keras.layers.Layer]]:
  """Builds the path model and its layers, with stored weights loaded and freezing applied.

  Call inside the strategy's scope so variables are created on the right devices.
  """
  layers = [instantiate(p.spec) for p in planned]
  model = chain(layers, image_size, channels, name)
  for layer, p in zip(layers, planned):
    if p.weights is not None:
      set_stored_weights(layer, p.spec, p.weights)
    layer.trainable = p.trainable
  return model, layers


def set_stored_weights(layer: keras.layers.Layer, spec: mtsys_pb2.ComponentSpec,
                       weights: Sequence[np.ndarray]) -> None:
  """Loads a component's stored weights into its built layer, checking every shape first."""
  expected = [tuple(w.shape) for w in layer.weights]
  got = [tuple(np.shape(w)) for w in weights]
  if expected != got:
    raise ValueError(f"Stored weights of component '{spec.id}' ({spec.kind}) have shapes "
                     f"{got}; the layer expects {expected}.")
  layer.set_weights(list(weights))
