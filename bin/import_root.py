r"""Imports a published ViT checkpoint as a root directory of mtsys components
(`mtsys.pretrained`), which a config names as its root: `root { checkpoint: "DIR" }`.

    python bin/import_root.py --source=Ti_16.npz --output=roots/ti16_3 --num_blocks=3 \
        --image_size=32

Sources: an original ViT / AugReg / big_vision `.npz` file, a local keras-hub ViTBackbone preset
directory, or a Model Garden (tf-models-official) ViT checkpoint; the kind is detected unless
--source_kind names it. The source's classifier is dropped; its final encoder norm becomes the
head template's. The output directory must not exist. Nothing is downloaded.
"""

from __future__ import annotations

import os
import sys

# The repo root replaces bin/ on the path, so bin/inspect.py cannot shadow the inspect module.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import flags

from bin import common

FLAGS = flags.FLAGS
flags.DEFINE_string("source", None,
                    "The checkpoint: a .npz file, a keras-hub preset directory, or a Model Garden "
                    "checkpoint prefix or directory.")
flags.DEFINE_string("output", None, "The root directory to write (local; must not exist).")
flags.DEFINE_integer("num_blocks", 0,
                     "Keep only the first N transformer blocks (muNet's Ti/16 capped to 3); "
                     "0 keeps all.")
flags.DEFINE_integer("image_size", 0,
                     "The root's image size (a multiple of the patch size); the position "
                     "embedding is resampled as vit_jax does (scipy zoom, order 1). 0 keeps the "
                     "source's.")
flags.DEFINE_bool("keep_pre_logits", False,
                  "Keep the checkpoint's pre-logits Dense + tanh in the head template.")
flags.DEFINE_enum("source_kind", "auto", ["auto", "vit_npz", "keras_hub", "model_garden"],
                  "The kind of --source; auto detects it.")
flags.mark_flags_as_required(["source", "output"])


def main(argv):
  del argv
  from mtsys.jobs import import_root  # Heavy (TensorFlow) imports after flag parsing.
  import_root.run(FLAGS.source, FLAGS.output, num_blocks=FLAGS.num_blocks,
                  image_size=FLAGS.image_size, keep_pre_logits=FLAGS.keep_pre_logits,
                  source_kind=FLAGS.source_kind, out=common.say)


if __name__ == "__main__":
  common.run(main)
