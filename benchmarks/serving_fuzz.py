"""benchmarks/serving.py's fuzzing: seeded malformed requests over gRPC and REST, then a good
request over both (`requests_fuzzed`, `server_alive_after_fuzz`, `fuzz_unexpected`)."""

from __future__ import annotations

import base64
import collections
import http.client
import json
import random
import socket
import time

from absl import logging

from benchmarks import serving_lib

IMAGE, MODEL = serving_lib.IMAGE, serving_lib.MODEL
PIXELS, ROUTED_PIXELS = serving_lib.PIXELS, serving_lib.ROUTED_PIXELS


def _word(rng: random.Random) -> str:
  return "z" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                       for _ in range(rng.randint(1, 10)))


def fuzz_cases(task: str):
  """(name, protocol, make(rng) -> request, empty_ok) for every malformed-request category.

  A gRPC request is a PredictRequest; a REST request is (method, path, body bytes).
  """
  from tensorflow.core.framework import tensor_pb2
  from tensorflow.core.framework import tensor_shape_pb2
  from tensorflow.core.framework import types_pb2
  from tensorflow_serving.apis import predict_pb2

  def tensor(dtype, shape, content=b"", strings=None):
    t = tensor_pb2.TensorProto(dtype=dtype)
    t.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape]))
    if strings is not None:
      t.string_val.extend(strings)
    else:
      t.tensor_content = content
    return t

  def good_image(rng, n=1):
    return bytes(rng.getrandbits(8) for _ in range(n * 32 * 32 * 3))

  def req(signature=task + PIXELS, model=MODEL, version=None, **inputs):
    r = predict_pb2.PredictRequest()
    r.model_spec.name, r.model_spec.signature_name = model, signature
    if version is not None:
      r.model_spec.version.value = version
    for k, v in inputs.items():
      r.inputs[k].CopyFrom(v)
    return r

  u8 = types_pb2.DT_UINT8
  image = lambda rng: tensor(u8, [1, 32, 32, 3], good_image(rng))  # noqa: E731
  g = "grpc"
  cases = [
      ("unknown_model", g, lambda rng: req(model=_word(rng), image=image(rng)), False),
      ("unknown_version", g, lambda rng: req(version=rng.randint(50, 10**6), image=image(rng)),
       False),
      ("unknown_signature", g, lambda rng: req(signature=_word(rng), image=image(rng)), False),
      ("unknown_alias", g, lambda rng: req(**{_word(rng): image(rng)}), False),
      ("no_inputs", g, lambda rng: req(), False),
      ("extra_input", g, lambda rng: req(image=image(rng), **{_word(rng): image(rng)}), False),
      ("wrong_dtype_float", g, lambda rng: req(image=tensor(
          types_pb2.DT_FLOAT, [1, 32, 32, 3], bytes(4 * 32 * 32 * 3))), False),
      ("wrong_dtype_string", g, lambda rng: req(image=tensor(
          types_pb2.DT_STRING, [1], strings=[b"abc"])), False),
      ("content_shorter_than_shape", g, lambda rng: req(image=tensor(
          u8, [1, 32, 32, 3], good_image(rng)[:rng.randint(0, 3000)])), False),
      ("huge_dims", g, lambda rng: req(image=tensor(
          u8, [1, 1 << rng.randint(20, 40), 1 << rng.randint(20, 40), 3], b"\x01" * 12)), False),
      ("negative_dim", g, lambda rng: req(image=tensor(u8, [1, -rng.randint(1, 99), 32, 3])),
       False),
      ("wrong_rank", g, lambda rng: req(image=tensor(u8, [32, 32, 3], good_image(rng))), False),
      ("zero_size_image", g, lambda rng: req(image=tensor(u8, [1, 0, 0, 3])), False),
      ("five_channels", g, lambda rng: req(image=tensor(
          u8, [1, 32, 32, 5], bytes(32 * 32 * 5))), False),
      ("empty_batch", g, lambda rng: req(image=tensor(u8, [0, 32, 32, 3])), True),
      ("undecodable_image_bytes", g, lambda rng: req(signature=task, image_bytes=tensor(
          types_pb2.DT_STRING, [1], strings=[good_image(rng)[:rng.randint(0, 200)]])), False),
      ("truncated_png", g, lambda rng: req(signature=task, image_bytes=tensor(
          types_pb2.DT_STRING, [1], strings=[b"\x89PNG\r\n\x1a\n" + good_image(rng)[:50]])),
       False),
      ("routed_unknown_task", g, lambda rng: req(signature=ROUTED_PIXELS, task=tensor(
          types_pb2.DT_STRING, [1], strings=[_word(rng).encode()]), image=image(rng)), False),
      ("routed_batch_mismatch", g, lambda rng: req(signature=ROUTED_PIXELS, task=tensor(
          types_pb2.DT_STRING, [3], strings=[task.encode()] * 3), image=image(rng)), False),
      ("routed_missing_task", g, lambda rng: req(signature=ROUTED_PIXELS, image=image(rng)),
       False),
  ]

  def rest(path_tail, body, model=MODEL):
    return ("POST", f"/v1/models/{model}{path_tail}", body if isinstance(body, bytes)
            else json.dumps(body).encode())

  instance = [[[0] * 3] * 32] * 32
  good_body = {"signature_name": task + PIXELS, "instances": [instance]}
  r = "rest"
  cases += [
      ("json_truncated", r, lambda rng: rest(":predict", json.dumps(good_body).encode()[
          :rng.randint(0, 60)]), False),
      ("json_garbage", r, lambda rng: rest(":predict", bytes(
          rng.getrandbits(8) for _ in range(rng.randint(1, 64)))), False),
      ("json_not_object", r, lambda rng: rest(":predict", rng.choice([b"[]", b"1", b"null",
                                                                      b'"x"'])), False),
      ("json_deep_nesting", r, lambda rng: rest(":predict", b'{"instances": ' + b"[" * 100000
                                                + b"]" * 100000 + b"}"), False),
      ("rest_unknown_model", r, lambda rng: rest(":predict", good_body, model=_word(rng)), False),
      ("rest_unknown_version", r, lambda rng: rest(f"/versions/{rng.randint(50, 10**6)}:predict",
                                                   good_body), False),
      ("rest_bad_version", r, lambda rng: rest(f"/versions/{_word(rng)}:predict", good_body),
       False),
      ("rest_unknown_verb", r, lambda rng: rest(f":{_word(rng)}", good_body), False),
      ("rest_unknown_signature", r, lambda rng: rest(":predict", dict(
          good_body, signature_name=_word(rng))), False),
      ("rest_unknown_alias", r, lambda rng: rest(":predict", {
          "signature_name": task + PIXELS, "inputs": {_word(rng): [instance]}}), False),
      ("rest_strings_for_uint8", r, lambda rng: rest(":predict", {
          "signature_name": task + PIXELS, "instances": [_word(rng)]}), False),
      ("rest_out_of_range", r, lambda rng: rest(":predict", {
          "signature_name": task + PIXELS,
          "instances": [[[[rng.choice([2**31, -2**31 - 1, 2**70, 1e9, 0.5])] * 3] * 32] * 32]}),
       False),  # 256 or -1 are not errors: TF Serving narrows int32 values like a C cast
      ("rest_ragged", r, lambda rng: rest(":predict", {
          "signature_name": task + PIXELS, "instances": [instance, [[[0] * 3] * 31]]}), False),
      ("rest_both_instances_inputs", r, lambda rng: rest(":predict", dict(
          good_body, inputs={"image": [instance]})), False),
      ("rest_empty_instances", r, lambda rng: rest(":predict", {
          "signature_name": task + PIXELS, "instances": []}), True),
      ("rest_bad_base64", r, lambda rng: rest(":predict", {
          "signature_name": task, "instances": [{"b64": "!!" + _word(rng)}]}), False),
      ("rest_undecodable_image", r, lambda rng: rest(":predict", {
          "signature_name": task, "instances": [
              {"b64": base64.b64encode(good_image(rng)[:100]).decode()}]}), False),
      ("rest_routed_unknown_task", r, lambda rng: rest(":predict", {
          "signature_name": ROUTED_PIXELS, "inputs": {"task": [_word(rng)],
                                                      "image": [instance]}}), False),
  ]
  return cases


def fuzz(server: serving_lib.ServerProcess, built: dict, args) -> dict:
  """Sends the malformed requests (categories in turn, seeded variations), then a good one."""
  import grpc
  import numpy as np
  from tensorflow_serving.apis import prediction_service_pb2_grpc
  from serving import client as client_lib

  rng = random.Random(args.seed)
  first = built["names"][0]
  cases = fuzz_cases(first)
  channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}",
                                  options=[("grpc.max_send_message_length", 1 << 28)])
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  conn = None
  outcomes = collections.defaultdict(collections.Counter)
  unexpected = []
  sent = 0
  deadline = time.monotonic() + args.fuzz_budget_s
  start = time.perf_counter()
  try:
    for i in range(args.fuzz_requests):
      if time.monotonic() > deadline:
        logging.warning("fuzzing stopped after %d requests (budget %.0f s)", i,
                        args.fuzz_budget_s)
        break
      name, protocol, make, empty_ok = cases[i % len(cases)]
      request = make(rng)
      sent += 1
      if protocol == "grpc":
        try:
          stub.Predict(request, timeout=60)
          outcome, bad = "OK", not empty_ok
        except grpc.RpcError as e:
          outcome = e.code().name
          bad = outcome in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN")
      else:
        method, path, body = request
        try:
          if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
          conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
          response = conn.getresponse()
          response.read()
          outcome = f"HTTP {response.status}"
          bad = response.status >= 500 or (response.status == 200 and not empty_ok)
        except (OSError, http.client.HTTPException) as e:
          outcome, bad = f"connection error {type(e).__name__}", True
          conn.close()
          conn = None
      outcomes[name][outcome] += 1
      if bad:
        unexpected.append(f"{name}: {outcome}")
  finally:
    channel.close()
    if conn is not None:
      conn.close()
  seconds = time.perf_counter() - start

  # A good request over both protocols, and the process still running.
  alive = server.alive()
  x = np.zeros((1,) + IMAGE, np.uint8)
  for rest in (False, True):
    port = server.rest_port if rest else server.grpc_port
    c = client_lib.connect(f"127.0.0.1:{port}", rest=rest)
    try:
      out = c.predict(MODEL, first + PIXELS, {"image": x})
      alive = alive and np.asarray(out["logits"]).shape == (1, 10)
    except Exception as e:  # pylint: disable=broad-except
      logging.error("good request after fuzzing failed (%s): %s", "REST" if rest else "gRPC", e)
      alive = False
    finally:
      c.close()
  return {"requests_fuzzed": sent, "fuzz_categories": len(cases),
          "server_alive_after_fuzz": bool(alive and server.alive()),
          "fuzz_unexpected": len(unexpected), "fuzz_unexpected_examples": unexpected[:10],
          "fuzz_outcomes": {k: dict(v) for k, v in sorted(outcomes.items())},
          "fuzz_seconds": seconds}
