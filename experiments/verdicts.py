r"""Paired verdicts of a finished comparison, from its JSON alone.

  python -m experiments.verdicts --run_dir=results/compare_full
  python -m experiments.verdicts --run_dir=DIR --baseline=initial

Reads comparison.json (and report.json when the folder has one) and prints
every method against the baseline, paired over seeds: the mean difference,
its t interval and the verdict under the equivalence margin of the run's
config (`results.paired_difference`). Writes verdicts-<baseline>.json and
.md into the folder. Runs no model: a comparison measured before the verdict
rule changed gets today's rule without measuring again.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from experiments import common
from fgsm_jax import reporting, results

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "a folder holding comparison.json")
flags.DEFINE_string("baseline", "control",
                    "the method (or 'initial', report.json only) every other "
                    "is compared with")


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments {argv[1:]}")
  if not FLAGS.run_dir:
    common.fail("--run_dir is required: a folder holding comparison.json")
  comparison = common.earlier_json(os.path.join(FLAGS.run_dir,
                                                "comparison.json"))
  if not comparison:
    common.fail(f"no readable comparison.json in {FLAGS.run_dir}")
  report = common.earlier_json(os.path.join(FLAGS.run_dir, "report.json"))
  rows = reporting.paired_rows(comparison, report or None, FLAGS.baseline)
  if not rows:
    common.fail(f"baseline {FLAGS.baseline!r} is not in {FLAGS.run_dir}")
  command = " ".join(["python -m experiments.verdicts"] + sys.argv[1:])
  title = reporting.dataset_title(comparison.get("setup", {}))
  table = (f"{title}, every method against {FLAGS.baseline}, paired over "
           "seeds\n\n"
           + reporting.paired_table(rows))
  stem = os.path.join(FLAGS.run_dir, f"verdicts-{FLAGS.baseline}")
  results.write_json_atomic(stem + ".json", {"command": command,
                                              "rows": rows})
  results.write_text_atomic(stem + ".md", f"`{command}`\n\n{table}\n")
  print(table)
  print(f"\nwrote {stem}.json and {stem}.md")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
