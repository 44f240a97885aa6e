"""Status codes and TF Serving's exact error messages, and the code -> HTTP status mapping.

Clients of TF Serving match on status codes and, in practice, on message text, so every message
the server returns is built here, by one function per message, with the TF Serving (or
TensorFlow) source file it copies. Paths are relative to github.com/tensorflow/serving unless
they start with tensorflow/.

An error is a `ServingError(code, message)`; gRPC returns it as the call's status, REST as
`{"error": message}` with `http_status(code)`.
"""

from __future__ import annotations

import grpc

Code = grpc.StatusCode

# TensorFlow's error codes (tensorflow/core/protobuf/error_codes.proto) have gRPC's numbering.
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
  """A request failure with a canonical status code, as an absl::Status in TF Serving."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code
    self.message = message

  def to_string(self) -> str:
    """absl::Status::ToString(): "INVALID_ARGUMENT: msg", nested into some messages."""
    return f"{self.code.name}: {self.message}"

  def __repr__(self) -> str:
    return f"ServingError({self.code.name}, {self.message!r})"


def code_from_number(number: int) -> grpc.StatusCode:
  """The gRPC code for a TensorFlow error code number (OpError.error_code), UNKNOWN if none."""
  return _CODE_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


# model_servers/http_server.cc, ToHTTPStatusCode().
_HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,  # CLIENT_CLOSED_REQUEST
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


def http_status(code: grpc.StatusCode) -> int:
  """The HTTP status TF Serving's REST server replies with for a status code."""
  return _HTTP_STATUS.get(code, 500)


# model_servers/grpc_status_util.cc, ToGRPCStatus(): long messages are cut for gRPC.
_GRPC_MESSAGE_LIMIT = 1024


def grpc_message(message: str) -> str:
  if len(message) > _GRPC_MESSAGE_LIMIT:
    return message[:_GRPC_MESSAGE_LIMIT] + "...TRUNCATED"
  return message


def invalid_argument(message: str) -> ServingError:
  return ServingError(Code.INVALID_ARGUMENT, message)


# --- Servable lookup -----------------------------------------------------------------------------


def servable_not_found(request_debug_string: str) -> ServingError:
  """core/basic_manager.cc, ServingMap::GetUntypedServableHandle(); the request is printed by
  ServableRequest::DebugString() (core/manager.h): `Latest(m)` or `Specific(m, v)`."""
  return ServingError(Code.NOT_FOUND, f"Servable not found for request: {request_debug_string}")


def latest_request(name: str) -> str:
  return f"Latest({name})"


def specific_request(name: str, version: int) -> str:
  return f"Specific({name}, {version})"


def model_spec_has_no_name() -> ServingError:
  """model_servers/server_core.cc, ServableRequestFromModelSpec()."""
  return invalid_argument("ModelSpec has no name specified.")


def missing_model_spec() -> ServingError:
  """servables/tensorflow/predict_impl.cc, classification_service.cc,
  get_model_metadata_impl.cc, model_servers/get_model_status_impl.cc."""
  return invalid_argument("Missing ModelSpec")


def unrecognized_label(label: str) -> ServingError:
  """model_servers/server_core.cc, GetModelVersionForLabel()."""
  return invalid_argument(f"Unrecognized servable version label: {label}")


def label_to_unavailable_version(version: int, model: str) -> ServingError:
  """model_servers/server_core.cc, UpdateModelVersionLabelMap()."""
  return ServingError(
      Code.FAILED_PRECONDITION,
      f"Request to assign label to version {version} of model {model}, which is not currently "
      "available for inference")


# --- Model status and metadata -------------------------------------------------------------------


def no_versions_of_model(model: str) -> ServingError:
  """model_servers/get_model_status_impl.cc, GetModelStatusWithModelSpec()."""
  return ServingError(Code.NOT_FOUND, f"Could not find any versions of model {model}")


def version_of_model_not_found(version: int, model: str) -> ServingError:
  """model_servers/get_model_status_impl.cc, GetModelStatusWithModelSpec()."""
  return ServingError(Code.NOT_FOUND, f"Could not find version {version} of model {model}")


def no_metadata_field() -> ServingError:
  """servables/tensorflow/get_model_metadata_impl.cc, ValidateGetModelMetadataRequest()."""
  return invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")


def metadata_field_not_supported(field: str) -> ServingError:
  """servables/tensorflow/get_model_metadata_impl.cc, ValidateGetModelMetadataRequest()."""
  return invalid_argument(f"Metadata field {field} is not supported")


# --- Predict -------------------------------------------------------------------------------------


def predict_signature_not_found(name: str) -> ServingError:
  """servables/tensorflow/predict_util.cc, RunPredict()."""
  return ServingError(Code.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')


def rest_signature_not_found(name: str) -> ServingError:
  """model_servers/http_rest_api_handler.cc, HttpRestApiHandler::GetInfoMap()."""
  return invalid_argument(f'Serving signature name: "{name}" not found in signature def')


def predict_method_name(method_name: str) -> ServingError:
  """servables/tensorflow/predict_util.cc, VerifySignature()."""
  return ServingError(
      Code.INTERNAL,
      "Expected prediction signature method_name to be one of {tensorflow/serving/predict, "
      f"tensorflow/serving/classify, tensorflow/serving/regress}}. Was: {method_name}")


def input_size_mismatch(request_inputs: set[str], signature_inputs: set[str]) -> ServingError:
  """servables/tensorflow/predict_util.cc, VerifyRequestInputsSize()."""
  extra = sorted(request_inputs - signature_inputs)
  missing = sorted(signature_inputs - request_inputs)
  return invalid_argument(
      f"input size does not match signature: {len(request_inputs)}!={len(signature_inputs)} "
      f"len({{{','.join(sorted(request_inputs))}}}) != "
      f"len({{{','.join(sorted(signature_inputs))}}}). Sent extra: {{{','.join(extra)}}}. "
      f"Missing but required: {{{','.join(missing)}}}.")


def input_alias_not_found(alias: str, signature_inputs) -> ServingError:
  """servables/tensorflow/predict_util.cc, PreProcessPrediction(), TF Serving 2.5 - 2.13 (since
  2.14 the check is tensorflow/cc/saved_model/util.cc, GetInputValues(); the issue binding this
  server asks for this message, see serving/servable.py)."""
  return invalid_argument(
      f"input tensor alias not found in signature: {alias}. Inputs expected to be in the set "
      f"{{{','.join(sorted(signature_inputs))}}}.")


def output_alias_not_found(alias: str, signature_outputs) -> ServingError:
  """servables/tensorflow/predict_util.cc, PreProcessPrediction()."""
  return invalid_argument(
      f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
      f"{{{','.join(sorted(signature_outputs))}}}.")


def duplicate_output_alias(alias: str) -> ServingError:
  """servables/tensorflow/predict_util.cc, PreProcessPrediction()."""
  return invalid_argument(f"duplicate output tensor alias: {alias}")


def tensor_parsing_error(alias: str) -> ServingError:
  """tensorflow/cc/saved_model/util.cc, GetInputValues(): Tensor::FromProto() failed."""
  return invalid_argument(f"tensor parsing error: {alias}")


def wrong_input_dtype(index: int, expected: str, got: str) -> ServingError:
  """tensorflow/core/framework/function.cc, FunctionCallFrame::SetArgs(): what a session run
  fed a tensor of the wrong dtype returns."""
  return invalid_argument(f"Expects arg[{index}] to be {expected} but {got} is provided")


# --- Classify ------------------------------------------------------------------------------------


def classify_signature_not_found(name: str) -> ServingError:
  """servables/tensorflow/classifier.cc, GetClassificationSignatureDef()."""
  return invalid_argument(f"No signature was found with the name: {name}")


def classify_method_name(method_name: str) -> ServingError:
  """servables/tensorflow/classifier.cc, GetClassificationSignatureDef()."""
  return invalid_argument(
      "Expected classification signature method_name to be tensorflow/serving/classify. Was: "
      f"{method_name}")


def classify_one_input() -> ServingError:
  """servables/tensorflow/classifier.cc, PreProcessClassification()."""
  return invalid_argument("Expected one input Tensor.")


def classify_output_count(count: int) -> ServingError:
  """servables/tensorflow/classifier.cc, PreProcessClassification()."""
  return invalid_argument(f"Expected one or two output Tensors, found {count}")


def classify_no_inputs(signature_debug_string: str) -> ServingError:
  """servables/tensorflow/classifier.cc, PreProcessClassification()."""
  return invalid_argument(
      f"No classification inputs found in SignatureDef: {signature_debug_string}")


def classify_no_outputs(signature_debug_string: str) -> ServingError:
  """servables/tensorflow/classifier.cc, PreProcessClassification()."""
  return invalid_argument(
      'Expected classification signature outputs to contain at least one of "classes" or '
      f'"scores". Signature was: {signature_debug_string}')


def input_is_empty() -> ServingError:
  """servables/tensorflow/util.cc, InputToSerializedExampleTensor()."""
  return invalid_argument("Input is empty.")


def classify_shape(shape_debug_string: str) -> ServingError:
  """servables/tensorflow/classifier.cc, PostProcessClassificationResult()."""
  return invalid_argument(
      f"Expected Tensor shape: [batch_size num_classes] but got {shape_debug_string}")


def classify_classes_dtype(dtype_name: str) -> ServingError:
  return invalid_argument(f"Expected classes Tensor of DT_STRING. Got: {dtype_name}")


def classify_scores_dtype(dtype_name: str) -> ServingError:
  return invalid_argument(f"Expected scores Tensor of DT_FLOAT. Got: {dtype_name}")


def classify_batch_size(what: str, expected: int, got: int) -> ServingError:
  return invalid_argument(f"Expected {what} output batch size of {expected}. Got: {got}")


def classify_class_score_mismatch(classes: int, scores: int) -> ServingError:
  return invalid_argument(
      f"Tensors class and score should match in dim_size(1). Got {classes} vs. {scores}")


# --- REST ----------------------------------------------------------------------------------------


def malformed_request(method: str, path: str) -> ServingError:
  """model_servers/http_rest_api_handler.cc, ProcessRequest(): no API matched the URL."""
  return invalid_argument(f"Malformed request: {method} {path}")


def missing_model_name() -> ServingError:
  """model_servers/http_rest_api_handler.cc, ProcessModelStatusRequest() and
  ProcessModelMetadataRequest()."""
  return invalid_argument("Missing model name in request.")


def version_not_numeric(version: str) -> ServingError:
  """model_servers/http_rest_api_util.cc, ParseModelInfo()."""
  return invalid_argument(f"Failed to convert version: {version} to numeric.")


# The remaining REST request messages (JSON parsing and JSON <-> tensor conversion) are built in
# serving/json_tensor.py and serving/json_response.py, next to the rules they report, after
# util/json_tensor.cc.

# --- Config --------------------------------------------------------------------------------------


def duplicate_model_in_config(name: str) -> ServingError:
  """model_servers/server_core.cc, ValidateModelConfigList()."""
  return invalid_argument(f"Illegal to list model {name} multiple times in config list")


def relative_base_path(name: str, base_path: str) -> ServingError:
  """model_servers/server_core.cc, ValidateModelConfigList()."""
  return invalid_argument(
      f"Expected model {name} to have an absolute path or URI; got base_path()={base_path}")


def reload_config_type_not_supported() -> ServingError:
  """model_servers/model_service_impl.cc, HandleReloadConfigRequest()."""
  return invalid_argument(
      "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList "
      "is currently supported")


def models_did_not_become_available(failures: list[tuple[str, str]]) -> ServingError:
  """model_servers/server_core.cc, WaitUntilModelsAvailable(); `failures` holds
  (ServableId debug string, error suffix) pairs."""
  body = "".join(f"{{{sid}{suffix}}}, " for sid, suffix in failures)
  return ServingError(Code.UNKNOWN,
                      f"{len(failures)} model(s) did not become available: {{{body}}}")
