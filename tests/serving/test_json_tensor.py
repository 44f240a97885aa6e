"""Unit tests of the REST JSON rules (serving/json_tensor.py, serving/json_response.py) and
TensorProto parsing (serving/tensors.py), without a server."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from serving import errors
from serving import json_response
from serving import json_tensor
from serving import tensors


@pytest.mark.parametrize("value, text", [
    ({"instances": []}, '{\n    "instances": []\n}'),
    ([1, 2.5, "a"], '[1, 2.5, "a"]'),
    ({"a": {"b": [1, {"c": None}]}},
     # Arrays are indent levels too (rapidjson's WriteIndent counts the level stack).
     '{\n    "a": {\n        "b": [1, {\n                "c": null\n            }]\n    }\n}'),
    ({}, "{}"),
    (1.0, "1.0"), (1e21, "1e21"), (1e22, "1e22"), (123456.0, "123456.0"), (0.001234, "0.001234"),
    (1.5e-7, "1.5e-7"), (-0.0, "-0.0"), (True, "true"),
    ([1, float("nan"), 2], "[1, "),  # rapidjson refuses to write NaN and stops there.
])
def test_debug_string_matches_rapidjson(value, text):
  assert json_tensor.debug_string(value) == text


def test_debug_string_is_cut_after_256_bytes():
  text = json_tensor.debug_string({"instances": list(range(1000))})
  assert 256 <= len(text) < 270
  assert text.startswith('{\n    "instances": [0, 1, 2, ')


@pytest.mark.parametrize("value, np_type, text", [
    (np.float32(0.1), np.float32, "0.1"), (np.float32(2.5), np.float32, "2.5"),
    (np.float32(3.0), np.float32, "3.0"), (np.float32(1e-5), np.float32, "1e-05"),
    (np.float32(123456789.0), np.float32, "123456792.0"),
    (np.float32(1 / 3), np.float32, "0.333333343"), (0.1, np.float64, "0.1"),
    (float("nan"), np.float32, "NaN"), (float("-inf"), np.float32, "-Infinity"),
])
def test_write_decimal(value, np_type, text):
  assert json_response.write_decimal(float(value), np_type) == text


def test_row_and_columnar_conversion():
  dtypes = {"x": types_pb2.DT_FLOAT, "s": types_pb2.DT_STRING}
  arrays, fmt = json_tensor.predict_inputs(
      {"instances": [{"x": [1, 2], "s": {"b64": "aGk="}}, {"x": [3, 4], "s": "yo"}]}, dtypes, "")
  assert fmt is json_tensor.Format.ROW
  np.testing.assert_array_equal(arrays["x"], np.float32([[1, 2], [3, 4]]))
  assert arrays["s"].tolist() == [b"hi", b"yo"]
  arrays, fmt = json_tensor.predict_inputs({"inputs": {"x": [[1], [2]], "s": ["a", "b"]}},
                                           dtypes, "")
  assert fmt is json_tensor.Format.COLUMNAR and arrays["x"].shape == (2, 1)
  with pytest.raises(errors.ServingError) as raised:
    json_tensor.predict_inputs({"instances": [1.0]}, dtypes, "")
  assert raised.value.message == (
      "instances is a plain list, but expecting list of objects as multiple input tensors "
      "required as per tensorinfo_map")
  with pytest.raises(errors.ServingError) as raised:
    json_tensor.predict_inputs({"inputs": [[1, 2], [3]]}, {"x": types_pb2.DT_FLOAT}, "")
  assert raised.value.message == (
      "Encountered list at unexpected size: 1 at level: 1 expected size: 2")
  with pytest.raises(errors.ServingError) as raised:
    json_tensor.predict_inputs({"inputs": [2**40]}, {"x": types_pb2.DT_INT32}, "")
  assert raised.value.message == (
      "JSON Value: 1099511627776 Type: Number is not of expected type: int32")


def test_outputs_to_json():
  outputs = {"a_bytes": np.array([b"\x00"], dtype=object), "y": np.float32([0.1])}
  assert json_response.outputs_to_json(outputs, json_tensor.Format.ROW) == (
      '{"predictions": [{"a_bytes": {"b64": "AA=="}, "y": 0.1}]}')
  assert json_response.outputs_to_json({"y": np.float32([[1, 2]])},
                                       json_tensor.Format.COLUMNAR) == (
      '{"outputs": [[1.0, 2.0]]}')
  with pytest.raises(errors.ServingError) as raised:
    json_response.outputs_to_json({"a": np.float32([1]), "b": np.float32([1, 2])},
                                  json_tensor.Format.ROW)
  assert raised.value.message == "Tensor name: b has inconsistent batch size: 2 expecting: 1"


def test_tensor_proto_parsing_follows_from_proto():
  proto = tf.make_tensor_proto(np.float32([[1, 2], [3, 4]]))  # tensor_content
  np.testing.assert_array_equal(tensors.to_ndarray(proto), np.float32([[1, 2], [3, 4]]))
  short = tf.make_tensor_proto(np.float32([5.0]))
  short.tensor_shape.dim[0].size = 3  # one value fills the tensor, like Tensor::FromProto
  np.testing.assert_array_equal(tensors.to_ndarray(short), np.float32([5, 5, 5]))
  short.float_val.extend([6.0, 7.0, 8.0])
  assert tensors.to_ndarray(short) is None  # more values than elements
  strings = tf.make_tensor_proto([b"a", b"b"])
  assert tensors.to_ndarray(strings).tolist() == [b"a", b"b"]
  out = tensors.from_ndarray(np.int64([[1, 2]]), types_pb2.DT_INT64)
  np.testing.assert_array_equal(tf.make_ndarray(out), np.int64([[1, 2]]))
  assert tensors.dtype_string(types_pb2.DT_FLOAT) == "float"


_DT = types_pb2


@pytest.mark.parametrize("dtype", [_DT.DT_UINT8, _DT.DT_INT32, _DT.DT_INT64, _DT.DT_FLOAT])
def test_numpy_fast_path_gives_the_checked_paths_arrays_and_errors(dtype):
  """predict_inputs(fast=True) must answer exactly as the value-by-value path, on good input
  and on every kind of bad input it can meet."""
  rng = np.random.default_rng(dtype)
  documents = [
      {"inputs": rng.integers(0, 256, (2, 4, 4, 3)).tolist()},
      {"instances": rng.integers(0, 256, (3, 2, 2)).tolist()},
      {"inputs": (rng.random((2, 3)) * 100).tolist()},                  # floats
      {"inputs": [[1, 2.5], [3, 4]]},                                   # mixed
      {"inputs": [[1, 2], [3]]},                                        # ragged
      {"inputs": [[2 ** 31, 1]]},                                       # past int32
      {"inputs": [[2 ** 63, 1]]},                                       # past int64
      {"inputs": [[2 ** 70, 1]]},                                       # a double for rapidjson
      {"inputs": [[-1, 256, 300]]},                                     # narrowed like C
      {"inputs": [["a", 1]]},                                           # strings
      {"inputs": [[[1, 2], 3]]},                                        # list at a scalar level
      {"instances": [[1, 2], [3, 4, 5]]},                               # rows of two sizes
  ]
  compared = 0
  for doc in documents:
    answers = []
    for fast in (False, True):
      try:
        arrays, fmt = json_tensor.predict_inputs(doc, {"x": dtype}, "s", fast=fast)
        answers.append(("ok", fmt, {k: (v.dtype, v.shape, v.tolist()) for k, v in arrays.items()}))
      except errors.ServingError as e:
        answers.append(("error", e.to_string()))
    assert answers[0] == answers[1], (doc, answers)
    compared += 1
  assert compared == len(documents)
