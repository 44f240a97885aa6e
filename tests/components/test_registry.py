import re

import pytest

from mtsys import components
from mtsys.components import registry

_KINDS = {
    "class_token": components.ClassToken,
    "head": components.ClassificationHead,
    "patch_embedding": components.PatchEmbedding,
    "position_embedding": components.PositionEmbedding,
    "residual_adapter": components.ResidualAdapter,
    "transformer_block": components.TransformerBlock,
}


def test_kinds_are_sorted_and_complete():
  assert components.kinds() == sorted(_KINDS)


@pytest.mark.parametrize("kind, cls", sorted(_KINDS.items()))
def test_get_returns_the_class_and_sets_its_kind(kind, cls):
  assert components.get(kind) is cls
  assert cls.kind == kind
  assert issubclass(cls, components.Component)


def test_unknown_kind_lists_the_known_ones():
  message = (
      "Unknown component kind 'x'; expected one of ['class_token', 'head', 'patch_embedding', "
      "'position_embedding', 'residual_adapter', 'transformer_block']"
  )
  with pytest.raises(ValueError, match=re.escape(message)):
    components.get("x")


def test_duplicate_kind_raises(monkeypatch):
  monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
  message = (
      "Component kind 'head' is already registered by "
      "mtsys.components.head.ClassificationHead."
  )
  with pytest.raises(ValueError, match=re.escape(message)):
    registry.register("head")(type("Other", (components.Component,), {}))


def test_register_adds_a_kind(monkeypatch):
  monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
  cls = registry.register("dummy")(type("Dummy", (components.Component,), {}))
  assert cls.kind == "dummy"
  assert registry.get("dummy") is cls
  assert "dummy" in registry.kinds()


def test_bad_kind_name_raises():
  message = (
      "Invalid value received for argument `kind`. "
      "Expected a non-empty string. Received: kind=''"
  )
  with pytest.raises(ValueError, match=re.escape(message)):
    registry.register("")


def test_from_config_builds_an_unbuilt_layer():
  config = components.TransformerBlock(8, 2, 16, seed=3, name="block_0").get_config()
  layer = components.from_config("transformer_block", config)
  assert isinstance(layer, components.TransformerBlock)
  assert layer.get_config() == config
  assert not layer.built
