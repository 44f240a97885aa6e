"""User files (npz, image folders, TFRecords): loading, held-out splits and clear errors."""

import io

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image

from mtsys.data import load_task
from mtsys.protos import mtsys_pb2


def task_spec(text: str) -> mtsys_pb2.TaskSpec:
  return text_format.Parse(text, mtsys_pb2.TaskSpec())


def write_npz(path, n=100, shape=(8, 8), num_classes=10, seed=0, **overrides):
  rng = np.random.default_rng(seed)
  arrays = {"image": rng.integers(0, 256, (n,) + shape, dtype=np.uint8),
            "label": np.arange(n) % num_classes}
  arrays.update(overrides)
  np.savez(path, **arrays)
  return arrays


def all_examples(data, split):
  pairs = list(data.splits[split].as_numpy_iterator())
  return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def png_bytes(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# npz


def test_the_documented_user_config_works(tmp_path):
  path = tmp_path / "digits.npz"
  arrays = write_npz(path, n=100)
  data = load_task(task_spec(f"""
      name: "my_digits" num_classes: 10
      files {{ npz: "{path}" validation_fraction: 0.1 test_fraction: 0.2 }}"""))
  assert data.name == "my_digits" and data.num_classes == 10
  assert (data.channels, data.image_shape) == (1, (8, 8, 1))
  assert data.sizes == {"train": 70, "validation": 10, "test": 20}
  # The three splits partition the file.
  images = np.concatenate([all_examples(data, s)[0] for s in ("train", "validation", "test")])
  assert sorted(map(bytes, images[..., 0])) == sorted(map(bytes, arrays["image"]))
  image, label = next(iter(data.splits["train"]))
  assert image.dtype == tf.uint8 and label.dtype == tf.int64


def test_held_out_fractions_are_deterministic_and_seeded(tmp_path):
  path = tmp_path / "d.npz"
  write_npz(path, n=50)

  def val_labels(seed):
    data = load_task(task_spec(f"""
        name: "d" num_classes: 10
        files {{ npz: "{path}" validation_fraction: 0.2 test_fraction: 0.2
                split_seed: {seed} }}"""))
    return all_examples(data, "validation")[0].tobytes()

  assert val_labels(1) == val_labels(1)
  assert val_labels(1) != val_labels(2)


def test_npz_with_separate_validation_and_test_files_and_custom_keys(tmp_path):
  for name, n in (("train", 30), ("val", 7), ("test", 9)):
    rng = np.random.default_rng(n)
    np.savez(tmp_path / f"{name}.npz", x=rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8),
             y=np.arange(n) % 3)
  data = load_task(task_spec(f"""
      name: "rgb" num_classes: 3
      files {{ npz: "{tmp_path}/train.npz" validation: "{tmp_path}/val.npz"
              test: "{tmp_path}/test.npz" image_key: "x" label_key: "y" }}"""))
  assert data.sizes == {"train": 30, "validation": 7, "test": 9}
  assert (data.channels, data.image_shape) == (3, (6, 6, 3))


def test_channels_in_the_spec_convert_the_images(tmp_path):
  write_npz(tmp_path / "d.npz", n=20)
  data = load_task(task_spec(f"""
      name: "d" num_classes: 10 channels: 3
      files {{ npz: "{tmp_path}/d.npz" validation_fraction: 0.25 test_fraction: 0.25 }}"""))
  images, _ = all_examples(data, "train")
  assert data.channels == 3 and data.image_shape == (8, 8, 3) and images.shape[-1] == 3
  np.testing.assert_array_equal(images[..., 0], images[..., 2])


def npz_spec(path, extra=""):
  return task_spec(f"""name: "my_digits" num_classes: 10
      files {{ npz: "{path}" validation_fraction: 0.1 test_fraction: 0.2 {extra} }}""")


def test_missing_file_names_the_path(tmp_path):
  with pytest.raises(FileNotFoundError,
                     match=rf"^Task 'my_digits': file not found: '{tmp_path}/nope.npz' "
                     r"\(files.npz\)\.$"):
    load_task(npz_spec(tmp_path / "nope.npz"))


@pytest.mark.parametrize("overrides, message", [
    ({"image": np.zeros((10, 8, 8), np.float32)},
     r"images in '.*d.npz' must be uint8 \(0-255\); got dtype float32"),
    ({"image": np.zeros((10, 8), np.uint8)},
     r"images in '.*d.npz' must have shape \(N, H, W\) or \(N, H, W, C\) with C in \{1, 3\}; "
     r"got shape \(10, 8\)"),
    ({"image": np.zeros((10, 8, 8, 2), np.uint8)}, r"images in .* got shape \(10, 8, 8, 2\)"),
    ({"image": np.zeros((10, 8, 8), np.uint8), "label": np.zeros(9, np.int64)},
     r"labels in '.*d.npz' must have shape \(10,\) to match the 10 images; got shape \(9,\)"),
    ({"image": np.zeros((10, 8, 8), np.uint8), "label": np.full(10, 0.5)},
     r"labels in '.*d.npz' must be integers; got dtype float64"),
    ({"image": np.zeros((10, 8, 8), np.uint8), "label": np.array([0] * 9 + [10])},
     r"label 10 in '.*d.npz' is out of range \[0, 10\) \(num_classes=10\)"),
    ({"image": np.zeros((10, 8, 8), np.uint8), "label": np.array([-1] + [0] * 9)},
     r"label -1 in '.*d.npz' is out of range \[0, 10\)"),
])
def test_bad_arrays_fail_with_the_task_and_value(tmp_path, overrides, message):
  write_npz(tmp_path / "d.npz", **overrides)
  with pytest.raises(ValueError, match=r"^Task 'my_digits': " + message):
    load_task(npz_spec(tmp_path / "d.npz"))


def test_missing_array_key_lists_the_keys(tmp_path):
  np.savez(tmp_path / "d.npz", images=np.zeros((4, 2, 2), np.uint8), label=np.zeros(4, int))
  with pytest.raises(ValueError, match=r"has no array 'image'; expected keys 'image' and 'label', "
                     r"found \['images', 'label'\]"):
    load_task(npz_spec(tmp_path / "d.npz"))


def test_empty_split_is_named(tmp_path):
  write_npz(tmp_path / "d.npz", n=4)  # 0.1 * 4 rounds to 0 validation examples
  with pytest.raises(ValueError, match=r"^Task 'my_digits': split 'validation' is empty"):
    load_task(npz_spec(tmp_path / "d.npz"))


@pytest.mark.parametrize("fractions, message", [
    ("validation_fraction: 1.5 test_fraction: 0.2",
     r"files.validation_fraction must be in \[0, 1\)\. Received: validation_fraction=1.5"),
    ("validation_fraction: 0.1 test_fraction: -0.2",
     r"files.test_fraction must be in \[0, 1\)\. Received: test_fraction=-0.2"),
    ("validation_fraction: 0.5 test_fraction: 0.5",
     r"files.validation_fraction \+ files.test_fraction must be below 1 to leave training "
     r"examples\. Received: 0.5 \+ 0.5 = 1"),
    ("test_fraction: 0.2",
     r"no validation data; set files.validation \(files of the same kind\) or "
     r"files.validation_fraction"),
])
def test_bad_fractions(tmp_path, fractions, message):
  write_npz(tmp_path / "d.npz")
  with pytest.raises(ValueError, match=r"^Task 'f': " + message):
    load_task(task_spec(f"""name: "f" num_classes: 10
        files {{ npz: "{tmp_path}/d.npz" {fractions} }}"""))


def test_file_and_fraction_for_the_same_split_is_an_error(tmp_path):
  write_npz(tmp_path / "d.npz")
  with pytest.raises(ValueError, match=r"^Task 'f': files.test and files.test_fraction are both "
                     r"set; set one of them\.$"):
    load_task(task_spec(f"""name: "f" num_classes: 10
        files {{ npz: "{tmp_path}/d.npz" validation_fraction: 0.1 test_fraction: 0.1
                test: "{tmp_path}/d.npz" }}"""))


@pytest.mark.parametrize("num_classes", [0, -3])
def test_num_classes_must_be_positive(tmp_path, num_classes):
  with pytest.raises(ValueError, match=rf"^Task 'f': num_classes must be positive\. Received: "
                     rf"num_classes={num_classes}$"):
    load_task(task_spec(f"""name: "f" num_classes: {num_classes}
        files {{ npz: "{tmp_path}/d.npz" validation_fraction: 0.1 test_fraction: 0.1 }}"""))


def test_exactly_one_kind_of_training_files(tmp_path):
  with pytest.raises(ValueError, match=r"^Task 'f': set exactly one of files.npz, files.folder "
                     r"and files.tfrecord\. Received: \['npz', 'folder'\]"):
    load_task(task_spec(f"""name: "f" num_classes: 10
        files {{ npz: "a.npz" folder: "b" validation_fraction: 0.1 test_fraction: 0.1 }}"""))


# ---------------------------------------------------------------------------------------------
# Image folders


def make_folder(root, classes=("cat", "dog", "eel"), per_class=5, size=(6, 7), seed=0,
                formats=("png", "bmp", "gif")):
  rng = np.random.default_rng(seed)
  for c, name in enumerate(classes):
    (root / name).mkdir(parents=True)
    for i in range(per_class):
      array = np.full(size + (3,), 40 * c, np.uint8)
      array[0, 0] = rng.integers(0, 256, 3)
      Image.fromarray(array).save(root / name / f"{i}.{formats[i % len(formats)]}")
  (root / "README.txt").write_text("not a class")  # files beside the class folders are ignored


def test_folder_of_class_folders(tmp_path):
  make_folder(tmp_path / "train")
  make_folder(tmp_path / "val", per_class=2, seed=1)
  data = load_task(task_spec(f"""name: "pets" num_classes: 3
      files {{ folder: "{tmp_path}/train" validation: "{tmp_path}/val" test_fraction: 0.2 }}"""))
  assert data.sizes == {"train": 12, "validation": 6, "test": 3}
  assert (data.channels, data.image_shape) == (3, (6, 7, 3))
  images, labels = all_examples(data, "validation")
  # Classes are the sorted folder names; a class's label is its index.
  np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])
  np.testing.assert_array_equal(images[:, 1, 1, 0], 40 * labels)
  assert data.class_names == ("cat", "dog", "eel")  # exports serve them


def test_folder_with_fewer_class_folders_than_classes_has_no_class_names(tmp_path):
  make_folder(tmp_path)
  data = load_task(task_spec(f"""name: "pets" num_classes: 4
      files {{ folder: "{tmp_path}" validation_fraction: 0.2 test_fraction: 0.2 }}"""))
  assert data.class_names == ()


def test_npz_tasks_have_no_class_names(tmp_path):
  write_npz(tmp_path / "d.npz")
  data = load_task(task_spec(f"""name: "d" num_classes: 10
      files {{ npz: "{tmp_path}/d.npz" validation_fraction: 0.2 test_fraction: 0.2 }}"""))
  assert data.class_names == ()


def test_grayscale_folder_keeps_one_channel(tmp_path):
  for c in ("a", "b"):
    (tmp_path / c).mkdir()
    for i in range(5):
      Image.fromarray(np.full((4, 4), 9 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
  data = load_task(task_spec(f"""name: "g" num_classes: 2
      files {{ folder: "{tmp_path}" validation_fraction: 0.2
                test_fraction: 0.2 }}"""))
  assert (data.channels, data.image_shape) == (1, (4, 4, 1))


def test_folder_images_of_different_sizes_name_the_file(tmp_path):
  make_folder(tmp_path)
  Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "dog" / "big.png")
  with pytest.raises(ValueError, match=rf"^Task 'pets': image '{tmp_path}/dog/big.png' is 9x9 but "
                     rf"'{tmp_path}/cat/0.png' is 6x7; all images of a folder task must have the "
                     r"same size\.$"):
    load_task(task_spec(f"""name: "pets" num_classes: 3
        files {{ folder: "{tmp_path}" validation_fraction: 0.2
                test_fraction: 0.2 }}"""))


def test_undecodable_image_is_named(tmp_path):
  make_folder(tmp_path)
  (tmp_path / "eel" / "broken.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match=rf"^Task 'pets': cannot decode image "
                     rf"'{tmp_path}/eel/broken.png'"):
    load_task(task_spec(f"""name: "pets" num_classes: 3
        files {{ folder: "{tmp_path}" validation_fraction: 0.2
                test_fraction: 0.2 }}"""))


def test_more_class_folders_than_classes(tmp_path):
  make_folder(tmp_path)
  with pytest.raises(ValueError, match=rf"^Task 'pets': folder '{tmp_path}' has 3 class folders "
                     r"but num_classes is 2; classes are \['cat', 'dog', 'eel'\]\.$"):
    load_task(task_spec(f"""name: "pets" num_classes: 2
        files {{ folder: "{tmp_path}" validation_fraction: 0.2
                test_fraction: 0.2 }}"""))


def test_validation_folder_with_an_unknown_class(tmp_path):
  make_folder(tmp_path / "train")
  make_folder(tmp_path / "val", classes=("cat", "fox"))
  with pytest.raises(ValueError, match=r"^Task 'pets': class folder 'fox' in '.*val' is not a "
                     r"class of the training folder; expected one of \['cat', 'dog', 'eel'\]\.$"):
    load_task(task_spec(f"""name: "pets" num_classes: 3
        files {{ folder: "{tmp_path}/train" validation: "{tmp_path}/val" test_fraction: 0.2 }}"""))


# ---------------------------------------------------------------------------------------------
# TFRecords


def write_tfrecord(path, n, size=(5, 5), num_classes=4, seed=0, label_key="label"):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n,) + size + (1,), dtype=np.uint8)
  labels = np.arange(n) % num_classes
  with tf.io.TFRecordWriter(str(path)) as writer:
    for image, label in zip(images, labels):
      example = tf.train.Example(features=tf.train.Features(feature={
          "image": tf.train.Feature(
              bytes_list=tf.train.BytesList(value=[png_bytes(image[..., 0])])),
          label_key: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
      }))
      writer.write(example.SerializeToString())
  return images, labels


def test_tfrecord_pattern_with_held_out_fractions(tmp_path):
  a = write_tfrecord(tmp_path / "train-0.tfrecord", 12, seed=0)
  b = write_tfrecord(tmp_path / "train-1.tfrecord", 8, seed=1)
  spec = task_spec(f"""name: "rec" num_classes: 4
      files {{ tfrecord: "{tmp_path}/train-*.tfrecord" validation_fraction: 0.25
              test_fraction: 0.25 split_seed: 3 }}""")
  data = load_task(spec)
  assert data.sizes == {"train": 10, "validation": 5, "test": 5}
  assert (data.channels, data.image_shape) == (1, (5, 5, 1))
  parts = [all_examples(data, s) for s in ("train", "validation", "test")]
  assert [len(p[0]) for p in parts] == [10, 5, 5]
  got = sorted(bytes(x) for p in parts for x in p[0])
  assert got == sorted(bytes(x) for x in np.concatenate([a[0], b[0]]))
  again = load_task(spec)
  assert all_examples(again, "test")[0].tobytes() == parts[2][0].tobytes()


def test_tfrecord_with_separate_validation_and_test(tmp_path):
  write_tfrecord(tmp_path / "train.rec", 10)
  write_tfrecord(tmp_path / "val.rec", 3)
  write_tfrecord(tmp_path / "test.rec", 4)
  data = load_task(task_spec(f"""name: "rec" num_classes: 4
      files {{ tfrecord: "{tmp_path}/train.rec" validation: "{tmp_path}/val.rec"
              test: "{tmp_path}/test.rec" }}"""))
  assert data.sizes == {"train": 10, "validation": 3, "test": 4}
  np.testing.assert_array_equal(all_examples(data, "test")[1], [0, 1, 2, 3])


def test_tfrecord_label_out_of_range(tmp_path):
  write_tfrecord(tmp_path / "train.rec", 10, num_classes=6)
  with pytest.raises(ValueError, match=r"^Task 'rec': label 4 in '.*train.rec' is out of range "
                     r"\[0, 4\)"):
    load_task(task_spec(f"""name: "rec" num_classes: 4
        files {{ tfrecord: "{tmp_path}/train.rec" validation_fraction: 0.2
                test_fraction: 0.2 }}"""))


def test_tfrecord_without_the_label_feature(tmp_path):
  write_tfrecord(tmp_path / "train.rec", 10, label_key="class")
  with pytest.raises(ValueError, match=r"^Task 'rec': cannot read TFRecords '.*train.rec' "
                     r"\(files.tfrecord\) as tf.train.Example with a bytes feature 'image'"):
    load_task(task_spec(f"""name: "rec" num_classes: 4
        files {{ tfrecord: "{tmp_path}/train.rec" validation_fraction: 0.2
                test_fraction: 0.2 }}"""))


def test_tfrecord_pattern_matching_nothing(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"^Task 'rec': file not found: no TFRecord file "
                     r"matches '.*nothing-\*' \(files.tfrecord\)\.$"):
    load_task(task_spec(f"""name: "rec" num_classes: 4
        files {{ tfrecord: "{tmp_path}/nothing-*" validation_fraction: 0.2
                test_fraction: 0.2 }}"""))
