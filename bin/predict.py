r"""Predicts a task of a served mtsys export over gRPC or REST, from image files or an .npz.

    python bin/predict.py --server=localhost:8500 --model_name=chars --task=digits a.png b.png
    python bin/predict.py --server=localhost:8501 --rest --model_name=chars --task=digits x.npz

Prints one line per image: the top class (and its name, where the task knows it) with its
probability, then the top five. Uses only TF Serving's public APIs, so it works unchanged
against tensorflow_model_server.
"""

from __future__ import annotations

import os
import sys

# The repo root replaces bin/ on the path, so bin/inspect.py cannot shadow the inspect module.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("server", None, "HOST:PORT of the model server (gRPC, or REST with --rest).")
flags.DEFINE_bool("rest", False, "Use the REST API (/v1/models/...) instead of gRPC.")
flags.DEFINE_string("model_name", None, "The served model's name.")
flags.DEFINE_string("task", None, "The task to predict (its signatures T / T@pixels).")
flags.DEFINE_integer("version", None, "A specific model version; default: the latest.")
flags.DEFINE_float("timeout", 30.0, "Seconds to wait for the server.")
flags.mark_flags_as_required(["server", "model_name", "task"])


def main(argv):
  from serving import client  # Heavy (TensorFlow) imports after flag parsing.
  try:
    print(client.run(FLAGS.server, FLAGS.model_name, FLAGS.task, argv[1:], rest=FLAGS.rest,
                     version=FLAGS.version, timeout=FLAGS.timeout))
  except (client.ClientError, ValueError, OSError) as e:
    print(f"Error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
