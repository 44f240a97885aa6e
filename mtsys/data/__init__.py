"""Tasks -> tf.data pipelines: TFDS, user files (npz, image folders, TFRecords), built-in sets.

    task_data = load_task(task_spec)   # validates the data; errors name the task
    ds = make_dataset(task_data, "train", batch_size=..., image_size=..., channels=...,
                      hparams=path_hparams, training=True, seed=0)
"""

from mtsys.data.sources import load_task
from mtsys.data.sources import register_source
from mtsys.data.sources import source_names
from mtsys.data.task_data import SPLITS
from mtsys.data.task_data import TaskData
from mtsys.data.task_data import check_image_size
from mtsys.data.pipeline import augmentation_params
from mtsys.data.pipeline import make_dataset
from mtsys.data.pipeline import preprocess
from mtsys.data.task_data import convert_channels
from mtsys.data.samples import render_samples
# Importing the source modules registers them.
from mtsys.data import builtin
from mtsys.data import files_source
from mtsys.data import tfds_source
from mtsys.data.builtin import builtin_names
from mtsys.data.builtin import get_builtin

__all__ = [
    "SPLITS", "TaskData", "augmentation_params", "builtin_names", "check_image_size",
    "convert_channels", "get_builtin", "load_task", "make_dataset", "preprocess",
    "register_source", "render_samples", "source_names",
]
