"""Helpers for the model server tests: a tiny SavedModel with exactly known outputs, clients.

Like TF Serving's half_plus_two integration test, the model is built here (once per session,
then copied per version, which is much cheaper than re-saving):
  serving_default  x float[None]                  -> y = 0.5 x + 2
  png_mean         image_bytes string[None] (PNG) -> mean float[None], each image's mean pixel
  classify         inputs string[None] (tf.Example with float feature "x", default 0)
                   -> classes string[B,2] = ["neg", "pos"], scores float[B,2] = [-x, x]
                   (method_name rewritten to tensorflow/serving/classify in saved_model.pb)
  add              a, b float[None]               -> sum = a + b, diff = a - b
  echo_bytes       data string[None]              -> out_bytes = data (REST writes it as b64)
  checked          x float[None]                  -> y = 2 x; tf.debugging.Assert(all(x >= 0))
  slow             x float[None], delay_ms int64  -> y = 0.5 x + 2 after sleeping delay_ms
Servers bind 127.0.0.1 on ephemeral ports (port=-1) and poll every 0.1 s.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import time
from typing import Callable

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.data.ops import dataset_ops
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import server_lib

MODEL = "half"
CLASSIFY_METHOD = "tensorflow/serving/classify"


class _Model(tf.Module):
  """The test model (see the module docstring)."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
  def half_plus_two(self, x):
    return {"y": 0.5 * x + 2.0}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
  def png_mean(self, image_bytes):
    def one(data):
      return tf.reduce_mean(tf.cast(tf.io.decode_png(data, channels=1), tf.float32))
    return {"mean": tf.map_fn(one, image_bytes, fn_output_signature=tf.float32)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
  def classify(self, inputs):
    features = tf.io.parse_example(
        inputs, {"x": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])})
    x = features["x"]
    batch = tf.shape(inputs)[0]
    classes = tf.tile(tf.constant([["neg", "pos"]]), [batch, 1])
    return {"classes": classes, "scores": tf.concat([-x, x], axis=1)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="a"),
                                tf.TensorSpec([None], tf.float32, name="b")])
  def add(self, a, b):
    return {"sum": a + b, "diff": a - b}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="data")])
  def echo_bytes(self, data):
    return {"out_bytes": tf.identity(data)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
  def checked(self, x):
    check = tf.debugging.Assert(tf.reduce_all(x >= 0.0), ["x must be non-negative"])
    with tf.control_dependencies([check]):
      return {"y": 2.0 * x}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x"),
                                tf.TensorSpec([], tf.int64, name="delay_ms")])
  def slow(self, x, delay_ms):
    data = tf.data.Dataset.from_tensors(x)
    variant = tf.raw_ops.SleepDataset(
        input_dataset=data._variant_tensor, sleep_microseconds=delay_ms * 1000,  # pylint: disable=protected-access
        output_types=[tf.float32], output_shapes=[tf.TensorShape([None])])
    slept = dataset_ops._VariantDataset(variant, data.element_spec)  # pylint: disable=protected-access
    total = slept.reduce(tf.zeros_like(x), lambda acc, e: acc + e)
    return {"y": 0.5 * total + 2.0}


def _set_method_name(export_dir: str, signature: str, method_name: str) -> None:
  """tf.saved_model.save writes every method_name as predict; rewrite one in saved_model.pb."""
  path = os.path.join(export_dir, "saved_model.pb")
  saved_model = saved_model_pb2.SavedModel()
  with open(path, "rb") as f:
    saved_model.ParseFromString(f.read())
  changed = 0
  for meta_graph in saved_model.meta_graphs:
    if signature in meta_graph.signature_def:
      meta_graph.signature_def[signature].method_name = method_name
      changed += 1
  assert changed == 1, f"signature {signature} not found in {path}"
  with open(path, "wb") as f:
    f.write(saved_model.SerializeToString())


def predict_request(x, signature: str = "", model: str = MODEL,
                    version: int | None = None) -> predict_pb2.PredictRequest:
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model
  if signature:
    request.model_spec.signature_name = signature
  if version is not None:
    request.model_spec.version.value = version
  request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(x, np.float32)))
  return request


def classify_request(xs, model: str = MODEL, signature: str = "classify"
                     ) -> classification_pb2.ClassificationRequest:
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name = model
  request.model_spec.signature_name = signature
  for x in xs:
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.append(x)
  return request


def write_warmup(export_dir: str, logs: list[prediction_log_pb2.PredictionLog] | None = None,
                 raw: bytes | None = None) -> None:
  """assets.extra/tf_serving_warmup_requests: TFRecords of PredictionLog (or raw bytes)."""
  extra = os.path.join(export_dir, "assets.extra")
  os.makedirs(extra, exist_ok=True)
  path = os.path.join(extra, "tf_serving_warmup_requests")
  if raw is not None:
    with open(path, "wb") as f:
      f.write(raw)
    return
  with tf.io.TFRecordWriter(path) as writer:
    for log in logs or []:
      writer.write(log.SerializeToString())


def good_warmup_logs(count: int = 3) -> list[prediction_log_pb2.PredictionLog]:
  logs = []
  for i in range(count):
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.CopyFrom(predict_request([float(i)]))
    logs.append(log)
  log = prediction_log_pb2.PredictionLog()
  log.classify_log.request.CopyFrom(classify_request([1.0]))
  logs.append(log)
  return logs


class Versions:
  """Creates version directories under a base path the way an exporter should: copy to a
  non-numeric temporary name, then rename (atomic), so the server never sees a partial copy."""

  def __init__(self, template: str, base_path: str):
    self.template = template
    self.base_path = base_path
    os.makedirs(base_path, exist_ok=True)

  def add(self, version: int, warmup: list | None = None, warmup_raw: bytes | None = None,
          corrupt: bool = False, edit: Callable[[str], None] | None = None) -> str:
    tmp = os.path.join(self.base_path, f"_tmp_{version}_{time.monotonic_ns()}")
    shutil.copytree(self.template, tmp)
    if warmup is not None or warmup_raw is not None:
      write_warmup(tmp, warmup, warmup_raw)
    if corrupt:
      with open(os.path.join(tmp, "saved_model.pb"), "wb") as f:
        f.write(b"this is not a SavedModel proto \x00\xff" * 3)
    if edit is not None:
      edit(tmp)
    final = os.path.join(self.base_path, str(version))
    os.rename(tmp, final)
    return final

  def remove(self, version: int) -> None:
    shutil.rmtree(os.path.join(self.base_path, str(version)))


def options(**kwargs) -> server_lib.Options:
  defaults = dict(port=-1, rest_api_port=-1, host="127.0.0.1", file_system_poll_wait_seconds=0.1)
  defaults.update(kwargs)
  return server_lib.Options(**defaults)


class Clients:
  """gRPC stubs for a running server."""

  def __init__(self, server: server_lib.Server):
    self.channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
    self.model = model_service_pb2_grpc.ModelServiceStub(self.channel)
    self.rest = f"http://127.0.0.1:{server.rest_port}"

  def close(self) -> None:
    self.channel.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
  """Polls `predicate` every 20 ms; fails the test after `timeout` seconds."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if predicate():
      return
    time.sleep(0.02)
  raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]




def save_template(export_dir: str) -> str:
  """Saves the test SavedModel (see the module docstring) to `export_dir`."""
  module = _Model()
  tf.saved_model.save(module, export_dir, signatures={
      "serving_default": module.half_plus_two,
      "png_mean": module.png_mean,
      "classify": module.classify,
      "add": module.add,
      "echo_bytes": module.echo_bytes,
      "checked": module.checked,
      "slow": module.slow,
  })
  _set_method_name(export_dir, "classify", CLASSIFY_METHOD)
  return export_dir


class Rest:
  """A keep-alive HTTP/1.1 client for the REST API: (status, parsed JSON or raw text)."""

  def __init__(self, port: int):
    self.port = port
    self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

  def call(self, method: str, path: str, body: bytes | str | dict | None = None):
    if isinstance(body, dict):
      body = json.dumps(body)
    if isinstance(body, str):
      body = body.encode("utf-8")
    for attempt in range(2):
      try:
        self._conn.request(method, path, body=body,
                           headers={"Content-Type": "application/json"})
        response = self._conn.getresponse()
        data = response.read()
        break
      except (http.client.HTTPException, ConnectionError):
        self._conn.close()
        self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        if attempt:
          raise
    text = data.decode("utf-8")
    try:
      return response.status, json.loads(text) if text else None
    except json.JSONDecodeError:
      return response.status, text

  def post(self, path: str, body):
    return self.call("POST", path, body)

  def get(self, path: str):
    return self.call("GET", path)

  def close(self) -> None:
    self._conn.close()


def grpc_error(call: Callable, request) -> tuple[grpc.StatusCode, str]:
  """Calls a stub method expecting failure; returns (code, details)."""
  try:
    call(request, timeout=60)
  except grpc.RpcError as e:
    return e.code(), e.details()
  raise AssertionError(f"expected an error from {call} for {request}")


def png_bytes(pixels) -> bytes:
  """A grayscale PNG of the given uint8 pixel rows."""
  return tf.io.encode_png(np.asarray(pixels, np.uint8)[:, :, None]).numpy()
