"""The root's components: random (`mtsys.system.root.make_root`) or pretrained on a task.

muNet and µ2Net start from a ViT pretrained on ImageNet-21k: frozen root components are worth
sharing only because they already know something. `RootModel.pretrain` gives a system the same
start without a downloaded checkpoint: the random root plus a throwaway head is fully trained on
the pretraining task (through `trainer.train_path`, so under the configured strategy, with the
best epoch kept) and the trained root (weights and momentum) becomes the system's first, public
components. Every component records the pretraining steps under the pretraining task's name, so
knowledge accounting shows how much of a path's training came from pretraining.

Pretraining is not deterministic, so code that wants several systems to share one pretrained root
copies it from the first system that holds it (`ensure_root(..., root_from=...)`: an evolution's
baselines, the methods of `baselines.run`, the runs of `benchmarks/quality.py`) instead of
pretraining again; nothing is memoised in the process.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import keras
import tensorflow as tf

from mtsys import data as mdata
from mtsys import errors
from mtsys import faults as mfaults
from mtsys.config import hparams as hp
from mtsys.config import loader
from mtsys.protos import mtsys_pb2
from mtsys.system import assembly
from mtsys.system import paths as mpaths
from mtsys.system import root as mroot
from mtsys.system import root_claim
from mtsys.system import store as mstore
from mtsys.train import trainer

class _Progress(keras.callbacks.Callback):

  def __init__(self, name: str, epochs: int, log: Callable[[str], None]):
    super().__init__()
    self._name, self._epochs, self._log = name, epochs, log

  def on_epoch_end(self, epoch, logs=None):
    logs = logs or {}
    self._log(f"[pretrain '{self._name}'] epoch {epoch + 1}/{self._epochs}: "
              f"loss {logs.get('loss', float('nan')):.3f}, "
              f"validation {logs.get('val_accuracy', float('nan')):.4f}")


def root_components(config: loader.Config, *, strategy: Optional[tf.distribute.Strategy] = None,
                    log: Callable[[str], None] = print,
                    faults: Optional[mfaults.Injector] = None) -> list:
  """The root as [(ComponentSpec, weights, optimizer slots or None)], ids 'root.<kind>[.i]'.

  Random (from `root.seed`) unless `root.pretrain` is set; then pretrained on its task (each call
  trains anew: see the module doc for sharing one pretrained root). With `root.checkpoint`, the
  imported checkpoint's components and head template (`mtsys.pretrained.config_root`).
  """
  root = config.proto.root
  if root.checkpoint:  # imported: zero momentum
    from mtsys.pretrained import config_root  # pylint: disable=import-outside-toplevel
    return [(spec, weights, None) for spec, weights in config_root.root_components(config)]
  if not root.HasField("pretrain"):
    return [(spec, weights, None) for spec, weights in mroot.make_root(config)]
  faults = faults or mfaults.Injector()
  with faults.phase_of(mfaults.ROOT_PRETRAINING):
    return _pretrain(config, strategy, log, faults)


def check_root_source(config: loader.Config,
                      holders: Sequence[Optional[mstore.Store]] = ()) -> None:
  """Checks, writing nothing, that the root can be made; call before a run's first write.

  Nothing is checked when one of `holders` (an existing system, the system baselines copy the
  root from) already holds the whole root. Otherwise a checkpoint root must be importable
  (`mtsys.pretrained.config_root.check`: read in full, checked against the config), and a
  pretraining task's data must load and fit the root.

  Raises:
    ConfigError (CheckpointError), DataError: naming the field, the checkpoint or the data.
  """
  ids = mroot.stored_root_ids(config)
  if any(h is not None and all(h.has_component(c) for c in ids) for h in holders):
    return
  root = config.proto.root
  if root.checkpoint:
    from mtsys.pretrained import config_root  # pylint: disable=import-outside-toplevel
    config_root.check(config)
  if root.HasField("pretrain"):
    task = root.pretrain.task
    mdata.check_image_size(task.name, root.image_size, config.arch.patch_size)
    mdata.load_task(task)  # validates the data (shapes, labels, splits)


def ensure_root(store: mstore.Store, config: loader.Config, *,
                root_from: Optional[mstore.Store] = None,
                strategy: Optional[tf.distribute.Strategy] = None,
                log: Callable[[str], None] = print) -> list[mtsys_pb2.ComponentSpec]:
  """Writes whatever part of the root `store` lacks; returns the stored root specs in path order.

  Nothing is computed when the store holds the root already (a resumed run never pretrains
  again). Otherwise the root is copied from `root_from` when that system holds it (baselines
  start from the very root an evolution used), else made by `root_components`.

  The root is one unit: pretraining is not deterministic, so a root whose components came from
  two runs would be inconsistent. A run killed while writing it leaves some of its components
  (and no path: paths are written after the root); those are deleted and the whole root is
  written again from one source. So a root whose every component exists came from one run.
  """
  with store.faults.phase_of(mfaults.ROOT_WRITE):
    return _ensure_root(store, config, root_from, strategy, log)


def ensure_root_claimed(store: mstore.Store, config: loader.Config, *,
                        root_from: Optional[mstore.Store] = None,
                        strategy: Optional[tf.distribute.Strategy] = None,
                        log: Callable[[str], None] = print,
                        **claim_args) -> list[mtsys_pb2.ComponentSpec]:
  """`ensure_root` for processes that share a store without the run lock (agents, issue #12).

  Of the processes calling this at once on a system without a root exactly one writes it (the
  holder of the root claim, `mtsys.system.root_claim`); the others wait until every root
  component exists and use it. `claim_args`: `root_claim.ensure_once`'s (ttl_s, timeout_s, ...).
  The single program keeps `ensure_root` under its run lock.
  """
  ids = mroot.stored_root_ids(config)
  root_claim.ensure_once(
      store.root, lambda: all(store.has_component(c) for c in ids),
      lambda: ensure_root(store, config, root_from=root_from, strategy=strategy, log=log),
      **claim_args)
  return [store.read_component_spec(c) for c in mroot.root_ids(config)]


def _ensure_root(store, config, root_from, strategy, log) -> list[mtsys_pb2.ComponentSpec]:
  ids = mroot.stored_root_ids(config)
  missing = [c for c in ids if not store.has_component(c)]
  if missing and len(missing) < len(ids):
    partial = [c for c in ids if store.holds_component(c)]
    if store.paths():
      raise errors.CorruptFileError(
          f"The system at {store.root} has task paths but lacks root components {missing}; "
          "its root is incomplete.")
    log(f"Removing a partial root left by an interrupted run ({len(partial)} of {len(ids)} "
        "components); writing the whole root again.")
    for cid in partial:
      store.delete_component(cid)
    missing = [c for c in ids if not store.has_component(c)]
  if missing:
    if root_from is not None and all(root_from.has_component(c) for c in ids):
      specs = [root_from.read_component_spec(c) for c in missing]
      source = [(s, root_from.read_weights(s), root_from.read_optimizer_slots(s)) for s in specs]
    else:
      source = [c for c in root_components(config, strategy=strategy, log=log,
                                           faults=store.faults) if c[0].id in missing]
    for spec, weights, slots in source:
      store.write_component(spec, weights, slots)  # sets its own file names and checksums
  return [store.read_component_spec(c) for c in mroot.root_ids(config)]


class _FaultPoints(keras.callbacks.Callback):
  """Every epoch end of pretraining is a fault point (it writes nothing to the store)."""

  def __init__(self, faults: mfaults.Injector):
    super().__init__()
    self._faults = faults

  def on_epoch_end(self, epoch, logs=None):
    self._faults.point(f"end of pretraining epoch {epoch + 1}")


def _pretrain(config: loader.Config, strategy, log, faults: mfaults.Injector) -> list:
  root, pre = config.proto.root, config.proto.root.pretrain
  task = pre.task
  mdata.check_image_size(task.name, root.image_size, config.arch.patch_size)
  data = mdata.load_task(task)
  public = mtsys_pb2.ComponentAccess(public=True)
  random_root = mroot.make_root(config)
  planned = [assembly.PlannedComponent(spec, weights, None, trainable=True)
             for spec, weights in random_root]
  tokens = (root.image_size // config.arch.patch_size) ** 2 + 1
  head_spec, head_weights = mroot.new_head(task, config.arch.hidden_size, tokens, public)
  planned.append(assembly.PlannedComponent(head_spec, head_weights, None, trainable=True))
  hparams = hp.defaults(config.search_space)
  hparams.update(mpaths.hparams_from_proto(pre.hparams))
  budget = trainer.Budget(pre.epochs, pre.max_batches_per_epoch, pre.batch_size)
  steps = budget.steps_per_epoch(data.sizes["train"])
  log(f"[pretrain '{task.name}'] training the root on {data.sizes['train']} examples: "
      f"{budget.epochs} epochs x {steps} batches of {budget.batch_size}")
  result = trainer.train_path(planned, data, hparams, budget, image_size=root.image_size,
                              channels=root.channels, strategy=strategy, seed=int(root.seed),
                              evaluate_test=True,
                              callbacks=[_Progress(task.name, budget.epochs, log),
                                         _FaultPoints(faults)])
  log(f"[pretrain '{task.name}'] kept epoch {result.best_epoch + 1}: validation "
      f"{result.validation_accuracy:.4f}, test {result.test_accuracy:.4f}, "
      f"{result.train_seconds:.1f}s")
  out = []
  for spec, _ in random_root:
    spec.trained_on[task.name] = result.best_steps
    out.append((spec, result.weights[spec.id], result.optimizer_slots[spec.id]))
  return out
