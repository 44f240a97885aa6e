"""REST Classify requests: JSON "examples" -> tf.Examples (util/json_tensor.cc's rules)."""

from __future__ import annotations

from tensorflow.core.example import example_pb2
from tensorflow.core.example import feature_pb2

from serving import errors
from serving import json_tensor
from serving import json_text

# --- JSON -> tf.Example (classify) ---------------------------------------------------------------

def _kind_error(name: str, feature: feature_pb2.Feature) -> errors.ServingError:
  kind = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(
      feature.WhichOneof("kind"), "UNKNOWN")
  return errors.invalid_argument(
      f"Unexpected element type in feature: {name} expecting type: {kind}")


def _add_to_feature(value, name: str, feature: feature_pb2.Feature) -> None:
  """AddValueToFeature()."""
  kind = feature.WhichOneof("kind")
  if value is None or isinstance(value, list) or (
      isinstance(value, dict) and not json_tensor.is_b64(value)):
    raise errors.invalid_argument(
        f"Feature: {name} has element with unexpected JSON type: {json_text.type_string(value)}")
  if isinstance(value, bool):
    if kind not in (None, "int64_list"):
      raise _kind_error(name, feature)
    feature.int64_list.value.append(1 if value else 0)
  elif isinstance(value, dict):
    if kind not in (None, "bytes_list"):
      raise _kind_error(name, feature)
    feature.bytes_list.value.append(json_tensor.decode_b64(value))
  elif isinstance(value, str):
    if kind not in (None, "bytes_list"):
      raise _kind_error(name, feature)
    feature.bytes_list.value.append(value.encode("utf-8", "surrogateescape"))
  elif isinstance(value, float):
    if kind not in (None, "float_list"):
      raise _kind_error(name, feature)
    feature.float_list.value.append(value)
  else:
    if kind not in (None, "int64_list"):
      raise _kind_error(name, feature)
    if value > json_text.INT64_MAX:
      raise errors.invalid_argument(
          f"Feature: {name} has uint64_t element. Only int64_t is supported.")
    feature.int64_list.value.append(value)


def _example(value, example: example_pb2.Example) -> None:
  """MakeExampleFromJsonObject()."""
  if not isinstance(value, dict):
    raise errors.invalid_argument(
        f"Example must be JSON object but got JSON {json_text.type_string(value)}")
  for name, content in value.items():
    feature = feature_pb2.Feature()
    for item in (content if isinstance(content, list) else [content]):
      _add_to_feature(item, name, feature)
    example.features.feature[name].CopyFrom(feature)


def classify_input(doc: dict, request_input) -> None:
  """FillClassifyRegressRequestFromJson() after FillSignature(): fills a tensorflow.serving.Input
  from "context" and "examples"."""
  has_context = "context" in doc
  if has_context:
    _example(doc["context"], request_input.example_list_with_context.context)
  if "examples" not in doc:
    raise json_text.format_error(
        doc, "When method is classify, key 'examples' is expected and was not "
        "found")
  examples = doc["examples"]
  if not isinstance(examples, list):
    raise json_text.format_error(doc, "Expecting 'examples' value to be an list/array")
  if not examples:
    raise json_text.format_error(doc, "'examples' value is an empty array")
  target = (request_input.example_list_with_context.examples if has_context else
            request_input.example_list.examples)
  for value in examples:
    _example(value, target.add())


