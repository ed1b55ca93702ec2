r"""The paper's unlearning loop on MNIST: train, attack, select, unlearn, repeat.

  python -m experiments.unlearn --epsilon=0.1
  python -m experiments.unlearn --preset=paper --seeds=3 --output_dir=runs/paper

Prints progress and the paper's Table 1 beside ours; writes results.json and
the final models (params.msgpack, a leading seed axis; results.read_params).
"""

from __future__ import annotations

import os
import sys

import jax
from absl import app, flags

from experiments import common
from fgsm_jax import config as config_lib
from fgsm_jax import results

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "default",
                    f"one of {sorted(config_lib.PRESETS)}; flags override it")
common.define_config_flags()
flags.DEFINE_string("output_dir", None,
                    "where results.json goes; default runs/unlearn-<time>")
flags.DEFINE_bool("progress", True, "print per-epoch and per-round progress")
flags.DEFINE_bool("checkpoint", True,
                  "save the run state after the initial training and after "
                  "every round in OUTPUT_DIR/checkpoints; the same command "
                  "run again goes on from the last one (--nocheckpoint: one "
                  "compiled program for the whole run, nothing saved until "
                  "the end)")
flags.DEFINE_bool("distributed", False,
                  "call jax.distributed.initialize() first (multi-host, e.g. "
                  "a TPU pod slice: run the same command on every host); each "
                  "process runs --seeds seeds of its own and writes "
                  "results-process<i>.json")
flags.DEFINE_string("coordinator_address", None,
                    "with --distributed, off Cloud TPU: host:port of process 0")
flags.DEFINE_integer("num_processes", None,
                     "with --distributed, off Cloud TPU: number of processes")
flags.DEFINE_integer("process_id", None,
                     "with --distributed, off Cloud TPU: this process's index")


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments {argv[1:]}")
  if FLAGS.distributed:
    # Before anything touches a JAX backend (resolving conv_impl does). On
    # Cloud TPU the arguments are found automatically (all None).
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                               FLAGS.process_id)
  config = common.config_from_flags(FLAGS.preset)
  output_dir = common.output_dir(FLAGS.output_dir, "unlearn")
  dataset = common.load_data(config)

  from fgsm_jax import checkpoint, runner
  print(f"config: {config}", flush=True)
  printer = (common.ProgressPrinter(
      config.seeds, epochs=config.epochs + config.rounds * config.retrain_epochs)
      if FLAGS.progress else None)
  # Each process of a multi-host run keeps its own seeds' results; their
  # states are not one array orbax could save together, so no checkpoints.
  checkpoints = (os.path.join(output_dir, "checkpoints")
                 if FLAGS.checkpoint and jax.process_count() == 1 else None)
  try:
    outcome = runner.run_unlearning(config, dataset, printer, checkpoints)
  except checkpoint.CheckpointMismatch as e:
    common.fail(str(e))
  if outcome["resumed_after_round"] is not None:
    print(f"resumed from {checkpoints}: the initial training and "
          f"{outcome['resumed_after_round']} round(s) were restored, not "
          "run again", flush=True)
  outcome["command"] = " ".join(["python -m experiments.unlearn"] + sys.argv[1:])
  common.check_finite(outcome["per_seed"], f"method {config.method}")

  suffix = ("" if jax.process_count() == 1
            else f"-process{jax.process_index()}")
  results.write_params(os.path.join(output_dir, f"params{suffix}.msgpack"),
                       outcome.pop("final_params"))
  path = os.path.join(output_dir, f"results{suffix}.json")
  results.write_json_atomic(path, outcome)
  times = outcome["wall_time_s"]
  print()
  print(results.table1_markdown(outcome["summary"]))
  passes = [r["passes"]["total"]["backward"] for r in outcome["per_seed"]]
  n_train = outcome["data"]["train_examples"]
  print(f"\nmethod {config.method}; backward passes per seed: "
        f"{sum(passes) / len(passes) / n_train:.1f} x the training set")
  print(f"compile {times['compile']:.1f}s, run {times['run']:.1f}s on "
        f"{outcome['device']['backend']}; wrote {path}")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
