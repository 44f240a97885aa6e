"""The TF Serving files of an export besides the SavedModel's own: warm-up requests, the model
server config, and the Classify method name of the `T@classify` signatures.

- `assets.extra/tf_serving_warmup_requests`: a TFRecord of `PredictionLog`s that TF Serving (and
  `serving/`) replays when it loads a version, so the first real request does not pay for
  graph optimisation (`g3doc/saved_model_warmup.md`; at most 1000 records are read).
- `models.config`: a `ModelServerConfig` text proto for `--model_config_file`.
- `tf.saved_model.save` writes every signature with method name `tensorflow/serving/predict`;
  TF Serving's Classify API only accepts signatures named `tensorflow/serving/classify`
  (`servables/tensorflow/classifier.cc`), so `set_method_names` rewrites them in saved_model.pb.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving reads no more (saved_model_warmup_util.cc)
CLASSIFY_METHOD = "tensorflow/serving/classify"


def sample_image(image_size: int, channels: int, seed: int = 0) -> np.ndarray:
  """A deterministic uint8 [S, S, C] test image (a gradient plus a seeded pattern)."""
  rng = np.random.default_rng(seed)
  step = 255 // max(1, 2 * image_size - 2)
  ramp = np.add.outer(np.arange(image_size), np.arange(image_size)) * step
  noise = rng.integers(0, 96, size=(image_size, image_size, channels))
  return np.clip(ramp[..., None] + noise, 0, 255).astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
  return tf.io.encode_png(image).numpy()


def example_bytes(encoded: bytes) -> bytes:
  """A serialized tf.Example holding an encoded image under `image/encoded` (Classify input)."""
  feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))
  return tf.train.Example(features=tf.train.Features(
      feature={"image/encoded": feature})).SerializeToString()


@dataclasses.dataclass(frozen=True)
class WarmupRequest:
  """One warm-up request: a signature and its inputs (numpy arrays), or Classify examples."""

  signature: str
  inputs: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  examples: Sequence[bytes] = ()  # serialized tf.Examples, for a Classify request


def to_prediction_log(request: WarmupRequest, model_name: str) -> prediction_log_pb2.PredictionLog:
  if request.examples:
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = model_name, request.signature
    for serialized in request.examples:
      classify.input.example_list.examples.add().ParseFromString(serialized)
    return prediction_log_pb2.PredictionLog(
        classify_log=prediction_log_pb2.ClassifyLog(request=classify))
  predict = predict_pb2.PredictRequest()
  predict.model_spec.name, predict.model_spec.signature_name = model_name, request.signature
  for key, value in request.inputs.items():
    predict.inputs[key].CopyFrom(tf.make_tensor_proto(value))
  return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(
      request=predict))


def write_warmup(version_dir: str, requests: Sequence[WarmupRequest], model_name: str) -> int:
  """Writes the warm-up file; returns how many records it holds (at most 1000)."""
  kept = list(requests)[:MAX_WARMUP_RECORDS]
  path = f"{version_dir}/{WARMUP_FILE}"
  tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
  with tf.io.TFRecordWriter(path) as writer:
    for request in kept:
      writer.write(to_prediction_log(request, model_name).SerializeToString())
  return len(kept)


def read_warmup(version_dir: str) -> list[prediction_log_pb2.PredictionLog]:
  logs = []
  for record in tf.data.TFRecordDataset(f"{version_dir}/{WARMUP_FILE}"):
    log = prediction_log_pb2.PredictionLog()
    log.ParseFromString(record.numpy())
    logs.append(log)
  return logs


def read_saved_model(version_dir: str) -> saved_model_pb2.SavedModel:
  saved = saved_model_pb2.SavedModel()
  with tf.io.gfile.GFile(f"{version_dir}/saved_model.pb", "rb") as f:
    saved.ParseFromString(f.read())
  return saved


def set_method_names(version_dir: str, method_by_key: Mapping[str, str]) -> None:
  """Sets the method name of the named signatures in saved_model.pb (rewritten whole)."""
  saved = read_saved_model(version_dir)
  for meta_graph in saved.meta_graphs:
    for key, method in method_by_key.items():
      if key not in meta_graph.signature_def:
        raise KeyError(f"No signature '{key}' in {version_dir}/saved_model.pb.")
      meta_graph.signature_def[key].method_name = method
  with tf.io.gfile.GFile(f"{version_dir}/saved_model.pb", "wb") as f:
    f.write(saved.SerializeToString())


def merge_model_config(existing_text: str, model_name: str,
                       base_path: str) -> model_server_config_pb2.ModelServerConfig:
  """`existing_text` (a ModelServerConfig text proto, or "") with this model added or updated."""
  config = model_server_config_pb2.ModelServerConfig()
  if existing_text.strip():
    text_format.Parse(existing_text, config)
  models = config.model_config_list.config
  entry = next((c for c in models if c.name == model_name), None)
  if entry is None:
    entry = models.add(name=model_name)
  entry.base_path = base_path
  entry.model_platform = "tensorflow"
  return config
