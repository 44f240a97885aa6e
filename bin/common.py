"""Flags shared by the entry points: configs, strategies and results files.

Only `bin/` defines flags; these helpers turn them into the library's arguments.
"""

from __future__ import annotations

import os
import sys

# TensorFlow's C++ INFO/WARNING chatter (oneDNN notes, iterator shutdowns) drowns the progress
# display; errors still show. Set before TensorFlow is first imported; a user's value wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
from absl import logging

from mtsys.config import loader
from mtsys.protos import mtsys_pb2

FLAGS = flags.FLAGS


def define_config_flags() -> None:
  flags.DEFINE_string(
      "config", None,
      f"A SystemConfig text proto file, or the name of a shipped config {loader.shipped_names()}.")
  flags.DEFINE_string("results_json", None, "Also write the results as JSON to this path.")
  flags.DEFINE_string(
      "root_checkpoint", None,
      "Replaces the config's root.checkpoint: a root directory made by bin/import_root.py, or an "
      "original ViT .npz / keras-hub preset / Model Garden checkpoint imported on the fly.")


def load_config() -> loader.Config:
  """The --config, with --root_checkpoint applied."""
  return loader.load(FLAGS.config, root_checkpoint=FLAGS.root_checkpoint or "")


def define_strategy_flags() -> None:
  flags.DEFINE_enum("strategy", None, ["one_device", "mirrored", "multi_worker_mirrored", "tpu"],
                    "tf.distribute strategy; default: the config's distribution.strategy.")
  flags.DEFINE_string("tpu", None, "TPU address or name for --strategy=tpu.")
  flags.DEFINE_integer("num_gpus", None, "GPUs to use; default: the config's.")
  flags.DEFINE_integer("cpu_devices", 0,
                       "Split the CPU into this many logical devices (testing data parallelism "
                       "without accelerators); 0 leaves it whole.")


def define_thread_flags() -> None:
  flags.DEFINE_integer("intra_op_threads", 0, "TensorFlow intra-op threads (0: its default).")
  flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow inter-op threads (0: its default).")


def apply_thread_flags() -> None:
  """Sets TensorFlow's thread pools from the flags; call before TensorFlow runs anything."""
  if FLAGS.intra_op_threads or FLAGS.inter_op_threads:
    import tensorflow as tf
    if FLAGS.intra_op_threads:
      tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
    if FLAGS.inter_op_threads:
      tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)


def distribution(config: loader.Config) -> mtsys_pb2.DistributionConfig:
  """The config's distribution settings with the command line's overrides."""
  dist = mtsys_pb2.DistributionConfig()
  dist.CopyFrom(config.proto.distribution)
  if FLAGS.strategy:
    dist.strategy = FLAGS.strategy
  if FLAGS.tpu is not None:
    dist.tpu = FLAGS.tpu
  if FLAGS.num_gpus is not None:
    dist.num_gpus = FLAGS.num_gpus
  return dist


def run(main) -> None:
  """absl's app.run: a user error (mtsys.errors.UserError) is one line and exit status 2; any
  other exception is a bug and keeps its traceback (exit status 1)."""
  from mtsys import errors  # no TensorFlow: keeps --help fast

  def guarded(argv):
    if not FLAGS["verbosity"].present:
      # The jobs print their own progress; TensorFlow's INFO notes (SavedModel writing, ...)
      # would bury it. --verbosity=0 brings them back.
      logging.set_verbosity(logging.WARNING)
    try:
      return main(argv)
    except errors.UserError as e:
      print(f"Error: {e}", file=sys.stderr)
      sys.exit(2)
  app.run(guarded)


def say(line: str) -> None:
  """Prints a progress line at once (stdout is buffered when piped to a log)."""
  print(line, flush=True)


def fault_injector():
  """The crash tests' fault injector from the environment (mtsys.faults); inert without it."""
  from mtsys import faults
  return faults.Injector.from_spec(os.environ.get(faults.ENV_VAR))
