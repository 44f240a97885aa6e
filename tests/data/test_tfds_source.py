"""TFDS tasks, tested offline with tfds.testing.mock_data (no dataset is downloaded)."""

import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mtsys.data import load_task
from mtsys.protos import mtsys_pb2


def tfds_spec(task, dataset, num_classes, splits, **kwargs):
  train, validation, test = splits
  return mtsys_pb2.TaskSpec(
      name=task, num_classes=num_classes,
      tfds=mtsys_pb2.TfdsSource(name=dataset, train_split=train, validation_split=validation,
                                test_split=test, **kwargs))


@pytest.mark.parametrize("dataset, num_classes, splits, shape", [
    ("cmaterdb/bangla", 10, ("train[5%:]", "train[:5%]", "test"), (32, 32, 3)),
    ("omniglot", 1623, ("train", "small1", "small2"), (105, 105, 3)),
    ("emnist/letters", 37, ("train[5%:]", "train[:5%]", "test"), (28, 28, 1)),
])
def test_loads_mocked_tfds_splits(dataset, num_classes, splits, shape):
  with tfds.testing.mock_data(num_examples=7):
    data = load_task(tfds_spec(dataset, dataset, num_classes, splits))
    assert data.sizes == {"train": 7, "validation": 7, "test": 7}
    assert (data.num_classes, data.channels, data.image_shape) == (num_classes, shape[-1], shape)
    for split in ("train", "validation", "test"):
      pairs = list(data.splits[split].as_numpy_iterator())
      assert len(pairs) == 7
      image, label = pairs[0]
      assert image.shape == shape and image.dtype == np.uint8
      assert label.dtype == np.int64 and 0 <= label < num_classes


def test_class_label_names_become_the_task_class_names():
  with tfds.testing.mock_data(num_examples=3):
    data = load_task(tfds_spec("cmaterdb", "cmaterdb/bangla", 10,
                               ("train[5%:]", "train[:5%]", "test")))
  names = tfds.builder("cmaterdb/bangla").info.features["label"].names
  assert len(names) == 10 and data.class_names == tuple(names)


def test_variable_size_images_take_the_first_example_shape():
  with tfds.testing.mock_data(num_examples=3):
    data = load_task(tfds_spec("dtd", "visual_domain_decathlon/dtd", 47,
                               ("train", "validation[:50%]", "validation[50%:]")))
    image, _ = next(iter(data.splits["train"]))
    assert data.image_shape == tuple(image.shape) and data.channels == 3


def test_spec_channels_convert_tfds_images():
  with tfds.testing.mock_data(num_examples=3):
    data = load_task(mtsys_pb2.TaskSpec(
        name="omniglot", num_classes=1623, channels=1,
        tfds=mtsys_pb2.TfdsSource(name="omniglot", train_split="train", validation_split="small1",
                                  test_split="small2")))
    image, _ = next(iter(data.splits["validation"]))
  assert (data.channels, data.image_shape, tuple(image.shape)) == (
      1, (105, 105, 1), (105, 105, 1))


@pytest.mark.parametrize("bad", ["train[5%", "train[:abc]", "train validation"])
def test_split_that_does_not_parse_fails_before_loading(bad):
  with pytest.raises(ValueError, match=rf"^Task 'mnist': TFDS split '{re.escape(bad)}' "
                     r"\(tfds.train_split\) does not parse; expected TFDS split syntax such as "
                     r"'train', 'train\[5%:\]' or 'validation\[:50%\]'"):
    load_task(tfds_spec("mnist", "mnist", 10, (bad, "train[:5%]", "test")))


def test_empty_split_string():
  with pytest.raises(ValueError, match=r"^Task 'mnist': tfds.test_split is empty; expected a TFDS "
                     r"split such as 'train' or 'train\[5%:\]'\.$"):
    load_task(tfds_spec("mnist", "mnist", 10, ("train", "train[:5%]", "")))


def test_num_classes_must_match_the_tfds_labels():
  with pytest.raises(ValueError, match=r"^Task 'kmnist': num_classes is 12 but TFDS dataset "
                     r"'kmnist' feature 'label' has 10 classes\.$"):
    load_task(tfds_spec("kmnist", "kmnist", 12, ("train", "train", "test")))


def test_unknown_feature_key_lists_the_features():
  with pytest.raises(ValueError, match=r"^Task 'k': TFDS dataset 'kmnist' has no image feature "
                     r"'picture'; expected one of \['image', 'label'\]\.$"):
    load_task(tfds_spec("k", "kmnist", 10, ("train", "train", "test"), image_key="picture"))


def test_unknown_dataset_names_the_task():
  with pytest.raises(ValueError, match=r"^Task 'x': unknown TFDS dataset 'no_such_dataset_xyz'"):
    load_task(tfds_spec("x", "no_such_dataset_xyz", 10, ("train", "train", "test")))
