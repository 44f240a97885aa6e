"""Built-in offline tasks (TaskSpec.builtin): the chars-lite benchmark.

Small grayscale 16x16 uint8 character tasks that need no network: scikit-learn's real handwritten
digits and glyphs rendered from the fonts matplotlib ships (see glyphs.py). Every task has a fixed
number of classes, fixed seeds and fixed split sizes, so the same name always gives the same
bytes. Task sizes differ on purpose (muNet's benchmarks mix large and few-shot tasks).

Arrays are cached in-process; `load_task(..., cache_dir=...)` also keeps them as .npz files.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
from typing import Callable

import numpy as np
import tensorflow as tf

from mtsys import errors
from mtsys.data import glyphs
from mtsys.data import sources
from mtsys.data import task_data as td

# Bump when a task's bytes change, so on-disk caches are not reused.
_VERSION = 1

Arrays = dict  # split -> (uint8 images [N, 16, 16, 1], int64 labels [N])


@dataclasses.dataclass(frozen=True)
class Builtin:
  """A registered built-in task."""

  name: str
  num_classes: int
  sizes: tuple  # (train, validation, test)
  make: Callable[[], Arrays]  # uncached; deterministic
  doc: str = ""
  class_names: tuple = ()  # by label index; () when the classes have no names


_BUILTINS: dict[str, Builtin] = {}


def register_builtin(name: str, num_classes: int, sizes: tuple, doc: str = "",
                     class_names: tuple = ()):
  """Decorator registering `make() -> Arrays` as built-in task `name`; duplicates raise."""
  if class_names and len(class_names) != num_classes:
    raise ValueError(f"Built-in task '{name}': {len(class_names)} class names for {num_classes} "
                     "classes.")

  def register(make):
    if name in _BUILTINS:
      raise ValueError(f"Built-in task '{name}' is already registered.")
    _BUILTINS[name] = Builtin(name, num_classes, tuple(sizes), make, doc, tuple(class_names))
    return make

  return register


def builtin_names() -> list[str]:
  return sorted(_BUILTINS)


def get_builtin(name: str, task: str | None = None) -> Builtin:
  if name not in _BUILTINS:
    where = f" for task '{task}'" if task else ""
    raise errors.DataError(
        f"Unknown built-in dataset '{name}'{where}; expected one of "
        f"{builtin_names()}.")
  return _BUILTINS[name]


@functools.lru_cache(maxsize=None)
def builtin_arrays(name: str) -> Arrays:
  """The task's arrays, made once per process (read-only: they are shared)."""
  arrays = get_builtin(name).make()
  for images, labels in arrays.values():
    images.flags.writeable = False
    labels.flags.writeable = False
  return arrays


def _cached_arrays(name: str, cache_dir: str | None) -> Arrays:
  if not cache_dir:
    return builtin_arrays(name)
  path = os.path.join(cache_dir, f"builtin_{name}_v{_VERSION}.npz")
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path, "rb") as f:
      with np.load(io.BytesIO(f.read()), allow_pickle=False) as z:
        return {s: (z[f"{s}_image"], z[f"{s}_label"]) for s in td.SPLITS}
  arrays = builtin_arrays(name)
  buffer = io.BytesIO()
  np.savez(buffer, **{f"{s}_{k}": a for s, (i, l) in arrays.items()
                      for k, a in (("image", i), ("label", l))})
  tf.io.gfile.makedirs(cache_dir)
  tmp = f"{path}.tmp-{os.getpid()}"
  with tf.io.gfile.GFile(tmp, "wb") as f:
    f.write(buffer.getvalue())
  tf.io.gfile.rename(tmp, path, overwrite=True)
  return arrays


@sources.register_source("builtin")
def load(task_spec, *, cache_dir: str | None = None) -> td.TaskData:
  """Loads a BuiltinSource task; its num_classes must match the built-in's."""
  builtin = get_builtin(task_spec.builtin.name, task_spec.name)
  if task_spec.num_classes != builtin.num_classes:
    raise errors.DataError(
        f"Task '{task_spec.name}': num_classes is {task_spec.num_classes} but "
        f"built-in dataset '{builtin.name}' has {builtin.num_classes} classes.")
  arrays = _cached_arrays(builtin.name, cache_dir)
  images = arrays["train"][0]
  return td.TaskData(
      name=task_spec.name, num_classes=builtin.num_classes, channels=images.shape[-1],
      image_shape=tuple(images.shape[1:]),
      splits={s: td.from_arrays(*arrays[s]) for s in td.SPLITS},
      sizes={s: len(arrays[s][1]) for s in td.SPLITS}, class_names=builtin.class_names)


# ---------------------------------------------------------------------------------------------
# The tasks.


@register_builtin("sklearn_digits", 10, (1200, 200, 397),
                  "scikit-learn's 1797 handwritten digits (8x8, 0-16), scaled to 0-255 and "
                  "upsampled to 16x16; a fixed random split.", tuple("0123456789"))
def _sklearn_digits() -> Arrays:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  small = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
  images = np.stack([np.asarray(Image.fromarray(i).resize((16, 16), Image.Resampling.BILINEAR))
                     for i in small])[..., None]
  labels = digits.target.astype(np.int64)
  order = np.random.default_rng(0).permutation(len(labels))
  bounds = np.cumsum([0, 1200, 200, 397])
  return {s: (images[order[a:b]], labels[order[a:b]])
          for s, a, b in zip(td.SPLITS, bounds[:-1], bounds[1:])}


def _balanced_splits(seed: int, num_classes: int, per_class: tuple,
                     make_split: Callable[[np.ndarray, np.random.Generator], np.ndarray]
                     ) -> Arrays:
  """Class-balanced, shuffled splits; make_split(labels, rng) renders the images."""
  arrays = {}
  for i, (split, n) in enumerate(zip(td.SPLITS, per_class)):
    rng = np.random.default_rng([seed, i])
    labels = rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int64), n))
    arrays[split] = (make_split(labels, rng), labels)
  return arrays


def _register_glyphs(name: str, seed: int, chars: str, per_class: tuple, doc: str) -> None:
  def make() -> Arrays:
    fonts = glyphs.fonts_with(chars)

    def make_split(labels, rng):
      picks = rng.integers(len(fonts), size=len(labels))
      return glyphs.render([(fonts[f], chars[c]) for f, c in zip(picks, labels)], rng)

    return _balanced_splits(seed, len(chars), per_class, make_split)

  register_builtin(name, len(chars), tuple(len(chars) * n for n in per_class), doc,
                   tuple(chars))(make)


LATIN_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LATIN_LOWER = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
# Greek small alpha..omega without the final sigma; the 33 capitals of the Russian alphabet.
GREEK_LOWER = "".join(chr(c) for c in range(0x3B1, 0x3CA) if c != 0x3C2)
CYRILLIC_UPPER = "АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ"

_register_glyphs("glyphs_latin_upper", 101, LATIN_UPPER, (120, 20, 40),
                 "26 Latin capitals in 21 font faces.")
_register_glyphs("glyphs_latin_lower", 102, LATIN_LOWER, (80, 20, 40),
                 "26 Latin small letters in 21 font faces.")
_register_glyphs("glyphs_greek", 103, GREEK_LOWER, (50, 10, 20),
                 "24 Greek small letters in the 16 DejaVu and STIX faces.")
_register_glyphs("glyphs_cyrillic", 104, CYRILLIC_UPPER, (20, 10, 20),
                 "33 Russian capitals in the 16 DejaVu and STIX faces; few-shot.")
_register_glyphs("glyphs_digits", 105, DIGITS, (40, 20, 40),
                 "10 digits in 21 font faces; few-shot.")

FONT_TASK_FAMILIES = ("dejavu_sans", "dejavu_serif", "dejavu_mono", "stix", "cm_roman",
                      "cm_typewriter")


@register_builtin("glyphs_font", len(FONT_TASK_FAMILIES), (1800, 300, 600),
                  "Which of 6 font families drew a random Latin letter.", FONT_TASK_FAMILIES)
def _glyphs_font() -> Arrays:
  letters = LATIN_UPPER + LATIN_LOWER
  faces = [glyphs.fonts_with(letters, glyphs.FONT_FAMILIES[f]) for f in FONT_TASK_FAMILIES]

  def make_split(labels, rng):
    chars = rng.integers(len(letters), size=len(labels))
    picks = rng.random(len(labels))
    items = [(faces[c][int(p * len(faces[c]))], letters[ch])
             for c, p, ch in zip(labels, picks, chars)]
    return glyphs.render(items, rng)

  return _balanced_splits(106, len(FONT_TASK_FAMILIES), (300, 50, 100), make_split)


# Pretraining data for the chars-lite root (RootModel.pretrain): symbols of scripts and blocks
# that no chars-lite task uses (Armenian, Georgian, Hebrew, arrows, mathematical operators,
# geometric shapes, ASCII punctuation), each drawn by every font that has it. It plays the part
# ImageNet-21k plays for muNet's ViT root: broad, unlabelled-for-the-task visual knowledge.
SYMBOL_BLOCKS = (
    ("armenian", [*range(0x531, 0x557), *range(0x561, 0x587)]),
    ("georgian", range(0x10D0, 0x10F1)),
    ("hebrew", range(0x5D0, 0x5EB)),
    ("arrows", range(0x2190, 0x21FF)),
    ("math", range(0x2200, 0x22FF)),
    ("geometric", range(0x25A0, 0x25FF)),
    ("punctuation", [ord(c) for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"]),
)


@functools.lru_cache(maxsize=None)
def _symbols() -> tuple:
  """(character, fonts that draw it) for every symbol drawn by at least two fonts."""
  out = []
  for _, codes in SYMBOL_BLOCKS:
    for code in codes:
      fonts = glyphs.fonts_with([chr(code)])
      if len(fonts) >= 2:
        out.append((chr(code), fonts))
  return tuple(out)


_SYMBOL_CLASSES = 629  # len(_symbols()) with matplotlib's shipped fonts; checked by make()


@register_builtin("glyphs_symbols", _SYMBOL_CLASSES, tuple(_SYMBOL_CLASSES * n for n in (16, 2, 2)),
                  "629 symbols (Armenian, Georgian, Hebrew, arrows, maths, shapes, punctuation) "
                  "in every font that draws them: pretraining data for the chars-lite root.")
def _glyphs_symbols() -> Arrays:
  symbols = _symbols()
  if len(symbols) != _SYMBOL_CLASSES:
    raise RuntimeError(f"glyphs_symbols: matplotlib's fonts draw {len(symbols)} of the symbols, "
                       f"expected {_SYMBOL_CLASSES}; this matplotlib ships other fonts.")

  def make_split(labels, rng):
    picks = rng.random(len(labels))
    items = [(symbols[c][1][int(p * len(symbols[c][1]))], symbols[c][0])
             for c, p in zip(labels, picks)]
    return glyphs.render(items, rng)

  return _balanced_splits(107, _SYMBOL_CLASSES, (16, 2, 2), make_split)
