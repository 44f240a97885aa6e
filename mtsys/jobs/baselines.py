"""The baselines job behind `bin/baselines.py`: train muNet's baselines, print them, save them.

The training itself (one system per method under the output directory, resumable) is
`mtsys.train.baselines.run`; this job sets up the devices and the strategy, then reports.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

from mtsys import faults as mfaults
from mtsys.config import loader
from mtsys.protos import mtsys_pb2
from mtsys.system import fileio


@dataclasses.dataclass
class Options:
  """What `bin/baselines.py`'s flags ask for (see their help texts)."""

  output_dir: str
  distribution: mtsys_pb2.DistributionConfig
  cpu_devices: int = 0
  tasks: Optional[Sequence[str]] = None
  methods: Optional[Sequence[str]] = None
  verbose: int = 0
  results_json: Optional[str] = None


def run(config: loader.Config, options: Options, *,
        faults: Optional[mfaults.Injector] = None,
        out: Callable[[str], None] = print) -> list:
  """Trains the baselines and prints their table; returns the results (`BaselineResult`s), also
  written to `results_json` as JSON."""
  from mtsys.train import baselines  # Heavy (TensorFlow) imports.
  from mtsys.train import strategy as mstrategy
  if options.cpu_devices:
    mstrategy.split_cpu(options.cpu_devices)
  strategy = mstrategy.make_strategy(options.distribution)
  results = baselines.run(config, options.output_dir, methods=options.methods,
                          tasks=options.tasks, strategy=strategy, verbose=options.verbose,
                          log=out, faults=faults)
  out("")
  out(f"Baselines on '{config.name}' ({len({r.task for r in results})} tasks):")
  out(baselines.format_table(results))
  if options.results_json:
    fileio.write_json(options.results_json, [r.to_json() for r in results])
    out(f"Results written to {options.results_json}")
  return results
