"""The model server: Options (TF Serving's flags) and a Server object that owns everything.

`Server(options).start()` does what model_servers/server.cc BuildAndStart() does: builds the
ModelServerConfig (one model from --model_name/--model_base_path, or --model_config_file),
loads it and waits for the models, then starts gRPC (--port) and REST (--rest_api_port) and the
polling threads. `stop()` shuts them down and unloads the models. A Server holds all its state;
several can run in one process (tests do), except that TensorFlow's thread-pool sizes are
process-wide and only take effect before TensorFlow first runs an op.

Ports follow TF Serving: 0 disables the API (--port=0: no gRPC, --rest_api_port=0: no REST).
As a superset for tests, -1 binds a free ephemeral port; `grpc_port` / `rest_port` report it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import threading

import tensorflow as tf
from absl import logging
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import errors
from serving import grpc_service
from serving import manager as manager_lib
from serving import rest
from serving import servable as servable_lib


@dataclasses.dataclass
class Options:
  """Server options; field names and defaults are TF Serving's flags (model_servers/main.cc)."""
  port: int = 8500
  rest_api_port: int = 0
  model_name: str = "default"
  model_base_path: str = ""
  model_config_file: str = ""
  model_config_file_poll_wait_seconds: float = 0
  # TF Serving takes whole seconds; a float is accepted (a superset) so tests can poll fast.
  file_system_poll_wait_seconds: float = 1
  rest_api_timeout_in_ms: int = 30000
  rest_api_num_threads: int = 0  # 0: 4 x the CPU count, as TF Serving.
  grpc_max_threads: int = 0  # 0: 4 x the CPU count.
  tensorflow_intra_op_parallelism: int = 0
  tensorflow_inter_op_parallelism: int = 0
  enable_model_warmup: bool = True
  # TF Serving defaults this to false; this server checks method names by default, so Classify
  # only runs signatures exported as classify signatures (deviations: serving/__init__.py).
  enable_signature_method_name_check: bool = True
  allow_version_labels_for_unavailable_models: bool = False
  # Not a TF Serving flag (it binds all interfaces); tests bind 127.0.0.1.
  host: str = "0.0.0.0"


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
  """BuildSingleModelConfig(): one model, the default `latest 1` policy."""
  config = model_server_config_pb2.ModelServerConfig()
  model = config.model_config_list.config.add()
  model.name = name
  model.base_path = base_path
  model.model_platform = "tensorflow"
  return config


def read_config_file(path: str) -> model_server_config_pb2.ModelServerConfig:
  """A text-format ModelServerConfig; ServingError naming the file if unreadable."""
  try:
    with open(path, encoding="utf-8") as f:
      return text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
  except (OSError, text_format.ParseError) as e:
    raise errors.invalid_argument(
        f"Could not read --model_config_file={path} as a text ModelServerConfig: {e}") from None


def _set_tf_threads(options: Options) -> None:
  for value, setter, flag in (
      (options.tensorflow_intra_op_parallelism,
       tf.config.threading.set_intra_op_parallelism_threads, "tensorflow_intra_op_parallelism"),
      (options.tensorflow_inter_op_parallelism,
       tf.config.threading.set_inter_op_parallelism_threads, "tensorflow_inter_op_parallelism")):
    if value > 0:
      try:
        setter(value)
      except RuntimeError as e:
        logging.warning("--%s=%d ignored: TensorFlow is already initialized (%s)", flag, value, e)


class Server:
  """One model server: a Manager, a gRPC server, an aiohttp REST server and polling threads."""

  def __init__(self, options: Options):
    self.options = options
    self.manager: manager_lib.Manager | None = None
    self._grpc = None
    self._rest: rest.RestServer | None = None
    self.grpc_port = 0
    self.rest_port = 0
    self._stop = threading.Event()
    self._config_thread: threading.Thread | None = None
    self._config_text = ""

  @property
  def rest_server(self) -> rest.RestServer | None:
    return self._rest

  def start(self) -> "Server":
    """Loads the models (raising ServingError if one does not become available), then serves."""
    o = self.options
    if not o.model_base_path and not o.model_config_file:
      raise errors.invalid_argument(
          "Both server_options.model_base_path and server_options.model_config_file are empty!")
    _set_tf_threads(o)
    loader = functools.partial(_load, method_name_check=o.enable_signature_method_name_check,
                               warmup=o.enable_model_warmup)
    self.manager = manager_lib.Manager(
        loader, file_system_poll_wait_seconds=o.file_system_poll_wait_seconds,
        allow_version_labels_for_unavailable_models=o.allow_version_labels_for_unavailable_models)
    if o.model_config_file:
      config = read_config_file(o.model_config_file)
      with open(o.model_config_file, encoding="utf-8") as f:
        self._config_text = f.read()
    else:
      config = single_model_config(o.model_name, o.model_base_path)
    self.manager.reload_config(config)
    self.manager.start_polling()
    threads = 4 * (os.cpu_count() or 1)
    if o.port:
      self._grpc, self.grpc_port = grpc_service.create_server(
          self.manager, max(o.port, 0), o.grpc_max_threads or threads, o.host)
      self._grpc.start()
      logging.info("Running gRPC ModelServer at %s:%d ...", o.host, self.grpc_port)
    if o.rest_api_port:
      self._rest = rest.RestServer(self.manager, max(o.rest_api_port, 0),
                                   o.rest_api_num_threads or threads, o.rest_api_timeout_in_ms,
                                   o.host)
      self.rest_port = self._rest.start()
      logging.info("Exporting HTTP/REST API at:%s:%d ...", o.host, self.rest_port)
    if o.model_config_file and o.model_config_file_poll_wait_seconds > 0:
      self._config_thread = threading.Thread(target=self._poll_config, daemon=True,
                                             name="serving-config-poll")
      self._config_thread.start()
    return self

  def _poll_config(self) -> None:
    """Re-reads --model_config_file every --model_config_file_poll_wait_seconds; reloads on
    change (a bad file is logged and the running config kept)."""
    path = self.options.model_config_file
    while not self._stop.wait(self.options.model_config_file_poll_wait_seconds):
      try:
        with open(path, encoding="utf-8") as f:
          text = f.read()
        if text == self._config_text:
          continue
        self._config_text = text
        self.manager.reload_config(read_config_file(path))
      except (OSError, errors.ServingError) as e:
        logging.error("Failed to reload --model_config_file=%s: %s", path, e)

  def stop(self) -> None:
    self._stop.set()
    if self._config_thread is not None:
      self._config_thread.join()
    if self._rest is not None:
      self._rest.stop()
      self._rest = None
    if self._grpc is not None:
      self._grpc.stop(grace=None).wait()
      self._grpc = None
    if self.manager is not None:
      self.manager.stop()

  def wait_for_termination(self) -> None:
    self._stop.wait()

  def __enter__(self) -> "Server":
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()


def _load(name: str, version: int, path: str, method_name_check: bool,
          warmup: bool) -> servable_lib.Servable:
  return servable_lib.Servable.load(name, version, path, method_name_check=method_name_check,
                                    warmup=warmup)


def run(options: Options) -> None:
  """Serves until SIGINT/SIGTERM (what model_servers/main.cc does after parsing flags)."""
  server = Server(options)
  server.start()
  stop = threading.Event()
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: stop.set())
  while not stop.wait(1.0):
    pass
  logging.info("Shutting down.")
  server.stop()
