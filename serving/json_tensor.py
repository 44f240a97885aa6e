"""TF Serving's REST JSON requests: request JSON -> input tensors (Predict).

A port of the rules (not the code) of util/json_tensor.cc in tensorflow/serving, including its
error messages (the JSON text rules and the quoting of values are `json_text`'s; JSON -> tf.Example
for Classify is `json_example`'s; output tensors -> response JSON is `json_response`'s).

Numbers keep rapidjson's typing: a JSON number with a fraction or exponent is a double (so `1.0`
is not an int32), an integer outside [-2**63, 2**64) is a double, bools are not numbers.
"""

from __future__ import annotations

import base64
import binascii
import enum

import numpy as np
from tensorflow.core.framework import types_pb2

from serving import errors
from serving import json_text
from serving import tensors

_DT = types_pb2
_INT64_MIN, _INT64_MAX, _UINT64_MAX = json_text.INT64_MIN, json_text.INT64_MAX, json_text.UINT64_MAX
_INT32_MIN, _INT32_MAX, _UINT32_MAX = -(2**31), 2**31 - 1, 2**32 - 1

# Re-exported: the REST handler and tests use them through this module.
parse_json = json_text.parse_json
debug_string = json_text.debug_string


class Format(enum.Enum):
  """JsonPredictRequestFormat: the response mirrors the request ("predictions" or "outputs")."""
  ROW = "instances"
  COLUMNAR = "inputs"


def is_b64(value) -> bool:
  """IsValBase64Object(): exactly one key, "b64", mapping to a string."""
  return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def decode_b64(value) -> bytes:
  if not is_b64(value):
    raise errors.invalid_argument(
        f"JSON Value: {json_text.debug_string(value)} not formatted correctly for base64 data")
  text = value["b64"]
  try:
    raw = text.encode("ascii")
    if len(raw) % 4:
      raw += b"=" * (-len(raw) % 4)
    return base64.b64decode(raw, validate=True)
  except (UnicodeEncodeError, binascii.Error, ValueError):
    raise errors.invalid_argument("Unable to base64 decode") from None


def _is_number(v) -> bool:
  return (isinstance(v, (int, float))) and not isinstance(v, bool)


def _check_scalar(value, enum_: int):
  """AddValueToTensor(): the value converted for the dtype, or the TypeError."""
  if isinstance(value, dict):
    if enum_ == _DT.DT_STRING:
      return decode_b64(value)
    raise json_text.type_error(value, enum_)
  if enum_ in (_DT.DT_FLOAT, _DT.DT_DOUBLE):
    if _is_number(value):
      return value
  elif enum_ in (_DT.DT_INT32, _DT.DT_INT16, _DT.DT_INT8, _DT.DT_UINT8):
    if isinstance(value, int) and not isinstance(value, bool) and (
        _INT32_MIN <= value <= _INT32_MAX):
      return value
  elif enum_ == _DT.DT_STRING:
    if isinstance(value, str):
      return value.encode("utf-8", "surrogateescape")
  elif enum_ == _DT.DT_INT64:
    if isinstance(value, int) and not isinstance(value, bool) and (
        _INT64_MIN <= value <= _INT64_MAX):
      return value
  elif enum_ == _DT.DT_BOOL:
    if isinstance(value, bool):
      return value
  elif enum_ == _DT.DT_UINT32:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _UINT32_MAX:
      return value
  elif enum_ == _DT.DT_UINT64:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _UINT64_MAX:
      return value
  else:
    raise errors.ServingError(
        errors.Code.UNIMPLEMENTED,
        f"Conversion of JSON Value: {json_text.debug_string(value)} to type: "
        f"{tensors.dtype_string(enum_)}")
  raise json_text.type_error(value, enum_)


# Dtypes `_fast_array` converts in one numpy call, with the integer range each accepts.
_FAST_INT_RANGE = {
    _DT.DT_INT32: (_INT32_MIN, _INT32_MAX), _DT.DT_INT16: (_INT32_MIN, _INT32_MAX),
    _DT.DT_INT8: (_INT32_MIN, _INT32_MAX), _DT.DT_UINT8: (_INT32_MIN, _INT32_MAX),
    _DT.DT_INT64: (_INT64_MIN, _INT64_MAX),
}
_FAST_FLOAT = (_DT.DT_FLOAT, _DT.DT_DOUBLE)


def _fast_array(value, enum_: int, shape: list[int]):
  """A dense list of plain numbers as one numpy array, or None to take the checked path.

  Checking every value in Python costs about 1 ms per thousand values; numpy converts them at
  a tenth of that. Anything unusual (ragged, bools, strings, objects, out-of-range integers)
  returns None, and `_fill` then produces exactly TF Serving's error. Bools must have been
  ruled out by the caller: numpy would silently read True as 1 among integers.
  """
  if not isinstance(value, list) or (enum_ not in _FAST_INT_RANGE and enum_ not in _FAST_FLOAT):
    return None
  try:
    array = np.asarray(value)
  except (ValueError, OverflowError, TypeError):
    return None
  if list(array.shape) != shape or array.size == 0:
    return None
  if array.dtype.kind == "i":
    if enum_ in _FAST_INT_RANGE:
      low, high = _FAST_INT_RANGE[enum_]
      if array.min() < low or array.max() > high:
        return None
  elif not (array.dtype.kind == "f" and enum_ in _FAST_FLOAT):
    return None
  return _to_array(array, shape, enum_)


def _dense_shape(value) -> list[int]:
  """GetDenseTensorShape(): sizes along the first element of each nested list."""
  shape = []
  while isinstance(value, list):
    shape.append(len(value))
    if not value:
      break
    value = value[0]
  return shape


def _fill(value, level: int, shape: list[int], enum_: int, out: list) -> None:
  """FillTensorProto(): appends the leaves of `value` to `out`, checking a dense layout."""
  rank = len(shape)
  if not isinstance(value, list):
    if level != rank:
      raise errors.invalid_argument(
          f"JSON Value: {json_text.debug_string(value)} found at incorrect level: {level + 1} "
          f"in the JSON DOM. Expected at level: {rank}")
    out.append(_check_scalar(value, enum_))
    return
  if level >= rank:
    raise errors.invalid_argument(
        f"Encountered list at unexpected level: {level} expected < {rank}")
  if len(value) != shape[level]:
    raise errors.invalid_argument(
        f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: "
        f"{shape[level]}")
  if level + 1 == rank:
    # Leaf lists (the common case) without a recursive call per value.
    for item in value:
      if isinstance(item, list):
        raise errors.invalid_argument(
            f"Encountered list at unexpected level: {level + 1} expected < {rank}")
      out.append(_check_scalar(item, enum_))
    return
  for item in value:
    _fill(item, level + 1, shape, enum_, out)


def _to_array(values: list, shape: list[int], enum_: int) -> np.ndarray:
  if enum_ == _DT.DT_STRING:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array.reshape(shape)
  np_dtype = tensors.numpy_dtype(enum_)
  if enum_ in (_DT.DT_INT16, _DT.DT_INT8, _DT.DT_UINT8):
    # int_val holds int32s; Tensor::FromProto narrows them like a C cast.
    return np.asarray(values, dtype=np.int32).astype(np_dtype).reshape(shape)
  return np.asarray(values, dtype=np_dtype).reshape(shape)


def _shape_string(shape: list[int]) -> str:
  return "[" + ",".join(str(d) for d in shape) + "]"


def _instances_to_arrays(instances: list, input_dtypes: dict[str, int],
                         fast: bool) -> dict[str, np.ndarray]:
  """FillTensorMapFromInstancesList(): row format, one instance per batch element."""
  names = sorted(input_dtypes)
  if not isinstance(instances[0], dict) and len(input_dtypes) > 1:
    raise errors.invalid_argument(
        "instances is a plain list, but expecting list of objects as multiple input tensors "
        "required as per tensorinfo_map")

  def is_element_object(v) -> bool:
    return isinstance(v, dict) and not is_b64(v)

  objects = is_element_object(instances[0])
  values: dict[str, list] = {}
  sizes: dict[str, int] = {}
  shapes: dict[str, list[int]] = {}

  def add_item(item, name: str) -> None:
    """AddInstanceItem()."""
    if name not in input_dtypes:
      raise errors.invalid_argument(f"JSON object: does not have named input: {name}")
    shape = _dense_shape(item)
    out = values.setdefault(name, [])
    before = len(out)
    array = _fast_array(item, input_dtypes[name], shape) if fast else None
    if array is not None:
      out.extend(array.reshape(-1).tolist())
    else:
      _fill(item, 0, shape, input_dtypes[name], out)
    size = len(out) - before
    if name not in sizes:
      sizes[name] = size
      shapes[name] = shape
    elif sizes[name] != size:
      raise errors.invalid_argument(f"Expecting tensor size: {sizes[name]} but got: {size}")
    elif shapes[name] != shape:
      raise errors.invalid_argument(
          f"Expecting shape {_shape_string(shapes[name])} but got: {_shape_string(shape)}")

  for index, element in enumerate(instances):
    if objects:
      if not is_element_object(element):
        raise errors.invalid_argument(
            f"Expecting object but got list at item {index} of input list")
      for name, item in element.items():
        try:
          add_item(item, name)
        except errors.ServingError as e:
          raise errors.invalid_argument(
              f"Failed to process element: {index} key: {name} of 'instances' list. Error: "
              f"{e.to_string()}") from None
      if set(element) != set(names):
        raise errors.invalid_argument(
            f"Failed to process element: {index} of 'instances' list. JSON object: "
            f"{json_text.debug_string(element)} keys must be equal to: {','.join(names)}")
    else:
      if is_element_object(element):
        raise errors.invalid_argument(
            f"Expecting value/list but got object at item {index} of input list")
      try:
        add_item(element, names[0])
      except errors.ServingError as e:
        raise errors.invalid_argument(
            f"Failed to process element: {index} of 'instances' list. Error: "
            f"{e.to_string()}") from None
  count = len(instances)
  return {name: _to_array(vals, [count] + shapes[name], input_dtypes[name])
          for name, vals in values.items()}


def _inputs_to_arrays(inputs, input_dtypes: dict[str, int], fast: bool) -> dict[str, np.ndarray]:
  """FillTensorMapFromInputsMap(): columnar format, whole tensors by name."""
  if not isinstance(inputs, dict) or is_b64(inputs):
    if len(input_dtypes) > 1:
      raise errors.invalid_argument(
          "inputs is a plain value/list, but expecting an object as multiple input tensors "
          "required as per tensorinfo_map")
    items = {next(iter(input_dtypes)): inputs}
  else:
    items = {}
    for name in sorted(input_dtypes):
      if name not in inputs:
        raise errors.invalid_argument(f"Missing named input: {name} in 'inputs' object.")
      items[name] = inputs[name]
  arrays = {}
  for name, item in items.items():
    shape = _dense_shape(item)
    array = _fast_array(item, input_dtypes[name], shape) if fast else None
    if array is None:
      out: list = []
      _fill(item, 0, shape, input_dtypes[name], out)
      array = _to_array(out, shape, input_dtypes[name])
    arrays[name] = array
  return arrays


def signature_name(doc: dict) -> str:
  """FillSignature(): the optional "signature_name" ("" when absent)."""
  if "signature_name" not in doc:
    return ""
  name = doc["signature_name"]
  if not isinstance(name, str):
    raise errors.invalid_argument(
        f"JSON Value: {json_text.debug_string(doc)} not formatted correctly. 'signature_name' key "
        "must be a string value.")
  return name


def predict_inputs(doc: dict, input_dtypes: dict[str, int], signature: str,
                   fast: bool = False) -> tuple[dict[str, np.ndarray], Format]:
  """FillPredictRequestFromJson() after the signature lookup: named input arrays and format.

  `fast`: the document holds no JSON true/false, so dense numeric columns may be converted by
  numpy in one call (see `_fast_array`); the results and errors are the same either way.
  """
  if not input_dtypes:
    raise errors.invalid_argument(
        f"Failed to get input map for signature: {signature or 'DEFAULT'}")
  has_instances, has_inputs = "instances" in doc, "inputs" in doc
  if has_instances:
    if has_inputs:
      raise json_text.format_error(
          doc, "Not formatted correctly expecting only one of 'inputs' or "
          "'instances' keys to exist ")
    instances = doc["instances"]
    if not isinstance(instances, list):
      raise json_text.format_error(doc, "Expecting 'instances' to be an list/array")
    if not instances:
      raise json_text.format_error(doc, "No values in 'instances' array")
    return _instances_to_arrays(instances, input_dtypes, fast), Format.ROW
  if has_inputs:
    return _inputs_to_arrays(doc["inputs"], input_dtypes, fast), Format.COLUMNAR
  raise errors.invalid_argument("Missing 'inputs' or 'instances' key")
