r"""Serves SavedModels over TF Serving's gRPC and REST APIs (a Python tensorflow_model_server).

    python bin/serve.py --model_name=m --model_base_path=/abs/path/m --rest_api_port=8501
    python bin/serve.py --model_config_file=models.config --model_config_file_poll_wait_seconds=60

The flags are tensorflow_model_server's (names and defaults); MODEL_BASE_PATH holds integer-named
version directories, each a SavedModel. The library is serving/ (serving.server_lib); this script
only turns flags into serving.server_lib.Options.
"""

from __future__ import annotations

import os
import sys

# The repo root replaces bin/ on the path, so bin/inspect.py cannot shadow the inspect module.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TensorFlow's C++ INFO/WARNING chatter; errors still show. Set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("port", 8500, "TCP port to listen on for gRPC API. Disabled if 0 (-1: any "
                     "free port, logged).")
flags.DEFINE_integer("rest_api_port", 0, "Port to listen on for HTTP/REST API. If set to zero "
                     "HTTP/REST API will not be exported. Must differ from --port (-1: any free "
                     "port, logged).")
flags.DEFINE_string("model_name", "default", "Name of model (ignored if --model_config_file "
                    "is set).")
flags.DEFINE_string("model_base_path", "", "Path to export (ignored if --model_config_file is "
                    "set, otherwise required).")
flags.DEFINE_string("model_config_file", "", "If non-empty, read an ascii ModelServerConfig "
                    "protobuf from this file and serve the models in it (then --model_name and "
                    "--model_base_path are ignored).")
flags.DEFINE_float("model_config_file_poll_wait_seconds", 0, "Interval in seconds between polls "
                   "of --model_config_file; 0 reads it once.")
flags.DEFINE_float("file_system_poll_wait_seconds", 1, "Interval in seconds between polls of "
                   "the base paths for new model versions; 0 polls once, < 0 never. (TF Serving "
                   "takes an integer; fractions are accepted.)")
flags.DEFINE_integer("rest_api_timeout_in_ms", 30000, "Timeout for HTTP/REST API calls.")
flags.DEFINE_integer("rest_api_num_threads", 0, "Threads for HTTP/REST request processing; 0: "
                     "4 x the CPU count.")
flags.DEFINE_integer("grpc_max_threads", 0, "Max gRPC server threads; 0: 4 x the CPU count.")
flags.DEFINE_integer("tensorflow_intra_op_parallelism", 0, "Threads to parallelize the execution "
                     "of an individual op; 0: auto.")
flags.DEFINE_integer("tensorflow_inter_op_parallelism", 0, "Ops that can run simultaneously; "
                     "0: auto.")
flags.DEFINE_bool("enable_model_warmup", True, "Replay assets.extra/tf_serving_warmup_requests "
                  "when a version loads.")
flags.DEFINE_bool("enable_signature_method_name_check", True, "Check SignatureDef method names "
                  "(Classify needs tensorflow/serving/classify). TF Serving's default is false.")
flags.DEFINE_bool("allow_version_labels_for_unavailable_models", False, "Allow assigning "
                  "unused version labels to versions that are not available yet.")
flags.DEFINE_string("host", "0.0.0.0", "Address to bind (not a TF Serving flag).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unknown argument: {argv[1]}")
  from serving import errors  # Heavy (TensorFlow) imports after flag parsing.
  from serving import server_lib
  options = server_lib.Options(**{
      field: getattr(FLAGS, field) for field in server_lib.Options.__dataclass_fields__})
  try:
    server_lib.run(options)
  except errors.ServingError as e:
    print(f"Failed to start server. Error: {e.to_string()}", file=sys.stderr)
    return 255
  return 0


if __name__ == "__main__":
  app.run(main)
