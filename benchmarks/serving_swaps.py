"""benchmarks/serving.py's hot swaps: new versions of a small model published under client
load (`failed_requests_during_swaps`, `rss_growth_mb`)."""

from __future__ import annotations

import collections
import os
import shutil
import threading
import time

from benchmarks import serving_lib

PIXELS, SWAP_IMAGE, SWAP_MODEL = (serving_lib.PIXELS, serving_lib.SWAP_IMAGE,
                                  serving_lib.SWAP_MODEL)


def swaps(server: serving_lib.ServerProcess, built: dict, args) -> dict:
  """Publishes new versions of the small model under load; counts failed requests."""
  import grpc
  import numpy as np
  from tensorflow_serving.apis import get_model_status_pb2
  from tensorflow_serving.apis import model_service_pb2_grpc
  from serving import client as client_lib

  signature = "small" + PIXELS
  x = np.random.default_rng(args.seed).integers(0, 256, (1,) + SWAP_IMAGE, np.uint8)
  stop = threading.Event()
  failures, counts = [], collections.Counter()
  lock = threading.Lock()

  def load(rest: bool, index: int):
    port = server.rest_port if rest else server.grpc_port
    c = client_lib.connect(f"127.0.0.1:{port}", rest=rest)
    kind = "rest" if rest else "grpc"
    try:
      while not stop.wait(args.load_interval_s):
        try:
          out = c.predict(SWAP_MODEL, signature, {"image": x})
          ok = np.asarray(out["logits"]).shape == (1, 10)
          with lock:
            counts[kind] += 1
            if not ok:
              failures.append(f"{kind}: bad output shape")
        except Exception as e:  # pylint: disable=broad-except  (every failure counts)
          with lock:
            counts[kind] += 1
            failures.append(f"{kind}: {type(e).__name__}: {str(e)[:200]}")
    finally:
      c.close()

  channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
  models = model_service_pb2_grpc.ModelServiceStub(channel)

  def available(version: int) -> bool:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = SWAP_MODEL
    request.model_spec.version.value = version
    try:
      response = models.GetModelStatus(request, timeout=10)
    except grpc.RpcError:
      return False  # not seen yet
    states = {s.version: s.state for s in response.model_version_status}
    return states.get(version) == get_model_status_pb2.ModelVersionStatus.AVAILABLE

  model_dir = built["swap_model_dir"]
  current = max(int(d) for d in os.listdir(model_dir) if d.isdigit())
  threads = [threading.Thread(target=load, args=(i % 2 == 1, i), daemon=True)
             for i in range(args.load_threads)]
  rss_before = server.rss_mb()
  rss_after_10 = None
  done, swap_seconds = 0, []
  budget_hit = False
  start = time.perf_counter()
  deadline = time.monotonic() + args.swap_budget_s
  for t in threads:
    t.start()
  try:
    time.sleep(0.5)  # load running before the first swap
    for i in range(args.swaps):
      if time.monotonic() > deadline:
        budget_hit = True
        break
      version = current + 1
      t0 = time.perf_counter()
      tmp = os.path.join(model_dir, f"_tmp_swap_{version}")
      shutil.copytree(built["swap_template"], tmp)
      os.rename(tmp, os.path.join(model_dir, str(version)))  # atomic: never a partial version
      while not available(version):
        if time.monotonic() > deadline + 60:
          raise RuntimeError(f"version {version} not AVAILABLE in time:\n" +
                             "\n".join(list(server.lines)[-20:]))
        time.sleep(0.02)
      swap_seconds.append(time.perf_counter() - t0)
      for d in os.listdir(model_dir):  # `latest` unloads them; their files can go
        if d.isdigit() and int(d) < version:
          shutil.rmtree(os.path.join(model_dir, d), ignore_errors=True)
      current = version
      done += 1
      if done == 10:
        rss_after_10 = server.rss_mb()
    time.sleep(0.5)  # load still running after the last swap
  finally:
    stop.set()
    for t in threads:
      t.join(timeout=60)
    channel.close()
  time.sleep(1.0)  # let the last unload finish
  rss_after = server.rss_mb()
  return {
      "swaps_done": done, "swaps_requested": args.swaps, "swap_budget_s": args.swap_budget_s,
      "swap_budget_exhausted": budget_hit, "swap_seconds": time.perf_counter() - start,
      "swap_p50_s": float(np.median(swap_seconds)) if swap_seconds else None,
      "swap_max_s": max(swap_seconds) if swap_seconds else None,
      "failed_requests_during_swaps": len(failures),
      "failed_request_examples": failures[:10],
      "requests_during_swaps": dict(counts), "load_threads": args.load_threads,
      "load_interval_s": args.load_interval_s,
      "rss_before_swaps_mb": rss_before, "rss_after_swaps_mb": rss_after,
      "rss_growth_mb": rss_after - rss_before,
      "rss_growth_mb_after_10_swaps": (rss_after - rss_after_10) if rss_after_10 else None,
  }
