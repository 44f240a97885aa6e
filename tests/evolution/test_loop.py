"""The active-task loop: immunity to forgetting, resumption after a kill, continual extension."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from mtsys import testing
from mtsys.config import loader
from mtsys.evolution import loop
from mtsys.protos import mtsys_pb2
from mtsys.system import assembly
from mtsys.system import paths as mpaths
from mtsys.system import records
from mtsys.system import store as mstore

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _npz(directory, name, seed, classes=3):
  return testing.write_band_npz(str(directory), name, seed, classes=classes)


def _config_text(directory, tasks, iterations=1, seed=1):
  parts = [f"""
  root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 5 }}
  evolution {{ task_iterations: {iterations} generations: 2 children_per_generation: 2
              epochs_per_child: 1 max_batches_per_epoch: 3 batch_size: 16 seed: {seed} }}
  search_space {{ param {{ name: "crop" values [{{flag: false}}, {{flag: true}}]
                          default_value {{flag: false}} }} }}
  """]
  for i, name in enumerate(tasks):
    parts.append(f'task {{ name: "{name}" num_classes: 3 files {{ npz: "{_npz(directory, name, i)}"'
                 ' validation_fraction: 0.2 test_fraction: 0.2 } }')
  return "\n".join(parts)


def _predictions(store, task, batch):
  path = store.read_path(task)
  return _planned_predictions(mpaths.load_frozen(store, path), path, batch)


def _planned_predictions(planned, path, batch):
  size = int(mpaths.hparams_from_proto(path.hparams)["image_size"])
  model, _ = assembly.build_path_model(planned, size, 1)
  return np.asarray(model(tf.image.resize(batch, (size, size)), training=False))


def test_earlier_tasks_predictions_are_bit_identical_after_growth(tmp_path):
  batch = np.random.default_rng(0).random((6, 8, 8, 1)).astype(np.float32)
  config = loader.parse(_config_text(tmp_path, ["a", "b"]))
  store = mstore.Store.create(str(tmp_path / "system"), config.proto)
  loop.Evolver.with_root(config, store, log=lambda m: None).run()
  before = {t: _predictions(store, t, batch) for t in ("a", "b")}
  paths_before = {t: store.read_path(t) for t in ("a", "b")}
  snapshot = {t: mpaths.load_frozen(store, p) for t, p in paths_before.items()}
  components_before = {c: store.read_component_spec(c) for c in store.component_ids()
                       if c in mstore.component_ids_of(store.paths().values())}

  # Add a task and run further iterations of every task.
  config2 = loader.parse(_config_text(tmp_path, ["a", "b", "c"], iterations=2))
  loop.check_compatible(store.read_state().config, config2)
  store.write_config(config2.proto)
  loop.Evolver.with_root(config2, store, log=lambda m: None).run()
  assert sorted(store.paths()) == ["a", "b", "c"]
  state = store.read_evolution_state()
  assert dict(state.iterations_done) == {"a": 2, "b": 2, "c": 2}

  # Components that were in the system then are untouched now (same bytes, same checksums).
  for cid, spec in components_before.items():
    if store.has_component(cid):
      assert store.read_component_spec(cid) == spec
  # Every earlier task's pre-growth path, rebuilt from the store as it is now, predicts bit for
  # bit as before. Only the task's own components may have left the store (its path moved on
  # and the end of its active phase dropped them); those come from the snapshot.
  compared = 0
  for t, planned_before in snapshot.items():
    rebuilt = []
    for p in planned_before:
      if store.has_component(p.spec.id):
        spec = store.read_component_spec(p.spec.id)
        rebuilt.append(assembly.PlannedComponent(spec, store.read_weights(spec)))
      else:
        assert p.spec.created_by_task == t, (t, p.spec.id)
        rebuilt.append(p)
    np.testing.assert_array_equal(_planned_predictions(rebuilt, paths_before[t], batch),
                                  before[t])
    compared += 1
  assert compared == 2


def test_predictions_of_other_tasks_unchanged_while_a_task_evolves(tmp_path):
  batch = np.random.default_rng(1).random((4, 8, 8, 1)).astype(np.float32)
  config = loader.parse(_config_text(tmp_path, ["a", "b"], iterations=1))
  store = mstore.Store.create(str(tmp_path / "system"), config.proto)
  loop.Evolver.with_root(config, store, log=lambda m: None).run()
  before = _predictions(store, "a", batch)
  loop.Evolver.with_root(config, store, log=lambda m: None).run(tasks=["b"], task_iterations=3)
  assert store.read_evolution_state().iterations_done["b"] == 3
  np.testing.assert_array_equal(_predictions(store, "a", batch), before)


def test_unknown_task_fails_before_touching_the_store(tmp_path):
  config = loader.parse(_config_text(tmp_path, ["a"]))
  store = mstore.Store.create(str(tmp_path / "system"), config.proto)
  evolver = loop.Evolver.with_root(config, store, log=lambda m: None)
  ids = store.component_ids()
  with pytest.raises(ValueError, match="Unknown task 'zz'; expected one of \\['a'\\]"):
    evolver.run(tasks=["zz"])
  assert store.component_ids() == ids and store.paths() == {}
  assert not store.read_evolution_state().iterations_done


def test_incompatible_root_is_rejected(tmp_path):
  config = loader.parse(_config_text(tmp_path, ["a"]))
  other = loader.parse(_config_text(tmp_path, ["a"]).replace("seed: 5", "seed: 6"))
  with pytest.raises(ValueError, match="The system was made with root"):
    loop.check_compatible(config.proto, other)


def test_kill_9_then_rerun_resumes_and_completes(tmp_path):
  config_path = tmp_path / "tiny.textproto"
  config_path.write_text(_config_text(tmp_path, ["a", "b"]))
  system = tmp_path / "system"
  cmd = [sys.executable, os.path.join(_REPO, "bin", "evolve.py"), f"--config={config_path}",
         f"--system_dir={system}"]
  state_file = system / "evolution" / "state.pb"
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    # Kill it once the first generation is saved, in the middle of the work.
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
      if state_file.exists():
        # Replaced by rename: a reader never sees half a file, so this never fails.
        state = records.parse(state_file.read_bytes(), str(state_file),
                              mtsys_pb2.EvolutionState(), legacy_ok=False)
        if state.generations_done >= 1 or state.iterations_done:
          break
      time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
  finally:
    if proc.poll() is None:
      proc.kill()
  killed = records.parse(state_file.read_bytes(), str(state_file), mtsys_pb2.EvolutionState(),
                         legacy_ok=False)
  assert killed.task or killed.iterations_done  # it really was mid-run

  done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  store = mstore.Store.open(str(system))
  state = store.read_evolution_state()
  assert dict(state.iterations_done) == {"a": 1, "b": 1} and not state.task
  # Nothing is corrupt and nothing is left over: every component loads with its checksum,
  # and every component is the root's or used by a path.
  used = mstore.component_ids_of(store.paths().values())
  for cid in store.component_ids():
    spec = store.read_component_spec(cid)
    store.read_weights(spec)
    assert cid in used or cid.startswith("root."), cid
  assert "Evolved system" in done.stdout


@pytest.mark.parametrize("parallelism", ["DEVICE_PER_CHILD", "DATA_PARALLEL"])
def test_children_on_two_logical_devices(tmp_path, parallelism):
  from mtsys.train import strategy as mstrategy
  text = _config_text(tmp_path, ["a"]).replace(
      "seed: 1 }", f"seed: 1 child_parallelism: {parallelism} }}")
  config = loader.parse(text)
  strategy = mstrategy.make_strategy(mtsys_pb2.DistributionConfig(strategy="mirrored"))
  assert strategy.num_replicas_in_sync == 2
  devices = list(strategy.extended.worker_devices)
  store = mstore.Store.create(str(tmp_path / "system"), config.proto)
  reports = []
  evolver = loop.Evolver.with_root(config, store, strategy=strategy, devices=devices,
                         on_child=reports.append, log=lambda m: None)
  evolver.run()
  assert len(reports) == 4 and store.read_path("a") is not None
  assert all(np.isfinite(r.validation_accuracy) for r in reports)


@pytest.mark.parametrize("variant, expect_keys", [
    ("mutation_probability: PER_ACTION", {"mutation_prob/clone", "mutation_prob/hparam"}),
    ("parent_sampling: MUNET", {"lr_schedule", "mutation_prob"}),
])
def test_variants_run_end_to_end(tmp_path, variant, expect_keys):
  config = loader.parse(_config_text(tmp_path, ["a", "b"]).replace("seed: 1 }",
                                                                  f"seed: 1 {variant} }}"))
  store = mstore.Store.create(str(tmp_path / "system"), config.proto)
  loop.Evolver.with_root(config, store, log=lambda m: None).run()
  for task in ("a", "b"):
    path = store.read_path(task)
    assert expect_keys <= set(path.hparams), sorted(path.hparams)
    assert path.metrics.test_accuracy > 0


def test_fork_and_remove_task_from_the_command_line(tmp_path):
  text = _config_text(tmp_path, ["a", "b"]).replace(
      'task { name: "b" num_classes: 3', 'task { name: "b" num_classes: 3 '
      'access { visibility: PRIVATE }')
  config = loader.parse(text)
  assert config.task("b").access.visibility == mtsys_pb2.Access.PRIVATE
  config_path = tmp_path / "tiny.textproto"
  config_path.write_text(text)
  source = mstore.Store.create(str(tmp_path / "source"), config.proto)
  loop.Evolver.with_root(config, source, log=lambda m: None).run()
  private = [c for c in source.component_ids()
             if list(source.read_component_spec(c).access.tasks) == ["b"]]
  assert private  # b's own components, which only b may use

  def evolve(*flags):
    return subprocess.run([sys.executable, os.path.join(_REPO, "bin", "evolve.py"),
                           f"--config={config_path}", *flags],
                          capture_output=True, text=True, timeout=600)

  fork = tmp_path / "fork"
  done = evolve(f"--system_dir={fork}", f"--fork_from={tmp_path / 'source'}")
  assert done.returncode == 0, done.stderr[-3000:]
  assert f"Forked {tmp_path / 'source'} into {fork}." in done.stdout
  # The README's "rerun the same command" habit continues the fork.
  done = evolve(f"--system_dir={fork}", f"--fork_from={tmp_path / 'source'}")
  assert done.returncode == 0, done.stderr[-3000:]
  assert f"{fork} is already a fork of {tmp_path / 'source'}: continuing it." in done.stdout

  # The fork cannot delete what it reads from its source, and says so.
  done = evolve(f"--system_dir={fork}", "--remove_task=b")
  assert done.returncode == 0, done.stderr[-3000:]
  assert "Removed task 'b'" in done.stdout
  assert (f"{len(private)} of its components stay readable in this fork's component sources "
          f"['{tmp_path / 'source'}']") in done.stdout
  assert sorted(mstore.Store.open(str(fork)).paths()) == ["a"]
  assert all(source.has_component(c) for c in private)  # the source is untouched

  done = evolve(f"--system_dir={fork}", "--remove_task=zzz")
  assert done.returncode == 2
  assert "Unknown task 'zzz'; expected one of ['a']" in done.stderr
