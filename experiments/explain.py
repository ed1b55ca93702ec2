r"""The paper's Table 1, explained: which broken pipeline gives its numbers?

  python -m experiments.explain --compare_dir=runs/compare-<time>
  python -m experiments.explain --compare_dir=DIR --test_size=1000

On the initial models an `experiments.compare` run saved (MNIST): FGSM
computed without clipping, on raw 0-255 pixels, from the gradient of the
model's outputs instead of its loss (the paper's Fig. 5), the epsilon at
which a correct FGSM falls to the paper's 0.0796, a model trained on raw
pixels and attacked on [0, 1] images, and the paper's method scored on stale
FGSM examples; each beside the paper's row, matched or not
(`fgsm_jax/paper_pipelines.py`). Writes explanation.json and explanation.md
in the run's folder; `experiments.report` adds the same table to report.md.
Minutes on a CPU, not hours: no AutoAttack here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from absl import app, flags

from experiments import common
from fgsm_jax import config as config_lib
from fgsm_jax import paper_pipelines, reporting, results

FLAGS = flags.FLAGS
flags.DEFINE_string("compare_dir", None, "output dir of experiments.compare")
flags.DEFINE_integer("test_size", 0, "first N test examples (0 = all)")
flags.DEFINE_list("epsilons", paper_pipelines.DEFAULT_EPSILONS,
                  "epsilons of the FGSM sweep (what epsilon gives the "
                  "paper's 0.0796)")
flags.DEFINE_integer("chunk_size", 500, "examples per chunk")
common.define_data_flags(dataset=False)


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments {argv[1:]}")
  if not FLAGS.compare_dir:
    common.fail("give --compare_dir (the output dir of experiments.compare)")
  if FLAGS.test_size < 0 or FLAGS.chunk_size < 1:
    common.fail("test_size must be >= 0 and chunk_size >= 1")
  epsilons = common.floats(FLAGS.epsilons, "--epsilons")
  run_dir = FLAGS.compare_dir
  path = os.path.join(run_dir, "comparison.json")
  try:
    with open(path) as f:
      comparison = json.load(f)
    fields = {f.name for f in dataclasses.fields(config_lib.Config)}
    config = config_lib.Config(**{k: v for k, v in
                                  comparison["methods"][0]["config"].items()
                                  if k in fields})
  except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
    common.fail(f"cannot read {path}: {e!r}")
  if config.dataset != "mnist":
    common.fail(f"{path} is a {config.dataset} run; the paper's Table 1 is "
                "MNIST's")
  if not os.path.exists(os.path.join(run_dir, "params-initial.msgpack")):
    common.fail(f"no params-initial.msgpack in {run_dir}")
  dataset, source = common.load_data(config)
  n = FLAGS.test_size or len(dataset.test_labels)
  if n > len(dataset.test_labels):
    common.fail(f"--test_size={n} but the test set has "
                f"{len(dataset.test_labels)} examples")
  print(f"explain: MNIST from {source.description}; {n} test examples",
        flush=True)
  out_json = os.path.join(run_dir, "explanation.json")
  explanation = paper_pipelines.explain_run(
      config, dataset, n, comparison, run_dir, epsilons, FLAGS.chunk_size,
      common.earlier_json(out_json))
  explanation["command"] = " ".join(["python -m experiments.explain"]
                                    + sys.argv[1:])
  results.write_json_atomic(out_json, explanation)
  text = reporting.explanation_markdown(explanation)
  results.write_text_atomic(os.path.join(run_dir, "explanation.md"),
                            f"`{explanation['command']}`\n\n{text}\n")
  print()
  print(text)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
