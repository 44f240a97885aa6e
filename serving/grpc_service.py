"""gRPC: `tensorflow.serving.PredictionService` and `ModelService` on grpcio.

Servicers over the generated `tensorflow_serving.apis` stubs, mirroring
model_servers/prediction_service_impl.cc and model_service_impl.cc: each call resolves a handle on
one version through the Manager, runs on it, and turns a ServingError into the call's status
(code, and the message cut at 1024 characters as grpc_status_util.cc does).
"""

from __future__ import annotations

import concurrent.futures
from typing import Callable

import grpc
from absl import logging
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import errors
from serving import manager as manager_lib

_SIGNATURE_DEF = "signature_def"  # GetModelMetadataImpl::kSignatureDef


def _abort(context: grpc.ServicerContext, error: errors.ServingError):
  context.abort(error.code, errors.grpc_message(error.message))


def _guarded(method: Callable) -> Callable:
  """Runs a servicer method, mapping ServingError (and anything unexpected) to a status."""
  def wrapper(self, request, context):
    try:
      return method(self, request, context)
    except errors.ServingError as e:
      _abort(context, e)
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("Internal error in %s", method.__name__)
      _abort(context, errors.ServingError(errors.Code.INTERNAL, f"{type(e).__name__}: {e}"))
  wrapper.__name__ = method.__name__
  return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
  """Predict, Classify and GetModelMetadata (Regress and MultiInference stay UNIMPLEMENTED)."""

  def __init__(self, manager: manager_lib.Manager):
    self._manager = manager

  @_guarded
  def Predict(self, request, context):  # pylint: disable=invalid-name
    if not request.HasField("model_spec"):
      raise errors.missing_model_spec()
    with self._manager.servable(request.model_spec) as servable:
      return servable.predict(request)

  @_guarded
  def Classify(self, request, context):  # pylint: disable=invalid-name
    if not request.HasField("model_spec"):
      raise errors.missing_model_spec()
    with self._manager.servable(request.model_spec) as servable:
      return servable.classify(request)

  @_guarded
  def GetModelMetadata(self, request, context):  # pylint: disable=invalid-name
    return model_metadata(self._manager, request)


def model_metadata(manager: manager_lib.Manager,
                   request: get_model_metadata_pb2.GetModelMetadataRequest
                   ) -> get_model_metadata_pb2.GetModelMetadataResponse:
  """GetModelMetadataImpl::GetModelMetadata() (shared with REST)."""
  if not request.HasField("model_spec"):
    raise errors.missing_model_spec()
  if not request.metadata_field:
    raise errors.no_metadata_field()
  for field in request.metadata_field:
    if field != _SIGNATURE_DEF:
      raise errors.metadata_field_not_supported(field)
  with manager.servable(request.model_spec) as servable:
    return servable.metadata(request.model_spec.name)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
  """GetModelStatus and HandleReloadConfigRequest."""

  def __init__(self, manager: manager_lib.Manager):
    self._manager = manager

  @_guarded
  def GetModelStatus(self, request, context):  # pylint: disable=invalid-name
    if not request.HasField("model_spec"):
      raise errors.missing_model_spec()
    return self._manager.model_status(request.model_spec)

  def HandleReloadConfigRequest(self, request, context):  # pylint: disable=invalid-name
    """Applies the config; the response's status and the call's status both carry the result."""
    response = model_management_pb2.ReloadConfigResponse()
    for index, config in enumerate(request.config.model_config_list.config):
      logging.info("Config entry index: %d path: %s name: %s platform: %s", index,
                   config.base_path, config.name, config.model_platform)
    try:
      if request.config.WhichOneof("config") != "model_config_list":
        raise errors.reload_config_type_not_supported()
      self._manager.reload_config(request.config)
    except errors.ServingError as e:
      logging.error("ReloadConfig failed: %s", e.message)
      response.status.error_code = e.code.value[0]
      response.status.error_message = e.message
      _abort(context, e)
    return response


def create_server(manager: manager_lib.Manager, port: int, max_workers: int,
                  host: str = "0.0.0.0") -> tuple[grpc.Server, int]:
  """A ready-to-start grpc.Server with both services; returns it and its port."""
  server = grpc.server(
      concurrent.futures.ThreadPoolExecutor(max_workers=max_workers,
                                            thread_name_prefix="serving-grpc"),
      options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1),
               ("grpc.so_reuseport", 0)])
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionService(manager), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
  bound = server.add_insecure_port(f"{host}:{port}")
  if bound == 0:
    raise OSError(f"Could not bind the gRPC server to {host}:{port}")
  return server, bound
