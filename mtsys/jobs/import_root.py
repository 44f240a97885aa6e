"""The import job behind `bin/import_root.py`: a published ViT checkpoint as a root directory.

The work is `mtsys.pretrained.importer.import_root`; this job reports it.
"""

from __future__ import annotations

from typing import Callable

from mtsys.protos import mtsys_pb2
from mtsys.pretrained import importer


def run(source: str, output: str, *, num_blocks: int = 0, image_size: int = 0,
        keep_pre_logits: bool = False, source_kind: str = importer.AUTO,
        out: Callable[[str], None] = print) -> mtsys_pb2.ImportedRoot:
  """Imports `source` as the root directory `output` and prints what was done.

  Returns:
    The ImportedRoot written (`output/ROOT.pbtxt`).

  Raises:
    CheckpointError: see `importer.import_root`.
  """
  root = importer.import_root(source, output, num_blocks=num_blocks, image_size=image_size,
                              keep_pre_logits=keep_pre_logits, source_kind=source_kind, log=out)
  out(f"Components: {', '.join(root.component_ids)}; head template {root.head_template_id}.")
  out(f'Use it as a config\'s root: root {{ checkpoint: "{output}" }}, or pass '
      f"--root_checkpoint={output} to bin/evolve.py, bin/baselines.py, bin/agent.py, "
      "bin/launch_agents.py or bin/group_tasks.py train.")
  return root
