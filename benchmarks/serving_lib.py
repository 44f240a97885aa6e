"""What benchmarks/serving.py measures with: the systems and exports, the `bin/serve.py`
subprocess, block-interleaved timing, and the in-process and server latency figures."""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import threading
import time

from absl import logging

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
