r"""Robust accuracy against compute: the frontier of a comparison.

  python -m experiments.pareto --run_dir=results/compare_aa

Reads what `experiments.compare` (comparison.json: each method's passes and
wall time) and `experiments.report` (report.json: robust accuracy per seed)
wrote in --run_dir, and writes pareto.json, pareto.md and pareto.png there:
every finished model as a point, robust accuracy over the test examples all
of them were measured on against forward + backward passes per training
example, the frontier marked (`fgsm_jax/pareto.py`). Seconds; no model runs.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from experiments import common
from fgsm_jax import pareto, plots, results

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None,
                    "a folder holding comparison.json and report.json")
flags.DEFINE_bool("plots", True, "write pareto.png")


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments {argv[1:]}")
  if not FLAGS.run_dir:
    common.fail("give --run_dir (a folder of experiments.compare, reported "
                "on by experiments.report)")
  loaded = {}
  for name in ("comparison.json", "report.json"):
    path = os.path.join(FLAGS.run_dir, name)
    try:
      with open(path) as f:
        loaded[name] = json.load(f)
    except (OSError, ValueError) as e:
      common.fail(f"cannot read {path}: {e}")
  comparison, report = loaded["comparison.json"], loaded["report.json"]
  try:
    pts, n = pareto.points(comparison, report)
  except (KeyError, TypeError, ValueError) as e:
    common.fail(f"cannot read the points from {FLAGS.run_dir}: {e!r}")
  front = pareto.frontier(pts)
  finished = {m["model"] for m in report["models"]}
  pending = [m for m in report.get("models_planned", []) if m not in finished]
  setup = comparison["setup"]
  out = {"run_dir": FLAGS.run_dir, "dataset": setup.get("dataset"),
         "model": setup.get("model"), "epsilon": setup.get("epsilon"),
         "test_examples": n, "points": pts, "frontier": front,
         "pending": pending}
  results.write_json_atomic(os.path.join(FLAGS.run_dir, "pareto.json"), out)
  title = (f"{setup.get('dataset')}, {setup.get('model')}, eps "
           f"{setup.get('epsilon')}: robust accuracy on {n} test examples "
           "against compute")
  text = [f"# {title}", "", pareto.table(pts, front, n)]
  if pending:
    text.append(f"Not yet in the report (no point): {', '.join(pending)}.\n")
  results.write_text_atomic(os.path.join(FLAGS.run_dir, "pareto.md"),
                            "\n".join(text))
  if FLAGS.plots:
    plots.pareto_plot(pts, front, os.path.join(FLAGS.run_dir, "pareto.png"),
                      title)
  print(f"frontier: {', '.join(front)}; {len(pts)} point(s) on {n} test "
        f"examples; wrote pareto.json, pareto.md"
        + (", pareto.png" if FLAGS.plots else "") + f" in {FLAGS.run_dir}")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
