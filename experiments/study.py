r"""The verdict on the paper's own setting, as one resumable command.

  python -m experiments.study                       # MNIST, 5 seeds
  python -m experiments.study --dataset=fashion_mnist --seeds=3
  python -m experiments.study --literal \
      --pretrained_from=results/study-mnist        # the paper's 15-epoch rounds
  python -m experiments.study --dry_run             # print the commands only
  python -m experiments.study --shards=2 --shard=1  # the report's second half

The report's attacks take most of the time (hours per model on one CPU
core); with --shards=N, N processes (one per core, or machines sharing the
folder) each measure their share of its blocks, once the models are
trained; the same command without --shards then writes the report.

Runs, one after the other, each in its own process and each resumable (the
same command run again goes on where it stopped):
  1. `experiments.compare --preset=study`: the Fig. 3 LeNet trained 15 epochs
     per seed (the last 5,000 training digits held out), then every method
     in --methods from those models (5 rounds of 1 epoch; with --literal,
     3 rounds of 15 epochs on one seed);
  2. `experiments.report` on what it saved: clean, FGSM, PGD, standard
     AutoAttack and the rest of the suite on the first --aa_examples test
     digits (all 10,000 for the models in --whole_test_set_for), paired
     verdicts against the control, the Table 1 explanation.
Everything goes to --output_dir (default results/study-<dataset>[-literal]),
with each step's output in compare.log and report.log there.
"""

from __future__ import annotations

import os
import subprocess
import sys

from absl import app, flags

from experiments import common
from fgsm_jax import data as data_lib

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "mnist", list(data_lib.DATASETS),
                  "the dataset studied")
flags.DEFINE_integer("seeds", None,
                     "seeds (default: the study preset's 5; 1 with --literal)")
flags.DEFINE_list("methods", ["remove_retrain", "control",
                              "remove_test_indices"],
                  "arms, all from the same initial models (the control is "
                  "required for a verdict; remove_test_indices is Table 1's "
                  "hypothesis (f), so MNIST's alone); with --literal or "
                  "another dataset the default is remove_retrain,control")
flags.DEFINE_bool("literal", False,
                  "the paper's rounds of 15 epochs, 3 of them, one seed, "
                  "instead of 5 rounds of 1 epoch")
flags.DEFINE_string("pretrained_from", None,
                    "start from the initial models of another study's folder "
                    "(its first --seeds seeds) instead of training them, e.g. "
                    "--literal from results/study-mnist: the literal rounds "
                    "then start from the 1-epoch study's seed-1 model")
flags.DEFINE_integer("aa_examples", 1000,
                     "test digits every model is attacked on (0 = all)")
flags.DEFINE_integer("block_size", 250,
                     "the report measures a seed in blocks of this many test "
                     "digits, each kept as it ends (it must divide "
                     "--aa_examples): an interrupted report loses at most a "
                     "block")
flags.DEFINE_list("whole_test_set_for", [],
                  "models attacked on all test digits, e.g. "
                  "initial,remove_retrain,control")
flags.DEFINE_string("output_dir", None,
                    "default results/study-<dataset>[-literal]")
flags.DEFINE_integer("shards", 1,
                     "split the report's measuring across this many "
                     "processes (experiments.report --shards); with more "
                     "than 1 only the report's share runs, and the models "
                     "must be trained already")
flags.DEFINE_integer("shard", 0, "this process's share, 0 .. --shards - 1")
flags.DEFINE_bool("dry_run", False, "print the commands, run nothing")
common.define_data_flags(dataset=False)


def arms() -> list[str]:
  """The methods trained: --methods, or with no --methods and --literal (the
  literal rounds cost 15 epochs each) or a dataset other than MNIST (Table
  1's hypotheses are about the paper's MNIST figures) the paper's method
  and its control."""
  if not FLAGS["methods"].present and (FLAGS.literal
                                       or FLAGS.dataset != "mnist"):
    return ["remove_retrain", "control"]
  return list(FLAGS.methods)


def commands(output_dir: str) -> list[tuple[str, list[str]]]:
  """(log name, argv) of each step, from the flags."""
  methods = arms()
  train = [sys.executable, "-m", "experiments.compare", "--preset=study",
           f"--dataset={FLAGS.dataset}", f"--methods={','.join(methods)}",
           f"--output_dir={output_dir}"]
  seeds = FLAGS.seeds if FLAGS.seeds is not None else (1 if FLAGS.literal
                                                       else None)
  if seeds is not None:
    train.append(f"--seeds={seeds}")
  if FLAGS.literal:
    train += ["--retrain_epochs=15", "--rounds=3"]
  if FLAGS.pretrained_from:
    train.append(f"--pretrained_from={FLAGS.pretrained_from}")
  data = ([f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else []) + [
      f"--data_source={FLAGS.data_source}"]
  report = [sys.executable, "-m", "experiments.report",
            f"--compare_dir={output_dir}", f"--subset_size={FLAGS.aa_examples}",
            f"--block_size={FLAGS.block_size}", "--pgd_restarts=3",
            # AutoAttack's chunks on a CPU core: 25 ran 100 digits of the
            # initial seed-1 model in 223 s, 100 in 289 s (BUILD_NOTES.md).
            "--aa_chunk_size=25"]
  if FLAGS.whole_test_set_for:
    report.append(f"--whole_test_set_for={','.join(FLAGS.whole_test_set_for)}")
  if FLAGS.shards > 1:
    return [("report.log", report + data + [f"--shards={FLAGS.shards}",
                                            f"--shard={FLAGS.shard}"])]
  return [("compare.log", train + data), ("report.log", report + data)]


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments {argv[1:]}")
  common.check_methods(FLAGS.methods)
  if FLAGS.seeds is not None and FLAGS.seeds < 1:
    common.fail(f"--seeds must be >= 1, got {FLAGS.seeds}")
  if FLAGS.aa_examples < 0:
    common.fail(f"--aa_examples must be >= 0, got {FLAGS.aa_examples}")
  if FLAGS.block_size < 0:
    common.fail(f"--block_size must be >= 0, got {FLAGS.block_size}")
  if FLAGS.shards < 1 or not 0 <= FLAGS.shard < FLAGS.shards:
    common.fail(f"--shard={FLAGS.shard} --shards={FLAGS.shards}: need "
                "--shards >= 1 and 0 <= --shard < --shards")
  output_dir = FLAGS.output_dir or os.path.join(
      "results", f"study-{FLAGS.dataset.replace('_', '-')}"
      + ("-literal" if FLAGS.literal else ""))
  if FLAGS.shards > 1:
    trained = set(_trained_methods(output_dir))
    untrained = [m for m in arms() if m not in trained]
    if untrained:
      common.fail(f"--shards={FLAGS.shards}: {output_dir} has no trained "
                  f"{', '.join(untrained)}; run the study without --shards "
                  "until its report starts, then start the shards")
  steps = commands(output_dir)
  for log, argv_ in steps:
    print(f"{' '.join(argv_[1:])}   (output: {os.path.join(output_dir, log)})",
          flush=True)
  if FLAGS.dry_run:
    return
  os.makedirs(output_dir, exist_ok=True)
  for log, argv_ in steps:
    print(f"running: python {' '.join(argv_[1:])}", flush=True)
    with open(os.path.join(output_dir, log), "a") as out:
      process = subprocess.Popen(argv_, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
      for line in process.stdout:  # Shown as it comes, and kept.
        sys.stdout.write(line)
        sys.stdout.flush()
        out.write(line)
        out.flush()
      if process.wait() != 0:
        common.runtime_fail(f"{argv_[2]} failed (exit {process.returncode}); "
                            f"see {os.path.join(output_dir, log)}; the same "
                            "command goes on from where it stopped")
  if FLAGS.shards > 1:
    print(f"done: shard {FLAGS.shard}/{FLAGS.shards}'s blocks; the study "
          "without --shards writes the report", flush=True)
  else:
    print(f"done: {os.path.join(output_dir, 'report.md')}", flush=True)


def _trained_methods(output_dir: str) -> list[str]:
  """The methods whose final models comparison.json lists ([] if none)."""
  comparison = common.earlier_json(os.path.join(output_dir,
                                                "comparison.json"))
  return [m["method"] for m in comparison.get("methods", [])
          if os.path.exists(os.path.join(output_dir,
                                         f"params-{m['method']}.msgpack"))]


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
