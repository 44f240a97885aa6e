"""TensorProto <-> numpy, with TensorFlow's Tensor::FromProto / AsProtoField rules.

The gRPC API carries tensors as `tensorflow.TensorProto`. TF Serving parses them with
Tensor::FromProto (tensorflow/core/framework/tensor.cc) and answers with Tensor::AsProtoField
(the typed `*_val` fields, not `tensor_content`). These converters do the same with numpy, without
`tf.make_ndarray` / `tf.make_tensor_proto`, whose generality costs tens of microseconds per call
on the request path.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow.core.framework import types_pb2

_DT = types_pb2

# tensorflow/core/framework/types.cc, DataTypeString(): the names TF's error messages use.
_DTYPE_STRING = {
    _DT.DT_FLOAT: "float",
    _DT.DT_DOUBLE: "double",
    _DT.DT_INT32: "int32",
    _DT.DT_UINT32: "uint32",
    _DT.DT_UINT8: "uint8",
    _DT.DT_UINT16: "uint16",
    _DT.DT_INT16: "int16",
    _DT.DT_INT8: "int8",
    _DT.DT_STRING: "string",
    _DT.DT_COMPLEX64: "complex64",
    _DT.DT_COMPLEX128: "complex128",
    _DT.DT_INT64: "int64",
    _DT.DT_UINT64: "uint64",
    _DT.DT_BOOL: "bool",
    _DT.DT_BFLOAT16: "bfloat16",
    _DT.DT_HALF: "half",
    _DT.DT_RESOURCE: "resource",
    _DT.DT_VARIANT: "variant",
    _DT.DT_INVALID: "INVALID",
}

# DataType -> (numpy dtype, TensorProto value field) for the types a request may carry.
_NUMPY = {
    _DT.DT_FLOAT: (np.dtype(np.float32), "float_val"),
    _DT.DT_DOUBLE: (np.dtype(np.float64), "double_val"),
    _DT.DT_INT32: (np.dtype(np.int32), "int_val"),
    _DT.DT_INT16: (np.dtype(np.int16), "int_val"),
    _DT.DT_INT8: (np.dtype(np.int8), "int_val"),
    _DT.DT_UINT8: (np.dtype(np.uint8), "int_val"),
    _DT.DT_UINT16: (np.dtype(np.uint16), "int_val"),
    _DT.DT_INT64: (np.dtype(np.int64), "int64_val"),
    _DT.DT_UINT32: (np.dtype(np.uint32), "uint32_val"),
    _DT.DT_UINT64: (np.dtype(np.uint64), "uint64_val"),
    _DT.DT_BOOL: (np.dtype(np.bool_), "bool_val"),
    _DT.DT_HALF: (np.dtype(np.float16), "half_val"),
    _DT.DT_BFLOAT16: (np.dtype(tf.bfloat16.as_numpy_dtype), "half_val"),
    _DT.DT_COMPLEX64: (np.dtype(np.complex64), "scomplex_val"),
    _DT.DT_COMPLEX128: (np.dtype(np.complex128), "dcomplex_val"),
    _DT.DT_STRING: (np.dtype(object), "string_val"),
}

_ENUM_BY_TF_DTYPE = {tf.as_dtype(enum): enum for enum in _NUMPY}


def dtype_string(enum: int) -> str:
  """DataTypeString(): "float", "int32", "string", ... as TF's messages print dtypes."""
  return _DTYPE_STRING.get(enum, types_pb2.DataType.Name(enum).lower()[3:]
                           if enum in types_pb2.DataType.values() else f"unknown dtype enum ({enum})")


def dtype_name(enum: int) -> str:
  """DataType_Name(): "DT_FLOAT", as some messages print dtypes."""
  try:
    return types_pb2.DataType.Name(enum)
  except ValueError:
    return str(enum)


def enum_of(dtype: tf.DType) -> int:
  return _ENUM_BY_TF_DTYPE.get(dtype, dtype.as_datatype_enum)


_ENUM_BY_NUMPY = {np_dtype: enum for enum, (np_dtype, _) in _NUMPY.items()
                  if enum not in (_DT.DT_BFLOAT16,)}


def enum_of_numpy(np_dtype: np.dtype) -> int:
  """The DataType of a numpy dtype (object arrays are DT_STRING), DT_INVALID if none."""
  return _ENUM_BY_NUMPY.get(np.dtype(np_dtype), _DT.DT_INVALID)


def numpy_dtype(enum: int) -> np.dtype:
  return _NUMPY[enum][0]


def shape_debug_string(shape) -> str:
  """TensorShape::DebugString(): "[2,3]"."""
  return "[" + ",".join(str(d) for d in shape) + "]"


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray | None:
  """Tensor::FromProto(): the numpy array, or None where FromProto fails ("tensor parsing error").

  A short value list fills the rest of the tensor with its last value; no values means zeros;
  more values than elements, an unknown dimension or `tensor_content` of the wrong size fail.
  DT_STRING arrays are object arrays of bytes.
  """
  entry = _NUMPY.get(proto.dtype)
  if entry is None:
    return None
  np_dtype, field = entry
  shape_proto = proto.tensor_shape
  if shape_proto.unknown_rank:
    return None
  shape = []
  count = 1
  for dim in shape_proto.dim:
    if dim.size < 0:
      return None
    shape.append(dim.size)
    count *= dim.size
  if proto.tensor_content:
    if proto.dtype == _DT.DT_STRING:
      return None
    if len(proto.tensor_content) != count * np_dtype.itemsize:
      return None
    return np.frombuffer(proto.tensor_content, dtype=np_dtype).reshape(shape)
  values = getattr(proto, field)
  n = len(values)
  if proto.dtype in (_DT.DT_COMPLEX64, _DT.DT_COMPLEX128):
    if n % 2:
      return None
    flat = np.array(values, dtype=np.float64).reshape(-1, 2)
    flat = (flat[:, 0] + 1j * flat[:, 1]).astype(np_dtype)
    n = len(flat)
  elif proto.dtype == _DT.DT_STRING:
    flat = np.empty(n, dtype=object)
    flat[:] = list(values)
  elif field == "half_val":
    flat = np.array(values, dtype=np.uint16).view(np_dtype)
  else:
    flat = np.array(values, dtype=np_dtype)
  if n == count:
    return flat.reshape(shape)
  if n > count:
    return None
  if n == 0:
    if proto.dtype == _DT.DT_STRING:
      out = np.empty(count, dtype=object)
      out[:] = b""
      return out.reshape(shape)
    return np.zeros(shape, dtype=np_dtype)
  out = np.empty(count, dtype=np_dtype)
  out[:n] = flat
  out[n:] = flat[-1]
  return out.reshape(shape)


def from_ndarray(array: np.ndarray, enum: int,
                 proto: tensor_pb2.TensorProto | None = None) -> tensor_pb2.TensorProto:
  """Tensor::AsProtoField(): dtype, shape and the typed value field (what TF Serving returns)."""
  if proto is None:
    proto = tensor_pb2.TensorProto()
  proto.dtype = enum
  dims = proto.tensor_shape.dim
  for size in array.shape:
    dims.add().size = size
  entry = _NUMPY.get(enum)
  if entry is None:
    raise ValueError(f"Cannot serialize a tensor of dtype {dtype_string(enum)}; expected one of "
                     f"{sorted(dtype_string(e) for e in _NUMPY)}")
  field = entry[1]
  flat = array.reshape(-1)
  if enum == _DT.DT_STRING:
    proto.string_val.extend(flat.tolist())
  elif field == "half_val":
    proto.half_val.extend(flat.view(np.uint16).tolist())
  elif enum in (_DT.DT_COMPLEX64, _DT.DT_COMPLEX128):
    pairs = np.stack([flat.real, flat.imag], axis=-1).reshape(-1)
    getattr(proto, field).extend(pairs.tolist())
  else:
    getattr(proto, field).extend(flat.tolist())
  return proto


def tensor_shape_proto(shape) -> tensor_shape_pb2.TensorShapeProto:
  out = tensor_shape_pb2.TensorShapeProto()
  for size in shape:
    out.dim.add().size = size
  return out
