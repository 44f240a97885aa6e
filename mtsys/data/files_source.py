"""Tasks from a user's own files (TaskSpec.files): an .npz, a folder of class folders, TFRecords.

Everything is read through tf.io.gfile, so the paths may be local, gs:// or ram://. npz and folder
data are read, checked and held in memory when the task is loaded; TFRecords are scanned once for
their labels (to check them and to hold out fractions) and decoded as they stream.

Folder images must all have the same height and width (we do not guess a resize policy for the
user); grayscale and RGB may be mixed (grayscale is tiled to RGB) and alpha is dropped.
"""

from __future__ import annotations

import io
import os

import numpy as np
import tensorflow as tf

from mtsys import errors
from mtsys.data import sources
from mtsys.data import task_data as td

_KINDS = ("npz", "folder", "tfrecord")
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_CACHE_BYTES = 256 << 20


def _require(task: str, path: str, field: str) -> None:
  if not tf.io.gfile.exists(path):
    raise errors.DataFileNotFoundError(f"Task '{task}': file not found: '{path}' (files.{field}).")


def _read_npz(task, path, field, image_key, label_key, num_classes):
  _require(task, path, field)
  with tf.io.gfile.GFile(path, "rb") as f:
    raw = io.BytesIO(f.read())
  try:
    with np.load(raw, allow_pickle=False) as arrays:
      missing = [k for k in (image_key, label_key) if k not in arrays.files]
      if missing:
        raise errors.DataError(
            f"Task '{task}': '{path}' has no array '{missing[0]}'; expected keys "
            f"'{image_key}' and '{label_key}', found {sorted(arrays.files)}.")
      images, labels = arrays[image_key], arrays[label_key]
  except (OSError, EOFError) as e:
    raise errors.DataError(
        f"Task '{task}': '{path}' (files.{field}) is not a readable .npz file: "
        f"{e}") from None
  except ValueError as e:
    if str(e).startswith(f"Task '{task}'"):
      raise
    raise errors.DataError(f"Task '{task}': cannot read '{path}' (files.{field}): {e}") from None
  return td.check_arrays(task, images, labels, num_classes, f"'{path}'")


def _class_names(task: str, root: str, field: str) -> list[str]:
  _require(task, root, field)
  if not tf.io.gfile.isdir(root):
    raise errors.DataError(
        f"Task '{task}': files.{field} '{root}' is not a folder; expected one "
        f"sub-folder of images per class.")
  names = sorted(n.rstrip("/") for n in tf.io.gfile.listdir(root)
                 if tf.io.gfile.isdir(os.path.join(root, n.rstrip("/"))))
  if not names:
    raise errors.DataError(
        f"Task '{task}': folder '{root}' (files.{field}) has no class sub-folders.")
  return names


def _decode_folder_image(contents):
  image = tf.io.decode_image(contents, expand_animations=False)
  channels = tf.shape(image)[-1]
  # Drop alpha: RGBA -> RGB, gray+alpha -> gray.
  return tf.cond(channels == 4, lambda: image[..., :3],
                 lambda: tf.cond(channels == 2, lambda: image[..., :1], lambda: image))


def _read_folder(task, root, field, classes, num_classes):
  """Reads <root>/<class>/<image> files; `classes` (training folder's) gives label indices."""
  present = _class_names(task, root, field)
  paths, labels = [], []
  for name in present:
    if name not in classes:
      raise errors.DataError(
          f"Task '{task}': class folder '{name}' in '{root}' is not a class of the "
          f"training folder; expected one of {classes}.")
    folder = os.path.join(root, name)
    for file in sorted(tf.io.gfile.listdir(folder)):
      if file.lower().endswith(_IMAGE_EXTENSIONS):
        paths.append(os.path.join(folder, file))
        labels.append(classes.index(name))
  if not paths:
    raise errors.DataError(
        f"Task '{task}': folder '{root}' (files.{field}) holds no images; expected "
        f"files ending in {list(_IMAGE_EXTENSIONS)} inside its class folders.")
  labels = np.asarray(labels, np.int64)
  td.check_labels(task, labels, num_classes, f"'{root}' (class folders {present})")
  ds = tf.data.Dataset.from_tensor_slices(paths).map(
      lambda p: _decode_folder_image(tf.io.read_file(p)), num_parallel_calls=tf.data.AUTOTUNE)
  try:
    images = list(ds.as_numpy_iterator())
  except tf.errors.InvalidArgumentError:
    for path in paths:  # Find the file that does not decode, to name it.
      try:
        _decode_folder_image(tf.io.read_file(path))
      except tf.errors.InvalidArgumentError as e:
        raise errors.DataError(
            f"Task '{task}': cannot decode image '{path}': {e.message}") from None
    raise
  height, width = images[0].shape[:2]
  for path, image in zip(paths, images):
    if image.shape[:2] != (height, width):
      raise errors.DataError(
          f"Task '{task}': image '{path}' is {image.shape[0]}x{image.shape[1]} but "
          f"'{paths[0]}' is {height}x{width}; all images of a folder task must have "
          f"the same size.")
  channels = max(image.shape[-1] for image in images)
  images = np.stack([np.tile(i, (1, 1, channels // i.shape[-1])) for i in images])
  return images, labels


def _tfrecord_files(task: str, pattern: str, field: str) -> list[str]:
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise errors.DataFileNotFoundError(f"Task '{task}': file not found: no TFRecord file matches "
                            f"'{pattern}' (files.{field}).")
  return files


def _read_tfrecord_labels(task, pattern, field, image_key, label_key, num_classes):
  files = _tfrecord_files(task, pattern, field)
  spec = {image_key: tf.io.FixedLenFeature([], tf.string),
          label_key: tf.io.FixedLenFeature([], tf.int64)}
  ds = tf.data.TFRecordDataset(files).map(
      lambda r: tf.io.parse_single_example(r, spec)[label_key],
      num_parallel_calls=tf.data.AUTOTUNE)
  try:
    labels = np.concatenate([np.zeros([0], np.int64)] + list(ds.batch(4096).as_numpy_iterator()))
    first = next(iter(tf.data.TFRecordDataset(files[:1]).take(1)), None)
    shape = None
    if first is not None:
      shape = _decode_folder_image(tf.io.parse_single_example(first, spec)[image_key]).shape
  except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
    raise errors.DataError(
        f"Task '{task}': cannot read TFRecords '{pattern}' (files.{field}) as "
        f"tf.train.Example with a bytes feature '{image_key}' (an encoded image) and "
        f"an int64 feature '{label_key}': {e.message}") from None
  td.check_labels(task, labels, num_classes, f"'{pattern}'")
  return files, labels, shape


def _tfrecord_dataset(task, files, keep, image_key, label_key, shape):
  """Decoded (image, label) pairs of the records whose index i has keep[i] (all if None)."""
  spec = {image_key: tf.io.FixedLenFeature([], tf.string),
          label_key: tf.io.FixedLenFeature([], tf.int64)}
  ds = tf.data.TFRecordDataset(files)
  if keep is not None:
    keep = tf.constant(keep)
    ds = ds.enumerate().filter(lambda i, _: tf.gather(keep, i)).map(lambda _, r: r)
  height, width, channels = shape

  def decode(record):
    example = tf.io.parse_single_example(record, spec)
    image = tf.io.decode_image(example[image_key], channels=channels, expand_animations=False)
    same = tf.reduce_all(tf.shape(image)[:2] == [height, width])
    with tf.control_dependencies([tf.debugging.Assert(same, [
        f"Task '{task}': all TFRecord images must be {height}x{width}; got",
        tf.shape(image)])]):
      image = tf.ensure_shape(tf.identity(image), shape)
    return image, example[label_key]

  return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)


def _check_fractions(task: str, src) -> None:
  for name in ("validation", "test"):
    fraction = getattr(src, f"{name}_fraction")
    if not 0 <= fraction < 1:
      raise errors.DataError(
          f"Task '{task}': files.{name}_fraction must be in [0, 1). Received: "
          f"{name}_fraction={fraction:g}")
    if fraction and getattr(src, name):
      raise errors.DataError(
          f"Task '{task}': files.{name} and files.{name}_fraction are both set; "
          f"set one of them.")
    if not fraction and not getattr(src, name):
      raise errors.DataError(
          f"Task '{task}': no {name} data; set files.{name} (files of the same "
          f"kind) or files.{name}_fraction (held out of the training files).")
  total = src.validation_fraction + src.test_fraction
  if total >= 1:
    raise errors.DataError(
        f"Task '{task}': files.validation_fraction + files.test_fraction must be "
        f"below 1 to leave training examples. Received: "
        f"{src.validation_fraction:g} + {src.test_fraction:g} = {total:g}")


def _held_out(n: int, src) -> dict[str, np.ndarray]:
  """Boolean masks over the training files: a seeded, deterministic split by fractions."""
  order = np.random.default_rng(src.split_seed).permutation(n)
  n_test = int(round(n * src.test_fraction))
  n_val = int(round(n * src.validation_fraction))
  masks = {}
  for name, chosen in (("test", order[:n_test]), ("validation", order[n_test:n_test + n_val]),
                       ("train", order[n_test + n_val:])):
    masks[name] = np.zeros(n, bool)
    masks[name][chosen] = True
  return masks


@sources.register_source("files")
def load(task_spec, *, cache_dir: str | None = None) -> td.TaskData:
  """Loads a FilesSource task; `cache_dir` is unused."""
  del cache_dir
  task, src, num_classes = task_spec.name, task_spec.files, task_spec.num_classes
  kinds = [k for k in _KINDS if getattr(src, k)]
  if len(kinds) != 1:
    raise errors.DataError(
        f"Task '{task}': set exactly one of files.npz, files.folder and "
        f"files.tfrecord. Received: {kinds or 'none'}")
  kind = kinds[0]
  _check_fractions(task, src)
  image_key, label_key = src.image_key or "image", src.label_key or "label"
  paths = {"train": (getattr(src, kind), kind), "validation": (src.validation, "validation"),
           "test": (src.test, "test")}

  if kind == "tfrecord":
    return _load_tfrecord(task, src, paths, image_key, label_key, num_classes)

  classes = None
  if kind == "folder":
    classes = _class_names(task, src.folder, kind)
    if len(classes) > num_classes:
      raise errors.DataError(
          f"Task '{task}': folder '{src.folder}' has {len(classes)} class folders "
          f"but num_classes is {num_classes}; classes are {classes}.")
  arrays = {}
  for split, (path, field) in paths.items():
    if not path:
      continue
    if kind == "npz":
      arrays[split] = _read_npz(task, path, field, image_key, label_key, num_classes)
    else:
      arrays[split] = _read_folder(task, path, field, classes, num_classes)
  images, labels = arrays["train"]
  masks = _held_out(len(labels), src)
  for split in ("validation", "test"):
    if split not in arrays:
      arrays[split] = images[masks[split]], labels[masks[split]]
  arrays["train"] = images[masks["train"]], labels[masks["train"]]
  shape = images.shape[1:]
  channels = max(a[0].shape[-1] for a in arrays.values())
  splits, sizes = {}, {}
  for split, (images, labels) in arrays.items():
    td.check_not_empty(task, split, len(labels))
    if images.shape[1:3] != shape[:2]:
      raise errors.DataError(
          f"Task '{task}': {split} images are {images.shape[1]}x{images.shape[2]} "
          f"but training images are {shape[0]}x{shape[1]}; expected one size.")
    images = np.tile(images, (1, 1, 1, channels // images.shape[-1]))
    splits[split], sizes[split] = td.from_arrays(images, labels), len(labels)
  # Folder names are the class names when every class has a folder.
  names = tuple(classes) if classes and len(classes) == num_classes else ()
  return td.TaskData(name=task, num_classes=num_classes, channels=channels,
                     image_shape=tuple(shape[:2]) + (channels,), splits=splits, sizes=sizes,
                     class_names=names)


def _load_tfrecord(task, src, paths, image_key, label_key, num_classes):
  scanned = {split: _read_tfrecord_labels(task, path, field, image_key, label_key, num_classes)
             for split, (path, field) in paths.items() if path}
  files, labels, shape = scanned["train"]
  if shape is None:
    td.check_not_empty(task, "train", 0)
  shape = tuple(int(d) for d in shape)
  masks = _held_out(len(labels), src)
  splits, sizes = {}, {}
  for split in td.SPLITS:
    if split in scanned and split != "train":
      split_files, split_labels, _ = scanned[split]
      keep = None
    else:
      split_files, keep = files, masks[split]
      split_labels = labels[keep]
    sizes[split] = len(split_labels)
    td.check_not_empty(task, split, sizes[split])
    ds = _tfrecord_dataset(task, split_files, keep, image_key, label_key, shape)
    if sizes[split] * int(np.prod(shape)) <= _CACHE_BYTES:
      ds = ds.cache()
    splits[split] = ds
  return td.TaskData(name=task, num_classes=num_classes, channels=shape[-1], image_shape=shape,
                     splits=splits, sizes=sizes)
