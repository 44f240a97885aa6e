r"""Serving benchmark: one exported multitask system behind TF Serving's APIs.

    .venv/bin/python benchmarks/serving.py            # 32 tasks, about 15 minutes on 2 CPUs
    .venv/bin/python benchmarks/serving.py --quick    # 2 tasks, a smoke run of about 2 minutes

Systems are made with `mtsys.system.synthetic.make_system` (random weights, a shared root, each
task cloning the root's top block and adding a random head) and exported with
`mtsys.export.export`, exactly as `bin/export.py` does. One system with `--tasks` tasks is
exported twice: all its tasks (the "32-task export") and only its first task (the "1-task
export"), so the first task's path, weights and inputs are identical in both.

Why this root (`custom { patch_size: 8 hidden_size: 192 num_layers: 4 num_heads: 3
mlp_dim: 768 }`, 32x32x3 images, so 17 tokens): hidden 192 is ViT-Ti's width, so each block
holds the 0.44 M parameters (1.8 MB) of a real ViT-Ti block and the ratio of graph bytes to
weight bytes (`export_overhead_ratio`) is the one a real export sees per cloned block; a toy
width would make the graph dominate and the ratio measure nothing real. Few tokens and 4 blocks
keep a batch-1 call at a few ms on a 2-core CPU: long enough that per-call Python overhead
does not dominate the latency ratios, short enough that thousands of calls fit in minutes.

Figures (last line of stdout: one JSON object; `targets` and `meets_targets` in it):

- `latency_ratio_32_vs_1_task` (<= 1.10): p50 of the first task's `T@pixels` (batch 1) in the
  32-task export / in the 1-task export, both loaded in this process with
  `tf.saved_model.load`; calls alternate between the two in blocks (so load drift from other
  processes hits both alike).
- `routed_one_task_ratio` (<= 1.15): a batch of `--batch` examples all of the first task through
  `routed@pixels` / through that task's `T@pixels`, both in the 32-task export, in process.
- `routed_speedup` (>= 2): a mixed batch, one example each of 8 tasks spread over the export:
  the 8 per-task `T@pixels` calls (one after the other) / one `routed@pixels` call, in process.
  `routed_speedup_grpc` is the same through the server over gRPC.
- `export_overhead_ratio` (<= 1.2): the 32-task version directory's bytes / the bytes of the
  weights of its distinct components (`ExportResult.weight_bytes`); the rest is the graph
  (`saved_model.pb`), the checkpoint index, warm-up requests and provenance (`export_bytes_by_part`).
- `inprocess_p50_ms`, `grpc_p50_ms`, `grpc_p99_ms`, `rest_p50_ms`, `rest_p99_ms`: batch-1
  `T@pixels` of the first task of the 32-task export, called directly
  (`tf.saved_model.load(...).signatures[...]`) and through `bin/serve.py` running as a separate
  process (so client and server do not share a GIL) over 127.0.0.1 with `serving/client.py`
  (which includes its request/response conversions); `grpc_overhead_ms` and `rest_overhead_ms`
  (<= 1.0 each) are server p50 - in-process p50. p99 should stay under 20 ms (a p99 near 40 ms
  is a Nagle stall). The three are measured in alternating blocks.
- `failed_requests_during_swaps` (0) and `rss_growth_mb`: a small one-task system is exported
  once (as version 1 of a second model of the same server) and copied as a template; each swap
  publishes the next version number atomically (copy to a non-numeric temporary directory in
  the model directory, `os.rename` to the number), waits until GetModelStatus shows it
  AVAILABLE (the server polls every 0.05 s; policy `latest` then unloads the previous one) and
  removes the older version directories, while `--load_threads` client threads (gRPC and REST)
  send requests the whole time (each pausing `--load_interval_s` between requests: enough to keep
  both cores busy, not so much that a load waits for the GIL for seconds); every failed request
  counts. Swaps stop early when
  `--swap_budget_s` runs out (the number done is reported). `rss_growth_mb` is the server
  process's VmRSS (from /proc/<pid>/status) after the swaps minus before them;
  `rss_growth_mb_after_10_swaps` excludes the first 10 swaps (allocator warm-up).
- `requests_fuzzed`, `server_alive_after_fuzz`: `--fuzz_requests` seeded malformed requests over
  gRPC and REST (bad JSON, unknown model/version/signature/input alias, wrong dtypes, contents
  that do not match their shape, huge or negative dims, undecodable image bytes, empty batches,
  unknown routed tasks, deep JSON nesting, ...); each must get an error status (an empty batch
  may also get an empty answer), then a good request must still succeed over both protocols.
  `fuzz_unexpected` counts malformed requests that succeeded, got a 5xx/INTERNAL/UNKNOWN
  status, or broke the connection.

Every loop is bounded in count and time. Everything runs in a temporary directory that is
removed at the end, and the server subprocess is always stopped.
"""

from __future__ import annotations

import base64
import collections
import http.client
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("tasks", 32, "Tasks of the big export.")
flags.DEFINE_integer("batch", 8, "Batch size of the routed-vs-own-signature comparison.")
flags.DEFINE_integer("mixed_tasks", 8, "Tasks in the mixed batch of routed_speedup.")
flags.DEFINE_integer("calls", 1000, "Timed calls per setting of the server latency figures.")
flags.DEFINE_integer("ratio_calls", 600, "Timed calls per side of the in-process ratios.")
flags.DEFINE_integer("block", 10, "Calls per block; the settings compared alternate block by "
                     "block.")
flags.DEFINE_float("timing_budget_s", 120, "Time budget of each timing comparison.")
flags.DEFINE_integer("swaps", 100, "Version swaps under load.")
flags.DEFINE_float("swap_budget_s", 600, "Time budget of the swaps (stops early, reported).")
flags.DEFINE_integer("load_threads", 3, "Client threads sending requests during the swaps "
                     "(gRPC and REST alternately).")
flags.DEFINE_float("load_interval_s", 0.02, "Pause of each load thread between requests (so the "
                   "2 cores are loaded, not saturated, and a swap's load can proceed).")
flags.DEFINE_integer("fuzz_requests", 400, "Malformed requests sent.")
flags.DEFINE_float("fuzz_budget_s", 180, "Time budget of the fuzzing.")
flags.DEFINE_integer("seed", 20261129, "Seeds the systems, the inputs and the fuzzing.")
flags.DEFINE_bool("quick", False, "Smoke run: 2 tasks, few repetitions, 5 swaps, 40 fuzz "
                  "requests (the numbers mean little).")
flags.DEFINE_string("work_dir", None, "Keep the systems and exports here instead of a deleted "
                    "temporary directory.")

TARGETS = {
    "latency_ratio_32_vs_1_task": "<= 1.10",
    "routed_one_task_ratio": "<= 1.15",
    "routed_speedup": ">= 2",
    "export_overhead_ratio": "<= 1.2",
    "grpc_overhead_ms": "<= 1.0",
    "rest_overhead_ms": "<= 1.0",
    "grpc_p99_ms": "< 20",
    "rest_p99_ms": "< 20",
    "failed_requests_during_swaps": "== 0",
    "server_alive_after_fuzz": "true",
}
ROOT = ("root { custom { patch_size: 8 hidden_size: 192 num_layers: 4 num_heads: 3 "
        "mlp_dim: 768 } num_blocks: 4 image_size: 32 channels: 3 seed: 1 }")
# The swapped versions only need to load fast: a 2-block width-64 root at 16x16.
SWAP_ROOT = ("root { custom { patch_size: 8 hidden_size: 64 num_layers: 2 num_heads: 2 "
             "mlp_dim: 128 } num_blocks: 2 image_size: 16 channels: 3 seed: 2 }")
IMAGE = (32, 32, 3)
SWAP_IMAGE = (16, 16, 3)
MODEL, SWAP_MODEL = "multi", "swap"
PIXELS, ROUTED_PIXELS = "@pixels", "routed@pixels"


def _config_text(root: str, tasks: list[str]) -> str:
  lines = [root]
  for name in tasks:
    lines.append(f'task {{ name: "{name}" num_classes: 10 files {{ npz: "unused.npz" '
                 'validation_fraction: 0.2 test_fraction: 0.2 } }')
  return "\n".join(lines)


def _task_names(n: int) -> list[str]:
  return [f"task{i:02d}" for i in range(n)]


def _log(msg: str = "") -> None:
  print(msg, flush=True)


# --- timing --------------------------------------------------------------------------------------

def interleaved(fns: dict, calls: int, block: int, budget_s: float, warmup: int = 20) -> dict:
  """Per-call seconds of each function, timed in alternating short blocks.

  Each round runs a block of `block` calls of every function (the order rotates), so the
  machine's changing load (other processes on the 2 cores) reaches every side alike; short
  blocks matter more than many calls on a shared machine. Stops after `calls` calls per function
  or once `budget_s` is spent (at least one round). Returns name -> list of seconds.
  """
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  names = list(fns)
  times = {n: [] for n in names}
  per_block = max(1, min(block, calls))
  rounds = max(1, calls // per_block)
  deadline = time.monotonic() + budget_s
  for r in range(rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    for name in order:
      fn, out = fns[name], times[name]
      for _ in range(per_block):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    if time.monotonic() > deadline:
      logging.warning("timing stopped after %d of %d rounds (budget %.0f s)", r + 1, rounds,
                      budget_s)
      break
  return times


def _ms(seconds: list, q: float = 50) -> float:
  import numpy as np
  return 1000.0 * float(np.percentile(seconds, q))


# --- the server subprocess -----------------------------------------------------------------------

class ServerProcess:
  """`bin/serve.py` in its own process on 127.0.0.1, free ports (-1), polling fast."""

  def __init__(self, model_config_file: str, poll_s: float = 0.05):
    self.cmd = [sys.executable, os.path.join(_REPO, "bin", "serve.py"), "--port=-1",
                "--rest_api_port=-1", "--host=127.0.0.1",
                f"--model_config_file={model_config_file}",
                f"--file_system_poll_wait_seconds={poll_s}", "--logtostderr"]
    self.proc = None
    self.grpc_port = self.rest_port = 0
    self.lines = collections.deque(maxlen=300)
    self._reader = None

  def start(self, timeout_s: float = 600) -> "ServerProcess":
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True, env=env, cwd=_REPO)
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()
    deadline = time.monotonic() + timeout_s
    while not (self.grpc_port and self.rest_port):
      if self.proc.poll() is not None:
        raise RuntimeError(f"server exited ({self.proc.returncode}):\n" + "\n".join(self.lines))
      if time.monotonic() > deadline:
        raise RuntimeError(f"server not serving after {timeout_s} s:\n" + "\n".join(self.lines))
      time.sleep(0.05)
    return self

  def _read(self) -> None:
    for line in self.proc.stderr:  # drained to the end, so the pipe never fills
      line = line.rstrip("\n")
      self.lines.append(line)
      m = re.search(r"Running gRPC ModelServer at [^:]+:(\d+)", line)
      if m:
        self.grpc_port = int(m.group(1))
      m = re.search(r"Exporting HTTP/REST API at:[^:]+:(\d+)", line)
      if m:
        self.rest_port = int(m.group(1))

  def alive(self) -> bool:
    return self.proc is not None and self.proc.poll() is None

  def rss_mb(self) -> float:
    with open(f"/proc/{self.proc.pid}/status") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")

  def stop(self) -> None:
    if self.proc is None or self.proc.poll() is not None:
      return
    self.proc.terminate()
    try:
      self.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait(timeout=30)


# --- phases --------------------------------------------------------------------------------------

def build(work: str, n_tasks: int, seed: int) -> dict:
  """Makes the systems and the three exports; returns what later phases need."""
  from mtsys import export
  from mtsys.config import loader
  from mtsys.system import synthetic
  from mtsys.export import layout

  names = _task_names(n_tasks)
  out = {"names": names}
  start = time.perf_counter()
  system = os.path.join(work, "system")
  synthetic.make_system(system, loader.parse(_config_text(ROOT, names)), seed=seed)
  out["make_system_s"] = time.perf_counter() - start
  quiet = lambda _: None  # noqa: E731
  start = time.perf_counter()
  out["one"] = export.export(system, os.path.join(work, "export_one"), MODEL, tasks=names[:1],
                             log=quiet)
  out["export_1_task_s"] = time.perf_counter() - start
  start = time.perf_counter()
  served = os.path.join(work, "served")
  out["all"] = export.export(system, served, MODEL, log=quiet)
  out["export_all_s"] = time.perf_counter() - start
  parts = collections.Counter()
  for directory, _, files in os.walk(out["all"].version_dir):
    for f in files:
      rel = os.path.relpath(os.path.join(directory, f), out["all"].version_dir)
      part = rel.split(os.sep)[0]
      parts[part] += os.path.getsize(os.path.join(directory, f))
  out["parts"] = dict(parts)
  # The small model whose versions are swapped, served next to the big one.
  swap_system = os.path.join(work, "swap_system")
  synthetic.make_system(swap_system, loader.parse(_config_text(SWAP_ROOT, ["small"])),
                        seed=seed + 1)
  swap = export.export(swap_system, served, SWAP_MODEL, log=quiet)
  out["swap_template"] = os.path.join(work, "swap_template")
  shutil.copytree(swap.version_dir, out["swap_template"])
  out["swap_model_dir"] = layout.model_dir(served, SWAP_MODEL)
  out["model_config_file"] = out["all"].model_config_file
  return out


def inprocess_ratios(built: dict, args, rng) -> dict:
  """latency_ratio_32_vs_1_task, routed_one_task_ratio, routed_speedup (all in this process)."""
  import numpy as np
  import tensorflow as tf
  names = built["names"]
  one = tf.saved_model.load(built["one"].version_dir)
  many = tf.saved_model.load(built["all"].version_dir)
  first = names[0]
  x1 = tf.constant(rng.integers(0, 256, (1,) + IMAGE, np.uint8))
  sig_one, sig_many = one.signatures[first + PIXELS], many.signatures[first + PIXELS]
  np.testing.assert_array_equal(sig_one(image=x1)["logits"].numpy(),
                                sig_many(image=x1)["logits"].numpy())
  t = interleaved({"1-task": lambda: sig_one(image=x1), "all": lambda: sig_many(image=x1)},
                  args.ratio_calls, args.block, args.timing_budget_s)
  out = {"p50_1_task_ms": _ms(t["1-task"]), "p50_all_tasks_ms": _ms(t["all"])}
  out["latency_ratio_32_vs_1_task"] = out["p50_all_tasks_ms"] / out["p50_1_task_ms"]

  routed = many.signatures[ROUTED_PIXELS]
  xb = tf.constant(rng.integers(0, 256, (args.batch,) + IMAGE, np.uint8))
  tb = tf.constant([first] * args.batch)
  t1 = tf.constant([first])
  t = interleaved({"own": lambda: sig_many(image=xb), "routed": lambda: routed(task=tb, image=xb),
                   "own_b1": lambda: sig_many(image=x1),
                   "routed_b1": lambda: routed(task=t1, image=x1)},
                  args.ratio_calls, args.block, args.timing_budget_s)
  out["own_batch_ms"], out["routed_one_task_batch_ms"] = _ms(t["own"]), _ms(t["routed"])
  out["routed_one_task_ratio"] = out["routed_one_task_batch_ms"] / out["own_batch_ms"]
  out["routed_one_task_ratio_batch1"] = _ms(t["routed_b1"]) / _ms(t["own_b1"])

  mixed = mixed_tasks(names, args.mixed_tasks)
  xm = rng.integers(0, 256, (len(mixed),) + IMAGE, np.uint8)
  tm = tf.constant(mixed)
  xm_t = tf.constant(xm)
  per_task = [(many.signatures[n + PIXELS], tf.constant(xm[i:i + 1])) for i, n in enumerate(mixed)]

  def separate():
    for fn, x in per_task:
      fn(image=x)

  routed_out = routed(task=tm, image=xm_t)["probabilities"].numpy()
  for i, (fn, x) in enumerate(per_task):  # the two must answer alike
    p = fn(image=x)["probabilities"].numpy()[0]
    np.testing.assert_allclose(routed_out[i, :p.shape[0]], p, atol=1e-5)
  calls = max(4, args.ratio_calls // 4)
  t = interleaved({"separate": separate, "routed": lambda: routed(task=tm, image=xm_t)},
                  calls, args.block, args.timing_budget_s, warmup=5)
  out["separate_calls_ms"], out["routed_mixed_ms"] = _ms(t["separate"]), _ms(t["routed"])
  out["routed_speedup"] = out["separate_calls_ms"] / out["routed_mixed_ms"]
  out["mixed_tasks"] = mixed
  out["_sig"] = sig_many  # for the server comparison
  out["_x1"] = x1
  return out


def mixed_tasks(names: list[str], k: int) -> list[str]:
  """k tasks spread evenly over the export (fewer when it has fewer)."""
  k = min(k, len(names))
  return [names[(i * len(names)) // k] for i in range(k)]


def server_latency(server: ServerProcess, built: dict, ratios: dict, args, rng) -> dict:
  """Batch-1 T@pixels in process, over gRPC and over REST, in alternating blocks."""
  import numpy as np
  from serving import client as client_lib
  first = built["names"][0]
  grpc_c = client_lib.connect(f"127.0.0.1:{server.grpc_port}")
  rest_c = client_lib.connect(f"127.0.0.1:{server.rest_port}", rest=True)
  try:
    x = ratios["_x1"].numpy()
    sig, x_t = ratios["_sig"], ratios["_x1"]
    want = sig(image=x_t)["logits"].numpy()
    for c in (grpc_c, rest_c):
      got = c.predict(MODEL, first + PIXELS, {"image": x})["logits"]
      np.testing.assert_allclose(got, want, atol=1e-5)
    t = interleaved({"inprocess": lambda: sig(image=x_t),
                     "grpc": lambda: grpc_c.predict(MODEL, first + PIXELS, {"image": x}),
                     "rest": lambda: rest_c.predict(MODEL, first + PIXELS, {"image": x})},
                    args.calls, args.block, args.timing_budget_s, warmup=30)
    out = {"inprocess_p50_ms": _ms(t["inprocess"]), "inprocess_p99_ms": _ms(t["inprocess"], 99)}
    for k in ("grpc", "rest"):
      out[f"{k}_p50_ms"], out[f"{k}_p99_ms"] = _ms(t[k]), _ms(t[k], 99)
      out[f"{k}_max_ms"] = 1000 * max(t[k])
      out[f"{k}_overhead_ms"] = out[f"{k}_p50_ms"] - out["inprocess_p50_ms"]
    out["latency_calls"] = len(t["grpc"])

    # The mixed batch again, through the server: 8 requests against one routed request.
    mixed = ratios["mixed_tasks"]
    xm = rng.integers(0, 256, (len(mixed),) + IMAGE, np.uint8)
    tasks = np.array([m.encode() for m in mixed], dtype=object)

    def separate():
      for i, n in enumerate(mixed):
        grpc_c.predict(MODEL, n + PIXELS, {"image": xm[i:i + 1]})

    t = interleaved({"separate": separate, "routed": lambda: grpc_c.predict(
        MODEL, ROUTED_PIXELS, {"task": tasks, "image": xm})},
        max(4, args.ratio_calls // 4), args.block, args.timing_budget_s, warmup=5)
    out["grpc_separate_calls_ms"], out["grpc_routed_mixed_ms"] = (_ms(t["separate"]),
                                                                  _ms(t["routed"]))
    out["routed_speedup_grpc"] = out["grpc_separate_calls_ms"] / out["grpc_routed_mixed_ms"]
    return out
  finally:
    grpc_c.close()
    rest_c.close()


# --- fuzzing -------------------------------------------------------------------------------------

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


def fuzz(server: ServerProcess, built: dict, args) -> dict:
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


# --- hot swaps under load ------------------------------------------------------------------------

def swaps(server: ServerProcess, built: dict, args) -> dict:
  """Publishes new versions of the small model under load; counts failed requests."""
  import grpc
  import numpy as np
  from tensorflow_serving.apis import get_model_status_pb2
  from tensorflow_serving.apis import model_service_pb2_grpc
  from serving import client as client_lib

  signature = "small" + PIXELS
  x = np.random.default_rng(args.seed).integers(0, 256, (1,) + SWAP_IMAGE, np.uint8)
  stop = threading.Event()
  failures, counts, versions_seen = [], collections.Counter(), set()
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
  import numpy as np  # noqa: F811
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


# --- main ----------------------------------------------------------------------------------------

def _args():
  class Args:
    pass
  a = Args()
  for name in ("tasks", "batch", "mixed_tasks", "calls", "ratio_calls", "block",
               "timing_budget_s", "swaps", "swap_budget_s", "load_threads", "load_interval_s",
               "fuzz_requests",
               "fuzz_budget_s", "seed"):
    setattr(a, name, getattr(FLAGS, name))
  if FLAGS.quick:
    a.tasks, a.calls, a.ratio_calls = 2, 100, 60
    a.timing_budget_s, a.swaps, a.swap_budget_s, a.fuzz_requests = 6, 5, 30, 40
  if a.tasks < 1 or min(a.calls, a.ratio_calls, a.block, a.batch, a.mixed_tasks) < 1:
    raise app.UsageError("--tasks, --calls, --ratio_calls, --block, --batch and --mixed_tasks "
                         "must be positive")
  return a


def _fmt(v) -> str:
  if isinstance(v, bool):
    return str(v).lower()
  if isinstance(v, float):
    return f"{v:.3f}"
  return str(v)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unknown argument: {argv[1]}")
  args = _args()
  logging.set_verbosity(logging.WARNING)  # TensorFlow's saving chatter
  import numpy as np
  import tensorflow as tf
  started = time.perf_counter()
  load_start = os.getloadavg()[0]
  work = FLAGS.work_dir or tempfile.mkdtemp(prefix="serving_bench.")
  os.makedirs(work, exist_ok=True)
  rng = np.random.default_rng(args.seed)
  server = None
  _log(f"serving benchmark: {args.tasks} tasks, root {ROOT[7:-2]}, images {IMAGE}, "
       f"TF {tf.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
       f"work dir {work}")
  try:
    _log("\n1. systems and exports")
    built = build(work, args.tasks, args.seed)
    a, o = built["all"], built["one"]
    _log(f"  make_system {built['make_system_s']:.1f} s; export 1 task {built['export_1_task_s']:.1f}"
         f" s ({o.export_bytes / 1e6:.2f} MB, weights {o.weight_bytes / 1e6:.2f} MB); export "
         f"{args.tasks} tasks {built['export_all_s']:.1f} s ({a.export_bytes / 1e6:.2f} MB, "
         f"weights {a.weight_bytes / 1e6:.2f} MB)")
    _log("  by part: " + ", ".join(f"{k} {v / 1e6:.3f} MB" for k, v in
                                   sorted(built["parts"].items())))

    _log("\n2. in process (tf.saved_model.load, alternating blocks of calls)")
    ratios = inprocess_ratios(built, args, rng)
    _log(f"  {built['names'][0]}@pixels batch 1: 1-task export p50 "
         f"{ratios['p50_1_task_ms']:.3f} ms, {args.tasks}-task export "
         f"{ratios['p50_all_tasks_ms']:.3f} ms")
    _log(f"  batch {args.batch} of one task: own signature {ratios['own_batch_ms']:.3f} ms, "
         f"routed@pixels {ratios['routed_one_task_batch_ms']:.3f} ms (batch 1 ratio "
         f"{ratios['routed_one_task_ratio_batch1']:.3f})")
    _log(f"  mixed batch of {len(ratios['mixed_tasks'])} tasks: separate calls "
         f"{ratios['separate_calls_ms']:.3f} ms, one routed call {ratios['routed_mixed_ms']:.3f} ms")

    _log("\n3. server (bin/serve.py subprocess, 127.0.0.1)")
    t0 = time.perf_counter()
    server = ServerProcess(built["model_config_file"]).start()
    server_start_s = time.perf_counter() - t0
    _log(f"  serving after {server_start_s:.1f} s: gRPC :{server.grpc_port}, REST "
         f":{server.rest_port}, pid {server.proc.pid}, RSS {server.rss_mb():.0f} MB")
    lat = server_latency(server, built, ratios, args, rng)
    for k in ("inprocess", "grpc", "rest"):
      _log(f"  {k:10s} p50 {lat[k + '_p50_ms']:7.3f} ms  p99 {lat[k + '_p99_ms']:7.3f} ms" +
           (f"  overhead {lat[k + '_overhead_ms']:6.3f} ms  max {lat[k + '_max_ms']:.1f} ms"
            if k != "inprocess" else ""))
    _log(f"  gRPC mixed batch: {len(ratios['mixed_tasks'])} requests "
         f"{lat['grpc_separate_calls_ms']:.3f} ms, one routed request "
         f"{lat['grpc_routed_mixed_ms']:.3f} ms")

    _log("\n4. fuzzing")
    fz = fuzz(server, built, args)
    _log(f"  {fz['requests_fuzzed']} malformed requests in {fz['fuzz_categories']} categories "
         f"({fz['fuzz_seconds']:.1f} s), unexpected answers {fz['fuzz_unexpected']}, server alive "
         f"and answering after: {fz['server_alive_after_fuzz']}")
    for ex in fz["fuzz_unexpected_examples"]:
      _log(f"    unexpected: {ex}")

    _log(f"\n5. hot swaps under load ({args.load_threads} client threads, budget "
         f"{args.swap_budget_s:.0f} s)")
    sw = swaps(server, built, args)
    _log(f"  {sw['swaps_done']}/{sw['swaps_requested']} swaps in {sw['swap_seconds']:.1f} s "
         f"(p50 {sw['swap_p50_s'] or 0:.2f} s to AVAILABLE), requests {sw['requests_during_swaps']}, "
         f"failed {sw['failed_requests_during_swaps']}; server RSS {sw['rss_before_swaps_mb']:.0f}"
         f" -> {sw['rss_after_swaps_mb']:.0f} MB")
    for ex in sw["failed_request_examples"]:
      _log(f"    failed: {ex}")
    alive_at_end = server.alive()
  finally:
    if server is not None:
      server.stop()
    if not FLAGS.work_dir:
      shutil.rmtree(work, ignore_errors=True)

  figures = {
      "benchmark": "serving",
      "tasks": args.tasks,
      "root": ROOT,
      "image": list(IMAGE),
      "latency_ratio_32_vs_1_task": ratios["latency_ratio_32_vs_1_task"],
      "routed_one_task_ratio": ratios["routed_one_task_ratio"],
      "routed_one_task_ratio_batch1": ratios["routed_one_task_ratio_batch1"],
      "routed_speedup": ratios["routed_speedup"],
      "routed_speedup_grpc": lat["routed_speedup_grpc"],
      "export_overhead_ratio": a.export_bytes / a.weight_bytes,
      "export_overhead_ratio_1_task": o.export_bytes / o.weight_bytes,
      "export_bytes": a.export_bytes, "weight_bytes": a.weight_bytes,
      "export_bytes_by_part": built["parts"],
      "export_seconds": built["export_all_s"], "export_1_task_seconds": built["export_1_task_s"],
      "make_system_seconds": built["make_system_s"], "server_start_seconds": server_start_s,
      "p50_ms": {"1_task_export": ratios["p50_1_task_ms"],
                 "all_tasks_export": ratios["p50_all_tasks_ms"],
                 f"own_signature_batch{args.batch}": ratios["own_batch_ms"],
                 f"routed_one_task_batch{args.batch}": ratios["routed_one_task_batch_ms"],
                 "separate_calls_mixed": ratios["separate_calls_ms"],
                 "routed_mixed": ratios["routed_mixed_ms"],
                 "grpc_separate_calls_mixed": lat["grpc_separate_calls_ms"],
                 "grpc_routed_mixed": lat["grpc_routed_mixed_ms"]},
      "mixed_batch_tasks": len(ratios["mixed_tasks"]),
      "batch": args.batch,
      "server_alive_at_end": alive_at_end,
      "targets": TARGETS,
      "seconds": time.perf_counter() - started,
      "load_average_start_end": [load_start, os.getloadavg()[0]],
      "quick": bool(FLAGS.quick),
  }
  figures.update({k: v for k, v in lat.items()})
  figures.update(fz)
  figures.update(sw)
  met = {
      "latency_ratio_32_vs_1_task": figures["latency_ratio_32_vs_1_task"] <= 1.10,
      "routed_one_task_ratio": figures["routed_one_task_ratio"] <= 1.15,
      "routed_speedup": figures["routed_speedup"] >= 2,
      "export_overhead_ratio": figures["export_overhead_ratio"] <= 1.2,
      "grpc_overhead_ms": figures["grpc_overhead_ms"] <= 1.0,
      "rest_overhead_ms": figures["rest_overhead_ms"] <= 1.0,
      "grpc_p99_ms": figures["grpc_p99_ms"] < 20,
      "rest_p99_ms": figures["rest_p99_ms"] < 20,
      "failed_requests_during_swaps": figures["failed_requests_during_swaps"] == 0,
      "server_alive_after_fuzz": figures["server_alive_after_fuzz"],
  }
  figures["meets_targets"] = met

  _log("\nsummary")
  _log(f"  {'figure':30s} {'value':>10s}  {'target':8s}  met")
  for k in ("latency_ratio_32_vs_1_task", "routed_one_task_ratio", "routed_speedup",
            "routed_speedup_grpc", "export_overhead_ratio", "inprocess_p50_ms", "grpc_p50_ms",
            "grpc_p99_ms", "grpc_overhead_ms", "rest_p50_ms", "rest_p99_ms", "rest_overhead_ms",
            "failed_requests_during_swaps", "swaps_done", "rss_growth_mb", "requests_fuzzed",
            "fuzz_unexpected", "server_alive_after_fuzz"):
    _log(f"  {k:30s} {_fmt(figures[k]):>10s}  {TARGETS.get(k, ''):8s}  "
         f"{'' if k not in met else ('yes' if met[k] else 'NO')}")
  _log(f"  ({figures['seconds']:.0f} s in all; swap budget {args.swap_budget_s:.0f} s, "
       f"{'exhausted' if sw['swap_budget_exhausted'] else 'not exhausted'})")

  def clean(v):
    if isinstance(v, float):
      return round(v, 4)
    if isinstance(v, dict):
      return {k: clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
      return [clean(x) for x in v]
    if isinstance(v, (np.integer, np.floating)):
      return clean(v.item())
    return v
  print(json.dumps(clean(figures), sort_keys=True), flush=True)


if __name__ == "__main__":
  app.run(main)
