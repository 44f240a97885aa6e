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

import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from benchmarks import serving_fuzz  # noqa: E402
from benchmarks import serving_lib  # noqa: E402
from benchmarks import serving_swaps  # noqa: E402

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


def _log(msg: str = "") -> None:
  print(msg, flush=True)


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
  _log(f"serving benchmark: {args.tasks} tasks, root {serving_lib.ROOT[7:-2]}, "
       f"images {serving_lib.IMAGE}, TF {tf.__version__}, {os.cpu_count()} CPUs, "
       f"load average {os.getloadavg()[0]:.1f}, "
       f"work dir {work}")
  try:
    _log("\n1. systems and exports")
    built = serving_lib.build(work, args.tasks, args.seed)
    a, o = built["all"], built["one"]
    _log(f"  make_system {built['make_system_s']:.1f} s; export 1 task "
         f"{built['export_1_task_s']:.1f} s ({o.export_bytes / 1e6:.2f} MB, weights "
         f"{o.weight_bytes / 1e6:.2f} MB); export "
         f"{args.tasks} tasks {built['export_all_s']:.1f} s ({a.export_bytes / 1e6:.2f} MB, "
         f"weights {a.weight_bytes / 1e6:.2f} MB)")
    _log("  by part: " + ", ".join(f"{k} {v / 1e6:.3f} MB" for k, v in
                                   sorted(built["parts"].items())))

    _log("\n2. in process (tf.saved_model.load, alternating blocks of calls)")
    ratios = serving_lib.inprocess_ratios(built, args, rng)
    _log(f"  {built['names'][0]}@pixels batch 1: 1-task export p50 "
         f"{ratios['p50_1_task_ms']:.3f} ms, {args.tasks}-task export "
         f"{ratios['p50_all_tasks_ms']:.3f} ms")
    _log(f"  batch {args.batch} of one task: own signature {ratios['own_batch_ms']:.3f} ms, "
         f"routed@pixels {ratios['routed_one_task_batch_ms']:.3f} ms (batch 1 ratio "
         f"{ratios['routed_one_task_ratio_batch1']:.3f})")
    _log(f"  mixed batch of {len(ratios['mixed_tasks'])} tasks: separate calls "
         f"{ratios['separate_calls_ms']:.3f} ms, one routed call "
         f"{ratios['routed_mixed_ms']:.3f} ms")

    _log("\n3. server (bin/serve.py subprocess, 127.0.0.1)")
    t0 = time.perf_counter()
    server = serving_lib.ServerProcess(built["model_config_file"]).start()
    server_start_s = time.perf_counter() - t0
    _log(f"  serving after {server_start_s:.1f} s: gRPC :{server.grpc_port}, REST "
         f":{server.rest_port}, pid {server.proc.pid}, RSS {server.rss_mb():.0f} MB")
    lat = serving_lib.server_latency(server, built, ratios, args, rng)
    for k in ("inprocess", "grpc", "rest"):
      _log(f"  {k:10s} p50 {lat[k + '_p50_ms']:7.3f} ms  p99 {lat[k + '_p99_ms']:7.3f} ms" +
           (f"  overhead {lat[k + '_overhead_ms']:6.3f} ms  max {lat[k + '_max_ms']:.1f} ms"
            if k != "inprocess" else ""))
    _log(f"  gRPC mixed batch: {len(ratios['mixed_tasks'])} requests "
         f"{lat['grpc_separate_calls_ms']:.3f} ms, one routed request "
         f"{lat['grpc_routed_mixed_ms']:.3f} ms")

    _log("\n4. fuzzing")
    fz = serving_fuzz.fuzz(server, built, args)
    _log(f"  {fz['requests_fuzzed']} malformed requests in {fz['fuzz_categories']} categories "
         f"({fz['fuzz_seconds']:.1f} s), unexpected answers {fz['fuzz_unexpected']}, server alive "
         f"and answering after: {fz['server_alive_after_fuzz']}")
    for ex in fz["fuzz_unexpected_examples"]:
      _log(f"    unexpected: {ex}")

    _log(f"\n5. hot swaps under load ({args.load_threads} client threads, budget "
         f"{args.swap_budget_s:.0f} s)")
    sw = serving_swaps.swaps(server, built, args)
    _log(f"  {sw['swaps_done']}/{sw['swaps_requested']} swaps in {sw['swap_seconds']:.1f} s "
         f"(p50 {sw['swap_p50_s'] or 0:.2f} s to AVAILABLE), requests "
         f"{sw['requests_during_swaps']}, "
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
      "root": serving_lib.ROOT,
      "image": list(serving_lib.IMAGE),
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
