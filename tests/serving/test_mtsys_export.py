"""An mtsys export served end to end: every signature kind over gRPC and REST equals the library.

A synthetic system of two tasks (random weights, exactly known paths; `shapes/big` at image
size 12 without class names, `digits` at 8 with class names) is exported once per module and
served by one in-process server (gRPC and REST on free 127.0.0.1 ports, polling every 0.1 s).
The reference is the library's own in-process prediction, `mtsys.train.evaluate.predict_path`.

Tolerances:
  * `T@pixels` logits are compared bit for bit over both protocols. gRPC carries float32 in
    tensor_content (exact); REST writes each float32 like TF Serving's WriteDecimal ("%g" if that
    round-trips in float32, else 9 significant digits), so the JSON number, read back as a double
    and cast to float32, is the served value exactly.
  * `T`, `T@classify`, `routed`, `routed@pixels` and `serving_default` run the same path on the
    decoded pixels (the routed ones on sub-batches, where a matmul may sum in another order), so
    they agree with the library within `mtsys.export.validate.TOLERANCE` (1e-5), as the exporter
    itself checks.

The hot-swap test runs last: it exports version 2 into the served base path.
"""

from __future__ import annotations

import base64
import os
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2

import serving_testlib as lib
from mtsys import export
from mtsys.config import loader
from mtsys.export import serving_files
from mtsys.export import validate
from mtsys.system import synthetic
from mtsys.train import evaluate
from serving import server_lib

M = "multi"
_CONFIG = """
root { vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 2 seed: 3 }
task { name: "digits" num_classes: 3 files { npz: "unused.npz" validation_fraction: 0.2
       test_fraction: 0.2 } }
task { name: "shapes/big" num_classes: 5 files { npz: "unused.npz" validation_fraction: 0.2
       test_fraction: 0.2 } }
"""
TASKS = ["digits", "shapes/big"]
NAMES = {"digits": ["zero", "one", "two"]}
NUM_CLASSES = {"digits": 3, "shapes/big": 5}
TOLERANCE = validate.TOLERANCE
UNKNOWN_TASK = "Unknown task `nope` in input `task`; expected one of [digits, shapes/big]"
INIT_OP = "__saved_model_init_op"
UNDECODABLE = "Unknown image file format. One of JPEG, PNG, GIF, BMP, WebP required."


class Served:
  """The module's export, its server and clients, and the library's predictions (cached)."""

  def __init__(self, store, result, server):
    self.store, self.result, self.server = store, result, server
    self.clients = lib.Clients(server)
    self.rest = lib.Rest(server.rest_port)
    self._logits = {}

  def library_logits(self, task: str, images: np.ndarray) -> np.ndarray:
    """predict_path's logits (each (task, images) computed once: it builds a Keras model)."""
    key = (task, images.shape, images.tobytes())
    if key not in self._logits:
      self._logits[key] = evaluate.predict_stored(self.store, task, images)
    return self._logits[key]

  def close(self) -> None:
    self.rest.close()
    self.clients.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  base = tmp_path_factory.mktemp("mtsys_served")
  system_dir = str(base / "system")
  store = synthetic.make_system(system_dir, loader.parse(_CONFIG), seed=1, adapter_dim=8,
                                image_sizes={"shapes/big": 12}, class_names=NAMES)
  result = export.export(system_dir, str(base / "models"), M, log=lambda _: None)
  assert result.version == 1 and result.tasks == TASKS
  server = server_lib.Server(lib.options(model_name=M,
                                         model_base_path=os.path.dirname(result.version_dir)))
  try:
    server.start()
    state = Served(store, result, server)
    try:
      yield state
    finally:
      state.close()
  finally:
    server.stop()


def _images(seed: int, n: int, height: int = 10, width: int = 9) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (n, height, width, 1), np.uint8)


IMAGES = _images(11, 4)  # compared in most tests: the library predicts them once per task


def _softmax(logits: np.ndarray) -> np.ndarray:
  return tf.nn.softmax(logits).numpy()


def _b64(data: bytes) -> dict:
  return {"b64": base64.b64encode(data).decode()}


def _grpc_predict(served: Served, signature: str,
                  inputs: dict) -> tuple[dict, predict_pb2.PredictResponse]:
  request = predict_pb2.PredictRequest()
  request.model_spec.name = M
  if signature:
    request.model_spec.signature_name = signature
  for key, value in inputs.items():
    request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
  response = served.clients.prediction.Predict(request, timeout=60)
  return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}, response


def _rest_predict(served: Served, body: dict) -> dict:
  status, doc = served.rest.post(f"/v1/models/{M}:predict", body)
  assert status == 200, doc
  return doc


def _classify_request(signature: str, pngs) -> classification_pb2.ClassificationRequest:
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name = M
  request.model_spec.signature_name = signature
  for png in pngs:
    request.input.example_list.examples.add().ParseFromString(serving_files.example_bytes(png))
  return request


def _check_predict_outputs(outputs: dict, task: str, want_logits: np.ndarray,
                           exact: bool) -> int:
  """Compares one predict signature's outputs with the library's logits; returns the rows."""
  logits = np.asarray(outputs["logits"], np.float32)
  assert logits.shape == want_logits.shape
  if exact:
    np.testing.assert_array_equal(logits, want_logits)
  else:
    np.testing.assert_allclose(logits, want_logits, rtol=0, atol=TOLERANCE)
  np.testing.assert_allclose(np.asarray(outputs["probabilities"], np.float32),
                             _softmax(want_logits), rtol=0, atol=TOLERANCE if not exact else 1e-7)
  want_classes = np.argmax(want_logits, -1)
  np.testing.assert_array_equal(np.asarray(outputs["classes"], np.int64), want_classes)
  if task in NAMES:
    names = [n.decode() if isinstance(n, bytes) else n for n in np.asarray(outputs["class_names"],
                                                                            object).reshape(-1)]
    assert names == [NAMES[task][c] for c in want_classes]
  else:
    assert "class_names" not in outputs
  return len(want_logits)


# --- Every signature kind, both protocols ---------------------------------------------------------

@pytest.mark.parametrize("task", TASKS)
def test_pixels_signature_logits_are_bit_identical_to_the_library_over_grpc_and_rest(served,
                                                                                      task):
  images = IMAGES
  want = served.library_logits(task, images)
  assert want.shape == (len(IMAGES), NUM_CLASSES[task])
  outputs, response = _grpc_predict(served, task + "@pixels", {"image": images})
  assert response.model_spec.signature_name == task + "@pixels"
  assert response.model_spec.version.value == 1
  assert outputs["logits"].dtype == np.float32
  compared = _check_predict_outputs(outputs, task, want, exact=True)
  doc = _rest_predict(served, {"signature_name": task + "@pixels",
                               "inputs": {"image": images.tolist()}})
  compared += _check_predict_outputs(doc["outputs"], task, want, exact=True)
  # The row format too: one object per image.
  doc = _rest_predict(served, {"signature_name": task + "@pixels",
                               "instances": [{"image": i.tolist()} for i in images]})
  rows = doc["predictions"]
  assert len(rows) == len(images)
  compared += _check_predict_outputs({k: [r[k] for r in rows] for k in rows[0]}, task, want,
                                     exact=True)
  assert compared == 3 * len(images)


@pytest.mark.parametrize("task", TASKS)
def test_bytes_signature_with_png_equals_the_library_over_grpc_and_rest(served, task):
  images = IMAGES
  pngs = [serving_files.encode_png(i) for i in images]
  want = served.library_logits(task, images)
  outputs, _ = _grpc_predict(served, task, {"image_bytes": tf.constant(pngs)})
  compared = _check_predict_outputs(outputs, task, want, exact=False)
  doc = _rest_predict(served, {"signature_name": task,
                               "inputs": {"image_bytes": [_b64(p) for p in pngs]}})
  compared += _check_predict_outputs(doc["outputs"], task, want, exact=False)
  assert compared == 2 * len(images)


@pytest.mark.parametrize("task", TASKS)
def test_classify_signature_over_grpc_classify_and_rest_classify_equals_the_library(served,
                                                                                     task):
  images = IMAGES
  pngs = [serving_files.encode_png(i) for i in images]
  want = _softmax(served.library_logits(task, images))
  labels = NAMES.get(task, [str(k) for k in range(NUM_CLASSES[task])])
  response = served.clients.prediction.Classify(_classify_request(task + "@classify", pngs),
                                                timeout=60)
  assert response.model_spec.signature_name == task + "@classify"
  grpc_rows = [[(c.label, c.score) for c in row.classes]
               for row in response.result.classifications]
  status, doc = served.rest.post(f"/v1/models/{M}:classify", {
      "signature_name": task + "@classify",
      "examples": [{"image/encoded": _b64(p)} for p in pngs]})
  assert status == 200, doc
  rest_rows = [[(label, score) for label, score in row] for row in doc["results"]]
  compared = 0
  for rows in (grpc_rows, rest_rows):
    assert len(rows) == len(images)
    for row, probabilities in zip(rows, want):
      assert [label for label, _ in row] == labels
      np.testing.assert_allclose([score for _, score in row], probabilities, rtol=0,
                                 atol=TOLERANCE)
      compared += 1
  assert compared == 2 * len(images)


def _check_routed(outputs: dict, tasks, want: list[np.ndarray]) -> int:
  probabilities = np.asarray(outputs["probabilities"], np.float32)
  assert probabilities.shape == (len(tasks), max(NUM_CLASSES.values()))
  compared = 0
  for row, (task, p) in enumerate(zip(tasks, want)):
    k = NUM_CLASSES[task]
    np.testing.assert_allclose(probabilities[row, :k], p, rtol=0, atol=TOLERANCE)
    assert np.all(probabilities[row, k:] == 0)
    assert int(outputs["num_classes"][row]) == k
    assert int(outputs["classes"][row]) == int(np.argmax(p))
    np.testing.assert_allclose(float(outputs["scores"][row]), p.max(), rtol=0, atol=TOLERANCE)
    name = outputs["class_names"][row]
    name = name.decode() if isinstance(name, bytes) else name
    assert name == NAMES.get(task, [str(i) for i in range(k)])[int(np.argmax(p))]
    compared += 1
  return compared


def test_routed_signatures_run_each_row_of_a_mixed_batch_through_its_own_task(served):
  tasks = ["shapes/big", "digits", "digits", "shapes/big", "shapes/big", "digits", "digits"]
  images = _images(14, len(tasks))
  pngs = [serving_files.encode_png(i) for i in images]
  # The library on the whole batch per task, row r of task t's answer for row r.
  by_task = {t: _softmax(served.library_logits(t, images)) for t in TASKS}
  want = [by_task[t][r] for r, t in enumerate(tasks)]
  task_tensor = np.array([t.encode() for t in tasks], dtype=object)
  compared = 0
  outputs, _ = _grpc_predict(served, "routed@pixels", {"task": task_tensor, "image": images})
  compared += _check_routed(outputs, tasks, want)
  outputs, _ = _grpc_predict(served, "routed",
                             {"task": task_tensor, "image_bytes": tf.constant(pngs)})
  compared += _check_routed(outputs, tasks, want)
  doc = _rest_predict(served, {"signature_name": "routed@pixels",
                               "inputs": {"task": tasks, "image": images.tolist()}})
  compared += _check_routed(doc["outputs"], tasks, want)
  doc = _rest_predict(served, {"signature_name": "routed",
                               "instances": [{"task": t, "image_bytes": _b64(p)}
                                             for t, p in zip(tasks, pngs)]})
  rows = doc["predictions"]
  compared += _check_routed({k: [r[k] for r in rows] for k in rows[0]}, tasks, want)
  assert compared == 4 * len(tasks)


def test_serving_default_is_the_first_task_from_image_bytes(served):
  assert served.result.default_task == "digits"
  images = IMAGES
  pngs = [serving_files.encode_png(i) for i in images]
  want = served.library_logits("digits", images)
  outputs, response = _grpc_predict(served, "", {"image_bytes": tf.constant(pngs)})
  assert response.model_spec.signature_name == "serving_default"
  compared = _check_predict_outputs(outputs, "digits", want, exact=False)
  doc = _rest_predict(served, {"instances": [_b64(p) for p in pngs]})
  rows = doc["predictions"]
  compared += _check_predict_outputs({k: [r[k] for r in rows] for k in rows[0]}, "digits", want,
                                     exact=False)
  doc = _rest_predict(served, {"signature_name": "serving_default",
                               "inputs": {"image_bytes": [_b64(p) for p in pngs]}})
  compared += _check_predict_outputs(doc["outputs"], "digits", want, exact=False)
  assert compared == 3 * len(images)


# --- Metadata and status --------------------------------------------------------------------------

def test_metadata_lists_exactly_the_exports_signature_keys_and_status_is_available(served):
  # Every SignatureDef in saved_model.pb, verbatim, as TF Serving lists them: the export's keys
  # plus the `__saved_model_init_op` that every TF2 SavedModel with variables carries.
  want = sorted(served.result.signatures + [INIT_OP])
  assert len(want) == 3 * len(TASKS) + 3 + 1
  saved = serving_files.read_saved_model(served.result.version_dir)
  assert sorted(saved.meta_graphs[0].signature_def) == want
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
  request.model_spec.name = M
  response = served.clients.prediction.GetModelMetadata(request, timeout=60)
  assert response.model_spec.name == M and response.model_spec.version.value == 1
  defs = get_model_metadata_pb2.SignatureDefMap()
  response.metadata["signature_def"].Unpack(defs)
  assert sorted(defs.signature_def) == want
  for task in TASKS:
    assert defs.signature_def[task + "@classify"].method_name == "tensorflow/serving/classify"
    assert set(defs.signature_def[task + "@pixels"].inputs) == {"image"}
  assert set(defs.signature_def["routed"].inputs) == {"task", "image_bytes"}

  status, doc = served.rest.get(f"/v1/models/{M}/metadata")
  assert status == 200, doc
  assert doc["model_spec"]["name"] == M and doc["model_spec"]["version"] == "1"
  assert sorted(doc["metadata"]["signature_def"]["signature_def"]) == want

  status, doc = served.rest.get(f"/v1/models/{M}")
  assert (status, doc) == (200, {"model_version_status": [{
      "version": "1", "state": "AVAILABLE",
      "status": {"error_code": "OK", "error_message": ""}}]})


# --- Errors ---------------------------------------------------------------------------------------

def test_routed_batch_with_an_unknown_task_is_invalid_argument_naming_it(served):
  images = _images(16, 2)
  tasks = np.array([b"digits", b"nope"], dtype=object)
  pngs = [serving_files.encode_png(i) for i in images]
  checked = 0
  for signature, inputs in (("routed@pixels", {"task": tasks, "image": images}),
                            ("routed", {"task": tasks, "image_bytes": tf.constant(pngs)})):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = M, signature
    for key, value in inputs.items():
      request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    code, details = lib.grpc_error(served.clients.prediction.Predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert UNKNOWN_TASK in details
    checked += 1
  for body in ({"signature_name": "routed@pixels",
                "inputs": {"task": ["digits", "nope"], "image": images.tolist()}},
               {"signature_name": "routed",
                "inputs": {"task": ["digits", "nope"], "image_bytes": [_b64(p) for p in pngs]}}):
    status, doc = served.rest.post(f"/v1/models/{M}:predict", body)
    assert status == 400 and UNKNOWN_TASK in doc["error"], doc
    checked += 1
  assert checked == 4


def test_undecodable_image_bytes_are_invalid_argument(served):
  good = serving_files.encode_png(_images(17, 1)[0])
  bad = b"definitely not an image"
  checked = 0
  for signature in ("digits", "routed", "serving_default"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = M, signature
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([good, bad], dtype=tf.string))
    if signature == "routed":
      request.inputs["task"].CopyFrom(tf.make_tensor_proto(["digits", "shapes/big"]))
    code, details = lib.grpc_error(served.clients.prediction.Predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and UNDECODABLE in details, details
    checked += 1
  code, details = lib.grpc_error(served.clients.prediction.Classify,
                                 _classify_request("shapes/big@classify", [good, bad]))
  assert code == grpc.StatusCode.INVALID_ARGUMENT and UNDECODABLE in details, details
  checked += 1
  status, doc = served.rest.post(f"/v1/models/{M}:predict", {
      "signature_name": "digits", "inputs": {"image_bytes": [_b64(good), _b64(bad)]}})
  assert status == 400 and UNDECODABLE in doc["error"], doc
  checked += 1
  status, doc = served.rest.post(f"/v1/models/{M}:classify", {
      "signature_name": "shapes/big@classify", "examples": [{"image/encoded": _b64(bad)}]})
  assert status == 400 and UNDECODABLE in doc["error"], doc
  checked += 1
  assert checked == 6
  # The server still answers afterwards.
  outputs, _ = _grpc_predict(served, "digits", {"image_bytes": tf.constant([good])})
  assert outputs["logits"].shape == (1, 3)


# --- Warm-up --------------------------------------------------------------------------------------

def test_exports_warmup_requests_replay_without_error_in_the_server(served):
  result = served.result
  assert served.server.options.enable_model_warmup  # version 1 was warmed up when it loaded
  logs = serving_files.read_warmup(result.version_dir)
  assert len(logs) == result.warmup_records == len(result.signatures)
  assert served.server.manager.available_versions(M) == [1]
  assert served.server.manager.version_states(M)[1].error is None
  # The server's own replay (what loading ran) succeeds again on the loaded version...
  with served.server.manager.servable(model_pb2.ModelSpec(name=M)) as servable:
    assert servable.warm_up() == result.warmup_records
  # ...and every record, sent over gRPC as a client would, is answered.
  replayed = {"predict_log": 0, "classify_log": 0}
  for log in logs:
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
      response = served.clients.prediction.Predict(log.predict_log.request, timeout=60)
      assert response.outputs
    else:
      assert kind == "classify_log"
      response = served.clients.prediction.Classify(log.classify_log.request, timeout=60)
      assert response.result.classifications
    replayed[kind] += 1
  assert replayed == {"predict_log": len(result.signatures) - len(TASKS),
                      "classify_log": len(TASKS)}


# --- Hot swap (runs last: it changes the served versions) -----------------------------------------

def test_hot_swap_to_a_new_export_version_under_load_loses_no_request(served):
  server = served.server
  images = IMAGES
  want = served.library_logits("shapes/big", images)
  stop = threading.Event()
  failures: list[str] = []
  versions: list[int] = []
  counts = {"grpc": 0, "rest": 0}
  deadline = time.monotonic() + 240

  def load():
    rest = lib.Rest(server.rest_port)
    try:
      for _ in range(100_000):
        if stop.is_set() or time.monotonic() > deadline:
          return
        try:
          outputs, response = _grpc_predict(served, "shapes/big@pixels", {"image": images})
          if not np.array_equal(outputs["logits"], want):
            failures.append(f"grpc v{response.model_spec.version.value}: {outputs['logits']}")
          versions.append(response.model_spec.version.value)
          counts["grpc"] += 1
          status, doc = rest.post(f"/v1/models/{M}:predict", {
              "signature_name": "shapes/big@pixels", "inputs": {"image": images.tolist()}})
          if status != 200 or not np.array_equal(
              np.asarray(doc["outputs"]["logits"], np.float32), want):
            failures.append(f"rest {status}: {doc}")
          counts["rest"] += 1
        except Exception as e:  # pylint: disable=broad-except
          failures.append(f"{type(e).__name__}: {e}")
        stop.wait(0.05)  # ~10 requests/s: steady load that leaves the CPUs to export and load
    finally:
      rest.close()

  thread = threading.Thread(target=load, name="swap-load", daemon=True)
  thread.start()
  try:
    lib.wait_until(lambda: counts["rest"] >= 2 or failures, timeout=60,
                   what="requests to version 1")
    result = export.export(served.store.root, os.path.dirname(os.path.dirname(
        served.result.version_dir)), M, log=lambda _: None)
    assert result.version == 2 and os.path.basename(result.version_dir) == "2"
    lib.wait_until(lambda: server.manager.available_versions(M) == [2], timeout=90,
                   what="version 2 to replace version 1")
    seen_2 = versions.count(2)
    lib.wait_until(lambda: versions.count(2) >= seen_2 + 3 or failures, timeout=60,
                   what="requests answered by version 2")
  finally:
    stop.set()
    thread.join(timeout=60)
  assert not thread.is_alive()
  assert not failures, failures[:5]
  assert versions.count(1) >= 2 and versions.count(2) >= 3, (versions.count(1),
                                                             versions.count(2))
  assert set(versions) == {1, 2}
  assert versions == sorted(versions)  # never back to version 1 once 2 answered
  assert counts["grpc"] == len(versions) and counts["rest"] >= counts["grpc"] - 1
  states = server.manager.version_states(M)
  assert states[2].state.name == "AVAILABLE" and states[2].error is None
  assert states[1].state.name == "END"
  # Version 2, now the latest, answers like version 1 did.
  outputs, response = _grpc_predict(served, "shapes/big@pixels", {"image": images})
  assert response.model_spec.version.value == 2
  np.testing.assert_array_equal(outputs["logits"], want)
