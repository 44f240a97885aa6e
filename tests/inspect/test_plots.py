"""The papers' plots: PNG files with content, from history and stored paths, skipped cleanly
for systems without history, private tasks left out unless asked, the systems never written."""

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from mtsys.config import loader
from mtsys.evolution import mutations
from mtsys.inspect import plots
from mtsys.protos import mtsys_pb2
from mtsys.system import history
from mtsys.system import synthetic

_CONFIG = """
name: "plots"
root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 5 }}
evolution {{ score {{ scale_factor: {scale} }} mutation_probability: {mode} }}
task {{ name: "a" num_classes: 3 builtin {{ name: "sklearn_digits" }} }}
task {{ name: "b" num_classes: 3 builtin {{ name: "sklearn_digits" }} }}
task {{ name: "secret" num_classes: 3 builtin {{ name: "sklearn_digits" }}
       access {{ visibility: PRIVATE }} }}
"""


def _history(store, tasks, per_action, seed):
  """A plausible history: 3 generations x 4 children per task, written as evolution does."""
  rng = np.random.default_rng(seed)
  writer = history.Writer(store, history.writer_id("test", clock=lambda: 1.0))
  sequence = 0
  for task in tasks:
    best = -np.inf
    for gen in range(3):
      for index in range(4):
        sequence += 1
        score = float(rng.uniform(0.3, 0.9))
        kept = score > best
        best = max(best, score) if kept else best
        total = int(rng.integers(20_000, 40_000))
        record = mtsys_pb2.ChildRecord(
            task=task, generation=gen, index=index, sequence=sequence, score=score, kept=kept,
            best_score=best, added_params=int(rng.integers(500, total // 2)),
            system_params=100_000 + 5_000 * sequence, wall_time_ms=1000 * sequence)
        record.metrics.total_params = total
        record.metrics.validation_accuracy = score
        record.hparams["learning_rate"].number = float(rng.choice([0.01, 0.02, 0.05]))
        record.hparams["flip"].flag = bool(rng.integers(2))
        names = ([mutations.PER_ACTION_PREFIX + a for a in mutations.ACTIONS] if per_action
                 else ["mutation_prob"])
        for name in names:
          mu = float(rng.choice([0.1, 0.2, 0.3]))
          record.hparams[name].number = mu
          record.mutation_probs[name] = mu
        writer.append(record)
      writer.flush()


def _system(directory, scale, history_tasks=(), per_action=False, seed=0, accuracy=0.5):
  config = loader.parse(_CONFIG.format(scale=scale,
                                       mode="PER_ACTION" if per_action else "SHARED"))
  store = synthetic.make_system(str(directory), config, seed=seed)
  for path in store.paths().values():  # synthetic paths carry no test accuracy
    path.metrics.test_accuracy = accuracy
    store.write_path(path)
  if history_tasks:
    _history(store, history_tasks, per_action, seed)
  return store


def _digest(root):
  h = hashlib.sha256()
  for directory, _, files in sorted(os.walk(root)):
    for name in sorted(files):
      h.update(name.encode())
      with open(os.path.join(directory, name), "rb") as f:
        h.update(f.read())
  return h.hexdigest()


def _assert_picture(path):
  with Image.open(path) as image:
    assert image.format == "PNG"
    width, height = image.size
    pixels = np.asarray(image.convert("L"), dtype=float)
  assert width >= 300 and height >= 200, (path, image.size)
  assert pixels.std() > 10, path  # not blank


@pytest.fixture(scope="module")
def systems(tmp_path_factory):
  work = tmp_path_factory.mktemp("plots")
  one = _system(work / "sf1", 1.0, ["a", "b", "secret"], per_action=True, seed=1,
                accuracy=0.8)
  small = _system(work / "sf0.3", 0.3, ["a", "b"], seed=2, accuracy=0.7)
  return work, one, small


def test_every_plot_of_several_systems_is_a_picture(systems, tmp_path):
  work, one, small = systems
  before = _digest(work)
  messages = []
  written = plots.write_plots([one.root, small], str(tmp_path / "out"), log=messages.append)
  names = sorted(os.path.basename(p) for p in written)
  assert names == sorted(["params_per_task-sf1.png", "best_score-sf1.png",
                          "params_per_task-sf0.3.png", "best_score-sf0.3.png",
                          "hparams.png", "mutation_probs.png", "tradeoff.png"]), messages
  assert not messages
  for path in written:
    _assert_picture(path)
  assert _digest(work) == before  # plots never write to a system


def test_the_tradeoff_has_a_point_per_system_and_baseline(systems, tmp_path):
  work, one, small = systems
  _system(os.path.join(small.root, "baselines", "multi_head"), 0.3, accuracy=0.6)
  points = plots.tradeoff_points(small) + plots.tradeoff_points(one)
  assert [p.label for p in points] == ["s=0.3", "multi_head", "s=1"]
  assert [p.avg_test_accuracy for p in points] == pytest.approx([0.7, 0.6, 0.8])
  assert [p.baseline for p in points] == [False, True, False]
  # The private task's path is left out unless asked for (it adds its own parameters).
  with_private = plots.tradeoff_points(one, include_private=True)[0]
  assert len(one.paths()) == 3
  assert points[2].params_per_task != with_private.params_per_task
  # One system with a baseline is enough for the plot.
  written = plots.write_plots([small], str(tmp_path), log=lambda m: None)
  assert "tradeoff.png" in [os.path.basename(p) for p in written]
  _assert_picture(os.path.join(tmp_path, "tradeoff.png"))


def test_a_system_without_history_skips_the_history_plots(tmp_path):
  store = _system(tmp_path / "old", 1.0)
  messages = []
  written = plots.write_plots([store], str(tmp_path / "out"), log=messages.append)
  assert written == []
  assert any("No history" in m and store.root in m for m in messages), messages
  assert any("tradeoff" in m for m in messages), messages


def test_private_tasks_are_left_out_unless_asked_for(tmp_path):
  store = _system(tmp_path / "private", 1.0, ["secret"])
  messages = []
  assert plots.write_plots([store], str(tmp_path / "out"), log=messages.append) == []
  assert any("No history" in m for m in messages), messages
  written = plots.write_plots([store], str(tmp_path / "out"), include_private=True,
                              log=lambda m: None)
  assert sorted(os.path.basename(p) for p in written) == [
      "best_score.png", "hparams.png", "mutation_probs.png", "params_per_task.png"]


def test_an_unreadable_directory_and_an_unwritable_output_are_clear_errors(systems, tmp_path):
  from mtsys import errors
  with pytest.raises(errors.SystemNotFoundError, match=str(tmp_path)):
    plots.write_plots([str(tmp_path)], str(tmp_path / "out"))
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(errors.UserError, match="Cannot write the plot"):
    plots.write_plots([systems[1]], str(blocker / "out"), log=lambda m: None)
