r"""Exports a system as one TF Serving model version: per-task signatures sharing one set of
variables, a `routed` signature, warm-up requests and a `models.config`.

    python bin/export.py --system_dir=out/chars-lite --export_base=out/serving \
        --model_name=chars

writes out/serving/chars/<version>/ (validated against the library before it appears) and
out/serving/models.config. Serve it with bin/serve.py or TensorFlow Serving itself.
"""

from __future__ import annotations

import os
import sys

# The repo root replaces bin/ on the path, so bin/inspect.py cannot shadow the inspect module.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import flags

from bin import common

FLAGS = flags.FLAGS
flags.DEFINE_string("system_dir", None, "The system directory to export (only read).")
flags.DEFINE_string("export_base", None,
                    "Directory holding TF Serving model directories: the export goes to "
                    "EXPORT_BASE/MODEL_NAME/VERSION/, plus EXPORT_BASE/models.config.")
flags.DEFINE_string("model_name", None, "The TF Serving model name.")
flags.DEFINE_list("tasks", None,
                  "Tasks to export (private tasks only when named here); default: every public "
                  "task with a trained path.")
flags.DEFINE_integer("version", None, "Version number; default: the largest existing + 1.")
flags.DEFINE_string("default_task", None,
                    "The task behind the serving_default signature; default: the first task.")
flags.mark_flags_as_required(["system_dir", "export_base", "model_name"])


def main(argv):
  del argv
  from mtsys import export  # Heavy (TensorFlow) imports after flag parsing.
  result = export.export(FLAGS.system_dir, FLAGS.export_base, FLAGS.model_name,
                         tasks=FLAGS.tasks, version=FLAGS.version,
                         default_task=FLAGS.default_task)
  print(export.format_summary(result))


if __name__ == "__main__":
  common.run(main)
