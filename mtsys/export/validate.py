"""Checks a written export before it is published: reload it, run every warm-up request, and
compare each answer with the library's own in-process prediction of the same task.

Tolerances: `T@pixels` must equal the in-process path bit for bit (same preprocessing function,
same components); `T`, `T@classify` and the routed signatures run the same path on the decoded
pixels, so they must agree within `TOLERANCE` (the routed ones see sub-batches, where a matmul
kernel may sum in another order).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from mtsys import errors
from mtsys.export import graph as mgraph
from mtsys.export import serving_files
from mtsys.export import signatures as msig
from mtsys.system import assembly
from mtsys.train import evaluate

TOLERANCE = 1e-5


@dataclasses.dataclass(frozen=True)
class Sample:
  """One test image per task, as pixels and as PNG bytes."""

  pixels: np.ndarray  # uint8 [S, S, C]
  png: bytes


def samples(system: mgraph.SystemGraph) -> list[Sample]:
  out = []
  for i, task in enumerate(system.tasks):
    image = serving_files.sample_image(task.image_size, system.channels, seed=i)
    out.append(Sample(image, serving_files.encode_png(image)))
  return out


def warmup_requests(system: mgraph.SystemGraph,
                    task_samples: Sequence[Sample]) -> list[serving_files.WarmupRequest]:
  """One request per signature: routed and default first, then T, T@pixels, T@classify."""
  names = np.array([t.name.encode() for t in system.tasks], dtype=object)
  size = max(s.pixels.shape[0] for s in task_samples)
  same_size = np.stack([serving_files.sample_image(size, system.channels, seed=i)
                        for i in range(len(task_samples))])
  requests = [
      serving_files.WarmupRequest(msig.ROUTED, {
          "task": names,
          "image_bytes": np.array([s.png for s in task_samples], dtype=object)}),
      serving_files.WarmupRequest(msig.ROUTED + msig.PIXELS, {"task": names, "image": same_size}),
      serving_files.WarmupRequest(msig.DEFAULT, {
          "image_bytes": np.array([task_samples[0].png], dtype=object)}),
  ]
  for task, sample in zip(system.tasks, task_samples):
    requests += [
        serving_files.WarmupRequest(task.name, {
            "image_bytes": np.array([sample.png], dtype=object)}),
        serving_files.WarmupRequest(task.name + msig.PIXELS, {"image": sample.pixels[None]}),
        serving_files.WarmupRequest(task.name + msig.CLASSIFY,
                                    examples=[serving_files.example_bytes(sample.png)]),
    ]
  return requests


def inprocess_predictor(system: mgraph.SystemGraph, specs, weights,
                        task_index: int) -> evaluate.PathPredictor:
  """The library's own prediction (fresh layers, tf.data preprocessing, a Keras model)."""
  task = system.tasks[task_index]
  planned = [assembly.PlannedComponent(specs[c], weights[c]) for c in task.path.component_ids]
  return evaluate.PathPredictor(planned, image_size=task.image_size, channels=system.channels)


def _softmax(logits: np.ndarray) -> np.ndarray:
  return tf.nn.softmax(logits).numpy()


def _check(what: str, got: np.ndarray, want: np.ndarray, exact: bool) -> None:
  got, want = np.asarray(got), np.asarray(want)
  if got.shape != want.shape:
    raise errors.ExportError(
        f"Export validation failed: {what} has shape {got.shape}; the library "
        f"gives {want.shape}.")
  diff = float(np.max(np.abs(got - want))) if got.size else 0.0
  if (exact and not np.array_equal(got, want)) or diff > TOLERANCE:
    raise errors.ExportError(
        f"Export validation failed: {what} differs from the library's in-process "
        f"prediction by up to {diff:g} (allowed: "
        f"{'none' if exact else TOLERANCE}).")


def check_export(version_dir: str, system: mgraph.SystemGraph, specs: Mapping, weights: Mapping,
                 requests: Sequence[serving_files.WarmupRequest],
                 default_index: int) -> int:
  """Reloads the SavedModel and checks every request's outputs; returns how many were compared.

  Raises:
    ValueError: a signature is missing or an output differs from the in-process path.
  """
  loaded = tf.saved_model.load(version_dir, tags=["serve"])
  missing = sorted(set(msig.signature_keys([t.name for t in system.tasks]))
                   - set(loaded.signatures))
  if missing:
    raise errors.ExportError(f"Export validation failed: signatures {missing} are missing.")
  index_of = {t.name: i for i, t in enumerate(system.tasks)}
  predictors: dict = {}  # one model per task, built on first use

  def expected(task_index: int, pixels: np.ndarray) -> np.ndarray:
    if task_index not in predictors:
      predictors[task_index] = inprocess_predictor(system, specs, weights, task_index)
    return predictors[task_index](pixels)

  def decoded(png_list) -> np.ndarray:
    return np.stack([tf.io.decode_png(p).numpy() for p in png_list])

  compared = 0
  for request in requests:
    key = request.signature
    fn = loaded.signatures[key]
    if request.examples:
      out = fn(inputs=tf.constant(list(request.examples)))
      task_index = index_of[key[:-len(msig.CLASSIFY)]]
      images = decoded([tf.io.parse_single_example(
          e, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})["image/encoded"].numpy()
                        for e in request.examples])
      _check(f"'{key}' scores", out["scores"].numpy(),
             _softmax(expected(task_index, images)), exact=False)
    elif key in (msig.ROUTED, msig.ROUTED + msig.PIXELS):
      inputs = {k: tf.constant(v) for k, v in request.inputs.items()}
      out = fn(**inputs)
      probabilities = out["probabilities"].numpy()
      for row, name in enumerate(request.inputs["task"]):
        task_index = index_of[name.decode()]
        k = system.tasks[task_index].num_classes
        image = (decoded([request.inputs["image_bytes"][row]]) if key == msig.ROUTED
                 else request.inputs["image"][row:row + 1])
        _check(f"'{key}' probabilities of row {row} (task '{name.decode()}')",
               probabilities[row:row + 1, :k], _softmax(expected(task_index, image)),
               exact=False)
        _check(f"'{key}' padding of row {row}", probabilities[row, k:],
               np.zeros(system.max_classes - k, np.float32), exact=True)
    else:
      inputs = {k: tf.constant(v) for k, v in request.inputs.items()}
      out = fn(**inputs)
      if key == msig.DEFAULT:
        task_index = default_index
      else:
        task_index = index_of[key[:-len(msig.PIXELS)] if key.endswith(msig.PIXELS) else key]
      if "image" in request.inputs:
        _check(f"'{key}' logits", out["logits"].numpy(),
               expected(task_index, request.inputs["image"]), exact=True)
      else:
        _check(f"'{key}' logits", out["logits"].numpy(),
               expected(task_index, decoded(request.inputs["image_bytes"])), exact=False)
    compared += 1
  return compared
