"""Fuzz: >= 1,000 seeded malformed requests over gRPC and REST, in 19 categories; each category's
status code and message are checked, and a good request still succeeds afterwards."""

from __future__ import annotations

import base64
import collections
import random
import re
import string
import time

import grpc
import numpy as np
import tensorflow as tf

import serving_testlib as lib

M = lib.MODEL
SEED = 20240611
NUM_REQUESTS = 1140
DECODE_ERROR = ("Unknown image file format. One of JPEG, PNG, GIF, BMP, WebP required.\n\t "
                "[[{{node map/while/DecodePng}}]]")
ASSERT_ERROR = "assertion failed: [x must be non-negative]\n\t [[{{node Assert/Assert}}]]"
PARSE_ERROR = re.compile(r"JSON Parse error: (The document is empty|[A-Z][^\n]*\. at offset: \d+)")


def _word(rng: random.Random) -> str:
  return "z" + "".join(rng.choice(string.ascii_lowercase + string.digits)
                       for _ in range(rng.randint(1, 12)))


# Each case returns (protocol, call, expected code or HTTP status, expected message or pattern).

def _rest_truncated_json(rng):
  body = '{"instances": [1.0, 2.0, 3.0], "signature_name": "serving_default"}'
  cut = body[:rng.randint(0, len(body) - 1)]
  return "rest", ("POST", f"/v1/models/{M}:predict", cut), 400, PARSE_ERROR


def _rest_garbage(rng):
  body = rng.choice("xyzqwk") + "".join(rng.choice(string.printable) for _ in range(20))
  return ("rest", ("POST", f"/v1/models/{M}:predict", body), 400,
          "JSON Parse error: Invalid value. at offset: 0")


def _rest_wrong_type(rng):
  word = _word(rng)
  return ("rest", ("POST", f"/v1/models/{M}:predict", {"instances": [word]}), 400,
          f"Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: "
          f"\"{word}\" Type: String is not of expected type: float")


def _rest_unknown_signature(rng):
  word = _word(rng)
  return ("rest", ("POST", f"/v1/models/{M}:predict",
                   {"signature_name": word, "instances": [1.0]}), 400,
          f'Serving signature name: "{word}" not found in signature def')


def _rest_unknown_model(rng):
  word = _word(rng)
  return ("rest", ("POST", f"/v1/models/{word}:predict", {"instances": [1.0]}), 404,
          f"Servable not found for request: Latest({word})")


def _rest_unknown_label(rng):
  word = _word(rng)
  return ("rest", ("POST", f"/v1/models/{M}/labels/{word}:predict", {"inputs": [1.0]}), 400,
          f"Unrecognized servable version label: {word}")


def _rest_unknown_version(rng):
  version = rng.randint(2, 10**12)
  return ("rest", ("GET", f"/v1/models/{M}/versions/{version}/metadata", None), 404,
          f"Servable not found for request: Specific({M}, {version})")


def _rest_ragged(rng):
  a, b = rng.sample(range(1, 6), 2)
  return ("rest", ("POST", f"/v1/models/{M}:predict", {"instances": [[1.0] * a, [2.0] * b]}), 400,
          f"Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting "
          f"tensor size: {a} but got: {b}")


def _rest_bad_base64(rng):
  junk = "".join(rng.choice("!@#$%^&*()") for _ in range(rng.randint(1, 10)))
  return ("rest", ("POST", f"/v1/models/{M}:predict",
                   {"signature_name": "png_mean", "instances": [{"b64": junk}]}), 400,
          "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: Unable to "
          "base64 decode")


def _rest_undecodable_image(rng):
  data = bytes([rng.randint(0x00, 0x3F)]) + bytes(rng.randrange(256) for _ in range(30))
  return ("rest", ("POST", f"/v1/models/{M}:predict", {
      "signature_name": "png_mean", "inputs": [{"b64": base64.b64encode(data).decode()}]}), 400,
          DECODE_ERROR)


def _rest_failed_assert(rng):
  return ("rest", ("POST", f"/v1/models/{M}:predict", {
      "signature_name": "checked", "instances": [rng.uniform(0, 5), -rng.uniform(0.1, 5)]}), 400,
          ASSERT_ERROR)


def _grpc_unknown_model(rng):
  word = _word(rng)
  return ("grpc", ("Predict", lib.predict_request([1.0], model=word)),
          grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({word})")


def _grpc_unknown_signature(rng):
  word = _word(rng)
  return ("grpc", ("Predict", lib.predict_request([1.0], signature=word)),
          grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{word}" not found.')


def _grpc_unknown_alias(rng):
  word = _word(rng)
  request = lib.predict_request([1.0])
  request.inputs[word].CopyFrom(request.inputs.pop("x"))
  return ("grpc", ("Predict", request), grpc.StatusCode.INVALID_ARGUMENT,
          f"input tensor alias not found in signature: {word}. Inputs expected to be in the set "
          "{x}.")


def _grpc_wrong_dtype(rng):
  dtype, name = rng.choice([(tf.int32, "int32"), (tf.int64, "int64"), (tf.float64, "double")])
  request = lib.predict_request([1.0])
  request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1, 2]), dtype=dtype))
  return ("grpc", ("Predict", request), grpc.StatusCode.INVALID_ARGUMENT,
          f"Expects arg[0] to be float but {name} is provided")


def _grpc_tensor_parsing_error(rng):
  request = lib.predict_request([1.0])
  request.inputs["x"].float_val.extend([1.0] * rng.randint(1, 5))
  return ("grpc", ("Predict", request), grpc.StatusCode.INVALID_ARGUMENT,
          "tensor parsing error: x")


def _grpc_classify_unknown_signature(rng):
  word = _word(rng)
  return ("grpc", ("Classify", lib.classify_request([1.0], signature=word)),
          grpc.StatusCode.INVALID_ARGUMENT, f"No signature was found with the name: {word}")


def _grpc_classify_empty(rng):
  del rng
  return ("grpc", ("Classify", lib.classify_request([])), grpc.StatusCode.INVALID_ARGUMENT,
          "Input is empty.")


def _grpc_unknown_label(rng):
  word = _word(rng)
  request = lib.predict_request([1.0])
  request.model_spec.version_label = word
  return ("grpc", ("Predict", request), grpc.StatusCode.INVALID_ARGUMENT,
          f"Unrecognized servable version label: {word}")


CATEGORIES = [
    _rest_truncated_json, _rest_garbage, _rest_wrong_type, _rest_unknown_signature,
    _rest_unknown_model, _rest_unknown_label, _rest_unknown_version, _rest_ragged,
    _rest_bad_base64, _rest_undecodable_image, _rest_failed_assert, _grpc_unknown_model,
    _grpc_unknown_signature, _grpc_unknown_alias, _grpc_wrong_dtype, _grpc_tensor_parsing_error,
    _grpc_classify_unknown_signature, _grpc_classify_empty, _grpc_unknown_label,
]


def test_fuzz_malformed_requests_then_a_good_one(served):
  server, clients, _ = served
  rest = lib.Rest(server.rest_port)
  rng = random.Random(SEED)
  checked = collections.Counter()
  mismatches = []
  deadline = time.monotonic() + 120
  for i in range(NUM_REQUESTS):
    assert time.monotonic() < deadline, f"fuzzing too slow: {i} requests"
    category = CATEGORIES[i % len(CATEGORIES)] if i < len(CATEGORIES) else rng.choice(CATEGORIES)
    protocol, call, want_code, want_message = category(rng)
    if protocol == "rest":
      method, path, body = call
      status, response = rest.call(method, path, body)
      code, message = status, (response or {}).get("error") if isinstance(response, dict) else (
          response)
    else:
      code, message = lib.grpc_error(getattr(clients.prediction, call[0]), call[1])
    ok = code == want_code and (
        want_message.fullmatch(message or "") is not None if isinstance(want_message, re.Pattern)
        else message == want_message)
    if not ok:
      mismatches.append((category.__name__, code, message, want_code, want_message))
    checked[category.__name__] += 1
  rest_ok = rest.post(f"/v1/models/{M}:predict", {"instances": [1.0, 2.0]})
  good = clients.prediction.Predict(lib.predict_request([4.0]), timeout=30)
  rest.close()
  assert mismatches == [], sorted({m[0] for m in mismatches})
  assert sum(checked.values()) == NUM_REQUESTS >= 1000
  assert len(checked) == len(CATEGORIES) >= 10
  assert min(checked.values()) >= 20, checked
  assert sum(n for c, n in checked.items() if c.startswith("_rest")) >= 300
  assert sum(n for c, n in checked.items() if c.startswith("_grpc")) >= 300
  assert rest_ok == (200, {"predictions": [2.5, 3.0]})
  assert tf.make_ndarray(good.outputs["y"]).tolist() == [4.0]
