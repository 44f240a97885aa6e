r"""Trains muNet's baselines (full fine-tuning, multi-head, residual adapters) on a config's tasks.

    python bin/baselines.py --config=chars-lite --output_dir=/tmp/baselines \
        --results_json=/tmp/baselines/results.json
"""

from __future__ import annotations

import os
import sys

# The repo root replaces bin/ on the path, so bin/inspect.py cannot shadow the inspect module.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import flags

from bin import common

FLAGS = flags.FLAGS
common.define_config_flags()
common.define_strategy_flags()
# --help lists the shared flags too, not only --helpfull.
flags.adopt_module_key_flags(common)
flags.DEFINE_string("output_dir", None, "Directory for the baseline systems (one per method).")
flags.DEFINE_list("tasks", None, "Only these tasks (default: all of the config's).")
flags.DEFINE_list("methods", None, "Only these methods: full_finetune, multi_head, "
                  "residual_adapters (default: the config's baselines.methods).")
flags.DEFINE_integer("verbose", 0, "Keras progress output: 0 none, 1 bar, 2 a line per epoch.")
flags.mark_flags_as_required(["config", "output_dir"])


def main(argv):
  del argv
  config = common.load_config()
  from mtsys.jobs import baselines  # Heavy (TensorFlow) imports after flag parsing.
  options = baselines.Options(
      output_dir=FLAGS.output_dir, distribution=common.distribution(config),
      cpu_devices=FLAGS.cpu_devices, tasks=FLAGS.tasks, methods=FLAGS.methods,
      verbose=FLAGS.verbose, results_json=FLAGS.results_json)
  baselines.run(config, options, faults=common.fault_injector(), out=common.say)


if __name__ == "__main__":
  common.run(main)
