"""`export`: a system directory -> one TF Serving model version, checked, then published.

Order of work, so that bad input and failures leave nothing behind:

1. Every check that needs no writing: the system exists and opens, the tasks exist, have paths
   and may be exported (private ones only when named), no task name is a reserved signature
   key, the export base is not a file, the version is free; every component of every exported
   path is read and checksum-verified (a corrupt file fails the export naming it).
2. The SavedModel, warm-up requests and provenance are written under a temporary, non-numeric
   directory name; the export is reloaded, every warm-up request is run and compared with the
   library's in-process prediction, and each task signature's variable reads are audited.
3. Only then is the version published under its number (see `layout`), and `models.config`
   updated. Any failure before removes the temporary directory. The system directory is only
   read, never written.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf import text_format

from mtsys import errors
from mtsys.export import audit
from mtsys.export import graph as mgraph
from mtsys.export import layout
from mtsys.export import serving_files
from mtsys.export import signatures as msig
from mtsys.export import validate
from mtsys.protos import mtsys_pb2
from mtsys.system import paths as mpaths
from mtsys.system import store as mstore

PROVENANCE_FILE = "assets.extra/mtsys_export.json"
MODELS_CONFIG = "models.config"


@dataclasses.dataclass(frozen=True)
class ExportResult:
  """What `export` wrote."""

  model_name: str
  version: int
  version_dir: str
  model_config_file: str
  tasks: list
  default_task: str
  signatures: list
  warmup_records: int
  compared_outputs: int
  export_bytes: int
  weight_bytes: int
  variables_read: dict  # signature key -> sorted component ids whose variables it reads


def _is_private(task: mtsys_pb2.TaskSpec) -> bool:
  return task.access.visibility in (mtsys_pb2.Access.PRIVATE, mtsys_pb2.Access.GROUPS)


def select_tasks(config: mtsys_pb2.SystemConfig, paths: dict,
                 tasks: Optional[Sequence[str]]) -> list[str]:
  """The tasks to export: `tasks` (checked), or every public task with a path, in config order.

  Raises:
    ValueError: an unknown task, one without a trained path, or no task at all.
  """
  known = [t.name for t in config.task]
  if tasks:
    for name in tasks:
      if name not in known and name not in paths:
        raise errors.UnknownTaskError(f"Unknown task '{name}'; the system's tasks are {known}.")
      if name not in paths:
        raise errors.ExportError(
            f"Task '{name}' has no trained path in the system yet; evolve it first "
            f"or leave it out. Tasks with paths: {sorted(paths)}.")
    if len(set(tasks)) != len(tasks):
      raise errors.ExportError(f"Tasks named twice in {list(tasks)}.")
    return list(tasks)
  private = {t.name for t in config.task if _is_private(t)}
  chosen = [n for n in known if n in paths and n not in private]
  if not chosen:
    raise errors.ExportError(
        f"No public task with a trained path to export (tasks with paths: "
        f"{sorted(paths)}; private tasks are exported only when named in tasks).")
  return chosen


def _task_path(config: mtsys_pb2.SystemConfig, path: mtsys_pb2.PathSpec,
               num_classes: int) -> mgraph.TaskPath:
  image_size = int(mpaths.hparams_from_proto(path.hparams).get("image_size",
                                                               config.root.image_size))
  return mgraph.TaskPath(name=path.task, path=path, image_size=image_size,
                         num_classes=num_classes, class_names=tuple(path.class_names))


def export(system_dir: str, export_base: str, model_name: str, *,
           tasks: Optional[Sequence[str]] = None, version: Optional[int] = None,
           default_task: Optional[str] = None,
           log: Callable[[str], None] = print) -> ExportResult:
  """Exports a system's tasks as version `version` of TF Serving model `model_name`.

  Args:
    system_dir: The system directory (local or gs://); only read.
    export_base: Where model directories live: writes `<export_base>/<model_name>/<version>/`
      and `<export_base>/models.config`.
    model_name: The TF Serving model name.
    tasks: Tasks to export (private ones must be named); None: every public trained task.
    version: The version number; None: the largest existing + 1 (1 for a new model).
    default_task: The task behind `serving_default`; None: the first exported task.
    log: Progress lines.

  Raises:
    ValueError, mtsys.system.store.StoreError: bad input or a corrupt system (nothing written).
  """
  # ---- 1. checks; nothing is written
  store = mstore.Store.open(system_dir)
  state = store.read_state()
  config = state.config
  paths = store.paths()
  names = select_tasks(config, paths, tasks)
  msig.check_task_names(names)
  if default_task is None:
    default_task = names[0]
  if default_task not in names:
    raise errors.ExportError(
        f"Default task '{default_task}' is not among the exported tasks {names}.")
  version = layout.check_target(export_base, model_name, version)
  classes = {t.name: t.num_classes for t in config.task}
  task_paths = [_task_path(config, paths[n], classes.get(n, 0)) for n in names]
  component_ids = sorted({c for t in task_paths for c in t.path.component_ids})
  log(f"Reading {len(component_ids)} components of {len(names)} tasks from {store.root}")
  specs = {c: store.read_component_spec(c) for c in component_ids}
  weights = {c: store.read_weights(specs[c]) for c in component_ids}  # checksum-verified
  weight_bytes = sum(int(np.asarray(w).nbytes) for ws in weights.values() for w in ws)
  system = mgraph.SystemGraph(task_paths, specs, weights, channels=config.root.channels)
  default_index = names.index(default_task)

  # ---- 2. write under a temporary name, validate
  model_directory = layout.model_dir(export_base, model_name)
  tf.io.gfile.makedirs(model_directory)
  tmp = layout.temporary_dir(model_directory, version)
  try:
    archive, task_functions = msig.build_archive(system, default_index)
    log(f"Writing SavedModel ({len(msig.signature_keys(names))} signatures) to {tmp}")
    archive.write_out(tmp, verbose=False)
    serving_files.set_method_names(
        tmp, {n + msig.CLASSIFY: serving_files.CLASSIFY_METHOD for n in names})
    task_samples = validate.samples(system)
    requests = validate.warmup_requests(system, task_samples)
    records = serving_files.write_warmup(tmp, requests, model_name)
    log(f"Validating: reloading and running {len(requests)} requests against the library")
    compared = validate.check_export(tmp, system, specs, weights, requests, default_index)
    reads = _audit(task_functions, system)
    provenance = _provenance(store, config, system, model_name, version, default_task, reads,
                             specs)
    layout.write_text_atomic(f"{tmp}/{PROVENANCE_FILE}", json.dumps(provenance, indent=2))
    export_bytes = layout.total_bytes(tmp)
    final = layout.publish(tmp, model_directory, version)
  except BaseException:
    layout.remove(tmp)
    raise

  # ---- 3. the server config (a published version is complete on its own)
  config_file = f"{layout.normalize_base(export_base)}/{MODELS_CONFIG}"
  existing = ""
  if tf.io.gfile.exists(config_file):
    with tf.io.gfile.GFile(config_file) as f:
      existing = f.read()
  server_config = serving_files.merge_model_config(existing, model_name, model_directory)
  layout.write_text_atomic(config_file, text_format.MessageToString(server_config))
  return ExportResult(
      model_name=model_name, version=version, version_dir=final, model_config_file=config_file,
      tasks=names, default_task=default_task, signatures=msig.signature_keys(names),
      warmup_records=records, compared_outputs=compared, export_bytes=export_bytes,
      weight_bytes=weight_bytes, variables_read=reads)


def _audit(task_functions: dict, system: mgraph.SystemGraph) -> dict:
  """Signature key -> component ids it reads; raises unless each task's are exactly its path's."""
  labelled = system.labelled_variables()
  reads = {}
  for task in system.tasks:
    for key in (task.name, task.name + msig.PIXELS, task.name + msig.CLASSIFY):
      fn = task_functions[key].get_concrete_function()
      read = sorted(audit.variables_read(fn, labelled))
      want = sorted(set(task.path.component_ids))
      if read != want:
        raise errors.ExportError(
            f"Signature '{key}' reads the variables of components {read}; its "
            f"path uses {want}.")
      reads[key] = read
  return reads


def _provenance(store, config, system, model_name, version, default_task, reads, specs) -> dict:
  return {
      "system_dir": store.root,
      "system_name": config.name,
      "model_name": model_name,
      "version": version,
      "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
      "default_task": default_task,
      "tasks": {
          t.name: {"path_id": t.path.id, "component_ids": list(t.path.component_ids),
                   "image_size": t.image_size, "num_classes": t.num_classes,
                   "class_names": list(t.class_names),
                   "signatures": [t.name, t.name + msig.PIXELS, t.name + msig.CLASSIFY]}
          for t in system.tasks},
      "components": {cid: {"kind": s.kind, "weights_sha256": s.weights_sha256,
                           "param_count": s.param_count} for cid, s in sorted(specs.items())},
      "variables_read": reads,
  }


def format_summary(result: ExportResult) -> str:
  """What was exported, and the commands that serve and query it."""
  base = result.model_config_file.rsplit("/", 1)[0]
  task = result.default_task
  return "\n".join([
      f"Exported {len(result.tasks)} tasks ({', '.join(result.tasks)}) as model "
      f"'{result.model_name}' version {result.version}: {result.version_dir}",
      f"  {len(result.signatures)} signatures, {result.warmup_records} warm-up requests, "
      f"{result.compared_outputs} outputs checked against the library, "
      f"{result.export_bytes / 1e6:.1f} MB ({result.weight_bytes / 1e6:.1f} MB of weights)",
      "Serve it:",
      f"  .venv/bin/python bin/serve.py --port=8500 --rest_api_port=8501 "
      f"--model_config_file={result.model_config_file}",
      f"  docker run -p 8500:8500 -p 8501:8501 -v {base}:/models tensorflow/serving:2.20.0 "
      f"--model_name={result.model_name} --model_base_path=/models/{result.model_name}",
      "Query it:",
      f"  .venv/bin/python bin/predict.py --server=localhost:8500 "
      f"--model_name={result.model_name} --task={task} IMAGE.png",
      f"  curl -s localhost:8501/v1/models/{result.model_name}/metadata",
  ])
