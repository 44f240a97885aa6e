"""The exporter: one SavedModel whose per-task signatures share variables, equal to the library.

A synthetic system (random weights, exactly known paths; one task at another image size, one
private, one with class names) is exported once per module; the tests load it the ways TF
Serving and users do and compare every signature with `mtsys.train.evaluate.predict_path`.
"""

import hashlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from mtsys import export
from mtsys.config import loader
from mtsys.export import audit
from mtsys.export import serving_files
from mtsys.system import store as mstore
from mtsys.system import synthetic
from mtsys.train import evaluate

_CONFIG = """
root { vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 2 seed: 3 }
task { name: "digits" num_classes: 3 files { npz: "unused.npz" validation_fraction: 0.2
       test_fraction: 0.2 } }
task { name: "shapes/big" num_classes: 5 files { npz: "unused.npz" validation_fraction: 0.2
       test_fraction: 0.2 } }
task { name: "letters" num_classes: 4 files { npz: "unused.npz" validation_fraction: 0.2
       test_fraction: 0.2 } }
task { name: "secret" num_classes: 2 files { npz: "unused.npz" validation_fraction: 0.2
       test_fraction: 0.2 } access { visibility: PRIVATE } }
"""
_PUBLIC = ["digits", "shapes/big", "letters"]
_NAMES = {"digits": ["zero", "one", "two"]}


def _config(text=_CONFIG):
  return loader.parse(text)


def _tree_digest(root):
  """A digest of every file below root (names and bytes): proves a directory was not written."""
  h = hashlib.sha256()
  for directory, _, files in sorted(os.walk(root)):
    for name in sorted(files):
      path = os.path.join(directory, name)
      h.update(path.encode())
      with open(path, "rb") as f:
        h.update(f.read())
  return h.hexdigest()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  base = tmp_path_factory.mktemp("export")
  system_dir = str(base / "system")
  synthetic.make_system(system_dir, _config(), seed=1, adapter_dim=8,
                        image_sizes={"shapes/big": 12}, class_names=_NAMES)
  before = _tree_digest(system_dir)
  result = export.export(system_dir, str(base / "serving"), "multi", log=lambda _: None)
  assert _tree_digest(system_dir) == before  # export never writes to the system
  loaded = tf.saved_model.load(result.version_dir)
  return result, mstore.Store.open(system_dir), loaded


def _inprocess(store, task, images):
  return evaluate.predict_stored(store, task, images)


def _images(seed, n, height, width, channels):
  return np.random.default_rng(seed).integers(0, 256, (n, height, width, channels), np.uint8)


def test_public_tasks_are_exported_with_every_signature_key(exported):
  result, _, loaded = exported
  assert result.tasks == _PUBLIC and result.version == 1
  want = []
  for task in _PUBLIC:
    want += [task, task + "@pixels", task + "@classify"]
  want += ["routed", "routed@pixels", "serving_default"]
  assert sorted(loaded.signatures) == sorted(want) == sorted(result.signatures)
  assert os.path.basename(result.version_dir) == "1"
  assert not [d for d in os.listdir(os.path.dirname(result.version_dir)) if d != "1"]


@pytest.mark.parametrize("task", _PUBLIC)
@pytest.mark.parametrize("height, width, channels", [(8, 8, 1), (13, 9, 1), (8, 8, 3),
                                                     (20, 16, 4)])
def test_pixels_signature_is_bit_identical_to_the_library(exported, task, height, width,
                                                          channels):
  _, store, loaded = exported
  images = _images(height * width + channels, 5, height, width, channels)
  out = loaded.signatures[task + "@pixels"](image=tf.constant(images))
  # The library reads 1 or 3 channels: alpha is dropped first, as the image loaders do.
  library_input = images[..., :3] if channels == 4 else images
  want = _inprocess(store, task, library_input)
  assert out["logits"].shape == want.shape and want.shape[0] == 5
  np.testing.assert_array_equal(out["logits"].numpy(), want)
  np.testing.assert_array_equal(out["classes"].numpy(), np.argmax(want, -1))
  np.testing.assert_allclose(out["probabilities"].numpy(), tf.nn.softmax(want).numpy(),
                             rtol=0, atol=1e-7)


def test_bytes_and_classify_signatures_agree_with_the_library_on_decoded_pixels(exported):
  _, store, loaded = exported
  for task in _PUBLIC:
    images = _images(7, 3, 10, 10, 1)
    pngs = [serving_files.encode_png(i) for i in images]
    out = loaded.signatures[task](image_bytes=tf.constant(pngs))
    want = _inprocess(store, task, images)
    np.testing.assert_allclose(out["logits"].numpy(), want, rtol=0, atol=1e-5)
    classify = loaded.signatures[task + "@classify"](
        inputs=tf.constant([serving_files.example_bytes(p) for p in pngs]))
    k = want.shape[1]
    assert classify["classes"].shape == classify["scores"].shape == (3, k)
    np.testing.assert_allclose(classify["scores"].numpy(), tf.nn.softmax(want).numpy(),
                               rtol=0, atol=1e-6)
    labels = _NAMES.get(task, [str(i) for i in range(k)])
    assert [c.decode() for c in classify["classes"].numpy()[0]] == labels


def test_class_names_output_only_where_the_task_knows_them(exported):
  _, _, loaded = exported
  image = tf.constant(_images(1, 4, 8, 8, 1))
  out = loaded.signatures["digits@pixels"](image=image)
  names = [n.decode() for n in out["class_names"].numpy()]
  assert names == [_NAMES["digits"][c] for c in out["classes"].numpy()]
  assert "class_names" not in loaded.signatures["letters@pixels"](image=image)


def test_routed_runs_each_example_through_its_own_task(exported):
  _, store, loaded = exported
  tasks = ["letters", "digits", "shapes/big", "digits", "letters", "letters"]
  images = _images(3, len(tasks), 8, 8, 1)
  out = loaded.signatures["routed@pixels"](task=tf.constant(tasks), image=tf.constant(images))
  pngs = tf.constant([serving_files.encode_png(i) for i in images])
  out_bytes = loaded.signatures["routed"](task=tf.constant(tasks), image_bytes=pngs)
  assert out["probabilities"].shape == (len(tasks), 5)
  compared = 0
  for row, task in enumerate(tasks):
    want = tf.nn.softmax(_inprocess(store, task, images[row:row + 1])).numpy()[0]
    k = len(want)
    for result in (out, out_bytes):
      np.testing.assert_allclose(result["probabilities"].numpy()[row, :k], want, atol=1e-5)
      assert np.all(result["probabilities"].numpy()[row, k:] == 0)
      assert result["num_classes"].numpy()[row] == k
      assert result["classes"].numpy()[row] == np.argmax(want)
      np.testing.assert_allclose(result["scores"].numpy()[row], want.max(), atol=1e-5)
      name = result["class_names"].numpy()[row].decode()
      assert name == _NAMES.get(task, [str(i) for i in range(k)])[np.argmax(want)]
      compared += 1
  assert compared == 2 * len(tasks)


def test_routed_batch_of_one_task_equals_its_own_signature(exported):
  _, _, loaded = exported
  images = tf.constant(_images(4, 3, 8, 8, 1))
  for task in _PUBLIC:
    routed = loaded.signatures["routed@pixels"](task=tf.constant([task] * 3), image=images)
    own = loaded.signatures[task + "@pixels"](image=images)["probabilities"].numpy()
    k = own.shape[1]
    np.testing.assert_allclose(routed["probabilities"].numpy()[:, :k], own, rtol=0, atol=1e-6)
    assert np.all(routed["probabilities"].numpy()[:, k:] == 0)


def test_routed_empty_batch_gives_empty_outputs(exported):
  _, _, loaded = exported
  out = loaded.signatures["routed@pixels"](task=tf.constant([], tf.string),
                                           image=tf.zeros([0, 8, 8, 1], tf.uint8))
  assert out["probabilities"].shape == (0, 5) and out["classes"].shape == (0,)


def test_routed_unknown_task_fails_naming_it(exported):
  _, _, loaded = exported
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=(r"Unknown task `nope` in input `task`; expected one of "
                            r"\[digits, shapes/big, letters\]")):
    loaded.signatures["routed@pixels"](task=tf.constant(["digits", "nope"]),
                                       image=tf.constant(_images(0, 2, 8, 8, 1)))


def test_each_task_signature_reads_only_its_own_paths_variables(exported):
  result, store, loaded = exported
  # The exporter's own audit (of the functions it serialized) is recorded per signature.
  paths = store.paths()
  for task in _PUBLIC:
    for key in (task, task + "@pixels", task + "@classify"):
      assert result.variables_read[key] == sorted(paths[task].component_ids)
  # And the loaded SavedModel, audited independently: every variable a task's signature can read
  # holds a weight of one of its own components, and it reads as many as its path has.
  variables = [v for v in tf.train.TrackableView(loaded).descendants()
               if isinstance(v, tf.Variable)]
  labelled = [(v, str(i)) for i, v in enumerate(variables)]
  for task in _PUBLIC:
    own = [w for c in paths[task].component_ids
           for w in store.read_weights(store.read_component_spec(c))]
    read = audit.variables_read(loaded.signatures[task + "@pixels"], labelled)
    assert len(read) == len(own)
    for label in read:
      value = variables[int(label)].numpy()
      assert any(w.shape == value.shape and np.array_equal(w, value) for w in own), label
  # A component used by every task is saved once: variables = distinct components' weights.
  distinct = {c for p in paths.values() if p.task in _PUBLIC for c in p.component_ids}
  assert len(variables) == sum(len(store.read_weights(store.read_component_spec(c)))
                               for c in distinct)


def test_loads_like_the_model_server_with_the_v1_loader(exported):
  result, _, loaded = exported
  images = _images(5, 2, 8, 8, 1)
  tasks = np.array([b"digits", b"letters"], dtype=object)
  keys = ("digits@pixels", "shapes/big@pixels", "routed@pixels")
  want = {"routed@pixels": loaded.signatures["routed@pixels"](task=tf.constant(tasks),
                                                             image=tf.constant(images))}
  for key in keys[:2]:
    want[key] = loaded.signatures[key](image=tf.constant(images))
  compared = 0
  # A fresh graph and session, signatures run by the tensor names in their SignatureDefs: how
  # the C++ model server runs them.
  with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], result.version_dir)
    for key in keys:
      sig = meta.signature_def[key]
      feed = {sig.inputs["image"].name: images}
      if "task" in sig.inputs:
        feed[sig.inputs["task"].name] = tasks
      fetches = {k: v.name for k, v in sig.outputs.items()}
      got = sess.run(fetches, feed)
      assert set(got) == set(want[key])
      for name in fetches:
        np.testing.assert_array_equal(got[name], want[key][name].numpy())
        compared += 1
  assert compared == 4 + 3 + 5  # digits has class names; shapes/big does not


def test_graph_has_only_standard_tensorflow_ops_and_classify_method_names(exported):
  result, _, _ = exported
  saved = serving_files.read_saved_model(result.version_dir)
  meta = saved.meta_graphs[0]
  ops = {n.op for n in meta.graph_def.node}
  for function in meta.graph_def.library.function:
    ops.update(n.op for n in function.node_def)
  assert len(ops) > 20
  nonstandard = sorted(op for op in ops if not hasattr(tf.raw_ops, op))
  assert not nonstandard
  for task in _PUBLIC:
    assert meta.signature_def[task + "@classify"].method_name == "tensorflow/serving/classify"
    assert meta.signature_def[task].method_name == "tensorflow/serving/predict"
    assert set(meta.signature_def[task + "@classify"].inputs) == {"inputs"}
    assert set(meta.signature_def[task + "@classify"].outputs) == {"classes", "scores"}


def test_warmup_requests_cover_every_signature(exported):
  result, _, _ = exported
  logs = serving_files.read_warmup(result.version_dir)
  keys = []
  for log in logs:
    kind = log.WhichOneof("log_type")
    request = getattr(log, kind).request
    assert request.model_spec.name == "multi"
    keys.append(request.model_spec.signature_name)
    if kind == "classify_log":
      assert request.model_spec.signature_name.endswith("@classify")
    else:
      assert kind == "predict_log" and request.inputs
  assert sorted(keys) == sorted(result.signatures) and len(logs) == result.warmup_records
  assert isinstance(logs[0], prediction_log_pb2.PredictionLog)


def test_provenance_and_models_config(exported):
  result, store, _ = exported
  with open(os.path.join(result.version_dir, "assets.extra", "mtsys_export.json")) as f:
    provenance = json.load(f)
  assert provenance["model_name"] == "multi" and provenance["version"] == 1
  assert provenance["system_dir"] == store.root
  for task in _PUBLIC:
    assert provenance["tasks"][task]["component_ids"] == list(store.paths()[task].component_ids)
  assert provenance["tasks"]["shapes/big"]["image_size"] == 12
  with open(result.model_config_file) as f:
    text = f.read()
  assert 'name: "multi"' in text
  assert f'base_path: "{os.path.dirname(result.version_dir)}"' in text
  assert 'model_platform: "tensorflow"' in text
