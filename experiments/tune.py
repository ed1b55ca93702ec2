r"""A recipe chosen on the validation split, from comparison folders alone.

  python -m experiments.tune --run_dirs=results/tune-mnist/a,results/tune-mnist/b \
      --output_dir=results/tune-mnist

Each --run_dirs folder is an `experiments.compare` run (one recipe per
folder, all from the same initial models, `--pretrained_from`); every
method entry of each is a candidate (--methods keeps some). Reads their
comparison.json, compares the candidates on the validation digits over the
seeds all of them ran, and picks the most robust under the validation PGD-10
check whose validation clean accuracy reaches --clean_floor, whose passes
stay within --passes_fraction of PGD-AT's on its schedule and in which no
round was flagged as catastrophic overfitting (`fgsm_jax/tuning.py`).
Writes tuning.json and tuning.md in --output_dir. No test digit is read;
no model runs.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from experiments import common
from fgsm_jax import results, tuning

FLAGS = flags.FLAGS
flags.DEFINE_list("run_dirs", [], "comparison folders, one recipe each")
flags.DEFINE_list("methods", [], "only these methods' entries (default: all)")
flags.DEFINE_float("clean_floor", 0.992,
                   "the least mean validation clean accuracy a candidate may "
                   "have")
flags.DEFINE_float("passes_fraction", 1 / 3,
                   "the most passes per training example a candidate may "
                   "spend, as a fraction of PGD-AT's on the same schedule")
flags.DEFINE_string("output_dir", None,
                    "where tuning.json and tuning.md go")


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments {argv[1:]}")
  if not FLAGS.run_dirs:
    common.fail("give --run_dirs: comparison folders (experiments.compare), "
                "one recipe each")
  if not FLAGS.output_dir:
    common.fail("give --output_dir: where tuning.json and tuning.md go")
  if not 0 < FLAGS.passes_fraction or not 0 <= FLAGS.clean_floor <= 1:
    common.fail(f"--passes_fraction={FLAGS.passes_fraction} must be > 0 and "
                f"--clean_floor={FLAGS.clean_floor} in [0, 1]")
  comparisons = {}
  for label, run_dir in zip(common.folder_labels(FLAGS.run_dirs,
                                                 "--run_dirs"),
                            FLAGS.run_dirs):
    comparison = common.earlier_json(os.path.join(run_dir, "comparison.json"))
    if not comparison.get("methods"):
      common.fail(f"no finished method in {run_dir}/comparison.json")
    comparisons[label] = comparison
  try:
    cands = tuning.candidates(comparisons, FLAGS.methods)
    choice = tuning.choose(cands, FLAGS.clean_floor, FLAGS.passes_fraction)
  except (KeyError, TypeError, ValueError) as e:
    common.fail(f"cannot read the candidates: {e}")
  command = " ".join(["python -m experiments.tune"] + sys.argv[1:])
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  results.write_json_atomic(
      os.path.join(FLAGS.output_dir, "tuning.json"),
      {"command": command, "run_dirs": FLAGS.run_dirs,
       "recipe_fields": tuning.recipe_fields(cands), "candidates": cands,
       **choice})
  def values(get):
    return ", ".join(map(str, sorted({get(c) for c in cands})))
  text = (f"`{command}`\n\nOn the validation split "
          f"({values(lambda c: c['validation_examples'])} held-out training "
          "digits; PGD-10, the catastrophic-overfitting check, on the first "
          f"{values(lambda c: c['config'].get('overfit_check_size'))} of "
          "them), after each run's last round, mean "
          f"over the first {choice['seeds']} seed(s) every candidate ran. "
          f"Eligible: validation clean >= {FLAGS.clean_floor}, passes per "
          f"training example <= {FLAGS.passes_fraction:.3g} of PGD-AT's on "
          "the same schedule, no round flagged as catastrophic overfitting. "
          "Chosen: the highest validation PGD-10 of the eligible. The test "
          "set is not read.\n\n" + tuning.table(cands, choice))
  results.write_text_atomic(os.path.join(FLAGS.output_dir, "tuning.md"), text)
  print(tuning.table(cands, choice))
  print(f"chosen: {choice['chosen'] or 'none (no candidate is eligible)'}; "
        f"wrote tuning.json and tuning.md in {FLAGS.output_dir}")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
