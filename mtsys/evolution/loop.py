"""The active-task loop (muNet Algorithm 1, µ2Net section 3).

For each task iteration and each task (the *active task*): the active population starts as the
task's current path; for G generations, C parents are sampled and mutated into children, trained
(in parallel, one per device, or each data-parallel over all devices) and scored; a child is kept
only if it beats its parent. At the end of the active phase the best path becomes the task's path
in the system and everything else the phase created is dropped.

The state (`EvolutionState` in the store) is saved after every completed generation and every
completed phase, so a run killed at any moment resumes from its last completed generation: its
kept children's components are already in the store (write-once), and a half-trained generation
is simply redone.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import time
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from mtsys import data as mdata
from mtsys import errors
from mtsys import faults as mfaults
from mtsys.config import hparams as hp
from mtsys.config import loader
from mtsys.evolution import coordination as mcoordination
from mtsys.evolution import events
from mtsys.evolution import mutations
from mtsys.evolution import preflight
from mtsys.evolution import sampling
from mtsys.evolution import sharing
from mtsys.protos import mtsys_pb2
from mtsys.system import assembly
from mtsys.system import compat
from mtsys.system import component_source
from mtsys.system import paths as mpaths
from mtsys.system import root as mroot
from mtsys.system import store as mstore
from mtsys.train import evaluate
from mtsys.train import pretrain
from mtsys.train import trainer

ROOT_PATH_ID = "root"
# Samplings of one generation before giving up when garbage collection keeps taking what the
# children read (agents only; each retry means another task replaced its path meanwhile).
_SAMPLING_ATTEMPTS = 10
_EV = mtsys_pb2.EvolutionConfig


# One trained child, for progress displays (`mtsys.evolution.events`).
ChildReport = events.ChildReport


@dataclasses.dataclass
class Timing:
  """Wall time of the loop: training and evaluating children vs. everything else (bookkeeping),
  of which `recording` went to the history and TensorBoard events (`mtsys.evolution.events`)."""

  total: float = 0.0
  training: float = 0.0
  recording: float = 0.0

  @property
  def bookkeeping_share(self) -> float:
    return 0.0 if self.total <= 0 else max(0.0, self.total - self.training) / self.total

  @property
  def recording_share(self) -> float:
    return 0.0 if self.total <= 0 else self.recording / self.total


# Kept here too: callers have always found it in the loop.
check_compatible = compat.check_compatible


class Evolver:
  """Grows the system in `store` with the tasks of `config`."""

  def __init__(self, config: loader.Config, store: mstore.Store, *,
               strategy: Optional[tf.distribute.Strategy] = None,
               devices: Optional[Sequence[str]] = None, author: str = "evolve",
               on_child: Callable[[ChildReport], None] = lambda r: None,
               log: Callable[[str], None] = print,
               task_data: Optional[Mapping[str, "mdata.TaskData"]] = None,
               tensorboard: bool = True, coordination=None):
    """`tensorboard`: also write TensorBoard events (the history is always written).
    `coordination`: how the loop shares the store (`mtsys.evolution.coordination`); default:
    the single program, alone."""
    self.config = config
    self.store = store
    self.ev = config.proto.evolution
    self.strategy = strategy or tf.distribute.get_strategy()
    self.devices = list(devices or [])
    self.author = author
    self.on_child = on_child
    self.log = log
    self.coord = coordination or mcoordination.SingleProgram()
    self.space = mutations.mutation_space(config.search_space, self.ev.mutation_probability,
                                          config.arch.num_layers)
    self.source = component_source.ComponentSource(store)
    self.timing = Timing()
    # Writes a history record per child and TensorBoard events (`mtsys.evolution.events`).
    self.recorder = events.Recorder(store, author, tensorboard=tensorboard)
    self._task_data: dict[str, mdata.TaskData] = dict(task_data or {})
    # Children of a generation mostly share their structure with earlier children: reusing their
    # compiled models (and the frozen prefix's validation features) keeps a child's fixed cost
    # small. The cache keys models by strategy object, so the per-device strategies are kept too.
    self.cache = trainer.ModelCache(max_models=max(4, 2 * len(self.devices)))
    self._device_strategies = [tf.distribute.OneDeviceStrategy(d) for d in self.devices]
    self.root_ids = mroot.root_ids(config)
    self._root_blocks = [c for c in self.root_ids if ".transformer_block." in c]
    self._addition = mutations.layer_addition(self.ev, len(self._root_blocks))
    missing = [c for c in self.root_ids if not store.has_component(c)]
    if missing:
      raise errors.MissingComponentError(
          f"The system at {store.root} has no complete root (missing {missing}): make it first "
          "with mtsys.train.pretrain.ensure_root (or use Evolver.with_root).")
    self.head_template = mroot.head_template(store, config.proto.root)  # imported roots'
    # Who shares what, locks, access and scores (`mtsys.evolution.sharing`).
    self.sharing = sharing.Sharing(config, self.source,
                                   [store.read_component_spec(c) for c in self.root_ids])

  @classmethod
  def with_root(cls, config: loader.Config, store: mstore.Store, **kwargs) -> "Evolver":
    """Makes the system's root if it lacks one (`pretrain.ensure_root`: pretrained when the
    config says so), then an Evolver over it."""
    pretrain.ensure_root(store, config, strategy=kwargs.get("strategy"),
                         log=kwargs.get("log", print))
    return cls(config, store, **kwargs)

  # ------------------------------------------------------------------ set-up
  def task_data(self, name: str) -> "mdata.TaskData":
    if name not in self._task_data:
      self._task_data.update(preflight.load_tasks(self.config, [name]))
    return self._task_data[name]

  def check_tasks(self, tasks: Sequence[str]) -> None:
    """Validates task names and loads (and checks) their data before any training."""
    for name in tasks:
      self.task_data(name)

  def _root_path(self) -> mtsys_pb2.PathSpec:
    path = mtsys_pb2.PathSpec(id=ROOT_PATH_ID, task="", component_ids=self.root_ids,
                              score=-math.inf)
    for name, value in mpaths.hparams_to_proto(hp.defaults(self.space)).items():
      path.hparams[name].CopyFrom(value)
    return path

  # ------------------------------------------------------------------- run
  def run(self, tasks: Optional[Sequence[str]] = None,
          task_iterations: Optional[int] = None) -> mtsys_pb2.EvolutionState:
    """Runs active phases until every task in `tasks` had `task_iterations` of them in total.

    Resumes a phase left unfinished by a killed run. Returns the final state.
    """
    names = list(tasks or [t.name for t in self.config.tasks])
    target = int(task_iterations or self.ev.task_iterations)
    self.check_tasks(names)
    state = self.coord.read_state(self.store)
    if state.task and state.task not in names:
      names.insert(0, state.task)  # finish what a killed run started first
    start = time.perf_counter()
    while True:
      if state.task:
        self._active_phase(state)
        continue
      pending = [n for n in names if state.iterations_done[n] < target]
      if not pending:
        break
      low = min(state.iterations_done[n] for n in pending)
      task = next(n for n in pending if state.iterations_done[n] == low)
      self.coord.before_iteration(self.store, task, low)
      self._reset_phase(state, task)
      current = self.store.read_path(state.task)
      if current is not None:
        state.population.append(current)
      if self.ev.parent_sampling == _EV.MUNET:
        state.population.extend(self._munet_seeds(state.task, current))
      self.coord.write_state(self.store, state)
    self.timing.total += time.perf_counter() - start
    self.timing.recording = self.recorder.seconds
    return state

  def _munet_seeds(self, task: str, current) -> list:
    """muNet's population: the root plus every other task's best path (usable by `task`)."""
    spec = self.config.task(task)
    seeds = [self._root_path()]
    for other, path in sorted(self.store.paths().items()):
      if other != task and self.sharing.allowed(path, spec):
        seeds.append(path)
    return seeds

  # ---------------------------------------------------------- active phase
  def _active_phase(self, state: mtsys_pb2.EvolutionState) -> None:
    task = self.config.task(state.task)
    iteration = state.iterations_done[task.name]
    while state.generations_done < self.ev.generations:
      with self.store.faults.phase_of(mfaults.CHILD_TRAINING):
        self._generation(state, task, iteration)
    with self.store.faults.phase_of(mfaults.END_OF_PHASE):
      self._finish_phase(state, task)

  def _generation(self, state, task: mtsys_pb2.TaskSpec, iteration: int) -> None:
    gen = state.generations_done
    task_index = [t.name for t in self.config.tasks].index(task.name)
    rng = np.random.default_rng([int(self.ev.seed), iteration, task_index, gen])
    selections = dict(state.selections)
    for _ in range(_SAMPLING_ATTEMPTS):
      state.selections.clear()
      state.selections.update(selections)
      system = self.store.paths()  # re-read: other agents publish paths meanwhile
      try:
        children, population, users = self._sample_children(state, task, system, rng)
      except errors.MissingComponentError as e:  # collected after the paths were read
        self.log(f"Task '{task.name}': {e}; sampling again.")
        continue
      # Agents: protect what the children read and create from garbage collection; what it
      # took meanwhile (another task replaced its path) makes the generation sample again.
      planned = [p for c, _ in children for p in c.planned]
      read = [p.spec.id for p in planned if not p.trainable]
      read += [c for p in state.population for c in p.component_ids]
      gone = self.coord.start_generation(self.store, read,
                                         [p.spec.id for p in planned if p.trainable])
      if not gone:
        break
      self.log(f"Task '{task.name}': components {gone[:5]} were collected while sampling; "
               "sampling again.")
      for cid in gone:
        self.source.forget(cid)
    else:
      raise RuntimeError(  # not the user's input: a restart may succeed
          f"Task '{task.name}': the components its children read kept being collected "
          f"({_SAMPLING_ATTEMPTS} attempts); is a garbage collection running without in-flight "
          "records?")
    self._train_generation(state, task, iteration, gen, system, children, population, users)

  def _sample_children(self, state, task: mtsys_pb2.TaskSpec, system, rng) -> tuple:
    """The generation's children (mutated from sampled parents), the rescored population and
    the component users they were scored with."""
    users = self.sharing.users(system, task.name)
    locked = self.sharing.locked(system, task.name)
    others = [p for t, p in sorted(system.items())
              if t != task.name and self.sharing.allowed(p, task)] + [self._root_path()]
    # Scores follow the current sharing: recomputed for every comparison, never cached.
    population = [self.sharing.rescored(p, task.name, users) for p in state.population]
    munet = self.ev.parent_sampling == _EV.MUNET
    if munet:
      current = system.get(task.name)
      seeds = [p for p in population
               if p.task != task.name or (current is not None and p.id == current.id)]
      active = [p for p in population if p.task == task.name]
      usable = [p for t, p in sorted(system.items()) if self.sharing.allowed(p, task)]
      usable.append(self._root_path())

    children = []
    for _ in range(self.ev.children_per_generation):
      counts = sampling.selection_counts(state.selections, task.name)
      if munet:
        parent, seed = sampling.sample_munet(seeds, active, usable, counts, rng)
      else:
        parent, seed = sampling.sample_mu2net(population, others, counts, rng), False
      key = sampling.selection_key(task.name, parent.id)
      state.selections[key] = state.selections[key] + 1
      child = mutations.mutate(parent, mpaths.hparams_from_proto(parent.hparams), task,
                               self.space, self.config.arch, self.source, rng,
                               new_block_seed=lambda: int(rng.integers(2**31)),
                               locked=locked, unmutated=seed, addition=self._addition,
                               root_blocks=self._root_blocks,
                               head_template=self.head_template)
      children.append((child, int(rng.integers(2**31))))
    return children, population, users

  def _train_generation(self, state, task, iteration, gen, system, children, population,
                        users) -> None:
    munet = self.ev.parent_sampling == _EV.MUNET
    results = self._train_children(children, task)
    best = max([p.score for p in population], default=-math.inf)
    for i, ((child, _), (result, seconds)) in enumerate(zip(children, results)):
      state.children_trained += 1
      state.train_steps += result.total_steps
      specs = [p.spec for p in child.planned]
      sc, accounted, flops = self.sharing.score(result.validation_accuracy, specs,
                                                child.hparams["image_size"], task.name, users)
      parent_score = (self.sharing.rescored(child.parent, task.name, users).score
                      if child.parent.task == task.name else -math.inf)
      # µ2Net keeps a child that is at least as good as its parent; muNet one that is better.
      kept = sc > parent_score if munet else sc >= parent_score
      path_id = mroot.new_component_id(task.name, "path")  # pruned children's too (history)
      if kept:
        trained = mpaths.Trained(result.weights, result.optimizer_slots, result.best_steps)
        for spec in mpaths.write_components(self.store, task.name, child.planned, trained):
          self.source.add(spec, trained.weights[spec.id], trained.optimizer_slots[spec.id])
        planned = [dataclasses.replace(p, spec=self.source.spec(p.spec.id)) if p.trainable
                   else p for p in child.planned]
        metrics = mtsys_pb2.PathMetrics(
            validation_accuracy=result.validation_accuracy, accounted_params=accounted,
            total_params=sum(p.spec.param_count for p in planned), flops=flops,
            train_steps=result.total_steps, train_seconds=result.train_seconds)
        path = mpaths.make_path(
            task.name, planned, path_id=path_id,
            hparams=child.hparams, metrics=metrics, score=sc, parent_id=child.parent.id,
            generation=gen, author=self.author)
        state.population.append(path)
        best = max(best, sc)
      self.on_child(events.child_report(self.recorder.child(
          task.name, iteration, gen, i, child, result, seconds=seconds,
          sequence=state.children_trained, path_id=path_id, score=sc,
          parent_score=parent_score, kept=kept, best_score=best, accounted=accounted,
          flops=flops)))
    # The history before the state: a kill between them redoes the generation (same sequence).
    self.recorder.generation(state, system, self.source.spec, task.name,
                             iteration * self.ev.generations + gen + 1, best)
    state.generations_done = gen + 1
    self.coord.write_state(self.store, state)

  # ----------------------------------------------------------- phase steps
  def _reset_phase(self, state, task: str) -> None:
    """Starts (or, with "", ends) an active phase. µ2Net's #selections(m, t) accumulate across
    a task's phases (only counts of paths still in the system are kept); muNet's restart."""
    keep = {}
    if self.ev.parent_sampling != _EV.MUNET:
      alive = {p.id for p in self.store.paths().values()} | {ROOT_PATH_ID}
      keep = {k: v for k, v in state.selections.items() if k.split("|", 1)[-1] in alive}
    mstore.reset_active_phase(state, task)
    state.selections.update(keep)

  def _train_children(self, children, task: mtsys_pb2.TaskSpec) -> list:
    data = self.task_data(task.name)
    ev = self.ev
    budget = trainer.Budget(ev.epochs_per_child, ev.max_batches_per_epoch, ev.batch_size)
    channels = self.config.proto.root.channels

    def train(child_and_seed, strategy):
      child, seed = child_and_seed
      start = time.perf_counter()
      result = trainer.train_path(child.planned, data, child.hparams, budget,
                                  image_size=int(child.hparams["image_size"]),
                                  channels=channels, strategy=strategy, seed=seed,
                                  cache=self.cache)
      return result, time.perf_counter() - start

    parallel = (ev.child_parallelism != _EV.DATA_PARALLEL and len(self.devices) > 1)
    start = time.perf_counter()
    if parallel:
      strategies = self._device_strategies
      with concurrent.futures.ThreadPoolExecutor(len(self.devices)) as pool:
        futures = [pool.submit(train, c, strategies[i % len(strategies)])
                   for i, c in enumerate(children)]
        results = [f.result() for f in futures]
    else:
      results = [train(c, self.strategy) for c in children]
    # Training a child (building, compiling, fitting, validating) is the work; sampling,
    # mutating, scoring, writing and state saves are the loop's bookkeeping.
    self.timing.training += time.perf_counter() - start
    return results

  def _finish_phase(self, state, task: mtsys_pb2.TaskSpec) -> None:
    # Only the task's own paths qualify: muNet's population also holds other tasks' seeds.
    own = [p for p in state.population if p.task == task.name]
    if not own:
      raise errors.TrainingError(
          f"Task '{task.name}': no child was kept in this active phase (every child failed to "
          "beat an empty parent); check the task's data and the search space's learning rates.")
    users = self.sharing.users(self.store.paths(), task.name)
    # A rerun after a kill midway through this end may find paths whose components it already
    # deleted: they were not the best (the best path is written before anything is deleted).
    own = [p for p in own if all(self.store.has_component(c) for c in p.component_ids)]
    best = max((self.sharing.rescored(p, task.name, users) for p in own), key=lambda p: p.score)
    best_copy = mtsys_pb2.PathSpec()
    stored = self.store.read_path(task.name)
    if stored is not None and stored.id == best.id:
      # A kill after the path was written: finish the phase with what was stored.
      best_copy.CopyFrom(stored)
    else:
      best_copy.CopyFrom(best)
    # Recorded with the path so an export can name the classes without the task's data.
    best_copy.class_names[:] = self.task_data(task.name).class_names
    if not best_copy.metrics.test_accuracy:
      planned = [assembly.PlannedComponent(self.source.spec(c), self.source.weights(c))
                 for c in best.component_ids]
      start = time.perf_counter()
      best_copy.metrics.test_accuracy = evaluate.evaluate_path(
          planned, self.task_data(task.name), "test",
          image_size=int(mpaths.hparams_from_proto(best.hparams)["image_size"]),
          channels=self.config.proto.root.channels, batch_size=self.ev.batch_size,
          strategy=self.strategy)
      self.timing.training += time.perf_counter() - start
    if best_copy != stored:
      self.coord.commit_path(self.store, best_copy)
    # Drop what the phase's other children created (agents: after the state, see there).
    self.coord.drop_phase_garbage(self.store, task.name, self.source)
    state.iterations_done[task.name] = state.iterations_done[task.name] + 1
    self._reset_phase(state, "")
    self.coord.write_state(self.store, state)
    self.coord.phase_done(self.store, task.name, state.iterations_done[task.name] - 1)
    self.log(f"Task '{task.name}' iteration {state.iterations_done[task.name]}: best path "
             f"{best.id} score {best.score:.4f}, validation "
             f"{best.metrics.validation_accuracy:.4f}, test {best_copy.metrics.test_accuracy:.4f}, "
             f"{len(best.component_ids)} components")

