r"""Task grouping (Standley et al. 2020): which tasks should be learned together.

    python bin/group_tasks.py select --candidates=val.csv --test_candidates=test.csv \
        --budgets=1:5:0.5 --results_json=out/grouping.json

`select` chooses, for every budget, the candidate networks (total cost <= budget) that serve all
tasks with the least summed validation loss, proven optimal (`mtsys.grouping.selection`), and
reports the test loss of the same assignment. The CSV layout is `network,cost,<task>,...` with
an empty cell where a network does not solve a task (`mtsys.grouping.candidates_csv`).

    python bin/group_tasks.py train --config=chars-lite --output_dir=out/grouping --method=hoa
    python bin/group_tasks.py select --candidates=out/grouping/hoa/VAL.csv --budgets=1:6:0.5

`train` trains the candidate networks (every task subset, plus half-size singles; `--method`
esa / hoa / tag train the approximations' fewer networks) into OUTPUT_DIR, resumably, and writes
OUTPUT_DIR/VAL.csv and TEST.csv (`mtsys.grouping.train_lib`).

    python bin/group_tasks.py report --output_dir=out/grouping --budgets=1:6:0.5

`report` compares every method OUTPUT_DIR holds (exact, ESA, HOA, TAG) with random groupings,
one all-task network and independent networks: pairwise tables (Standley et al. Tables 2 and 3),
the chosen groupings and loss-versus-budget curves, in REPORT_DIR (default OUTPUT_DIR/report) as
report.txt, report.json and PNGs (`mtsys.grouping.report`).
"""

from __future__ import annotations

import os
import sys

# The repo root replaces bin/ on the path, so bin/inspect.py cannot shadow the inspect module.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import flags

from bin import common

FLAGS = flags.FLAGS
common.define_config_flags()  # --config (train, later) and --results_json
flags.DEFINE_string("candidates", None,
                    "select: CSV of candidate networks and their validation losses, or a train "
                    "output directory (its VAL.csv and TEST.csv) "
                    "(header network,cost,<task>,...; an empty cell: not solved).")
flags.DEFINE_string("test_candidates", None,
                    "select: CSV of the same networks' test losses, reported for the chosen "
                    "assignment.")
flags.DEFINE_string("budgets", None,
                    "select, report: budgets in units of one full network, START:STOP:STEP "
                    "(both ends included, e.g. 1:5:0.5) or a comma list.")
flags.DEFINE_list("tasks", None, "The tasks (select: to serve; default: every task column; "
                  "train: to group; default: the config's).")
common.define_strategy_flags()
flags.DEFINE_string("save_system", None,
                    "select on a train output directory: write the grouping chosen at "
                    "--save_budget as a system (its paths share the chosen networks' "
                    "components) at this new directory.")
flags.DEFINE_string("save_budget", None, "select: the budget whose grouping --save_system saves.")
flags.DEFINE_string("output_dir", None, "train: where the candidates and their CSVs go; "
                    "report: the train output directory to report on.")
flags.DEFINE_string("report_dir", None,
                    "report: where report.txt, report.json and the PNGs go (default: "
                    "OUTPUT_DIR/report).")
flags.DEFINE_enum("method", "exact", ["exact", "esa", "hoa", "tag"],
                  "train: exact (every subset), esa (early stopping: short training, select at "
                  "--budgets, train the chosen fully), hoa (singles and pairs; higher-order "
                  "predictions) or tag (one all-task network; inter-task affinity).")
flags.DEFINE_string("trunk_from", None,
                    "train: SYSTEM_DIR:TASK, that task's path of an evolved system as the shared "
                    "trunk; default: the config's root.")
flags.DEFINE_integer("epochs", 0, "train: epochs per candidate (0: the config's baselines').")
flags.DEFINE_integer("max_batches_per_epoch", 0, "train: batch cap per epoch (0: the config's).")
flags.DEFINE_integer("batch_size", 0, "train: batch size (0: the config's).")
flags.DEFINE_float("learning_rate", 0.0,
                   "train: learning rate (0: the full fine-tuning baseline's).")
flags.DEFINE_integer("seed", None, "train: seed (default: the config's baselines seed); "
                     "report: the random groupings' seed (default 0).")
flags.DEFINE_float("esa_fraction", 0.2, "train --method=esa: share of the budget for selection.")
flags.DEFINE_integer("tag_every", 10, "train --method=tag: steps between affinity lookaheads.")
flags.DEFINE_integer("verbose", 0, "train: 1 prints a line per epoch of every candidate.")


def main(argv):
  from mtsys.grouping import cli_lib
  train = None
  if argv[1:] == ["train"]:
    from mtsys.grouping import train_lib
    train = train_lib.Options(
        output_dir=FLAGS.output_dir, method=FLAGS.method, trunk_from=FLAGS.trunk_from,
        epochs=FLAGS.epochs, max_batches_per_epoch=FLAGS.max_batches_per_epoch,
        batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate, seed=FLAGS.seed,
        esa_fraction=FLAGS.esa_fraction, tag_every=FLAGS.tag_every, verbose=FLAGS.verbose,
        distribution=common.distribution(common.load_config()) if FLAGS.config else None)
  cli_lib.run(argv[1:], cli_lib.Options(
      candidates=FLAGS.candidates, test_candidates=FLAGS.test_candidates,
      budgets=FLAGS.budgets, tasks=FLAGS.tasks, results_json=FLAGS.results_json,
      config=FLAGS.config, root_checkpoint=FLAGS.root_checkpoint, train=train,
      save_system=FLAGS.save_system,
      save_budget=FLAGS.save_budget, output_dir=FLAGS.output_dir,
      report_dir=FLAGS.report_dir, seed=FLAGS.seed), out=common.say)


if __name__ == "__main__":
  common.run(main)
