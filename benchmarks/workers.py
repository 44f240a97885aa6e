"""Benchmark jobs in worker processes, one CPU core each (benchmarks/quality.py's `--workers`).

Small models on a CPU train faster as several one-thread processes than as one process with
TensorFlow's default thread pools: `benchmarks/agents.py` measured two one-core processes doing
the same work 1.74x as fast as one process free to use both cores (`strong_speedup`), and one
pinned one-thread process already faster than the free one. So each worker is pinned to its own
core (`os.sched_setaffinity`) with TensorFlow's intra- and inter-op threads at 1, set before the
worker runs anything; with more workers than cores they share the cores unpinned.

Workers are spawned (not forked: the parent may hold TensorFlow's threads) with
`concurrent.futures.ProcessPoolExecutor`; a job is a picklable value and `fn` a module-level
function. `workers=1` (or a single job) runs every job in this process, in order, as a plain
loop with TensorFlow's default threads. Results do not depend on the thread count: quality.py's
three seeds gave the same figures to the digit both ways.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from typing import Any, Callable, Iterator, Sequence


FLAG_HELP = ("Runs at a time, each in its own process on its own core (benchmarks/workers.py); 1: "
             "one after the other in this process, with TensorFlow's default threads.")


def cores() -> list[int]:
  """The CPU cores this process may run on."""
  return sorted(os.sched_getaffinity(0))


def _init_worker(core_queue, pin: bool) -> None:
  if pin:
    os.sched_setaffinity(0, {core_queue.get()})
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (after pinning)
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)


def run(jobs: Sequence[Any], fn: Callable[[Any], Any], workers: int) -> Iterator[tuple]:
  """Yields (job, fn(job)) as each job finishes (in order with one worker).

  A job that raises raises here, after the jobs already running are cancelled or finished."""
  if not isinstance(workers, int) or workers < 1:
    raise ValueError(f"Invalid number of workers {workers!r}: expected a positive integer.")
  if workers == 1 or len(jobs) <= 1:
    for job in jobs:
      yield job, fn(job)
    return
  workers = min(workers, len(jobs))
  available = cores()
  pin = workers <= len(available)
  context = multiprocessing.get_context("spawn")
  core_queue = context.Queue()
  for core in available[:workers]:
    core_queue.put(core)
  with concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=context, initializer=_init_worker, initargs=(core_queue, pin)) as pool:
    futures = {pool.submit(fn, job): job for job in jobs}
    try:
      for future in concurrent.futures.as_completed(futures):
        yield futures[future], future.result()
    finally:
      for future in futures:
        future.cancel()
