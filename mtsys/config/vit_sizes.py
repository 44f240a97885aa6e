"""ViT sizes by name, as in the ViT papers (Dosovitskiy et al. 2021, Steiner et al. 2021).

A name is "<size>/<patch>", e.g. "Ti/16" or "B/32". "tiny" is mtsys's own size for the offline
`chars-lite` benchmark: small enough to evolve on two CPU cores in minutes.
"""

from __future__ import annotations

import dataclasses

from mtsys import errors


@dataclasses.dataclass(frozen=True)
class VitSize:
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int


_SIZES = {
    "tiny": VitSize(hidden_size=64, num_layers=3, num_heads=4, mlp_dim=128),
    "Ti": VitSize(hidden_size=192, num_layers=12, num_heads=3, mlp_dim=768),
    "S": VitSize(hidden_size=384, num_layers=12, num_heads=6, mlp_dim=1536),
    "B": VitSize(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
    "L": VitSize(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096),
    "H": VitSize(hidden_size=1280, num_layers=32, num_heads=16, mlp_dim=5120),
}


@dataclasses.dataclass(frozen=True)
class VitArch:
  """A resolved root architecture."""

  patch_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  # The blocks' form: GELU's tanh approximation (the original ViT's) or the exact erf form, and
  # the LayerNorm epsilon of blocks and head. Random roots use exact GELU and 1e-6; imported
  # roots take their source's (issue #14).
  gelu_approximate: bool = False
  layer_norm_epsilon: float = 1e-6


def names() -> list[str]:
  return sorted(_SIZES)


def parse(name: str) -> VitArch:
  """Resolves "B/16" into an architecture; raises ValueError naming the bad part."""
  size, sep, patch = name.partition("/")
  if size not in _SIZES:
    raise errors.ConfigError(
        f"Unknown ViT size '{size}' in '{name}'; expected one of {names()} "
        "followed by '/<patch size>', e.g. 'Ti/16'.")
  if not sep or not patch.isdigit() or int(patch) <= 0:
    raise errors.ConfigError(
        f"Invalid ViT name '{name}': expected '<size>/<patch size>', e.g. 'Ti/16'.")
  s = _SIZES[size]
  return VitArch(int(patch), s.hidden_size, s.num_layers, s.num_heads, s.mlp_dim)
