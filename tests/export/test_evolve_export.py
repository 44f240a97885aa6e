"""The main job end to end: bin/evolve.py --export_base evolves a tiny system on an image-folder
task, exports it, and prints how to serve and query it; the export names the folder classes."""

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from PIL import Image

from mtsys import testing
from mtsys.system import store as mstore

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _folder_task(root, seed):
  """Band images (see mtsys.testing) saved as PNGs in one folder per class."""
  with np.load(testing.write_band_npz(str(root.parent), "bands", seed, n=90)) as data:
    images, labels = data["image"], data["label"]
  names = ["band0", "band1", "band2"]  # sorted, as a folder task orders its classes
  for name in names:
    (root / name).mkdir(parents=True)
  for i, (image, label) in enumerate(zip(images, labels)):
    Image.fromarray(image).save(root / names[label] / f"{i}.png")
  return names


def test_evolve_exports_the_system_and_prints_how_to_serve_it(tmp_path):
  names = _folder_task(tmp_path / "bands", seed=0)
  config = tmp_path / "tiny.textproto"
  config.write_text(f"""
name: "tiny"
root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 5 }}
evolution {{ task_iterations: 1 generations: 1 children_per_generation: 1 epochs_per_child: 1
            max_batches_per_epoch: 2 batch_size: 16 seed: 1 }}
task {{ name: "bands" num_classes: 3 files {{ folder: "{tmp_path}/bands" validation_fraction: 0.2
       test_fraction: 0.2 }} }}
""")
  system, base = tmp_path / "system", tmp_path / "serving"
  done = subprocess.run(
      [sys.executable, os.path.join(_REPO, "bin", "evolve.py"), f"--config={config}",
       f"--system_dir={system}", f"--export_base={base}"],
      capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert done.returncode == 0, done.stderr[-3000:]
  assert list(mstore.Store.open(str(system)).paths()["bands"].class_names) == names
  assert f"Exported 1 tasks (bands) as model 'tiny' version 1: {base}/tiny/1" in done.stdout
  assert f"bin/serve.py --port=8500 --rest_api_port=8501 --model_config_file={base}/models.config" \
      in done.stdout
  assert "bin/predict.py --server=localhost:8500 --model_name=tiny --task=bands" in done.stdout
  loaded = tf.saved_model.load(str(base / "tiny" / "1"))
  out = loaded.signatures["bands@pixels"](image=tf.zeros([2, 8, 8, 1], tf.uint8))
  assert {n.decode() for n in out["class_names"].numpy()} <= set(names)
