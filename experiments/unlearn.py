r"""The paper's unlearning loop: train, attack, select, unlearn, repeat.

  python -m experiments.unlearn --epsilon=0.1
  python -m experiments.unlearn --preset=paper --seeds=3 --output_dir=runs/paper
  python -m experiments.unlearn --preset=smoke --dataset=fashion_mnist

MNIST (bundled with the package) unless --dataset says otherwise.

The method's control (the same rounds from the same initial model and
minibatches, nothing removed: continued training alone) runs beside it in
the same program unless --nocontrol; it costs about one epoch per round.

Prints progress, the paper's Table 1 beside ours (MNIST; other datasets:
our figures alone), then the control and the paired difference method −
control with its interval and verdict (one seed: underpowered, no verdict);
writes results.json, the final models (params.msgpack and
params-control.msgpack, a leading seed axis; results.read_params)
and two views: rounds.png (per-round clean, white-box FGSM and stale FGSM
accuracy, the control's beside) and digits-fgsm.png (test digits, their FGSM
images against the final model, and its predictions). With --checkpoint (the
default) an interrupted run goes on where it stopped when the same command
is run again.
"""

from __future__ import annotations

import os
import sys

import jax
from absl import app, flags

from experiments import common
from fgsm_jax import config as config_lib
from fgsm_jax import data as data_lib
from fgsm_jax import results

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "default",
                    f"one of {sorted(config_lib.PRESETS)}; flags override it")
common.define_config_flags()
flags.DEFINE_string("output_dir", None,
                    "where results.json goes; default runs/unlearn-<time>")
flags.DEFINE_bool("control", True,
                  "run the method's control beside it (the same rounds from "
                  "the same initial models and minibatches, nothing removed) "
                  "and print the paired difference; --nocontrol: the method "
                  "alone (about one epoch per round less)")
flags.DEFINE_bool("progress", True, "print per-epoch and per-round progress")
flags.DEFINE_bool("plots", True, "write rounds.png and digits-fgsm.png")
flags.DEFINE_bool("tensorboard", True,
                  "write per-round scalars to OUTPUT_DIR/tensorboard when "
                  "tensorboard is installed (pip install -e .[tensorboard])")
flags.DEFINE_bool("checkpoint", True,
                  "save the run state after the initial training and after "
                  "every round in OUTPUT_DIR/checkpoints; the same command "
                  "run again goes on from the last one (--nocheckpoint: one "
                  "compiled program for the whole run, nothing saved until "
                  "the end)")
flags.DEFINE_bool("resume", False,
                  "go on with an interrupted run: the one in --output_dir, "
                  "else the newest runs/unlearn-* that has checkpoints and "
                  "no results.json (without --resume, the same command with "
                  "the same --output_dir goes on too)")
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
  if FLAGS.resume and not FLAGS.checkpoint:
    common.fail("--resume needs checkpoints; drop --nocheckpoint")
  given = (common.interrupted_run(FLAGS.output_dir, "unlearn", "results.json")
           if FLAGS.resume else FLAGS.output_dir)
  output_dir = common.output_dir(given, "unlearn")
  # The control beside the control would be the same run twice.
  control = FLAGS.control and config.method != "control"
  dataset, source = common.load_data(config)

  from fgsm_jax import checkpoint, runner
  print(common.header_line(config, source), flush=True)
  print(f"settings: {config_lib.describe(config)}; every value is in "
        "results.json", flush=True)
  if control:
    print("control: the same rounds from the same initial model(s), nothing "
          "removed, runs beside the method (--nocontrol: the method alone)",
          flush=True)
  printer = (common.ProgressPrinter(
      config.seeds, epochs=config.epochs + config.rounds * config.retrain_epochs
      * (2 if control else 1)) if FLAGS.progress else None)
  # Each process of a multi-host run keeps its own seeds' results; their
  # states are not one array orbax could save together, so no checkpoints.
  checkpoints = (os.path.join(output_dir, "checkpoints")
                 if FLAGS.checkpoint and jax.process_count() == 1 else None)
  if checkpoints and not FLAGS.resume and FLAGS.output_dir is None:
    print(f"saving checkpoints in {checkpoints}; if the run stops, the same "
          "command with --resume goes on from the last one", flush=True)
  try:
    outcome = runner.run_unlearning(
        config, dataset, printer, checkpoints, control=control,
        control_progress=printer.labelled("control: ") if printer else None)
  except checkpoint.CheckpointMismatch as e:
    common.fail(str(e))
  if outcome["resumed_after_round"] is not None:
    print(f"resumed from {checkpoints}: the initial training and "
          f"{outcome['resumed_after_round']} round(s) were restored, not "
          "run again", flush=True)
  outcome["command"] = " ".join(["python -m experiments.unlearn"] + sys.argv[1:])
  outcome["data"].update(dataset=config.dataset, source=source.to_dict())
  common.check_finite(outcome["per_seed"], f"method {config.method}",
                      discard=checkpoints)
  if control:
    common.check_finite(outcome["control"]["per_seed"], "the control",
                        discard=checkpoints)

  suffix = ("" if jax.process_count() == 1
            else f"-process{jax.process_index()}")
  final_params = outcome.pop("final_params")
  if control:
    results.write_params(
        os.path.join(output_dir, f"params-control{suffix}.msgpack"),
        final_params.control)
    final_params = final_params.method
  results.write_params(os.path.join(output_dir, f"params{suffix}.msgpack"),
                       final_params)
  path = os.path.join(output_dir, f"results{suffix}.json")
  results.write_json_atomic(path, outcome)
  if FLAGS.plots:
    _plots(outcome, final_params, dataset, config, output_dir, suffix)
  if FLAGS.tensorboard:
    from fgsm_jax import scalars
    logdir = os.path.join(output_dir, f"tensorboard{suffix}")
    if scalars.write_rounds(logdir, outcome["per_seed"]):
      print(f"wrote TensorBoard scalars: tensorboard --logdir {logdir}",
            flush=True)
  times = outcome["wall_time_s"]
  print()
  print(results.table1_markdown(outcome["summary"], config.dataset))
  n_train = outcome["data"]["train_examples"]
  def passes(records):
    total = [r["passes"]["total"]["backward"] for r in records]
    return f"{sum(total) / len(total) / n_train:.1f}"
  print(f"\nmethod {config.method}; backward passes per seed: "
        f"{passes(outcome['per_seed'])} x the training set")
  if control:
    print()
    print(results.versus_control_markdown(outcome))
    print(f"\ncontrol; backward passes per seed: "
          f"{passes(outcome['control']['per_seed'])} x the training set "
          "(the shared initial training included)")
  print(f"compile {times['compile']:.1f}s, run {times['run']:.1f}s on "
        f"{outcome['device']['backend']}; wrote {path}")


def _plots(outcome, final_params, dataset, config, output_dir, suffix):
  """rounds.png and digits-fgsm.png beside results.json (seed 0's digits)."""
  import jax.numpy as jnp
  import numpy as np
  from fgsm_jax import attacks, models, plots, reporting
  seeds = len(outcome["per_seed"])
  title = data_lib.DATASETS[config.dataset].title
  setting = (f"{title}, {config.model}, epsilon {config.epsilon}, "
             f"{outcome['data']['test_examples']} test examples")
  plots.rounds_plot(
      reporting.comparison_from_unlearn(outcome)["methods"],
      os.path.join(output_dir, f"rounds{suffix}.png"),
      f"Per round; {setting}", seeds)
  apply_fn = models.make_apply(config.model, config.conv_impl)
  params = jax.tree.map(lambda x: x[0], final_params)
  k = 8
  images = jnp.asarray(dataset.test_images[:k])
  labels = jnp.asarray(dataset.test_labels[:k])
  adv = attacks.fgsm(apply_fn, params, images, labels, config.epsilon)
  rows = [("FGSM vs the\nfinal model", np.asarray(adv),
           np.asarray(jnp.argmax(apply_fn(params, adv), -1)))]
  plots.digit_grid(np.asarray(images), np.asarray(labels), rows,
                   os.path.join(output_dir, f"digits-fgsm{suffix}.png"),
                   f"First {k} {title} test images, their white-box FGSM images "
                   f"(epsilon {config.epsilon}) and the final model's "
                   f"predictions (seed 0, method {config.method}); red = wrong",
                   np.asarray(jnp.argmax(apply_fn(params, images), -1)))
  print(f"wrote rounds{suffix}.png and digits-fgsm{suffix}.png", flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
