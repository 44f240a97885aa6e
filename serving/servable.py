"""One loaded SavedModel version: its signatures, Predict / Classify / metadata, and warm-up.

Loading reads the `SignatureDef`s from saved_model.pb (metadata, input dtypes and aliases, method
names: what TF Serving checks requests against) and the callable signatures from
`tf.saved_model.load(path, tags=["serve"])`. Per signature it caches everything a request needs
(sorted aliases, dtypes, the concrete function and its flat argument order), so the request path
only converts tensors and calls the function.

The checks and their order follow servables/tensorflow/predict_util.cc and classifier.cc. One
deliberate choice: an input alias the signature lacks is reported as TF Serving 2.5-2.13 did
("input tensor alias not found in signature: a. Inputs expected to be in the set {x}."), which the
issue binding this server names; TF Serving >= 2.14 phrases it through
tensorflow/cc/saved_model/util.cc GetInputValues() ("Signature input alias: x(feed name: ...) not
found in request ..."). The size check before it (VerifyRequestInputsSize) is the same in both.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable

import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf import message as proto_message
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from serving import errors
from serving import tensors

DEFAULT_SIGNATURE = "serving_default"  # kDefaultServingSignatureDefKey
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # servables/tensorflow/saved_model_warmup_util.h, kMaxNumRecords


@dataclasses.dataclass(frozen=True)
class Signature:
  """A signature's request-path facts, computed once at load."""
  name: str
  definition: meta_graph_pb2.SignatureDef
  method_name: str
  input_dtypes: dict[str, int]  # alias -> DataType enum
  input_aliases: tuple[str, ...]  # sorted
  output_aliases: frozenset[str]
  function: Callable
  flat_order: tuple[str, ...] | None  # aliases in _call_flat order, None: call with kwargs


def _op_error_message(message: str) -> str:
  """The op's own message from an eager function call's error, as a session run reports it.

  Eager calls wrap it: "Graph execution error:\\n\\nDetected at node N defined at (most recent
  call last):\\n<stack>\\n<message>\\n\\t [[{{node N}}]] [Op:__inference_...]"; TF Serving's
  session returns "<message>\\n\\t [[{{node N}}]]".
  """
  message = re.sub(r" \[Op:[^\]]*\]( name: [^\n]*)?$", "", message)
  if message.startswith("Graph execution error:"):
    lines = message.split("\n")[1:]
    while lines and not lines[0].strip():
      lines.pop(0)
    if lines and lines[0].startswith("Detected at node"):
      lines.pop(0)
      while lines and (lines[0].startswith(" ") or lines[0] == "<stack traces unavailable>"):
        lines.pop(0)
    message = "\n".join(lines)
  return message


def _run(signature: Signature, inputs: dict[str, tf.Tensor]) -> dict[str, np.ndarray]:
  """Calls the signature's concrete function; op errors keep their status code and message."""
  try:
    if signature.flat_order is not None:
      fn = signature.function
      out = fn._call_flat([inputs[a] for a in signature.flat_order], fn.captured_inputs)  # pylint: disable=protected-access
    else:
      out = signature.function(**inputs)
    return {alias: tensor.numpy() for alias, tensor in out.items()}
  except tf.errors.OpError as e:
    raise errors.ServingError(errors.code_from_number(e.error_code),
                              _op_error_message(e.message)) from None
  except (TypeError, ValueError) as e:
    raise errors.invalid_argument(str(e)) from None


def _flat_order(function, aliases: set[str]) -> tuple[str, ...] | None:
  """The flat argument order of a loaded signature function, if it can be called flat."""
  # _WrapperFunction._call_with_flat_signature() orders arguments by _arg_keywords (positional
  # arguments, if any, are a prefix of it).
  keywords = getattr(function, "_arg_keywords", None)
  if (keywords is None or not hasattr(function, "_call_flat") or set(keywords) != aliases or
      len(keywords) != len(aliases)):
    return None
  return tuple(keywords)


class Servable:
  """A loaded version. Immutable after load; safe to use from many threads."""

  def __init__(self, name: str, version: int, path: str, loaded,
               signatures: dict[str, Signature],
               signature_def_map: get_model_metadata_pb2.SignatureDefMap,
               method_name_check: bool):
    self.name = name
    self.version = version
    self.path = path
    self._loaded = loaded  # Keeps the functions' variables alive.
    self.signatures = signatures
    self.signature_def_map = signature_def_map
    self._method_name_check = method_name_check

  # --- Loading -----------------------------------------------------------------------------------

  @classmethod
  def load(cls, name: str, version: int, path: str, method_name_check: bool = True,
           warmup: bool = True) -> "Servable":
    """Loads, validates and warms up a version; raises ServingError if any step fails."""
    pb_path = os.path.join(path, "saved_model.pb")
    if not tf.io.gfile.exists(pb_path):
      raise errors.ServingError(errors.Code.NOT_FOUND,
                                f"SavedModel not found in export directory: {path}")
    try:
      saved_model = saved_model_pb2.SavedModel.FromString(tf.io.gfile.GFile(pb_path, "rb").read())
    except proto_message.DecodeError:
      raise errors.ServingError(errors.Code.DATA_LOSS,
                                f"Can't parse {pb_path} as binary proto") from None
    meta_graph = next((m for m in saved_model.meta_graphs
                       if "serve" in m.meta_info_def.tags), None)
    if meta_graph is None:
      raise errors.ServingError(
          errors.Code.NOT_FOUND,
          "Could not find meta graph def matching supplied tags: { serve }. To inspect available "
          "tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`")
    try:
      loaded = tf.saved_model.load(path, tags=["serve"])
    except tf.errors.OpError as e:
      raise errors.ServingError(errors.code_from_number(e.error_code), e.message) from None
    except Exception as e:  # pylint: disable=broad-except
      # A SavedModel TensorFlow cannot restore (bad variables, unknown ops, ...).
      raise errors.ServingError(errors.Code.INTERNAL,
                                f"Failed to load SavedModel at {path}: {e}") from None
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    for key, definition in meta_graph.signature_def.items():
      signature_def_map.signature_def[key].CopyFrom(definition)
    signatures = {}
    for key, function in loaded.signatures.items():
      definition = meta_graph.signature_def.get(key)
      if definition is None:
        raise errors.ServingError(
            errors.Code.INTERNAL,
            f"Signature {key} of the loaded SavedModel at {path} has no SignatureDef in "
            f"saved_model.pb (which has {sorted(meta_graph.signature_def)})")
      input_dtypes = {alias: info.dtype for alias, info in definition.inputs.items()}
      spec_aliases = set(function.structured_input_signature[1])
      if spec_aliases != set(input_dtypes):
        raise errors.ServingError(
            errors.Code.INTERNAL,
            f"Signature {key} at {path}: the function's inputs {sorted(spec_aliases)} differ "
            f"from the SignatureDef's {sorted(input_dtypes)}")
      signatures[key] = Signature(
          name=key, definition=definition, method_name=definition.method_name,
          input_dtypes=input_dtypes, input_aliases=tuple(sorted(input_dtypes)),
          output_aliases=frozenset(definition.outputs), function=function,
          flat_order=_flat_order(function, set(input_dtypes)))
    servable = cls(name, version, path, loaded, signatures, signature_def_map, method_name_check)
    if warmup:
      servable.warm_up()
    return servable

  def warm_up(self) -> int:
    """Replays assets.extra/tf_serving_warmup_requests like saved_model_warmup_util.cc; any
    failing record fails the load. Returns the number of records replayed."""
    path = os.path.join(self.path, WARMUP_FILE)
    if not tf.io.gfile.exists(path):
      logging.info("No warmup data file found at %s", path)
      return 0
    count = 0
    try:
      for record in tf.data.TFRecordDataset(path):
        data = record.numpy()
        log = prediction_log_pb2.PredictionLog()
        try:
          log.ParseFromString(data)
        except proto_message.DecodeError:
          raise errors.invalid_argument(
              f"Failed to parse warmup record: {data!r} from {path}") from None
        self._run_warmup_record(log)
        count += 1
        if count > MAX_WARMUP_RECORDS:
          raise errors.invalid_argument(
              f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}")
    except tf.errors.DataLossError as e:
      raise errors.ServingError(
          errors.Code.DATA_LOSS,
          f"{e.message}. Please verify your warmup data is in TFRecord format.") from None
    except tf.errors.OpError as e:
      raise errors.ServingError(errors.code_from_number(e.error_code), e.message) from None
    logging.info("Finished reading warmup data for model at %s. Number of warmup records read: "
                 "%d.", path, count)
    return count

  def _run_warmup_record(self, log: prediction_log_pb2.PredictionLog) -> None:
    """RunWarmupRequest() (servables/tensorflow/saved_model_warmup.cc)."""
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
      self.predict(log.predict_log.request)
    elif kind == "classify_log":
      self.classify(log.classify_log.request)
    elif kind in ("regress_log", "multi_inference_log", "session_run_log",
                  "predict_streamed_log"):
      number = prediction_log_pb2.PredictionLog.DESCRIPTOR.fields_by_name[kind].number
      raise errors.ServingError(errors.Code.UNIMPLEMENTED,
                                f"Unsupported log_type for warmup: {number}")

  # --- Predict -----------------------------------------------------------------------------------

  def predict_signature(self, signature_name: str) -> Signature:
    """RunPredict()'s lookup: FAILED_PRECONDITION if absent, the method check if enabled."""
    key = signature_name or DEFAULT_SIGNATURE
    signature = self.signatures.get(key)
    if signature is None:
      raise errors.predict_signature_not_found(key)
    if self._method_name_check and signature.method_name not in (
        PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
      raise errors.predict_method_name(signature.method_name)
    return signature

  def rest_input_dtypes(self, signature_name: str) -> dict[str, int]:
    """HttpRestApiHandler::GetInfoMap(): the inputs a REST request is converted against."""
    key = signature_name or DEFAULT_SIGNATURE
    signature = self.signatures.get(key)
    if signature is None:
      raise errors.rest_signature_not_found(key)
    return signature.input_dtypes

  def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    """The gRPC Predict on this version (RunPredict with AsProtoField outputs)."""
    signature = self.predict_signature(request.model_spec.signature_name)
    request_inputs = request.inputs
    names = set(request_inputs.keys())
    if names != set(signature.input_aliases):
      if len(names) != len(signature.input_aliases):
        raise errors.input_size_mismatch(names, set(signature.input_aliases))
      for alias in sorted(names):
        if alias not in signature.input_dtypes:
          raise errors.input_alias_not_found(alias, signature.input_aliases)
    arrays = {}
    for alias in signature.input_aliases:
      proto = request_inputs[alias]
      array = tensors.to_ndarray(proto)
      if array is None:
        raise errors.tensor_parsing_error(alias)
      if proto.dtype != signature.input_dtypes[alias]:
        raise errors.wrong_input_dtype(signature.input_aliases.index(alias),
                                       tensors.dtype_string(signature.input_dtypes[alias]),
                                       tensors.dtype_string(proto.dtype))
      arrays[alias] = array
    aliases = self._output_filter(signature, request.output_filter)
    outputs = self.run_arrays(signature, arrays)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.signature_name = signature.name
    response.model_spec.version.value = self.version
    out = response.outputs
    for alias in aliases or sorted(outputs):
      array = outputs[alias]
      tensors.from_ndarray(array, tensors.enum_of_numpy(array.dtype)
                           if array.dtype != object else tensors.enum_of(tf.string), out[alias])
    return response

  @staticmethod
  def _output_filter(signature: Signature, output_filter) -> list[str]:
    seen = []
    for alias in output_filter:
      if alias not in signature.output_aliases:
        raise errors.output_alias_not_found(alias, signature.output_aliases)
      if alias in seen:
        raise errors.duplicate_output_alias(alias)
      seen.append(alias)
    return seen

  def run_arrays(self, signature: Signature,
                 arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs a signature on numpy inputs already checked against it."""
    inputs = {}
    for alias, array in arrays.items():
      if array.dtype == object:
        inputs[alias] = tf.constant(array, dtype=tf.string)
      else:
        inputs[alias] = tf.constant(array)
    return _run(signature, inputs)

  # --- Classify ----------------------------------------------------------------------------------

  def classification_signature(self, signature_name: str) -> Signature:
    """GetClassificationSignatureDef() + PreProcessClassification()."""
    key = signature_name or DEFAULT_SIGNATURE
    signature = self.signatures.get(key)
    if signature is None:
      raise errors.classify_signature_not_found(key)
    if self._method_name_check and signature.method_name != CLASSIFY_METHOD:
      raise errors.classify_method_name(signature.method_name)
    definition = signature.definition
    if len(definition.inputs) != 1:
      raise errors.classify_one_input()
    if len(definition.outputs) not in (1, 2):
      raise errors.classify_output_count(len(definition.outputs))
    if "inputs" not in definition.inputs:
      raise errors.classify_no_inputs(text_format.MessageToString(definition))
    if "classes" not in definition.outputs and "scores" not in definition.outputs:
      raise errors.classify_no_outputs(text_format.MessageToString(definition))
    return signature

  def classify(self, request: classification_pb2.ClassificationRequest
               ) -> classification_pb2.ClassificationResponse:
    """RunClassify(): serialized tf.Examples in, [batch, classes] labels and scores out."""
    signature = self.classification_signature(request.model_spec.signature_name)
    serialized = _serialized_examples(request.input)
    if not serialized:
      raise errors.input_is_empty()
    outputs = _run(signature, {"inputs": tf.constant(serialized, dtype=tf.string)})
    response = classification_pb2.ClassificationResponse()
    spec = response.model_spec
    spec.name = request.model_spec.name
    spec.signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    spec.version.value = self.version
    _fill_classification_result(outputs.get("classes"), outputs.get("scores"), len(serialized),
                                response.result)
    return response

  # --- Metadata ----------------------------------------------------------------------------------

  def metadata(self, model_name: str) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """SavedModelGetSignatureDef(): every SignatureDef of the serving meta graph."""
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = model_name
    response.model_spec.version.value = self.version
    response.metadata["signature_def"].Pack(self.signature_def_map)
    return response


def _serialized_examples(request_input) -> list[bytes]:
  """InputToSerializedExampleTensor(): context bytes are prepended to each example's (protobuf
  merge semantics: the example's features win)."""
  kind = request_input.WhichOneof("kind")
  if kind == "example_list":
    return [e.SerializeToString() for e in request_input.example_list.examples]
  if kind == "example_list_with_context":
    with_context = request_input.example_list_with_context
    context = with_context.context.SerializeToString()
    return [context + e.SerializeToString() for e in with_context.examples]
  return []


def _fill_classification_result(classes: np.ndarray | None, scores: np.ndarray | None,
                                num_examples: int, result) -> None:
  """PostProcessClassificationResult()."""
  for array, what, dtype_ok, dtype_error in (
      (classes, "classes", lambda a: a.dtype == object, errors.classify_classes_dtype),
      (scores, "scores", lambda a: a.dtype == np.float32, errors.classify_scores_dtype)):
    if array is None:
      continue
    if array.ndim != 2:
      raise errors.classify_shape(tensors.shape_debug_string(array.shape))
    if not dtype_ok(array):
      raise dtype_error(tensors.dtype_name(tensors.enum_of_numpy(array.dtype)))
    if array.shape[0] != num_examples:
      raise errors.classify_batch_size(what, num_examples, array.shape[0])
  if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
    raise errors.classify_class_score_mismatch(classes.shape[1], scores.shape[1])
  num_classes = (classes if classes is not None else scores).shape[1]
  labels = classes.tolist() if classes is not None else None
  values = scores.tolist() if scores is not None else None
  for i in range(num_examples):
    entry = result.classifications.add()
    for c in range(num_classes):
      cls = entry.classes.add()
      if labels is not None:
        cls.label = labels[i][c].decode("utf-8", "replace")
      if values is not None:
        cls.score = values[i][c]
