"""Versions: policies, labels, polling, availability-preserving hot swaps under load, failing
versions, in-flight requests, warm-up, and config reloads."""

from __future__ import annotations

import os
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

import serving_testlib as lib
from serving import errors
from serving import manager as manager_lib
from serving import server_lib

M = lib.MODEL
State = manager_lib.State


@pytest.fixture
def swap_server(model_template, tmp_path):
  """A fresh server on model "half" with version 1 (tests here change its versions)."""
  versions = lib.Versions(model_template, str(tmp_path / M))
  versions.add(1)
  server = server_lib.Server(lib.options(model_name=M, model_base_path=versions.base_path))
  server.start()
  clients = lib.Clients(server)
  yield server, clients, versions
  clients.close()
  server.stop()


def _states(server, name=M) -> dict[int, State]:
  return {v: s.state for v, s in server.manager.version_states(name).items()}


def _y(response) -> np.ndarray:
  return tf.make_ndarray(response.outputs["y"])


def test_hot_swaps_under_concurrent_load_have_zero_failures(swap_server):
  server, clients, versions = swap_server
  stop = threading.Event()
  failures: list[str] = []
  seen: dict[str, list[int]] = {"grpc": [], "rest": []}
  counts = {"grpc": 0, "rest": 0}

  def grpc_load():
    request = lib.predict_request([2.0])
    while not stop.is_set():
      try:
        response = clients.prediction.Predict(request, timeout=30)
        if _y(response).tolist() != [3.0]:
          failures.append(f"grpc wrong result {_y(response)}")
        seen["grpc"].append(response.model_spec.version.value)
        counts["grpc"] += 1
      except grpc.RpcError as e:
        failures.append(f"grpc {e.code()} {e.details()}")

  def rest_load():
    rest = lib.Rest(server.rest_port)
    while not stop.is_set():
      status, body = rest.post(f"/v1/models/{M}:predict", {"instances": [2.0]})
      if (status, body) != (200, {"predictions": [3.0]}):
        failures.append(f"rest {status} {body}")
      counts["rest"] += 1
    rest.close()

  threads = [threading.Thread(target=grpc_load), threading.Thread(target=rest_load)]
  for t in threads:
    t.start()
  try:
    swaps = 10
    for version in range(2, 2 + swaps):
      versions.add(version)
      lib.wait_until(lambda v=version: server.manager.available_versions(M) == [v],
                     what=f"version {version} replacing {version - 1}")
      lib.wait_until(lambda v=version: _states(server).get(v - 1) == State.END,
                     what=f"version {version - 1} unloaded")
  finally:
    stop.set()
    for t in threads:
      t.join(timeout=60)
  assert failures == []
  assert counts["grpc"] >= 50 and counts["rest"] >= 50, counts
  # Latest only moves forward, and the load saw most of the versions.
  assert seen["grpc"] == sorted(seen["grpc"])
  assert len(set(seen["grpc"])) >= 5, sorted(set(seen["grpc"]))
  assert _states(server) == {v: State.END for v in range(1, 11)} | {11: State.AVAILABLE}


def test_failing_versions_never_serve_and_are_not_retried(swap_server):
  server, clients, versions = swap_server
  calls: list[int] = []
  loader = server.manager._loader  # pylint: disable=protected-access

  def counting_loader(name, version, path):
    calls.append(version)
    return loader(name, version, path)

  server.manager._loader = counting_loader  # pylint: disable=protected-access
  bad_warmup = prediction_log_pb2.PredictionLog()
  bad_warmup.predict_log.request.CopyFrom(lib.predict_request([1.0], signature="nope"))
  cases = {
      2: (dict(corrupt=True), errors.Code.DATA_LOSS,
          f"Can't parse {versions.base_path}/2/saved_model.pb as binary proto"),
      3: (dict(warmup=[bad_warmup]), errors.Code.FAILED_PRECONDITION,
          'Serving signature key "nope" not found.'),
      4: (dict(warmup_raw=b"not a tfrecord file at all"), errors.Code.DATA_LOSS, None),
  }
  for version, (kwargs, code, message) in cases.items():
    versions.add(version, **kwargs)
    lib.wait_until(lambda v=version: _states(server).get(v) == State.END, what=f"{version} fails")
    state = server.manager.version_states(M)[version]
    assert state.error.code == code
    if message is not None:
      assert state.error.message == message
    else:
      assert state.error.message.endswith(". Please verify your warmup data is in TFRecord format.")
    # The old version keeps serving; the failed one is never routed to.
    assert server.manager.available_versions(M) == [1]
    response = clients.prediction.Predict(lib.predict_request([4.0]), timeout=30)
    assert (response.model_spec.version.value, _y(response).tolist()) == (1, [4.0])
    assert lib.grpc_error(clients.prediction.Predict,
                          lib.predict_request([4.0], version=version)) == (
        grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({M}, {version})")
    versions.remove(version)  # un-aspires it, so the next (lower) failure is the latest
  time.sleep(0.5)  # several polls
  assert calls == [2, 3, 4], calls  # each failed exactly once: no retry loop
  rest = lib.Rest(server.rest_port)
  assert rest.get(f"/v1/models/{M}/versions/2")[1]["model_version_status"][0]["status"] == {
      "error_code": "DATA_LOSS", "error_message": cases[2][2]}
  rest.close()


def test_in_flight_requests_finish_on_their_version(swap_server):
  server, clients, versions = swap_server
  request = lib.predict_request([2.0], signature="slow")
  request.inputs["delay_ms"].CopyFrom(tf.make_tensor_proto(1500, dtype=tf.int64))
  future = clients.prediction.Predict.future(request, timeout=60)
  time.sleep(0.3)  # the slow request is running on version 1
  versions.add(2)
  lib.wait_until(lambda: server.manager.available_versions(M) == [2], what="version 2")
  # Version 1 waits for its in-flight request before it unloads.
  assert _states(server)[1] == State.UNLOADING
  response = future.result()
  assert (response.model_spec.version.value, _y(response).tolist()) == (1, [3.0])
  lib.wait_until(lambda: _states(server)[1] == State.END, what="version 1 unloaded")
  fresh = clients.prediction.Predict(lib.predict_request([2.0]), timeout=30)
  assert fresh.model_spec.version.value == 2


def _write_config(path, text: str) -> None:
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


def test_version_policies_labels_and_ignored_directories(model_template, tmp_path):
  bases = {}
  for name in ("all", "latest2", "specific"):
    versions = lib.Versions(model_template, str(tmp_path / name))
    for version in (1, 2, 3):
      versions.add(version, warmup=lib.good_warmup_logs(1) if version == 3 else None)
    os.makedirs(os.path.join(versions.base_path, "_tmp_9_abc"))  # an exporter's scratch dir
    os.makedirs(os.path.join(versions.base_path, "v10"))
    bases[name] = versions.base_path
  config_path = tmp_path / "models.config"
  _write_config(config_path, f"""
    model_config_list {{
      config {{ name: "all" base_path: "{bases['all']}" model_platform: "tensorflow"
               model_version_policy {{ all {{}} }}
               version_labels {{ key: "stable" value: 1 }}
               version_labels {{ key: "canary" value: 3 }} }}
      config {{ name: "latest2" base_path: "{bases['latest2']}"
               model_version_policy {{ latest {{ num_versions: 2 }} }} }}
      config {{ name: "specific" base_path: "{bases['specific']}"
               model_version_policy {{ specific {{ versions: 1 versions: 3 }} }} }}
    }}""")
  # Labels may only name available versions unless allowed (server_core.cc).
  with pytest.raises(errors.ServingError) as raised:
    server_lib.Server(lib.options(model_config_file=str(config_path))).start()
  assert (raised.value.code, raised.value.message) == (
      errors.Code.FAILED_PRECONDITION,
      "Request to assign label to version 3 of model all, which is not currently available for "
      "inference")
  server = server_lib.Server(lib.options(model_config_file=str(config_path),
                                         allow_version_labels_for_unavailable_models=True))
  server.start()
  clients = lib.Clients(server)
  rest = lib.Rest(server.rest_port)
  try:
    assert server.manager.available_versions("all") == [1, 2, 3]
    assert server.manager.available_versions("latest2") == [2, 3]
    assert server.manager.available_versions("specific") == [1, 3]
    for label, version in (("stable", 1), ("canary", 3)):
      request = lib.predict_request([6.0], model="all")
      request.model_spec.version_label = label
      response = clients.prediction.Predict(request, timeout=30)
      assert (response.model_spec.version.value, _y(response).tolist()) == (version, [5.0])
      assert rest.post(f"/v1/models/all/labels/{label}:predict", {"inputs": [6.0]}) == (
          200, {"outputs": [5.0]})
    # Latest is the highest available version; status lists every version, newest first.
    response = clients.prediction.Predict(lib.predict_request([0.0], model="specific"), timeout=30)
    assert response.model_spec.version.value == 3
    status, body = rest.get("/v1/models/latest2")
    assert status == 200
    assert [(s["version"], s["state"]) for s in body["model_version_status"]] == [
        ("3", "AVAILABLE"), ("2", "AVAILABLE")]
    # A status request by label reports every version (get_model_status_impl.cc ignores labels).
    assert len(rest.get("/v1/models/all/labels/stable")[1]["model_version_status"]) == 3
  finally:
    rest.close()
    clients.close()
    server.stop()


def test_handle_reload_config_request(model_template, tmp_path):
  one = lib.Versions(model_template, str(tmp_path / "one"))
  one.add(1)
  two = lib.Versions(model_template, str(tmp_path / "two"))
  two.add(5)
  two.add(6)
  server = server_lib.Server(lib.options(model_name="one", model_base_path=one.base_path))
  server.start()
  clients = lib.Clients(server)
  try:
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(f"""model_config_list {{
        config {{ name: "one" base_path: "{one.base_path}" }}
        config {{ name: "two" base_path: "{two.base_path}"
                 model_version_policy {{ all {{}} }} }} }}""", config)

    def reload(call=clients.model.HandleReloadConfigRequest):
      return call(model_management_pb2.ReloadConfigRequest(config=config), timeout=60)

    response = reload()
    assert response.status.error_code == 0
    assert server.manager.available_versions("two") == [5, 6]
    assert clients.prediction.Predict(lib.predict_request([0.0], model="two"),
                                      timeout=30).model_spec.version.value == 6
    # A label on an available version works; on an unavailable one it is refused.
    config.model_config_list.config[1].version_labels["stable"] = 5
    reload()
    labelled = lib.predict_request([0.0], model="two")
    labelled.model_spec.version_label = "stable"
    assert clients.prediction.Predict(labelled, timeout=30).model_spec.version.value == 5
    config.model_config_list.config[1].version_labels["canary"] = 7
    assert lib.grpc_error(lambda r, timeout: reload(), None) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "Request to assign label to version 7 of model two, which is not currently available for "
        "inference")
    del config.model_config_list.config[1].version_labels["canary"]
    config.model_config_list.config[1].base_path = "relative/path"
    assert lib.grpc_error(lambda r, timeout: reload(), None) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expected model two to have an absolute path or URI; got base_path()=relative/path")
    # Removing a model unloads it.
    del config.model_config_list.config[1]
    reload()
    assert server.manager.available_versions("two") == []
    assert lib.grpc_error(clients.prediction.Predict,
                          lib.predict_request([0.0], model="two")) == (
        grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(two)")
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "two"
    states = clients.model.GetModelStatus(status_request, timeout=30).model_version_status
    assert [(s.version, s.state) for s in states] == [
        (6, get_model_status_pb2.ModelVersionStatus.END),
        (5, get_model_status_pb2.ModelVersionStatus.END)]
  finally:
    clients.close()
    server.stop()


def test_startup_fails_when_the_model_does_not_load(model_template, tmp_path):
  versions = lib.Versions(model_template, str(tmp_path / "bad"))
  versions.add(1, corrupt=True)
  with pytest.raises(errors.ServingError) as raised:
    server_lib.Server(lib.options(model_name="bad", model_base_path=versions.base_path)).start()
  assert raised.value.code == errors.Code.UNKNOWN
  assert raised.value.message == (
      "1 model(s) did not become available: {{{name: bad version: 1} due to error: DATA_LOSS: "
      f"Can't parse {versions.base_path}/1/saved_model.pb as binary proto}}, }}")
