"""TF Serving's REST JSON responses: output tensors, classification results and errors -> JSON.

A port of the rules (not the code) of util/json_tensor.cc in tensorflow/serving (MakeJsonFrom*):
numbers are written as rapidjson writes them (`write_decimal`), strings of tensors whose name
ends in "_bytes" as {"b64": ...}. The request side (JSON -> tensors) is `json_tensor`'s.
"""

from __future__ import annotations

import base64
import json
import math

import numpy as np

from serving import errors
from serving import json_tensor
from serving import json_text
from serving import tensors


def write_decimal(value: float, np_type=np.float32) -> str:
  """WriteDecimal(): "%g" (6 digits) if it round-trips in the tensor's type, else max_digits10;
  whole numbers get ".0"; NaN and +-Infinity are written bare."""
  if math.isfinite(value):
    text = "%g" % value
    if np_type(float(text)) != np_type(value):
      text = "%.*g" % (9 if np_type is np.float32 else 17, value)
    if "." not in text and "e" not in text:
      text += ".0"
    return text
  if math.isnan(value):
    return "NaN"
  return "-Infinity" if value < 0 else "Infinity"


def _json_string(data: bytes) -> str:
  return json.dumps(data.decode("utf-8", "surrogateescape"), ensure_ascii=False)


def _value_writer(array: np.ndarray, name: str):
  """AddSingleValueAndAdvance(): one value's JSON text, by dtype."""
  kind = array.dtype
  if kind == np.float32:
    return lambda v: write_decimal(v, np.float32)
  if kind == np.float64:
    return lambda v: write_decimal(v, np.float64)
  if kind == np.bool_:
    return lambda v: "true" if v else "false"
  if kind in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64):
    return str
  if kind == object:
    if name.endswith("_bytes"):
      return lambda v: '{"b64": "' + base64.b64encode(v).decode("ascii") + '"}'
    return _json_string
  raise errors.invalid_argument(
      f"Failed to write JSON value for tensor type: "
      f"{tensors.dtype_string(tensors.enum_of_numpy(kind))}")


def _write_nested(values, write) -> str:
  if isinstance(values, list):
    return "[" + ", ".join(_write_nested(v, write) for v in values) + "]"
  return write(values)


def outputs_to_json(outputs: dict[str, np.ndarray], fmt: json_tensor.Format) -> str:
  """MakeJsonFromTensors(): {"predictions": rows} for row requests, {"outputs": ...} else."""
  if not outputs:
    raise errors.invalid_argument("Cannot convert empty tensor map to JSON")
  names = sorted(outputs)
  writers = {name: _value_writer(outputs[name], name) for name in names}
  if fmt is json_tensor.Format.COLUMNAR:
    parts = {name: _write_nested(outputs[name].tolist(), writers[name]) for name in names}
    if len(names) == 1:
      return '{"outputs": ' + parts[names[0]] + "}"
    body = ", ".join(f"{json_text.escape_string(n)}: {parts[n]}" for n in names)
    return '{"outputs": {' + body + "}}"
  batch = -1
  for name in names:
    array = outputs[name]
    if array.ndim == 0:
      raise errors.invalid_argument(f"Tensor name: {name} has no shape information ")
    if batch >= 0 and array.shape[0] != batch:
      raise errors.invalid_argument(
          f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}")
    batch = array.shape[0]
  lists = {name: outputs[name].tolist() for name in names}
  rows = []
  for i in range(batch):
    if len(names) == 1:
      rows.append(_write_nested(lists[names[0]][i], writers[names[0]]))
    else:
      rows.append("{" + ", ".join(
          f"{json_text.escape_string(n)}: {_write_nested(lists[n][i], writers[n])}"
          for n in names) + "}")
  return '{"predictions": [' + ", ".join(rows) + "]}"


def classification_to_json(result) -> str:
  """MakeJsonFromClassificationResult(): {"results": [[[label, score], ...], ...]}."""
  if not result.classifications:
    raise errors.invalid_argument("Cannot convert empty ClassificationResults to JSON")
  rows = []
  for classifications in result.classifications:
    rows.append("[" + ", ".join(
        f"[{_json_string(c.label.encode('utf-8', 'surrogateescape'))}, "
        f"{write_decimal(c.score, np.float32)}]"
        for c in classifications.classes) + "]")
  return '{"results": [' + ", ".join(rows) + "]}"


def error_json(message: str) -> str:
  """MakeJsonFromStatus(): {"error": message}."""
  return json.dumps({"error": message}, ensure_ascii=False)
