"""TF Serving's model base path layout: `<export_base>/<model_name>/<version>/`, versions atomic.

TF Serving (and `serving/`) poll the model directory and load every integer-named version
directory they see. A version is therefore written under a non-numeric temporary name in the
same directory (`_tmp_<version>_<random>`, which servers ignore), validated, then published:

- local filesystems: one `os.rename` of the directory, atomic; it fails rather than replace a
  version another writer published meanwhile.
- object stores (gs://, s3://): there are no directories and no atomic rename; a rename is a
  copy of every object. The files are copied with `saved_model.pb` last: a server polling at the
  wrong moment sees a version without `saved_model.pb`, fails to load it and retries on its next
  poll (TF Serving) — it never serves a partial version. The temporary objects are deleted after.
"""

from __future__ import annotations

import os
import uuid

import tensorflow as tf

from mtsys import errors

_OBJECT_STORE_SCHEMES = ("gs://", "s3://")
_TMP_PREFIX = "_tmp_"


def _join(*parts: str) -> str:
  return "/".join(p.rstrip("/") for p in parts)


def normalize_base(export_base: str) -> str:
  """`export_base` absolute (when local) and without a trailing '/'."""
  if "://" not in export_base:
    export_base = os.path.abspath(export_base)
  return export_base.rstrip("/") or "/"


def model_dir(export_base: str, model_name: str) -> str:
  return _join(normalize_base(export_base), model_name)


def versions(model_directory: str) -> list[int]:
  """The integer version directories under a model directory, sorted."""
  if not tf.io.gfile.isdir(model_directory):
    return []
  out = []
  for entry in tf.io.gfile.listdir(model_directory):
    name = entry.rstrip("/")
    if name.isdigit() and tf.io.gfile.isdir(_join(model_directory, name)):
      out.append(int(name))
  return sorted(out)


def check_target(export_base: str, model_name: str, version: int | None) -> int:
  """Checks where a version would go, writing nothing; returns the version number to use.

  Raises:
    ValueError: the export base or model directory is a file, the model name is not a single
      path component, the version is not positive, or it exists already.
  """
  if not model_name or "/" in model_name or model_name in (".", "..") or model_name.isdigit():
    raise errors.ExportError(
        f"Invalid model name {model_name!r}: expected one directory name that is "
        "not a number (TF Serving reads <export_base>/<model_name>/<version>/).")
  base = normalize_base(export_base)
  for path in (base, model_dir(base, model_name)):
    if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
      raise errors.ExportError(
          f"Export base {path!r} is a file; expected a directory (or a path that "
          "does not exist yet).")
  existing = versions(model_dir(base, model_name))
  if version is None:
    return (existing[-1] + 1) if existing else 1
  if isinstance(version, bool) or not isinstance(version, int) or version <= 0:
    raise errors.ExportError(f"Invalid version {version!r}: expected a positive integer.")
  if version in existing:
    raise errors.ExportError(
        f"Version {version} of model '{model_name}' already exists in "
        f"{model_dir(base, model_name)}; versions are immutable: choose another "
        f"version (next free: {existing[-1] + 1}).")
  return version


def temporary_dir(model_directory: str, version: int) -> str:
  """A fresh non-numeric directory name next to the versions (servers ignore it)."""
  return _join(model_directory, f"{_TMP_PREFIX}{version}_{uuid.uuid4().hex[:12]}")


def publish(tmp_dir: str, model_directory: str, version: int) -> str:
  """Makes the written version visible under its number; returns its directory."""
  final = _join(model_directory, str(version))
  if not tmp_dir.startswith(_OBJECT_STORE_SCHEMES):
    try:
      os.rename(tmp_dir, final)  # atomic; fails if `final` exists and is not empty
    except OSError as e:
      raise errors.ExportError(f"Cannot publish version {version} at {final}: {e}") from e
    return final
  if tf.io.gfile.exists(final):
    raise errors.ExportError(
        f"Version {version} appeared at {final} while exporting; not overwritten.")
  files = [f for f in _files(tmp_dir) if f != "saved_model.pb"] + ["saved_model.pb"]
  for rel in files:
    target = _join(final, rel)
    tf.io.gfile.makedirs(target.rsplit("/", 1)[0])
    tf.io.gfile.copy(_join(tmp_dir, rel), target)
  tf.io.gfile.rmtree(tmp_dir)
  return final


def _files(root: str) -> list[str]:
  out = []
  for directory, _, names in tf.io.gfile.walk(root):
    rel = directory[len(root):].strip("/")
    out += [f"{rel}/{n}" if rel else n for n in names]
  return sorted(out)


def remove(path: str) -> None:
  if tf.io.gfile.exists(path):
    tf.io.gfile.rmtree(path)


def total_bytes(root: str) -> int:
  """Bytes of every file below `root`."""
  return sum(tf.io.gfile.stat(_join(root, rel)).length for rel in _files(root))


def write_text_atomic(path: str, text: str) -> None:
  """Writes a small file whole: temp + rename locally, one object write on object stores."""
  if path.startswith(_OBJECT_STORE_SCHEMES):
    with tf.io.gfile.GFile(path, "w") as f:
      f.write(text)
    return
  tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(text)
  tf.io.gfile.rename(tmp, path, overwrite=True)
