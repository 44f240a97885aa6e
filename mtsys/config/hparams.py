"""Hyperparameters: the names mtsys knows, their types and the papers' search spaces.

A path carries one value per hyperparameter (a plain dict ``name -> float | bool | str``); the
search space gives each name a sorted list of valid values (muNet section 3, µ2Net Table 1) so a
mutation can move to a neighbouring value. ``image_size`` is the exception: its valid values are
the multiples of the root's patch size, so its list is derived from the root model when a config
is loaded (see ``image_size_values``).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence, Union

from mtsys import errors

Value = Union[float, bool, str]

NUMBER = "number"
FLAG = "flag"
CHOICE = "choice"


@dataclasses.dataclass(frozen=True)
class HParam:
  """One hyperparameter: its name, value type, sorted valid values and default."""

  name: str
  kind: str  # NUMBER, FLAG or CHOICE
  values: tuple
  default: Value
  doc: str = ""

  def neighbours(self, value: Value) -> tuple:
    """The values next to `value` in the sorted list (one or two of them)."""
    i = self.values.index(value)
    return tuple(self.values[j] for j in (i - 1, i + 1) if 0 <= j < len(self.values))


def _num(name, values, default, doc):
  return HParam(name, NUMBER, tuple(float(v) for v in values), float(default), doc)


def _flag(name, default, doc):
  return HParam(name, FLAG, (False, True), bool(default), doc)


# µ2Net Table 1 (the default search space); `image_size` and `adapter_dim` from muNet section 3.
_MU2NET = (
    _num("mutation_prob", [0.10, 0.12, 0.14, 0.16, 0.18, 0.20, 0.22, 0.24, 0.26, 0.28, 0.30], 0.2,
         "probability µ that each possible mutation action is applied"),
    _num("learning_rate",
         [0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5], 0.01,
         "peak SGD learning rate"),
    _num("warmup_ratio", [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4], 0.1,
         "share of a child's steps spent warming the cosine schedule up"),
    _num("momentum", [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99], 0.9, "SGD momentum"),
    _flag("nesterov", False, "Nesterov momentum"),
    _flag("crop", True, "random crop of the input image"),
    _num("crop_area_min", [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0], 0.05,
         "smallest cropped area, as a share of the image"),
    _num("crop_aspect_min", [0.25, 0.5, 0.75, 1.0], 0.75,
         "cropped aspect ratio range is [x, 1/x]"),
    _flag("flip", True, "random left/right flip"),
    _num("brightness_delta", [0.0, 0.01, 0.02, 0.05, 0.1, 0.2], 0.0, "random brightness delta"),
    _num("contrast_delta", [0.0, 0.01, 0.02, 0.05, 0.1, 0.2], 0.0, "random contrast delta"),
    _num("saturation_delta", [0.0, 0.01, 0.02, 0.05, 0.1, 0.2], 0.0,
         "random saturation delta (skipped for grayscale)"),
    _num("hue_delta", [0.0, 0.01, 0.02, 0.05, 0.1, 0.2], 0.0, "random hue delta (skipped for grayscale)"),
    _num("adapter_dim", [8, 16, 32, 64, 128], 32, "inner dimension of an inserted residual adapter"),
)

# muNet section 3: no µ list (µ fixed at 0.2 by the config), an lr schedule choice, momentum from 0.7.
_MUNET_OVERRIDES = (
    # muNet fixes µ at 0.1 (section 2.2); µ2Net made it a hyperparameter.
    _num("mutation_prob", [0.1], 0.1, "mutation probability µ (fixed in muNet)"),
    HParam("lr_schedule", CHOICE, ("constant", "cosine", "restarts"), "cosine",
           "learning-rate schedule"),
    _num("momentum", [0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99], 0.9, "SGD momentum"),
)

KNOWN = {p.name: p for p in _MUNET_OVERRIDES}
KNOWN.update({p.name: p for p in _MU2NET})  # µ2Net's definition where both have one
KNOWN["image_size"] = HParam("image_size", NUMBER, (), 0.0,
                             "input resolution; a multiple of the root's patch size")


def mu2net_search_space() -> dict[str, HParam]:
  """µ2Net Table 1 plus `adapter_dim`; `image_size` is added by the config loader."""
  return {p.name: p for p in _MU2NET}


def munet_search_space() -> dict[str, HParam]:
  """muNet section 3's search space."""
  space = mu2net_search_space()
  for p in _MUNET_OVERRIDES:
    space[p.name] = p
  return space


def image_size_values(patch_size: int, default: int, max_patches: int = 0) -> tuple:
  """Valid image sizes: multiples of the patch size, from one patch to twice the default."""
  top = max(default * 2, patch_size)
  if max_patches:
    top = min(top, patch_size * max_patches)
  return tuple(float(s) for s in range(patch_size, top + 1, patch_size))


def defaults(space: Mapping[str, HParam]) -> dict[str, Value]:
  """The default value of every hyperparameter in `space`."""
  return {name: p.default for name, p in space.items()}


def check_values(values: Mapping[str, Value], space: Mapping[str, HParam],
                 where: str = "hyperparameters") -> None:
  """Raises ValueError unless every value is one of its hyperparameter's valid values."""
  for name, value in values.items():
    if name not in space:
      raise errors.ConfigError(
          f"Unknown hyperparameter '{name}' in {where}; expected one of "
          f"{sorted(space)}.")
    valid: Sequence = space[name].values
    if valid and value not in valid:
      raise errors.ConfigError(
          f"Invalid value for hyperparameter '{name}' in {where}. Expected one of "
          f"{list(valid)}. Received: {name}={value!r}")
