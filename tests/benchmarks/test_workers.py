"""benchmarks/workers.py: jobs in one-core worker processes (benchmarks/quality.py --workers)."""

import math
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks import workers  # noqa: E402


def test_one_worker_runs_the_jobs_here_in_order():
  done = list(workers.run([9, 4, 1], math.sqrt, 1))
  assert done == [(9, 3.0), (4, 2.0), (1, 1.0)]
  # In this process: the affinity is this process's, not one pinned core.
  (_, affinity), = workers.run([0], os.sched_getaffinity, 1)
  assert affinity == os.sched_getaffinity(0)


def test_workers_return_every_result_each_pinned_to_one_of_our_cores():
  cores = set(workers.cores())
  if len(cores) < 2:
    pytest.skip("needs two cores to pin two workers")
  done = list(workers.run([0, 0, 0], os.sched_getaffinity, 2))
  assert len(done) == 3
  for job, affinity in done:
    assert job == 0
    assert len(affinity) == 1 and affinity <= cores, (affinity, cores)


def test_a_failing_job_raises_its_error():
  with pytest.raises(ValueError, match="math domain error"):
    list(workers.run([4.0, -1.0], math.sqrt, 2))


@pytest.mark.parametrize("bad", [0, -1, 1.5, None])
def test_bad_worker_counts_are_refused(bad):
  with pytest.raises(ValueError, match=f"Invalid number of workers {bad!r}: expected a positive"):
    list(workers.run([1.0], math.sqrt, bad))
