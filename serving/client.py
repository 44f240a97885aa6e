"""A client of TF Serving's public APIs, gRPC or REST: the same code works against `serving/`
and against tensorflow_model_server itself.

    client = connect("localhost:8500")              # or connect("localhost:8501", rest=True)
    labels, inputs = read_inputs(["a.png", "b.png"])
    result = predict_task(client, "chars", "digits", inputs)

Images go to the task's `T` signature as encoded bytes (REST sends them as {"b64": ...}); an
`.npz` of uint8 pixels goes to `T@pixels`. The REST client turns Nagle's algorithm off on its
socket itself, so a request is never held back waiting for an ACK, whatever the Python
version's http.client does.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import socket
import zipfile
from typing import Mapping, Optional, Sequence, Union

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import tensors

PIXELS = "@pixels"
Inputs = Union[np.ndarray, Sequence[bytes]]


class ClientError(Exception):
  """A request the server refused: its status code (gRPC name) and message, verbatim."""

  def __init__(self, code: str, message: str):
    super().__init__(f"{code}: {message}")
    self.code, self.message = code, message


def _tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
  """numpy -> TensorProto the way tf.make_tensor_proto lays it out (bytes in tensor_content)."""
  array = np.asarray(array)
  if array.dtype == object or array.dtype.kind in "SU":
    flat = [v.encode() if isinstance(v, str) else bytes(v) for v in array.reshape(-1)]
    proto = tensor_pb2.TensorProto(dtype=tensors.enum_of_numpy(np.dtype(object)),
                                   string_val=flat)
  else:
    proto = tensor_pb2.TensorProto(dtype=tensors.enum_of_numpy(array.dtype),
                                   tensor_content=np.ascontiguousarray(array).tobytes())
  proto.tensor_shape.CopyFrom(tensors.tensor_shape_proto(array.shape))
  return proto


class GrpcClient:
  """PredictionService over gRPC."""

  def __init__(self, server: str, timeout: float = 30.0):
    self._channel = grpc.insecure_channel(server)
    self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self.timeout = timeout

  def predict(self, model: str, signature: str, inputs: Mapping[str, np.ndarray],
              version: Optional[int] = None) -> dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    if version is not None:
      request.model_spec.version.value = version
    for key, value in inputs.items():
      request.inputs[key].CopyFrom(_tensor_proto(value))
    try:
      response = self._stub.Predict(request, timeout=self.timeout)
    except grpc.RpcError as e:
      raise ClientError(e.code().name, e.details()) from None
    return {key: tensors.to_ndarray(value) for key, value in response.outputs.items()}

  def signature_names(self, model: str) -> list[str]:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = model
    try:
      response = self._stub.GetModelMetadata(request, timeout=self.timeout)
    except grpc.RpcError as e:
      raise ClientError(e.code().name, e.details()) from None
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    return sorted(signatures.signature_def)

  def close(self) -> None:
    self._channel.close()


class _NoDelayConnection(http.client.HTTPConnection):
  def connect(self):
    super().connect()
    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class RestClient:
  """The REST API (`/v1/models/...`), one keep-alive connection."""

  def __init__(self, server: str, timeout: float = 30.0):
    host, _, port = server.rpartition(":")
    self._connection = _NoDelayConnection(host or "localhost", int(port), timeout=timeout)

  def _request(self, method: str, path: str, body: Optional[dict] = None) -> dict:
    payload = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if payload is not None else {}
    where = f"{self._connection.host}:{self._connection.port}"
    try:
      self._connection.request(method, path, body=payload, headers=headers)
      response = self._connection.getresponse()
      data = response.read()
    except http.client.HTTPException as e:
      self._connection.close()
      raise ClientError("UNAVAILABLE", f"{where} did not answer as a TF Serving REST API (is it "
                        f"the gRPC port?): {e!r}") from e
    except OSError:
      self._connection.close()  # a broken keep-alive connection: reconnect next time
      raise
    try:
      doc = json.loads(data) if data else {}
    except ValueError as e:
      raise ClientError(f"HTTP {response.status}", f"{where} answered {path} with a body that "
                        f"is not JSON: {data[:200]!r}") from e
    if response.status != 200:
      raise ClientError(f"HTTP {response.status}", doc.get("error", data.decode(errors="replace")))
    return doc

  def predict(self, model: str, signature: str, inputs: Mapping[str, np.ndarray],
              version: Optional[int] = None) -> dict[str, np.ndarray]:
    columns = {key: _to_json(np.asarray(value)) for key, value in inputs.items()}
    where = f"/v1/models/{model}" + (f"/versions/{version}" if version is not None else "")
    doc = self._request("POST", f"{where}:predict",
                        {"signature_name": signature, "inputs": columns})
    outputs = doc["outputs"]
    if not isinstance(outputs, dict):  # a signature with one output answers with its value
      outputs = {"output": outputs}
    return {key: _from_json(value) for key, value in outputs.items()}

  def signature_names(self, model: str) -> list[str]:
    doc = self._request("GET", f"/v1/models/{model}/metadata")
    return sorted(doc["metadata"]["signature_def"]["signature_def"])

  def close(self) -> None:
    self._connection.close()


def _to_json(array: np.ndarray):
  if array.dtype == object or array.dtype.kind == "S":
    return np.vectorize(lambda b: {"b64": base64.b64encode(b).decode()},
                        otypes=[object])(array).tolist()
  return array.tolist()


def _from_json(value) -> np.ndarray:
  def strings(v):
    if isinstance(v, list):
      return [strings(x) for x in v]
    if isinstance(v, dict) and "b64" in v:
      return base64.b64decode(v["b64"])
    return v.encode() if isinstance(v, str) else v

  converted = strings(value)
  array = np.array(converted, dtype=object) if _has_bytes(converted) else np.array(converted)
  return array


def _has_bytes(v) -> bool:
  if isinstance(v, list):
    return any(_has_bytes(x) for x in v)
  return isinstance(v, bytes)


def connect(server: str, *, rest: bool = False, timeout: float = 30.0):
  """A GrpcClient, or a RestClient with `rest`, for HOST:PORT."""
  if ":" not in server or not server.rpartition(":")[2].isdigit():
    raise ValueError(f"Invalid server {server!r}: expected HOST:PORT, e.g. localhost:8500.")
  return RestClient(server, timeout) if rest else GrpcClient(server, timeout)


@dataclasses.dataclass(frozen=True)
class TaskPrediction:
  """A task's answer for a batch: top classes, their names where known, all probabilities."""

  classes: np.ndarray  # int64 [B]
  probabilities: np.ndarray  # float32 [B, K]
  class_names: Optional[list]  # [B] str, or None when the task has no class names


def predict_task(client, model: str, task: str, inputs: Inputs,
                 version: Optional[int] = None) -> TaskPrediction:
  """Runs `task` on encoded images (signature T) or a uint8 pixel array (signature T@pixels)."""
  if isinstance(inputs, np.ndarray):
    outputs = client.predict(model, task + PIXELS, {"image": inputs}, version)
  else:
    outputs = client.predict(model, task,
                             {"image_bytes": np.array(list(inputs), dtype=object)}, version)
  names = outputs.get("class_names")
  return TaskPrediction(
      classes=np.asarray(outputs["classes"], np.int64),
      probabilities=np.asarray(outputs["probabilities"], np.float32),
      class_names=None if names is None else [
          n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(names).reshape(-1)])


def read_inputs(paths: Sequence[str]) -> tuple[list[str], Inputs]:
  """Image files -> (their names, their bytes); one `.npz` -> (row labels, uint8 [N, H, W, C]).

  The `.npz` holds `image` (or its only array): uint8 (N, H, W) or (N, H, W, C).
  """
  if not paths:
    raise ValueError("No inputs: give image files (PNG, JPEG, GIF, BMP) or one .npz.")
  if len(paths) == 1 and paths[0].lower().endswith(".npz"):
    try:
      data = np.load(paths[0], allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as e:
      raise ValueError(f"{paths[0]}: not a readable .npz archive ({e.__class__.__name__}).") from e
    if not isinstance(data, np.lib.npyio.NpzFile):
      raise ValueError(f"{paths[0]}: holds a single .npy array, not an .npz archive; save the "
                       "images with np.savez(path, image=...).")
    with data:
      key = "image" if "image" in data.files else (data.files[0] if len(data.files) == 1 else None)
      if key is None:
        raise ValueError(f"{paths[0]}: expected an array 'image' (or a single array); found "
                         f"{sorted(data.files)}.")
      images = data[key]
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
      raise ValueError(f"{paths[0]}: '{key}' must be uint8 (N, H, W) or (N, H, W, C); got "
                       f"{images.dtype} {images.shape}.")
    if images.ndim == 3:
      images = images[..., None]
    return [f"{paths[0]}[{i}]" for i in range(len(images))], images
  if any(p.lower().endswith(".npz") for p in paths):
    raise ValueError("Give either one .npz or image files (not several .npz, nor both).")
  data = []
  for path in paths:
    with open(path, "rb") as f:
      data.append(f.read())
  return list(paths), data


def format_prediction(labels: Sequence[str], result: TaskPrediction, top: int = 5) -> str:
  """One line per input: the top class (and name) with its probability, then the top-k."""
  lines = []
  for i, label in enumerate(labels):
    probabilities = result.probabilities[i]
    order = np.argsort(-probabilities)[:top]
    name = f" ({result.class_names[i]})" if result.class_names else ""
    ranked = ", ".join(f"{k}: {probabilities[k]:.4f}" for k in order)
    lines.append(f"{label}: class {int(result.classes[i])}{name} "
                 f"p={probabilities[result.classes[i]]:.4f}  [{ranked}]")
  return "\n".join(lines)


def run(server: str, model: str, task: str, paths: Sequence[str], *, rest: bool = False,
        version: Optional[int] = None, timeout: float = 30.0) -> str:
  """bin/predict.py: reads the inputs, predicts the task, returns the printed report."""
  labels, inputs = read_inputs(paths)
  client = connect(server, rest=rest, timeout=timeout)
  try:
    return format_prediction(labels, predict_task(client, model, task, inputs, version))
  finally:
    client.close()
