"""Built-in chars-lite tasks: fixed sizes, determinism, balance, real glyphs, errors."""

import numpy as np
import pytest

from mtsys.data import builtin
from mtsys.data import glyphs
from mtsys.data import load_task
from mtsys.data import render_samples
from mtsys.protos import mtsys_pb2

EXPECTED = {
    "sklearn_digits": (10, (1200, 200, 397)),
    "glyphs_latin_upper": (26, (3120, 520, 1040)),
    "glyphs_latin_lower": (26, (2080, 520, 1040)),
    "glyphs_greek": (24, (1200, 240, 480)),
    "glyphs_cyrillic": (33, (660, 330, 660)),
    "glyphs_digits": (10, (400, 200, 400)),
    "glyphs_font": (6, (1800, 300, 600)),
    "glyphs_symbols": (629, (10064, 1258, 1258)),
}


def spec(name, num_classes=None, task="t"):
  if num_classes is None:
    num_classes = EXPECTED[name][0]
  return mtsys_pb2.TaskSpec(name=task, num_classes=num_classes,
                            builtin=mtsys_pb2.BuiltinSource(name=name))


def test_registered_names_classes_and_sizes():
  assert builtin.builtin_names() == sorted(EXPECTED)
  for name, (classes, sizes) in EXPECTED.items():
    b = builtin.get_builtin(name)
    assert (b.num_classes, b.sizes) == (classes, sizes)


@pytest.mark.parametrize("name, first, last", [
    ("sklearn_digits", "0", "9"), ("glyphs_latin_upper", "A", "Z"), ("glyphs_greek", "α", "ω"),
    ("glyphs_font", "dejavu_sans", "cm_typewriter")])
def test_class_names_by_label_index(name, first, last):
  names = builtin.get_builtin(name).class_names
  assert len(names) == EXPECTED[name][0] and (names[0], names[-1]) == (first, last)


def test_class_names_reach_the_task_data():
  data = load_task(spec("sklearn_digits"))
  assert data.class_names == tuple("0123456789")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_data_shapes_sizes_and_labels(name):
  classes, sizes = EXPECTED[name]
  data = load_task(spec(name, task=f"my_{name}"))
  assert data.name == f"my_{name}"
  assert (data.num_classes, data.channels, data.image_shape) == (classes, 1, (16, 16, 1))
  assert tuple(data.sizes[s] for s in ("train", "validation", "test")) == sizes
  for split, n in zip(("train", "validation", "test"), sizes):
    images, labels = builtin.builtin_arrays(name)[split]
    assert images.shape == (n, 16, 16, 1) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(classes))
  image, label = next(iter(data.splits["train"]))
  assert image.dtype.name == "uint8" and image.shape == (16, 16, 1)
  assert label.dtype.name == "int64" and label.shape == ()


@pytest.mark.parametrize("name", ["glyphs_cyrillic", "glyphs_font", "sklearn_digits"])
def test_same_bytes_every_time(name):
  first = builtin.get_builtin(name).make()  # uncached
  second = builtin.get_builtin(name).make()
  for split in ("train", "validation", "test"):
    assert first[split][0].tobytes() == second[split][0].tobytes()
    assert first[split][1].tobytes() == second[split][1].tobytes()
  np.testing.assert_array_equal(first["train"][0], builtin.builtin_arrays(name)["train"][0])


@pytest.mark.parametrize("name", [n for n in EXPECTED if n.startswith("glyphs_")])
def test_glyph_tasks_are_class_balanced(name):
  classes, sizes = EXPECTED[name]
  for split, n in zip(("train", "validation", "test"), sizes):
    counts = np.bincount(builtin.builtin_arrays(name)[split][1], minlength=classes)
    assert (counts == n // classes).all()


def test_sklearn_digits_every_class_well_represented():
  labels = builtin.builtin_arrays("sklearn_digits")["train"][1]
  assert np.bincount(labels, minlength=10).min() >= 100


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_images_are_real_glyphs_not_blank_or_tofu(name):
  images, labels = builtin.builtin_arrays(name)["train"]
  images = images[..., 0].astype(np.float32)
  # Not blank: every image has ink well above its background (but a hairline symbol such as
  # '|' shrunk to 16x16 can be faint, so the symbols allow one in a thousand).
  inked = np.ptp(images.reshape(len(images), -1), axis=1) > 80
  assert inked.mean() >= (0.999 if name == "glyphs_symbols" else 1.0)
  # Not tofu: class means differ from each other (boxes would all look alike).
  means = np.stack([images[labels == c].mean(axis=0) for c in range(labels.max() + 1)])
  dist = np.sqrt(((means[:, None] - means[None]) ** 2).mean(axis=(2, 3)))
  off_diagonal = dist[~np.eye(len(means), dtype=bool)]
  assert off_diagonal.min() > 2.0, off_diagonal.min()


def test_fonts_without_a_glyph_are_skipped():
  assert glyphs.glyph("DejaVuSans.ttf", "\u4e00") is None  # CJK: no glyph, would be tofu
  assert glyphs.glyph("cmr10.ttf", "Ж") is None
  cyrillic = glyphs.fonts_with(builtin.CYRILLIC_UPPER)
  assert "DejaVuSerif.ttf" in cyrillic and not any(f.startswith("cm") for f in cyrillic)
  assert len(builtin.CYRILLIC_UPPER) == 33 and len(builtin.GREEK_LOWER) == 24


def test_num_classes_mismatch_is_an_error():
  with pytest.raises(ValueError, match=r"^Task 'mine': num_classes is 12 but built-in dataset "
                     r"'glyphs_digits' has 10 classes\.$"):
    load_task(spec("glyphs_digits", num_classes=12, task="mine"))


def test_unknown_builtin_lists_known_names():
  with pytest.raises(ValueError, match=r"Unknown built-in dataset 'glyphs_klingon' for task 't'; "
                     r"expected one of \['glyphs_cyrillic', .*'sklearn_digits'\]"):
    load_task(spec("glyphs_klingon", num_classes=3))


def test_duplicate_builtin_registration_raises():
  with pytest.raises(ValueError, match="'sklearn_digits' is already registered"):
    builtin.register_builtin("sklearn_digits", 10, (1, 1, 1))(lambda: {})


def test_disk_cache_round_trips(tmp_path):
  cache = str(tmp_path / "cache")
  first = load_task(spec("glyphs_digits"), cache_dir=cache)
  assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
  second = load_task(spec("glyphs_digits"), cache_dir=cache)
  a = np.stack([x for x, _ in first.splits["test"].as_numpy_iterator()])
  b = np.stack([x for x, _ in second.splits["test"].as_numpy_iterator()])
  np.testing.assert_array_equal(a, b)


def test_render_samples_writes_a_png(tmp_path):
  data = load_task(spec("glyphs_greek"))
  path = render_samples(data, str(tmp_path / "greek.png"), per_class=3)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_pretraining_symbols_share_no_character_with_the_tasks():
  task_chars = set(builtin.LATIN_UPPER + builtin.LATIN_LOWER + builtin.DIGITS + builtin.GREEK_LOWER
                   + builtin.CYRILLIC_UPPER)
  symbols = [c for c, _ in builtin._symbols()]
  assert len(set(symbols)) == len(symbols) == 629
  assert not task_chars & set(symbols)
  assert all(len(fonts) >= 2 for _, fonts in builtin._symbols())
