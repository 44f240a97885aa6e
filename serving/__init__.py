"""A TensorFlow Serving compatible model server for SavedModels, in Python.

It speaks TF Serving's gRPC API (`tensorflow.serving.PredictionService` and `ModelService`, via
the `tensorflow_serving.apis` stubs) and its REST API (`/v1/models/...`, on aiohttp), with TF
Serving's flags, version policies, version labels, availability-preserving hot swaps and model
warm-up, and returns TF Serving's status codes and error messages. It serves any SavedModel: it
does not depend on the rest of mtsys.

Entry points: `serving.server_lib.Options` and `serving.server_lib.Server` (start/stop, used by
tests and `bin/serve.py`), or `serving.server_lib.run(options)` to serve until interrupted.

Deliberate differences from TF Serving 2.20 (each also noted where it is implemented):
* An input alias the signature lacks (gRPC Predict) gives TF Serving 2.5-2.13's message
  "input tensor alias not found in signature: a. Inputs expected to be in the set {x}." (the
  issue's contract); 2.14+ reports it via tensorflow/cc/saved_model/util.cc GetInputValues().
* --enable_signature_method_name_check defaults to true (TF Serving: false), so Classify only
  runs signatures whose method_name is tensorflow/serving/classify.
* A version that fails to load is not retried while it stays aspired (TF Serving retries within
  --max_num_load_retries); it is retried if its directory disappears and comes back.
* At startup a model with no version on disk fails the start ("... did not become available")
  instead of waiting forever.
* Regress and MultiInference are not implemented (UNIMPLEMENTED); warm-up records of those kinds
  fail the load.
* --file_system_poll_wait_seconds and --model_config_file_poll_wait_seconds accept fractions;
  port -1 binds a free ephemeral port; --host picks the bind address.
* JSON parse errors use rapidjson's texts ("JSON Parse error: Invalid value. at offset: N"),
  but offsets come from Python's parser and may differ slightly from rapidjson's; "Inf" (without
  "inity") is not accepted. Response JSON is compact, not rapidjson's pretty layout.
* A feed of the wrong dtype is reported like a session run ("Expects arg[i] to be float but
  string is provided"), with i the alias's index in sorted order. Shapes are not checked against
  the signature (as TF Serving, the graph decides).
* --rest_api_timeout_in_ms answers 504 when exceeded but cannot cancel the running TensorFlow
  function (a session run would be cancelled).
"""
