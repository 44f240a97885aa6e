"""Test session setup: the CPU is split into 2 logical devices before TensorFlow initialises, so
tf.distribute paths (mirrored, one child per device) run on a machine with no accelerator."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

NUM_LOGICAL_CPUS = 2

_cpu = tf.config.list_physical_devices("CPU")[0]
if tf.config.get_logical_device_configuration(_cpu) is None:
  tf.config.set_logical_device_configuration(
      _cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(NUM_LOGICAL_CPUS)])


# The files that take longest (measured on 2 idle cores, most first). With `--dist loadfile`
# each file runs whole on one worker; handing these out first (longest processing time first)
# keeps one worker from starting the crash tests while the other is nearly done. Only an order:
# a file missing here runs after them, in collection order.
_LONGEST_FIRST = (
    "tests/system/test_crash.py",
    "tests/benchmarks/test_benchmarks_smoke.py",
    "tests/evolution/test_loop.py",
    "tests/benchmarks/test_benchmarks_smoke_evolution.py",
    "tests/evolution/test_agents.py",
    "tests/evolution/test_access.py",
    "tests/train/test_trainer_reuse.py",
    "tests/benchmarks/test_benchmarks_smoke_agents.py",
    "tests/grouping/test_candidates.py",
    "tests/grouping/test_approximations.py",
    "tests/pretrained/test_imported_root_system.py",
    "tests/evolution/test_preflight.py",
    "tests/inspect/test_cli_lib.py",
    "tests/serving/test_client.py",
)


def pytest_configure(config):
  # pytest-xdist hands files out by their number of tests unless told not to; keep ours.
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
  del config
  rank = {path: i for i, path in enumerate(_LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
