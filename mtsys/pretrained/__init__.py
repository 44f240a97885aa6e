"""Pretrained roots: published ViT checkpoints imported as a root of mtsys components.

`checkpoint_format` defines the canonical checkpoint every reader (`vit_npz`,
`keras_hub_preset`, `model_garden`) produces; `root_dir` builds the mtsys components from one and
writes them as a root directory (`ROOT.pbtxt` + `components/<id>/`); `importer.import_root` is
the whole import (detect, read, validate, cap, resize, write) behind `bin/import_root.py`.
Submodules are imported on use: the readers pull in their sources' libraries.
"""
