"""The server as a process (bin/serve.py), its sockets (TCP_NODELAY) and its loopback latency."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import grpc
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

import serving_testlib as lib

M = lib.MODEL
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bin_serve_subprocess(model_template, tmp_path):
  versions = lib.Versions(model_template, str(tmp_path / M))
  versions.add(3, warmup=lib.good_warmup_logs(2))
  grpc_port, rest_port = lib.free_port(), lib.free_port()
  log_path = tmp_path / "serve.log"
  with open(log_path, "wb") as log:
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "bin", "serve.py"), f"--port={grpc_port}",
         f"--rest_api_port={rest_port}", f"--model_name={M}",
         f"--model_base_path={versions.base_path}", "--file_system_poll_wait_seconds=0.2",
         "--host=127.0.0.1", "--tensorflow_intra_op_parallelism=1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path))
  try:
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    try:
      grpc.channel_ready_future(channel).result(timeout=120)
    except grpc.FutureTimeoutError:
      raise AssertionError(f"server did not start: {log_path.read_text()[-3000:]}") from None
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(lib.predict_request([1.0, 3.0]), timeout=60)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [2.5, 3.5]
    assert response.model_spec.version.value == 3
    lib.wait_until(lambda: _port_open(rest_port), timeout=30, what="REST port")
    rest = lib.Rest(rest_port)
    assert rest.post(f"/v1/models/{M}:predict", {"instances": [1.0]}) == (
        200, {"predictions": [2.5]})
    assert rest.get(f"/v1/models/{M}")[1]["model_version_status"][0]["state"] == "AVAILABLE"
    rest.close()
    channel.close()
  finally:
    process.terminate()
    assert process.wait(timeout=60) == 0, log_path.read_text()[-3000:]
  assert "Finished reading warmup data" in log_path.read_text()


def _port_open(port: int) -> bool:
  with socket.socket() as s:
    return s.connect_ex(("127.0.0.1", port)) == 0


def test_rest_connections_set_tcp_nodelay(served):
  server, _, _ = served
  rest = lib.Rest(server.rest_port)
  assert rest.post(f"/v1/models/{M}:predict", {"instances": [1.0]})[0] == 200
  transports = server.rest_server.connections()
  assert transports, "no open REST connection found"
  for transport in transports:
    sock = transport.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
  rest.close()


def test_many_sequential_batch_one_requests_on_one_connection(served):
  """300 predicts in a row on one keep-alive connection per protocol all answer correctly.

  Latency (p50/p99, Nagle stalls) is measured by benchmarks/serving.py, never asserted here;
  TCP_NODELAY itself is checked on the live sockets above.
  """
  server, clients, _ = served
  rest = lib.Rest(server.rest_port)
  request = lib.predict_request([1.0])
  answered = {"grpc": 0, "rest": 0}
  try:
    for _ in range(300):
      response = clients.prediction.Predict(request, timeout=30)
      assert response.outputs["y"].float_val == [2.5]
      answered["grpc"] += 1
      status, body = rest.post(f"/v1/models/{M}:predict", b'{"instances": [1.0]}')
      assert status == 200 and body == {"predictions": [2.5]}, (status, body)
      answered["rest"] += 1
  finally:
    rest.close()
  assert answered == {"grpc": 300, "rest": 300}
