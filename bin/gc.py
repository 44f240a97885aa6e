r"""Deletes the components of a system directory that nothing uses any more, safely while its
agents run (`mtsys.system.gc`: what is kept and why, and the protocol).

    python bin/gc.py --system_dir=out/chars-lite-system --dry_run
    python bin/gc.py --system_dir=out/chars-lite-system

A dry run lists what a run would delete now and writes nothing. A fork registered in the system
that cannot be read (gone, or killed before it was complete) stops the collection; --force
ignores it (what only it uses may then be deleted). Local directories only.
"""

from __future__ import annotations

import os
import sys

# The repo root replaces bin/ on the path, so bin/inspect.py cannot shadow the inspect module.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import flags

from bin import common

FLAGS = flags.FLAGS
flags.DEFINE_string("system_dir", None, "The system directory (local).")
flags.DEFINE_bool("dry_run", False, "Only list what would be deleted; write nothing.")
flags.DEFINE_bool("force", False,
                  "Ignore registered forks that cannot be read instead of refusing (the "
                  "components only they use may be deleted).")
flags.DEFINE_float("leftover_age_s", 3600.0,
                   "Also delete temporary files and manifest-less component directories older "
                   "than this, which killed writers left.")
flags.mark_flags_as_required(["system_dir"])


def main(argv):
  del argv
  from mtsys.jobs import gc  # Heavy (TensorFlow) imports after flag parsing.
  gc.run(FLAGS.system_dir, dry_run=FLAGS.dry_run, force=FLAGS.force,
         leftover_age_s=FLAGS.leftover_age_s, out=common.say)


if __name__ == "__main__":
  common.run(main)
