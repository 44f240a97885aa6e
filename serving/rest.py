"""REST: TF Serving's `/v1/models/...` HTTP API on aiohttp.

`RestHandler.process()` is model_servers/http_rest_api_handler.cc's ProcessRequest(): it maps a
method, raw path and body to (HTTP status, JSON body), with the URL grammar of
http_rest_api_util.cc and the JSON formats of serving/json_tensor.py (requests) and
serving/json_response.py (responses). `RestServer` runs it behind aiohttp (no hand-written HTTP;
aiohttp sets TCP_NODELAY on every connection, so small responses are not held back by Nagle's
algorithm) on its own event-loop thread, and runs the handler on a thread pool so a slow model
does not block other connections.

Every error body is {"error": message} with TF Serving's code -> HTTP mapping (errors.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
import urllib.parse

from absl import logging
from aiohttp import web
from google.protobuf import json_format
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import model_pb2

from serving import errors
from serving import grpc_service
from serving import json_example
from serving import json_response
from serving import json_tensor
from serving import manager as manager_lib

# model_servers/http_rest_api_util.cc (kPredictionApiGegex, kModelStatusApiRegex) and
# http_rest_api_util.h (kHTTPRestApiHandlerPathRegex).
_PREDICTION_API = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE)
_MODEL_STATUS_API = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE)
_HANDLER_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_INT64_MAX = 2**63 - 1


class RestHandler:
  """HttpRestApiHandler: one REST request -> (HTTP status, JSON text)."""

  def __init__(self, manager: manager_lib.Manager):
    self._manager = manager

  def process(self, method: str, path: str, body: bytes) -> tuple[int, str]:
    try:
      return 200, self._dispatch(method, path, body)
    except errors.ServingError as e:
      return errors.http_status(e.code), json_response.error_json(e.message)
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("Internal error processing %s %s", method, path)
      return 500, json_response.error_json(f"{type(e).__name__}: {e}")

  def _dispatch(self, method: str, path: str, body: bytes) -> str:
    malformed = errors.malformed_request(method, path)
    if method == "POST":
      match = _PREDICTION_API.fullmatch(path)
    elif method == "GET":
      match = _MODEL_STATUS_API.fullmatch(path)
    else:
      raise malformed
    if match is None:
      raise malformed
    name, version_text, label, verb = match.groups()
    spec = self._model_spec(name or "", version_text, label)
    if method == "POST":
      if verb == "predict":
        return self._predict(spec, body)
      if verb == "classify":
        return self._classify(spec, body)
      if verb == "regress":
        raise errors.ServingError(errors.Code.UNIMPLEMENTED,
                                  "Regress is not supported by this model server")
      raise malformed  # e.g. ":PREDICT": the regex is case-insensitive, the dispatch is not.
    if not spec.name:
      raise errors.missing_model_name()
    if verb is not None and verb == "metadata":
      return self._metadata(spec)
    if verb is not None:
      raise malformed
    return json_format.MessageToJson(self._manager.model_status(spec), indent=1,
                                     always_print_fields_with_no_presence=True)

  @staticmethod
  def _model_spec(name: str, version_text: str | None, label: str | None) -> model_pb2.ModelSpec:
    """ParseModelInfo() + FillModelSpecWithNameVersionAndLabel()."""
    spec = model_pb2.ModelSpec()
    spec.name = urllib.parse.unquote_to_bytes(name).decode("utf-8", "surrogateescape")
    if version_text:
      version = int(version_text)
      if version > _INT64_MAX:
        raise errors.version_not_numeric(version_text)
      spec.version.value = version
    if label:
      spec.version_label = urllib.parse.unquote_to_bytes(label).decode("utf-8", "surrogateescape")
    return spec

  def _predict(self, spec: model_pb2.ModelSpec, body: bytes) -> str:
    """ProcessPredictRequest(): JSON -> input arrays (typed by the signature) -> JSON."""
    doc = json_tensor.parse_json(body)
    signature_name = json_tensor.signature_name(doc)
    with self._manager.servable(spec) as servable:
      input_dtypes = servable.rest_input_dtypes(signature_name)
      # No JSON true/false anywhere: numpy may convert dense numeric inputs in one call.
      fast = b"true" not in body and b"false" not in body
      arrays, fmt = json_tensor.predict_inputs(doc, input_dtypes, signature_name, fast=fast)
      signature = servable.predict_signature(signature_name)
      outputs = servable.run_arrays(signature, arrays)
    return json_response.outputs_to_json(outputs, fmt)

  def _classify(self, spec: model_pb2.ModelSpec, body: bytes) -> str:
    """ProcessClassifyRequest()."""
    request = classification_pb2.ClassificationRequest()
    request.model_spec.CopyFrom(spec)
    doc = json_tensor.parse_json(body)
    request.model_spec.signature_name = json_tensor.signature_name(doc)
    json_example.classify_input(doc, request.input)
    with self._manager.servable(request.model_spec) as servable:
      response = servable.classify(request)
    return json_response.classification_to_json(response.result)

  def _metadata(self, spec: model_pb2.ModelSpec) -> str:
    """ProcessModelMetadataRequest() + ToJsonString(GetModelMetadataResponse)."""
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.CopyFrom(spec)
    request.metadata_field.append("signature_def")
    response = grpc_service.model_metadata(self._manager, request)
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_defs)
    model_spec = json_format.MessageToJson(response.model_spec, preserving_proto_field_name=True,
                                           always_print_fields_with_no_presence=True)
    defs = json_format.MessageToJson(signature_defs, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
    return f'{{\n"model_spec":{model_spec},\n"metadata": {{"signature_def": {defs}}}\n}}\n'


class RestServer:
  """aiohttp serving RestHandler on 127.0.0.1/0.0.0.0:port from a dedicated event-loop thread."""

  def __init__(self, manager: manager_lib.Manager, port: int, num_threads: int,
               timeout_in_ms: int, host: str = "0.0.0.0"):
    self._handler = RestHandler(manager)
    self._host = host
    self._requested_port = port
    self._timeout = timeout_in_ms / 1000.0 if timeout_in_ms > 0 else None
    self._executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=num_threads, thread_name_prefix="serving-rest")
    self._loop = asyncio.new_event_loop()
    self._thread = threading.Thread(target=self._loop.run_forever, name="serving-rest-loop",
                                    daemon=True)
    self._runner: web.AppRunner | None = None
    self.port = 0

  async def _handle(self, request: web.Request) -> web.StreamResponse:
    path = request.rel_url.raw_path
    if not _HANDLER_PATH.fullmatch(path):
      return web.Response(status=404)
    body = await request.read()
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(self._executor, self._handler.process, request.method, path,
                                  body)
    try:
      status, text = await asyncio.wait_for(future, self._timeout)
    except asyncio.TimeoutError:
      status, text = 504, json_response.error_json("Timed out waiting for notification")
    return web.Response(status=status, body=text.encode("utf-8", "surrogateescape"),
                        content_type="application/json")

  async def _options(self, request: web.Request) -> web.StreamResponse:
    """CORS preflight (http_server.cc): OK with an http(s) Origin, else FAILED_PRECONDITION."""
    if re.search(r"https?://", request.headers.get("Origin", "")):
      return web.Response(status=200, content_type="application/json")
    return web.Response(
        status=400, content_type="application/json",
        text=json_response.error_json("Origin header is missing in CORS preflight"))

  async def _start(self) -> int:
    app = web.Application(client_max_size=1 << 31)
    app.router.add_route("OPTIONS", "/{tail:.*}", self._options)
    app.router.add_route("*", "/{tail:.*}", self._handle)
    self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await self._runner.setup()
    site = web.TCPSite(self._runner, self._host, self._requested_port, reuse_address=True)
    await site.start()
    return site._server.sockets[0].getsockname()[1]  # pylint: disable=protected-access

  def start(self) -> int:
    """Binds and starts serving; returns the bound port."""
    self._thread.start()
    self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()
    return self.port

  def connections(self) -> list:
    """The open connections' transports (for checking socket options)."""
    server = self._runner.server if self._runner is not None else None
    return [c.transport for c in getattr(server, "connections", []) if c.transport is not None]

  def stop(self) -> None:
    if self._runner is not None:
      asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
      self._runner = None
    if self._thread.is_alive():
      self._loop.call_soon_threadsafe(self._loop.stop)
      self._thread.join()
    self._loop.close()
    self._executor.shutdown(wait=True)
