"""The APIs on one server: results, formats, metadata, status, and TF Serving's errors (code AND
exact message) over both protocols."""

from __future__ import annotations

import base64

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2

import serving_testlib as lib

M = lib.MODEL
DECODE_ERROR = ("Unknown image file format. One of JPEG, PNG, GIF, BMP, WebP required.\n\t "
                "[[{{node map/while/DecodePng}}]]")
ASSERT_ERROR = "assertion failed: [x must be non-negative]\n\t [[{{node Assert/Assert}}]]"


@pytest.fixture(scope="module")
def api(served):
  server, clients, _ = served
  rest = lib.Rest(server.rest_port)
  yield clients, rest
  rest.close()


def _outputs(response) -> dict[str, np.ndarray]:
  return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


# --- Results -------------------------------------------------------------------------------------

def test_grpc_predict_half_plus_two(api):
  clients, _ = api
  response = clients.prediction.Predict(lib.predict_request([1.0, 2.0, 5.0]), timeout=60)
  np.testing.assert_array_equal(_outputs(response)["y"], np.float32([2.5, 3.0, 4.5]))
  assert response.model_spec.name == M
  assert response.model_spec.version.value == 1
  assert response.model_spec.signature_name == "serving_default"


def test_grpc_predict_output_filter_and_empty_batch(api):
  clients, _ = api
  request = lib.predict_request([])
  request.output_filter.append("y")
  response = clients.prediction.Predict(request, timeout=60)
  assert list(response.outputs) == ["y"]
  assert _outputs(response)["y"].shape == (0,)
  request.output_filter.append("nope")
  assert lib.grpc_error(clients.prediction.Predict, request) == (
      grpc.StatusCode.INVALID_ARGUMENT,
      "output tensor alias not found in signature: nope Outputs expected to be in the set {y}.")


def test_rest_predict_row_and_columnar(api):
  _, rest = api
  assert rest.post(f"/v1/models/{M}:predict", {"instances": [1.0, 2.0]}) == (
      200, {"predictions": [2.5, 3.0]})
  assert rest.post(f"/v1/models/{M}:predict", {"inputs": [1.0, 2.0]}) == (
      200, {"outputs": [2.5, 3.0]})
  assert rest.post(f"/v1/models/{M}:predict", {"inputs": {"x": [4.0]}}) == (
      200, {"outputs": [4.0]})
  assert rest.post(f"/v1/models/{M}/versions/1:predict", {"instances": [0]}) == (
      200, {"predictions": [2.0]})
  # Several inputs and outputs: objects per row; a dict of outputs in columnar form.
  assert rest.post(f"/v1/models/{M}:predict", {
      "signature_name": "add", "instances": [{"a": 1.0, "b": 2.0}, {"a": 5, "b": 1}]}) == (
          200, {"predictions": [{"diff": -1.0, "sum": 3.0}, {"diff": 4.0, "sum": 6.0}]})
  assert rest.post(f"/v1/models/{M}:predict", {
      "signature_name": "add", "inputs": {"a": [1.0, 5.0], "b": [2.0, 1.0]}}) == (
          200, {"outputs": {"diff": [-1.0, 4.0], "sum": [3.0, 6.0]}})


def test_rest_float_formatting_and_nan(api):
  _, rest = api
  status, body = rest.post(f"/v1/models/{M}:predict", '{"instances": [0.1, NaN, Infinity]}')
  assert status == 200
  assert body["predictions"][0] == 2.05  # float32 0.1 -> 2.05 written as "2.05", not 2.04999...
  assert np.isnan(body["predictions"][1]) and body["predictions"][2] == float("inf")
  status, body = rest.post(f"/v1/models/{M}:predict", '{"inputs": [-Infinity, 1e10, 3]}')
  assert (status, body) == (200, {"outputs": [float("-inf"), 5e9, 3.5]})


def test_b64_string_inputs_and_bytes_outputs(api):
  clients, rest = api
  image = lib.png_bytes([[0, 10], [20, 30]])
  b64 = base64.b64encode(image).decode()
  assert rest.post(f"/v1/models/{M}:predict", {
      "signature_name": "png_mean", "instances": [{"b64": b64}]}) == (
          200, {"predictions": [15.0]})
  assert rest.post(f"/v1/models/{M}:predict", {
      "signature_name": "png_mean", "inputs": {"image_bytes": [{"b64": b64}]}}) == (
          200, {"outputs": [15.0]})
  request = lib.predict_request([0.0], signature="png_mean")
  del request.inputs["x"]
  request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([image], dtype=tf.string))
  response = clients.prediction.Predict(request, timeout=60)
  np.testing.assert_array_equal(_outputs(response)["mean"], np.float32([15.0]))
  # Outputs named *_bytes come back as {"b64": ...}; other strings as JSON strings.
  raw = b"\x00\xffbinary"
  assert rest.post(f"/v1/models/{M}:predict", {
      "signature_name": "echo_bytes",
      "instances": [{"b64": base64.b64encode(raw).decode()}]}) == (
          200, {"predictions": [{"b64": base64.b64encode(raw).decode()}]})


def test_classify_both_protocols(api):
  clients, rest = api
  response = clients.prediction.Classify(lib.classify_request([1.5, -2.0]), timeout=60)
  got = [[(c.label, c.score) for c in cs.classes] for cs in response.result.classifications]
  assert got == [[("neg", -1.5), ("pos", 1.5)], [("neg", 2.0), ("pos", -2.0)]]
  assert response.model_spec.signature_name == "classify"
  assert response.model_spec.version.value == 1
  assert rest.post(f"/v1/models/{M}:classify", {
      "signature_name": "classify", "examples": [{"x": 1.5}, {"x": [-2.0]}]}) == (
          200, {"results": [[["neg", -1.5], ["pos", 1.5]], [["neg", 2.0], ["pos", -2.0]]]})
  # A context's features are shared; an example's own features win.
  assert rest.post(f"/v1/models/{M}:classify", {
      "signature_name": "classify", "context": {"x": 3.0}, "examples": [{}, {"x": 1.0}]}) == (
          200, {"results": [[["neg", -3.0], ["pos", 3.0]], [["neg", -1.0], ["pos", 1.0]]]})


def test_metadata_both_protocols(api):
  clients, rest = api
  request = get_model_metadata_pb2.GetModelMetadataRequest()
  request.model_spec.name = M
  request.metadata_field.append("signature_def")
  response = clients.prediction.GetModelMetadata(request, timeout=60)
  defs = get_model_metadata_pb2.SignatureDefMap()
  assert response.metadata["signature_def"].Unpack(defs)
  assert {"serving_default", "png_mean", "classify", "add"} <= set(defs.signature_def)
  assert defs.signature_def["serving_default"].inputs["x"].dtype == tf.float32.as_datatype_enum
  assert defs.signature_def["classify"].method_name == "tensorflow/serving/classify"
  assert response.model_spec.version.value == 1
  status, body = rest.get(f"/v1/models/{M}/metadata")
  assert status == 200
  assert body["model_spec"] == {"name": M, "signature_name": "", "version": "1"}
  sigs = body["metadata"]["signature_def"]["signature_def"]
  assert sigs["serving_default"]["method_name"] == "tensorflow/serving/predict"
  assert sigs["serving_default"]["inputs"]["x"]["dtype"] == "DT_FLOAT"
  assert set(sigs) == set(defs.signature_def)
  request.metadata_field[0] = "nope"
  assert lib.grpc_error(clients.prediction.GetModelMetadata, request) == (
      grpc.StatusCode.INVALID_ARGUMENT, "Metadata field nope is not supported")


def test_model_status_both_protocols(api):
  clients, rest = api
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = M
  response = clients.model.GetModelStatus(request, timeout=60)
  assert [(s.version, s.state) for s in response.model_version_status] == [
      (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
  expected = {"model_version_status": [{
      "version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
  assert rest.get(f"/v1/models/{M}") == (200, expected)
  assert rest.get(f"/v1/models/{M}/versions/1") == (200, expected)
  assert rest.get(f"/v1/models/{M}/versions/9") == (
      404, {"error": f"Could not find version 9 of model {M}"})


# --- Errors, both protocols ----------------------------------------------------------------------

def _grpc_predict_error(clients, request):
  return lib.grpc_error(clients.prediction.Predict, request)


def test_unknown_model_and_version(api):
  clients, rest = api
  assert _grpc_predict_error(clients, lib.predict_request([1.0], model="nope")) == (
      grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")
  assert rest.post("/v1/models/nope:predict", {"instances": [1.0]}) == (
      404, {"error": "Servable not found for request: Latest(nope)"})
  assert _grpc_predict_error(clients, lib.predict_request([1.0], version=7)) == (
      grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({M}, 7)")
  assert rest.post(f"/v1/models/{M}/versions/7:predict", {"instances": [1.0]}) == (
      404, {"error": f"Servable not found for request: Specific({M}, 7)"})
  assert rest.get(f"/v1/models/{M}/versions/7/metadata") == (
      404, {"error": f"Servable not found for request: Specific({M}, 7)"})
  assert lib.grpc_error(clients.prediction.Classify, lib.classify_request([1.0], model="nope")) \
      == (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = "nope"
  assert lib.grpc_error(clients.model.GetModelStatus, request) == (
      grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope")
  assert rest.get("/v1/models/nope") == (
      404, {"error": "Could not find any versions of model nope"})


def test_unknown_label(api):
  clients, rest = api
  request = lib.predict_request([1.0])
  request.model_spec.version_label = "canary"
  assert _grpc_predict_error(clients, request) == (
      grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: canary")
  assert rest.post(f"/v1/models/{M}/labels/canary:predict", {"instances": [1.0]}) == (
      400, {"error": "Unrecognized servable version label: canary"})
  assert rest.get(f"/v1/models/{M}/labels/canary/metadata") == (
      400, {"error": "Unrecognized servable version label: canary"})


def test_unknown_signature(api):
  clients, rest = api
  assert _grpc_predict_error(clients, lib.predict_request([1.0], signature="nope")) == (
      grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')
  assert rest.post(f"/v1/models/{M}:predict", {"signature_name": "nope", "instances": [1.0]}) \
      == (400, {"error": 'Serving signature name: "nope" not found in signature def'})
  assert lib.grpc_error(clients.prediction.Classify,
                        lib.classify_request([1.0], signature="nope")) == (
      grpc.StatusCode.INVALID_ARGUMENT, "No signature was found with the name: nope")
  assert rest.post(f"/v1/models/{M}:classify", {"signature_name": "nope", "examples": [{}]}) == (
      400, {"error": "No signature was found with the name: nope"})


def test_classify_method_name_check(api):
  clients, rest = api
  message = ("Expected classification signature method_name to be tensorflow/serving/classify. "
             "Was: tensorflow/serving/predict")
  assert lib.grpc_error(clients.prediction.Classify,
                        lib.classify_request([1.0], signature="serving_default")) == (
      grpc.StatusCode.INVALID_ARGUMENT, message)
  assert rest.post(f"/v1/models/{M}:classify", {"examples": [{"x": 1.0}]}) == (
      400, {"error": message})
  empty = lib.classify_request([])
  assert lib.grpc_error(clients.prediction.Classify, empty) == (
      grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")


def test_unknown_input_alias(api):
  clients, rest = api
  request = lib.predict_request([1.0])
  request.inputs["a"].CopyFrom(request.inputs.pop("x"))
  assert _grpc_predict_error(clients, request) == (
      grpc.StatusCode.INVALID_ARGUMENT,
      "input tensor alias not found in signature: a. Inputs expected to be in the set {x}.")
  request.inputs["x"].CopyFrom(request.inputs["a"])
  assert _grpc_predict_error(clients, request) == (
      grpc.StatusCode.INVALID_ARGUMENT,
      "input size does not match signature: 2!=1 len({a,x}) != len({x}). Sent extra: {a}. "
      "Missing but required: {}.")
  assert rest.post(f"/v1/models/{M}:predict", {"instances": [{"a": 1.0}]}) == (
      400, {"error": "Failed to process element: 0 key: a of 'instances' list. Error: "
                     "INVALID_ARGUMENT: JSON object: does not have named input: a"})
  assert rest.post(f"/v1/models/{M}:predict", {"signature_name": "add", "inputs": {"a": [1.0]}}) \
      == (400, {"error": "Missing named input: b in 'inputs' object."})


def test_malformed_json(api):
  _, rest = api
  cases = {
      "": "JSON Parse error: The document is empty",
      "{": "JSON Parse error: Missing a name for object member. at offset: 1",
      '{"instances": [1.0,': "JSON Parse error: Invalid value. at offset: 19",
      '{"instances" [1]}': "JSON Parse error: Missing a colon after a name of object member. at "
                           "offset: 13",
      '{"instances": [1 2]}': "JSON Parse error: Missing a comma or ']' after an array element. "
                              "at offset: 17",
  }
  for body, message in cases.items():
    assert rest.post(f"/v1/models/{M}:predict", body) == (400, {"error": message}), body
  status, body = rest.post(f"/v1/models/{M}:classify", "nonsense")
  assert status == 400 and body["error"].startswith("JSON Parse error:")
  assert rest.post(f"/v1/models/{M}:predict", "[1, 2]") == (
      400, {"error": "JSON Value: [1, 2] Is not object"})


def test_empty_batches(api):
  clients, rest = api
  assert rest.post(f"/v1/models/{M}:predict", {"instances": []}) == (
      400, {"error": "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array"})
  assert rest.post(f"/v1/models/{M}:predict", {"inputs": []}) == (200, {"outputs": []})
  assert rest.post(f"/v1/models/{M}:classify", {"signature_name": "classify", "examples": []}) \
      == (400, {"error": "JSON Value: {\n    \"signature_name\": \"classify\",\n    "
                         "\"examples\": []\n} 'examples' value is an empty array"})
  response = clients.prediction.Predict(lib.predict_request([]), timeout=60)
  assert _outputs(response)["y"].shape == (0,)


def test_op_errors_keep_code_and_message(api):
  clients, rest = api
  bad_image = base64.b64encode(b"not an image").decode()
  assert rest.post(f"/v1/models/{M}:predict", {
      "signature_name": "png_mean", "instances": [{"b64": bad_image}]}) == (
          400, {"error": DECODE_ERROR})
  request = lib.predict_request([0.0], signature="png_mean")
  del request.inputs["x"]
  request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([b"xx"], dtype=tf.string))
  assert _grpc_predict_error(clients, request) == (grpc.StatusCode.INVALID_ARGUMENT, DECODE_ERROR)
  assert rest.post(f"/v1/models/{M}:predict", {"signature_name": "checked", "inputs": [-1.0]}) \
      == (400, {"error": ASSERT_ERROR})
  assert _grpc_predict_error(clients, lib.predict_request([1.0, -1.0], signature="checked")) == (
      grpc.StatusCode.INVALID_ARGUMENT, ASSERT_ERROR)
  assert rest.post(f"/v1/models/{M}:predict", {"signature_name": "checked", "inputs": [3.0]}) \
      == (200, {"outputs": [6.0]})


def test_wrong_dtypes(api):
  clients, rest = api
  request = lib.predict_request([1.0])
  request.inputs["x"].CopyFrom(tf.make_tensor_proto([b"a"], dtype=tf.string))
  assert _grpc_predict_error(clients, request) == (
      grpc.StatusCode.INVALID_ARGUMENT, "Expects arg[0] to be float but string is provided")
  request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
  request.inputs["x"].float_val.extend([2.0, 3.0])
  assert _grpc_predict_error(clients, request) == (
      grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: x")
  assert rest.post(f"/v1/models/{M}:predict", {"instances": ["a"]}) == (
      400, {"error": "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
                     "JSON Value: \"a\" Type: String is not of expected type: float"})
  assert rest.post(f"/v1/models/{M}:predict", {"inputs": [True]}) == (
      400, {"error": "JSON Value: true Type: True is not of expected type: float"})
  assert rest.post(f"/v1/models/{M}:predict", {"inputs": [{"b64": "AA=="}]}) == (
      400, {"error": "JSON Value: {\n    \"b64\": \"AA==\"\n} Type: Object is not of expected "
                     "type: float"})
  assert rest.post(f"/v1/models/{M}:predict", {
      "signature_name": "png_mean", "inputs": [{"b64": "%%%"}]}) == (
          400, {"error": "Unable to base64 decode"})
  assert rest.post(f"/v1/models/{M}:predict", {"instances": [[1.0], 2.0]}) == (
      400, {"error": "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
                     "Expecting shape [1] but got: []"})


def test_rest_routing_errors(api):
  _, rest = api
  assert rest.post("/v1/models/half:regress", {"examples": [{}]})[0] == 501
  assert rest.call("PUT", f"/v1/models/{M}:predict", "{}") == (
      400, {"error": f"Malformed request: PUT /v1/models/{M}:predict"})
  assert rest.post(f"/v1/models/{M}:PREDICT", "{}") == (
      400, {"error": f"Malformed request: POST /v1/models/{M}:PREDICT"})
  assert rest.get("/v1/models") == (400, {"error": "Missing model name in request."})
  assert rest.get(f"/v1/models/{M}/versions/99999999999999999999") == (
      400, {"error": "Failed to convert version: 99999999999999999999 to numeric."})
  assert rest.get("/v2/models/x")[0] == 404
  assert rest.post(f"/v1/models/{M}:predict", {"x": 1}) == (
      400, {"error": "Missing 'inputs' or 'instances' key"})
  assert rest.post(f"/v1/models/{M}:predict", {"signature_name": 3, "inputs": [1]}) == (
      400, {"error": "JSON Value: {\n    \"signature_name\": 3,\n    \"inputs\": [1]\n} not "
                     "formatted correctly. 'signature_name' key must be a string value."})
