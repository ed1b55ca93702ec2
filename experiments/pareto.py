r"""Robust accuracy against compute: the frontier of a comparison.

  python -m experiments.pareto --run_dir=results/compare_aa

Reads what `experiments.compare` (comparison.json: each method's passes and
wall time) and `experiments.report` (report.json: robust accuracy per seed)
wrote in --run_dir, and writes pareto.json, pareto.md and pareto.png there:
every finished model as a point, robust accuracy over the test examples all
of them were measured on against forward + backward passes per training
example, the frontier marked (`fgsm_jax/pareto.py`). Seconds; no model runs.

  python -m experiments.pareto --run_dir=results/frontier-mnist \
      --with_dirs=results/tuned-mnist/fgsm_rs-e0.2-cyclic

adds the models of other folders (a tuned recipe, run from the same
initial models) to the same frontier, as `<folder name>/<model>`.

  python -m experiments.pareto --run_dir=results/frontier-mnist --from_blocks

reads the blocks a long report has saved so far (report-blocks/) instead of
its report.json: every point over the blocks all models and seeds of all
folders have, the table saying which test examples those are; it writes
pareto-blocks.json, .md and .png, so a partial frontier is never taken for
the report's.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from experiments import common
from fgsm_jax import pareto, plots, reporting, results

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None,
                    "a folder holding comparison.json and report.json")
flags.DEFINE_list("with_dirs", [],
                  "more folders of experiments.compare and experiments.report "
                  "(a recipe each, e.g. a tuned defense): their models join "
                  "the frontier as <folder name>/<model>, their initial "
                  "models left out when trained from --run_dir's "
                  "--pretrained_from folder")
flags.DEFINE_float("target_robust", None,
                   "a target robust accuracy: pareto.md says which model "
                   "reaches it within the clean floor and the budget, or by "
                   "how much the best within them misses (unset: no target)")
flags.DEFINE_float("target_clean", 0.992,
                   "with --target_robust: the least clean accuracy")
flags.DEFINE_float("target_passes_fraction", 1 / 3,
                   "with --target_robust: the most passes per training "
                   "example, as a fraction of PGD-AT's on the same schedule")
flags.DEFINE_string("next_step", None,
                    "with --target_robust: a sentence on what comes next if "
                    "the target is missed, written under pareto.png and in "
                    "pareto.md (ignored when it is met)")
flags.DEFINE_bool("from_blocks", False,
                  "read the blocks experiments.report saved in each "
                  "folder's report-blocks/ (a report under way) instead of "
                  "report.json: the points over the blocks every model and "
                  "seed of every folder has")
flags.DEFINE_bool("plots", True, "write pareto.png")


def _blocks_runs(dirs: list[str], comparisons: list[dict]
                 ) -> tuple[list[dict], str]:
  """Report-like dicts of each folder's models over the blocks they all
  saved (`pareto.report_of_blocks`), and which test examples those are."""
  runs = []
  for i, (d, c) in enumerate(zip(dirs, comparisons)):
    models = [e["method"] for e in c["methods"]]
    if not (i and pareto.shares_initial(comparisons[0], c)):
      models = ["initial"] + models
    runs.append((models, int(c["setup"]["seeds"]),
                 results.saved_blocks(os.path.join(d, "report-blocks"))))
  chosen, count = pareto.shared_blocks(runs)
  reports = [pareto.report_of_blocks(*run, chosen, results.read_block)
             for run in runs]
  size = reports[0]["models"][0]["per_seed"][0]["test_examples"] // len(
      chosen)
  return reports, pareto.blocks_phrase(chosen, count, size)


def _load(run_dir: str, names=("comparison.json", "report.json")
          ) -> tuple[dict, ...]:
  loaded = {}
  for name in names:
    path = os.path.join(run_dir, name)
    try:
      with open(path) as f:
        loaded[name] = json.load(f)
    except (OSError, ValueError) as e:
      common.fail(f"cannot read {path}: {e}")
  return tuple(loaded[name] for name in names)


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments {argv[1:]}")
  if not FLAGS.run_dir:
    common.fail("give --run_dir (a folder of experiments.compare, reported "
                "on by experiments.report)")
  labels = common.folder_labels(FLAGS.with_dirs, "--with_dirs")
  if FLAGS.next_step is not None and FLAGS.target_robust is None:
    common.fail("--next_step says what comes after a missed target: give "
                "--target_robust too")
  if FLAGS.target_robust is not None and not (
      0 <= FLAGS.target_robust <= 1 and 0 <= FLAGS.target_clean <= 1
      and FLAGS.target_passes_fraction > 0):
    common.fail(f"--target_robust={FLAGS.target_robust} and --target_clean="
                f"{FLAGS.target_clean} must be in [0, 1] and "
                f"--target_passes_fraction={FLAGS.target_passes_fraction} > 0")
  dirs = [FLAGS.run_dir] + list(FLAGS.with_dirs)
  where = None
  try:
    if FLAGS.from_blocks:
      comparisons = [_load(d, ("comparison.json",))[0] for d in dirs]
      reports, where = _blocks_runs(dirs, comparisons)
    else:
      comparisons, reports = zip(*(_load(d) for d in dirs))
    runs = list(zip([""] + labels, comparisons, reports))
    pts, n = pareto.points_of_runs(runs)
  except (KeyError, TypeError, ValueError, OSError) as e:
    common.fail(f"cannot read the points from "
                f"{', '.join([FLAGS.run_dir] + FLAGS.with_dirs)}: {e!r}")
  front = pareto.frontier(pts)
  pending = []
  for label, _, rep in runs:
    finished = {m["model"] for m in rep["models"]}
    pending += [f"{label}/{m}" if label else m
                for m in rep.get("models_planned", []) if m not in finished]
  setup = comparisons[0]["setup"]
  out = {"run_dir": FLAGS.run_dir, "with_dirs": list(FLAGS.with_dirs),
         "dataset": setup.get("dataset"),
         "model": setup.get("model"), "epsilon": setup.get("epsilon"),
         "test_examples": n, "points": pts, "frontier": front,
         "pending": pending, "from_blocks": FLAGS.from_blocks,
         **({"test_examples_which": where} if where else {})}
  target = None
  if FLAGS.target_robust is not None:
    target = pareto.target(pts, FLAGS.target_robust, FLAGS.target_clean,
                           FLAGS.target_passes_fraction)
    out["target"] = target
  # The most robust point within the target's budget and clean floor (or,
  # without one, the most robust point) against every other, seed by seed.
  reference = ((target or {}).get("best_within")
               or max(pts, key=lambda p: p["robust"])["model"])
  margin, confidence = reporting.margin_and_confidence(
      comparisons[0]["methods"])
  rows, unpaired = pareto.paired_against(pts, reference, margin, confidence)
  out["paired"] = {"reference": reference, "rows": rows,
                   "unpaired": unpaired}
  stem = "pareto-blocks" if FLAGS.from_blocks else "pareto"
  results.write_json_atomic(os.path.join(FLAGS.run_dir, f"{stem}.json"), out)
  title = (f"{setup.get('dataset')}, {setup.get('model')}, eps "
           f"{setup.get('epsilon')}: robust accuracy on {n} test examples "
           "against compute")
  text = [f"# {title}", "", pareto.table(pts, front, n, where)]
  caption = None
  if target:
    text.append(pareto.target_line(target))
    if FLAGS.next_step and not target["met_by"]:
      caption = f"Next step: {FLAGS.next_step}"
      text.append(caption + "\n")
  why = ("the most robust within the target's budget and clean floor"
         if target and target["best_within"] else "the most robust point")
  text += [f"## Every point against {reference}", "",
           f"{reference} is {why}; a negative difference is a point below "
           "it.", "", reporting.paired_table(rows) if rows
           else "No other point pairs with it.", ""]
  if unpaired:
    text.append("Not paired with it (other initial models, or other seeds): "
                f"{', '.join(unpaired)}.\n")
  if pending:
    text.append(f"Not yet in the report (no point): {', '.join(pending)}.\n")
  results.write_text_atomic(os.path.join(FLAGS.run_dir, f"{stem}.md"),
                            "\n".join(text))
  if FLAGS.plots:
    plots.pareto_plot(pts, front,
                      os.path.join(FLAGS.run_dir, f"{stem}.png"), title,
                      target, caption)
  print(f"frontier: {', '.join(front)}; {len(pts)} point(s) on {n} test "
        f"examples; " + (pareto.target_line(target).strip() + " " if target
                         else "")
        + f"wrote {stem}.json, {stem}.md"
        + (f", {stem}.png" if FLAGS.plots else "") + f" in {FLAGS.run_dir}")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
