"""Which versions serve: config, version policies, labels, file-system polling and swaps.

The `Manager` does for the Python server what TF Serving's ServerCore + FileSystemStoragePathSource
+ AspiredVersionsManager (with the AvailabilityPreservingPolicy) + ServableStateMonitor do:

* Each poll lists every model's base path; integer-named children are versions (anything else,
  e.g. an exporter's `_tmp_3_abc`, is ignored). The model's `model_version_policy` picks the
  aspired versions: `latest {num_versions}` (default 1), `all`, or `specific {versions}`.
* Availability-preserving swaps: new aspired versions load while the old ones serve; a version
  that is no longer aspired is unloaded only once some aspired version is available (or when the
  model has no aspired versions left, e.g. removed from the config). A version that fails to
  load or warm up never serves; it is not retried while it stays aspired (TF Serving retries a
  failed load a few times within one minute-long attempt, `--max_num_load_retries`; this server
  does not retry, so a corrupt export costs one failed load), and is forgotten once un-aspired.
* Requests hold a handle on the version they resolved; unloading waits for in-flight handles, so
  a request finishes on the version it started on.
* Lookups never take the manager's locks: the serving map is an immutable snapshot replaced on
  every change.

Errors are TF Serving's (serving/errors.py): `Latest(m)` / `Specific(m, v)` NOT_FOUND, label
errors from server_core.cc, status errors from get_model_status_impl.cc.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
import re
import threading
from typing import Callable, Iterator

from absl import logging
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving import errors
from serving import servable as servable_lib

_VERSION_DIR = re.compile(r"^[0-9]+$")

Loader = Callable[[str, int, str], servable_lib.Servable]


class State(enum.IntEnum):
  """ModelVersionStatus.State (apis/get_model_status.proto)."""
  START = 10
  LOADING = 20
  AVAILABLE = 30
  UNLOADING = 40
  END = 50


@dataclasses.dataclass
class VersionState:
  state: State
  error: errors.ServingError | None = None


class _Entry:
  """A managed (aspired or still loaded) version and its in-flight request count."""

  def __init__(self, version: int, path: str):
    self.version = version
    self.path = path
    self.servable: servable_lib.Servable | None = None
    self.failed = False
    self.lock = threading.Condition(threading.Lock())
    self.in_flight = 0
    self.closing = False


@dataclasses.dataclass(frozen=True)
class _ModelView:
  """Immutable serving snapshot of one model: available versions and the latest."""
  versions: dict[int, _Entry]
  latest: _Entry | None


def _aspired_versions(config: model_server_config_pb2.ModelConfig,
                      children: list[str]) -> dict[int, str]:
  """FileSystemStoragePathSource's policies: version -> directory to load."""
  by_version: dict[int, str] = {}
  for child in sorted(children):
    if _VERSION_DIR.match(child):
      by_version[int(child)] = child
  policy = config.model_version_policy
  which = policy.WhichOneof("policy_choice")
  if which == "all":
    return by_version
  if which == "specific":
    wanted = set(policy.specific.versions)
    for version in wanted - set(by_version):
      logging.warning("Version %d of servable %s, which was requested to be served as a "
                      "'specific' version in the servable's version policy, was not found in the "
                      "file system", version, config.name)
    return {v: d for v, d in by_version.items() if v in wanted}
  count = max(policy.latest.num_versions, 1) if which == "latest" else 1
  return {v: by_version[v] for v in sorted(by_version, reverse=True)[:count]}


class Manager:
  """Owns the loaded versions of every configured model and the thread that polls for them."""

  def __init__(self, loader: Loader, file_system_poll_wait_seconds: float = 1.0,
               allow_version_labels_for_unavailable_models: bool = False):
    self._loader = loader
    self._poll_wait = file_system_poll_wait_seconds
    self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
    self._config = model_server_config_pb2.ModelServerConfig()
    self._poll_lock = threading.RLock()  # One poll / reload at a time.
    self._state_lock = threading.Lock()  # Guards _states, _entries.
    self._entries: dict[str, dict[int, _Entry]] = {}
    self._states: dict[str, dict[int, VersionState]] = {}
    self._labels: dict[str, dict[str, int]] = {}
    self._view: dict[str, _ModelView] = {}
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  # --- Lifecycle ---------------------------------------------------------------------------------

  def start_polling(self) -> None:
    """Polls the base paths every --file_system_poll_wait_seconds (> 0) in a daemon thread."""
    if self._poll_wait <= 0 or self._thread is not None:
      return
    self._thread = threading.Thread(target=self._poll_loop, name="serving-fs-poll", daemon=True)
    self._thread.start()

  def stop(self) -> None:
    """Stops polling and unloads every version (waiting for in-flight requests)."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    with self._poll_lock:
      for name in list(self._entries):
        for entry in list(self._entries.get(name, {}).values()):
          self._unload(name, entry)

  def _poll_loop(self) -> None:
    while not self._stop.wait(self._poll_wait):
      try:
        self.poll()
      except Exception:  # pylint: disable=broad-except
        logging.exception("File system poll failed; retrying at the next poll.")

  # --- Config ------------------------------------------------------------------------------------

  @property
  def config(self) -> model_server_config_pb2.ModelServerConfig:
    return self._config

  def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
    """ServerCore::ReloadConfig(): validates, applies labels, loads new models and waits for them.

    Raises ServingError: INVALID_ARGUMENT for a bad config list, FAILED_PRECONDITION for a label
    on an unavailable version, UNKNOWN if a newly added model did not become available.
    """
    if config.WhichOneof("config") == "custom_model_config":
      raise errors.reload_config_type_not_supported()
    if config.WhichOneof("config") is None:
      logging.info("Taking no action for empty config.")
      return
    names = set()
    for model in config.model_config_list.config:
      if model.name in names:
        raise errors.duplicate_model_in_config(model.name)
      names.add(model.name)
      if not (os.path.isabs(model.base_path) or "://" in model.base_path):
        raise errors.relative_base_path(model.name, model.base_path)
    with self._poll_lock:
      old_names = {m.name for m in self._config.model_config_list.config}
      labels = self._label_map(config)
      self._config = model_server_config_pb2.ModelServerConfig()
      self._config.CopyFrom(config)
      self._labels = labels
      logging.info("Adding/updating models.")
      self.poll()
      new_names = sorted(names - old_names)
      failures = []
      for name in new_names:
        if self._view.get(name) is None or self._view[name].latest is None:
          states = self._states.get(name, {})
          bad = sorted((v for v, s in states.items() if s.error is not None), reverse=True)
          suffix = (f" due to error: {states[bad[0]].error.to_string()}" if bad else "")
          failures.append((f"{{name: {name} version: {bad[0] if bad else 0}}}", suffix))
      if failures:
        raise errors.models_did_not_become_available(failures)
      logging.info("Finished reloading config")

  def _label_map(self, config) -> dict[str, dict[str, int]]:
    """UpdateModelVersionLabelMap(): labels may only name available versions unless allowed."""
    labels: dict[str, dict[str, int]] = {}
    for model in config.model_config_list.config:
      states = self._states.get(model.name, {})
      for label, version in sorted(model.version_labels.items()):
        allow = False
        if self._allow_unavailable_labels:
          existing = self._labels.get(model.name, {}).get(label)
          allow = existing is None or existing == version
        state = states.get(version)
        if not allow and (state is None or state.state != State.AVAILABLE):
          raise errors.label_to_unavailable_version(version, model.name)
        labels.setdefault(model.name, {})[label] = version
    return labels

  # --- Polling and the availability-preserving policy ------------------------------------------

  def poll(self) -> None:
    """One pass over every model: aspire versions from disk, load, unload."""
    with self._poll_lock:
      configs = {m.name: m for m in self._config.model_config_list.config}
      for name in sorted(set(configs) | set(self._entries)):
        config = configs.get(name)
        if config is None:
          aspired = {}
        else:
          try:
            children = os.listdir(config.base_path)
          except OSError as e:
            logging.error("Could not find base path %s for servable %s: %s", config.base_path,
                          name, e)
            continue
          aspired = _aspired_versions(config, children)
          if not aspired:
            logging.warning("No versions of servable %s found under base path %s", name,
                            config.base_path)
        self._apply(name, config.base_path if config else "", aspired)

  def _apply(self, name: str, base_path: str, aspired: dict[int, str]) -> None:
    entries = self._entries.setdefault(name, {})
    while True:
      # Forget failed versions that are no longer aspired (they may be retried if re-aspired).
      for version in [v for v, e in entries.items() if e.failed and v not in aspired]:
        with self._state_lock:
          del entries[version]
      available_aspired = any(e.servable is not None for v, e in entries.items() if v in aspired)
      stale = sorted(v for v, e in entries.items() if v not in aspired and e.servable is not None)
      if stale and (available_aspired or not aspired):
        self._unload(name, entries[stale[0]])
        continue
      new = sorted((v for v in aspired if v not in entries), reverse=True)
      if new:
        self._load(name, new[0], os.path.join(base_path, aspired[new[0]]))
        continue
      return

  def _set_state(self, name: str, version: int, state: State,
                 error: errors.ServingError | None = None) -> None:
    with self._state_lock:
      self._states.setdefault(name, {})[version] = VersionState(state, error)

  def _publish(self, name: str) -> None:
    """Replaces the model's serving snapshot with its currently available versions."""
    with self._state_lock:
      versions = {v: e for v, e in self._entries.get(name, {}).items()
                  if e.servable is not None and not e.closing}
      view = dict(self._view)
      view[name] = _ModelView(versions, versions[max(versions)] if versions else None)
      self._view = view

  def _load(self, name: str, version: int, path: str) -> None:
    entry = _Entry(version, path)
    with self._state_lock:
      self._entries[name][version] = entry
    self._set_state(name, version, State.START)
    self._set_state(name, version, State.LOADING)
    logging.info("Loading servable version {name: %s version: %d} from %s", name, version, path)
    try:
      entry.servable = self._loader(name, version, path)
    except errors.ServingError as e:
      entry.failed = True
      self._set_state(name, version, State.END, e)
      logging.error("Loading servable: {name: %s version: %d} failed: %s", name, version,
                    e.to_string())
      return
    except Exception as e:  # pylint: disable=broad-except
      entry.failed = True
      self._set_state(name, version, State.END, errors.ServingError(errors.Code.UNKNOWN, str(e)))
      logging.exception("Loading servable: {name: %s version: %d} failed", name, version)
      return
    self._set_state(name, version, State.AVAILABLE)
    self._publish(name)
    logging.info("Successfully loaded servable version {name: %s version: %d}", name, version)

  def _unload(self, name: str, entry: _Entry) -> None:
    """Stops routing to the version, waits for its in-flight requests, then drops it."""
    if entry.servable is None:
      with self._state_lock:
        self._entries.get(name, {}).pop(entry.version, None)
      return
    with entry.lock:
      entry.closing = True
    self._publish(name)
    self._set_state(name, entry.version, State.UNLOADING)
    with entry.lock:
      while entry.in_flight:
        entry.lock.wait()
    entry.servable = None
    with self._state_lock:
      self._entries.get(name, {}).pop(entry.version, None)
    self._set_state(name, entry.version, State.END)
    logging.info("Unloaded servable version {name: %s version: %d}", name, entry.version)

  # --- Requests ----------------------------------------------------------------------------------

  def _resolve(self, spec: model_pb2.ModelSpec) -> tuple[str, int | None]:
    """ServableRequestFromModelSpec(): (name, version) with None meaning Latest."""
    if not spec.name:
      raise errors.model_spec_has_no_name()
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
      return spec.name, spec.version.value
    if choice == "version_label":
      version = self._labels.get(spec.name, {}).get(spec.version_label)
      if version is None:
        raise errors.unrecognized_label(spec.version_label)
      return spec.name, version
    return spec.name, None

  @contextlib.contextmanager
  def servable(self, spec: model_pb2.ModelSpec) -> Iterator[servable_lib.Servable]:
    """A handle on the version a ModelSpec names; unloading waits until it is released."""
    name, version = self._resolve(spec)
    for _ in range(100):  # Retries only if the version started unloading mid-lookup.
      view = self._view.get(name)
      if version is None:
        entry = view.latest if view is not None else None
        if entry is None:
          raise errors.servable_not_found(errors.latest_request(name))
      else:
        entry = view.versions.get(version) if view is not None else None
        if entry is None:
          raise errors.servable_not_found(errors.specific_request(name, version))
      with entry.lock:
        if entry.closing:
          continue
        entry.in_flight += 1
        servable = entry.servable
      break
    else:
      raise errors.ServingError(errors.Code.UNAVAILABLE, f"Model {name} is being unloaded")
    try:
      yield servable
    finally:
      with entry.lock:
        entry.in_flight -= 1
        if not entry.in_flight:
          entry.lock.notify_all()

  def model_status(self, spec: model_pb2.ModelSpec) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatusWithModelSpec(): one version if given, else every version, newest first
    (a label is ignored here, as in TF Serving)."""
    response = get_model_status_pb2.GetModelStatusResponse()
    with self._state_lock:
      states = dict(self._states.get(spec.name, {}))
    if spec.WhichOneof("version_choice") == "version":
      version = spec.version.value
      if version not in states:
        raise errors.version_of_model_not_found(version, spec.name)
      items = [(version, states[version])]
    else:
      if not states:
        raise errors.no_versions_of_model(spec.name)
      items = sorted(states.items(), reverse=True)
    for version, state in items:
      status = response.model_version_status.add()
      status.version = version
      status.state = int(state.state)
      status.status.SetInParent()  # ToStatusProto(health): present even when OK.
      if state.error is not None:
        status.status.error_code = state.error.code.value[0]
        status.status.error_message = state.error.message
    return response

  # --- Introspection (tests, logs) ---------------------------------------------------------------

  def available_versions(self, name: str) -> list[int]:
    view = self._view.get(name)
    return sorted(view.versions) if view is not None else []

  def version_states(self, name: str) -> dict[int, VersionState]:
    with self._state_lock:
      return dict(self._states.get(name, {}))
