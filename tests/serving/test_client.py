"""The client (`serving/client.py`) and `bin/predict.py` against a served mtsys export.

A synthetic two-task system (`digits` with class names, `letters` without) is exported once per
module and served by one in-process server (gRPC and REST on free 127.0.0.1 ports). Answers are
compared with the library's in-process prediction (`mtsys.train.evaluate.predict_path`):
probabilities of `.npz` pixels within 1e-7 (the `T@pixels` logits are bit-identical), of PNG
files within the exporter's tolerance 1e-5 (decoded in the graph; see test_mtsys_export.py);
printed ones within that plus half the last printed digit.

`bin/predict.py` runs as a subprocess four times (each start imports TensorFlow, ~5 s of CPU),
all at once in one module fixture: gRPC with PNG files, REST with an `.npz`, an unknown model
(gRPC) and an unknown task (REST); the other protocol/input combinations and errors run through
`client.run`, the function the script prints.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import serving_testlib as lib
from mtsys import export
from mtsys.config import loader
from mtsys.export import serving_files
from mtsys.export import validate
from mtsys.system import synthetic
from mtsys.train import evaluate
from serving import client
from serving import server_lib

M = "chars"
_CONFIG = """
root { vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 2 seed: 5 }
task { name: "digits" num_classes: 3 files { npz: "unused.npz" validation_fraction: 0.2
       test_fraction: 0.2 } }
task { name: "letters" num_classes: 4 files { npz: "unused.npz" validation_fraction: 0.2
       test_fraction: 0.2 } }
"""
NAMES = {"digits": ["zero", "one", "two"]}
NUM_CLASSES = {"digits": 3, "letters": 4}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREDICT = os.path.join(REPO, "bin", "predict.py")
# "a.png: class 0 (zero) p=0.9914  [0: 0.9914, 1: 0.0086, 2: 0.0000]" (the name only if known)
LINE = re.compile(r"(?P<label>.+): class (?P<cls>\d+)(?: \((?P<name>[^()]*)\))? "
                  r"p=(?P<p>[01]\.\d{4})  \[(?P<ranked>\d+: [01]\.\d{4}(?:, \d+: [01]\.\d{4})*)\]")
PRINTED = 0.5e-4  # probabilities are printed with 4 decimals


class Served:
  """The module's export, server, input files and the library's predictions for them."""

  def __init__(self, base, store, result, server):
    self.store, self.result, self.server = store, result, server
    self.grpc_address = f"127.0.0.1:{server.grpc_port}"
    self.rest_address = f"127.0.0.1:{server.rest_port}"
    rng = np.random.default_rng(3)
    self.png_pixels = rng.integers(0, 256, (3, 10, 9, 1), np.uint8)
    self.png_paths = []
    for i, image in enumerate(self.png_pixels):
      path = str(base / f"img{i}.png")
      with open(path, "wb") as f:
        f.write(serving_files.encode_png(image))
      self.png_paths.append(path)
    self.npz_pixels = rng.integers(0, 256, (4, 9, 9), np.uint8)  # (N, H, W): gray, no C axis
    self.npz_path = str(base / "batch.npz")
    np.savez(self.npz_path, image=self.npz_pixels)
    self._logits = {}

  def library_probabilities(self, task: str, images: np.ndarray) -> np.ndarray:
    key = (task, images.shape, images.tobytes())
    if key not in self._logits:
      self._logits[key] = evaluate.predict_stored(self.store, task, images)
    return tf.nn.softmax(self._logits[key]).numpy()

  def expected(self, task: str, kind: str) -> tuple[list[str], np.ndarray]:
    """(labels, library probabilities) for the module's PNG files or its .npz."""
    if kind == "png":
      return self.png_paths, self.library_probabilities(task, self.png_pixels)
    labels = [f"{self.npz_path}[{i}]" for i in range(len(self.npz_pixels))]
    return labels, self.library_probabilities(task, self.npz_pixels[..., None])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  base = tmp_path_factory.mktemp("client")
  system_dir = str(base / "system")
  store = synthetic.make_system(system_dir, loader.parse(_CONFIG), seed=2, class_names=NAMES)
  result = export.export(system_dir, str(base / "models"), M, log=lambda _: None)
  server = server_lib.Server(lib.options(model_name=M,
                                         model_base_path=os.path.dirname(result.version_dir)))
  try:
    server.start()
    yield Served(base, store, result, server)
  finally:
    server.stop()


def _predict_args(served: Served, task: str, inputs: list[str], rest: bool = False,
                  model: str = M) -> list[str]:
  address = served.rest_address if rest else served.grpc_address
  return ([sys.executable, PREDICT, f"--server={address}", f"--model_name={model}",
           f"--task={task}"] + (["--rest"] if rest else []) + inputs)


@pytest.fixture(scope="module")
def cli(served):
  """bin/predict.py runs, started together: name -> (exit code, stdout, stderr)."""
  runs = {
      "grpc_png": _predict_args(served, "digits", served.png_paths),
      "rest_npz": _predict_args(served, "letters", [served.npz_path], rest=True),
      "unknown_model": _predict_args(served, "digits", served.png_paths[:1], model="nope"),
      "unknown_task": _predict_args(served, "nope", [served.npz_path], rest=True),
  }
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  processes = {}
  results = {}
  try:
    for name, args in runs.items():
      processes[name] = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    for name, process in processes.items():
      stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
      results[name] = (process.returncode, stdout, stderr)
  finally:
    for process in processes.values():
      if process.poll() is None:
        process.kill()
        process.communicate()
  return results


def _parse(line: str) -> dict:
  match = LINE.fullmatch(line)
  assert match, f"not in the documented format: {line!r}"
  ranked = [(int(k), float(p)) for k, p in
            (item.split(": ") for item in match.group("ranked").split(", "))]
  return dict(label=match.group("label"), cls=int(match.group("cls")), name=match.group("name"),
              p=float(match.group("p")), ranked=ranked)


def _check_report(text: str, task: str, labels: list[str], probabilities: np.ndarray,
                  tolerance: float) -> int:
  """The printed report against the library: one line per input; returns the lines checked."""
  lines = text.rstrip("\n").split("\n")
  assert len(lines) == len(labels) == len(probabilities)
  k = NUM_CLASSES[task]
  for line, label, want in zip(lines, labels, probabilities):
    got = _parse(line)
    assert got["label"] == label
    assert got["cls"] == int(np.argmax(want))
    assert got["name"] == (NAMES[task][got["cls"]] if task in NAMES else None)
    assert abs(got["p"] - want[got["cls"]]) <= PRINTED + tolerance
    assert [c for c, _ in got["ranked"]] == list(np.argsort(-want)[:5])
    assert len(got["ranked"]) == min(5, k)
    for c, p in got["ranked"]:
      assert abs(p - want[c]) <= PRINTED + tolerance, (line, want)
  return len(lines)


# --- bin/predict.py -------------------------------------------------------------------------------

def test_predict_script_over_grpc_with_png_files_prints_the_librarys_classes(served, cli):
  code, stdout, stderr = cli["grpc_png"]
  assert code == 0, stderr
  labels, want = served.expected("digits", "png")
  assert _check_report(stdout, "digits", labels, want, validate.TOLERANCE) == 3
  # The script prints exactly what client.run returns.
  assert stdout == client.run(served.grpc_address, M, "digits", served.png_paths) + "\n"


def test_predict_script_over_rest_with_an_npz_prints_the_librarys_classes(served, cli):
  code, stdout, stderr = cli["rest_npz"]
  assert code == 0, stderr
  labels, want = served.expected("letters", "npz")
  assert _check_report(stdout, "letters", labels, want, 1e-7) == 4
  assert stdout == client.run(served.rest_address, M, "letters", [served.npz_path],
                              rest=True) + "\n"


def test_predict_script_unknown_model_exits_2_with_the_servers_message(cli):
  code, stdout, stderr = cli["unknown_model"]
  assert code == 2 and stdout == ""
  assert "Error: NOT_FOUND: Servable not found for request: Latest(nope)\n" in stderr


def test_predict_script_unknown_task_exits_2_naming_the_signature(cli):
  code, stdout, stderr = cli["unknown_task"]
  assert code == 2 and stdout == ""
  assert ('Error: HTTP 400: Serving signature name: "nope@pixels" not found in signature def\n'
          in stderr)


# --- client.run / predict_task: every protocol and input kind -------------------------------------

@pytest.mark.parametrize("rest", [False, True], ids=["grpc", "rest"])
@pytest.mark.parametrize("kind", ["png", "npz"])
@pytest.mark.parametrize("task", ["digits", "letters"])
def test_run_equals_the_library_for_each_protocol_input_kind_and_task(served, rest, kind, task):
  address = served.rest_address if rest else served.grpc_address
  paths = served.png_paths if kind == "png" else [served.npz_path]
  labels, want = served.expected(task, kind)
  tolerance = validate.TOLERANCE if kind == "png" else 1e-7
  text = client.run(address, M, task, paths, rest=rest, version=1)
  assert _check_report(text, task, labels, want, tolerance) == len(labels)
  # The structured result too: classes, all probabilities, names only where the task has them.
  connection = client.connect(address, rest=rest)
  try:
    result = client.predict_task(connection, M, task, client.read_inputs(paths)[1])
  finally:
    connection.close()
  assert result.classes.dtype == np.int64 and result.probabilities.dtype == np.float32
  np.testing.assert_array_equal(result.classes, np.argmax(want, -1))
  np.testing.assert_allclose(result.probabilities, want, rtol=0, atol=tolerance)
  if task in NAMES:
    assert result.class_names == [NAMES[task][c] for c in result.classes]
  else:
    assert result.class_names is None


def test_signature_names_over_both_protocols_are_the_exports(served):
  want = sorted(served.result.signatures + ["__saved_model_init_op"])
  for rest in (False, True):
    connection = client.connect(served.rest_address if rest else served.grpc_address, rest=rest)
    try:
      assert connection.signature_names(M) == want
    finally:
      connection.close()


@pytest.mark.parametrize("rest", [False, True], ids=["grpc", "rest"])
def test_run_errors_carry_the_servers_code_and_message(served, rest):
  address = served.rest_address if rest else served.grpc_address
  with pytest.raises(client.ClientError) as e:
    client.run(address, "nope", "digits", served.png_paths[:1], rest=rest)
  assert (e.value.code, e.value.message) == (
      "HTTP 404" if rest else "NOT_FOUND", "Servable not found for request: Latest(nope)")
  with pytest.raises(client.ClientError) as e:
    client.run(address, M, "nope", served.png_paths[:1], rest=rest)
  # TF Serving's two phrasings: the REST handler's signature lookup, gRPC's predict_util.cc.
  assert (e.value.code, e.value.message) == (
      ("HTTP 400", 'Serving signature name: "nope" not found in signature def') if rest else
      ("FAILED_PRECONDITION", 'Serving signature key "nope" not found.'))
  with pytest.raises(client.ClientError) as e:
    client.run(address, M, "digits", [served.npz_path], rest=rest, version=7)
  assert e.value.message == f"Servable not found for request: Specific({M}, 7)"


def test_rest_against_the_grpc_port_is_an_error_the_script_reports(served):
  # bin/predict.py reports exactly these (exit 2); anything else escapes as a traceback.
  with pytest.raises((client.ClientError, ValueError, OSError)):
    client.run(served.grpc_address, M, "digits", served.png_paths[:1], rest=True, timeout=10)


# --- Bad inputs: clear ValueErrors ----------------------------------------------------------------

def test_read_inputs_with_no_paths_is_a_clear_error():
  with pytest.raises(ValueError) as e:
    client.read_inputs([])
  assert str(e.value) == "No inputs: give image files (PNG, JPEG, GIF, BMP) or one .npz."


def test_read_inputs_rejects_npz_without_an_image_array_or_with_the_wrong_dtype_or_rank(
    tmp_path):
  cases = {
      "two.npz": (dict(a=np.zeros((1, 2, 2), np.uint8), b=np.zeros((1, 2, 2), np.uint8)),
                  "{p}: expected an array 'image' (or a single array); found ['a', 'b']."),
      "empty.npz": ({}, "{p}: expected an array 'image' (or a single array); found []."),
      "float.npz": (dict(image=np.zeros((2, 3, 3), np.float32)),
                    "{p}: 'image' must be uint8 (N, H, W) or (N, H, W, C); got float32 (2, 3, 3)."),
      "flat.npz": (dict(pixels=np.zeros((3, 3), np.uint8)),
                   "{p}: 'pixels' must be uint8 (N, H, W) or (N, H, W, C); got uint8 (3, 3)."),
      "five.npz": (dict(image=np.zeros((1, 2, 2, 1, 1), np.uint8)),
                   "{p}: 'image' must be uint8 (N, H, W) or (N, H, W, C); got uint8 "
                   "(1, 2, 2, 1, 1)."),
  }
  for name, (arrays, message) in cases.items():
    path = str(tmp_path / name)
    np.savez(path, **arrays)
    with pytest.raises(ValueError) as e:
      client.read_inputs([path])
    assert str(e.value) == message.format(p=path)
  assert len(cases) == 5


def test_read_inputs_takes_an_npz_single_array_of_any_name_and_adds_the_channel_axis(tmp_path):
  path = str(tmp_path / "x.npz")
  pixels = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
  np.savez(path, pixels=pixels)
  labels, images = client.read_inputs([path])
  assert labels == [f"{path}[0]", f"{path}[1]"]
  np.testing.assert_array_equal(images, pixels[..., None])


def test_read_inputs_names_a_file_that_is_not_an_npz_archive(tmp_path):
  path = str(tmp_path / "broken.npz")
  with open(path, "wb") as f:
    f.write(b"this is not a zip archive")
  with pytest.raises(ValueError) as e:
    client.read_inputs([path])
  assert str(e.value).startswith(f"{path}: ") and "pickle" not in str(e.value)


def test_read_inputs_rejects_an_npy_file_named_npz_with_a_value_error(tmp_path):
  path = str(tmp_path / "array.npz")
  with open(path, "wb") as f:
    np.save(f, np.zeros((2, 3, 3), np.uint8))
  with pytest.raises(ValueError) as e:
    client.read_inputs([path])
  assert str(e.value).startswith(f"{path}: ")


def test_read_inputs_rejects_mixing_an_npz_with_images(served):
  for paths in ([served.png_paths[0], served.npz_path], [served.npz_path, served.png_paths[0]]):
    with pytest.raises(ValueError) as e:
      client.read_inputs(paths)
    assert str(e.value) == "Give either one .npz or image files (not several .npz, nor both)."


@pytest.mark.parametrize("server", ["localhost", "localhost:", "localhost:http", "host:-1",
                                    "8500"])
def test_a_bad_server_address_is_a_clear_error(served, server):
  for rest in (False, True):
    with pytest.raises(ValueError) as e:
      client.run(server, M, "digits", served.png_paths[:1], rest=rest)
    assert str(e.value) == (f"Invalid server {server!r}: expected HOST:PORT, e.g. "
                            f"localhost:8500.")


# --- RestClient -----------------------------------------------------------------------------------

def _nodelay(connection) -> int:
  return connection.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_rest_client_sets_tcp_nodelay_on_every_connection_it_opens(served, monkeypatch):
  # Python 3.11.7's http.client sets TCP_NODELAY itself, older ones do not: connect as they do,
  # so the client must set it on its own.
  def connect_with_nagle(self):
    self.sock = socket.create_connection((self.host, self.port), self.timeout,
                                         self.source_address)

  monkeypatch.setattr(http.client.HTTPConnection, "connect", connect_with_nagle)
  # The control: a plain connection now keeps Nagle's algorithm on.
  plain = http.client.HTTPConnection("127.0.0.1", served.server.rest_port, timeout=30)
  try:
    plain.request("GET", f"/v1/models/{M}")
    assert plain.getresponse().read()
    assert _nodelay(plain) == 0
  finally:
    plain.close()
  rest = client.RestClient(served.rest_address)
  try:
    assert rest.signature_names(M)
    first = rest._connection.sock  # pylint: disable=protected-access
    assert _nodelay(rest._connection) != 0  # pylint: disable=protected-access
    # After the connection closes, the next request reconnects, again without Nagle.
    rest._connection.close()  # pylint: disable=protected-access
    assert rest.signature_names(M)
    assert rest._connection.sock is not first  # pylint: disable=protected-access
    assert _nodelay(rest._connection) != 0  # pylint: disable=protected-access
  finally:
    rest.close()
