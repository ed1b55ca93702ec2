r"""The paper's unlearning loop on MNIST: train, attack, select, unlearn, repeat.

  python -m experiments.unlearn --epsilon=0.1
  python -m experiments.unlearn --preset=paper --seeds=3 --output_dir=runs/paper

Prints progress and the paper's Table 1 beside ours; writes results.json.
"""

from __future__ import annotations

import datetime
import os
import sys
import time

import jax
from absl import app, flags

from fgsm_jax import config as config_lib
from fgsm_jax import data as data_lib
from fgsm_jax import results

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "default",
                    f"one of {sorted(config_lib.PRESETS)}; flags override it")
flags.DEFINE_float("epsilon", None, "FGSM L-inf radius in [0, 1]")
flags.DEFINE_string("model", None, "lenet (paper Fig. 3) or lenet5 (Fig. 4)")
flags.DEFINE_string("conv_impl", None, "auto, shifted_matmul or xla")
flags.DEFINE_integer("seeds", None, "independent runs, vmapped")
flags.DEFINE_integer("seed", None, "base PRNG seed")
flags.DEFINE_integer("epochs", None, "initial training epochs")
flags.DEFINE_integer("retrain_epochs", None, "training epochs after each removal")
flags.DEFINE_integer("rounds", None, "cap on unlearning rounds")
flags.DEFINE_integer("forget_per_round", None, "examples removed per round")
flags.DEFINE_float("target_accuracy", None, "stop at this white-box FGSM accuracy")
flags.DEFINE_integer("batch_size", None, "minibatch size")
flags.DEFINE_float("learning_rate", None, "Adam learning rate")
flags.DEFINE_integer("chunk_size", None, "examples per chunk of full-split passes")
flags.DEFINE_integer("train_size", None, "first N training examples (0 = all)")
flags.DEFINE_integer("test_size", None, "first N test examples (0 = all)")
flags.DEFINE_string("data_dir", None,
                    "folder of the four MNIST IDX files; default $MNIST_DIR, "
                    "else tensorflow-datasets")
flags.DEFINE_string("output_dir", None,
                    "where results.json goes; default runs/unlearn-<time>")
flags.DEFINE_bool("progress", True, "print per-epoch and per-round progress")
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

FIELDS = ("epsilon", "model", "conv_impl", "seeds", "seed", "epochs",
          "retrain_epochs", "rounds", "forget_per_round", "target_accuracy",
          "batch_size", "learning_rate", "chunk_size", "train_size",
          "test_size")


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


class ProgressPrinter:
  """Prints one line per epoch and per round, averaged over the seeds.

  Reports arrive from inside the compiled program once per seed; a line is
  printed when every seed's report for that step is in.
  """

  def __init__(self, seeds: int):
    self.seeds = seeds
    self.pending = {}
    self.start = time.perf_counter()

  def __call__(self, kind, values):
    key = (kind, int(values["round"]), int(values.get("epoch", 0)))
    self.pending.setdefault(key, []).append(values)
    if len(self.pending[key]) < self.seeds:
      return
    reports = [v for v in self.pending.pop(key) if bool(v["active"])]
    if not reports:
      return
    elapsed = time.perf_counter() - self.start
    if kind == "epoch":
      loss = sum(float(v["loss"]) for v in reports) / len(reports)
      print(f"[{elapsed:7.1f}s] round {key[1]} epoch {key[2]}/"
            f"{int(reports[0]['epochs'])}: train loss {loss:.4f}", flush=True)
    else:
      def mean(name):
        return sum(float(getattr(v["metrics"], name)) for v in reports) / len(reports)
      print(f"[{elapsed:7.1f}s] round {key[1]} done ({len(reports)} seed(s) "
            f"active): clean {mean('clean_accuracy'):.4f}, FGSM white-box "
            f"{mean('fgsm_accuracy'):.4f}, FGSM stale "
            f"{mean('transfer_accuracy'):.4f}, removed "
            f"{mean('removed'):.0f}", flush=True)


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments {argv[1:]}")
  if FLAGS.distributed:
    # Before anything touches a JAX backend (resolving conv_impl does). On
    # Cloud TPU the arguments are found automatically (all None).
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                               FLAGS.process_id)
  try:
    config = config_lib.get_config(
        FLAGS.preset, **{f: getattr(FLAGS, f) for f in FIELDS})
  except ValueError as e:
    fail(str(e))

  output_dir = FLAGS.output_dir or os.path.join(
      "runs", "unlearn-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
  try:
    os.makedirs(output_dir, exist_ok=True)
    probe = os.path.join(output_dir, f".write-test-{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    fail(f"output dir {output_dir!r} is not writable: {e}")

  try:
    dataset = data_lib.take(data_lib.load_mnist(FLAGS.data_dir),
                            config.train_size, config.test_size)
  except data_lib.DataError as e:
    fail(f"{e} (set --data_dir or MNIST_DIR to a folder of the MNIST IDX files)")

  from fgsm_jax import runner
  print(f"config: {config}", flush=True)
  printer = ProgressPrinter(config.seeds) if FLAGS.progress else None
  outcome = runner.run_unlearning(config, dataset, printer)
  outcome["command"] = " ".join(["python -m experiments.unlearn"] + sys.argv[1:])

  name = ("results.json" if jax.process_count() == 1
          else f"results-process{jax.process_index()}.json")
  path = os.path.join(output_dir, name)
  results.write_json_atomic(path, outcome)
  times = outcome["wall_time_s"]
  print()
  print(results.table1_markdown(outcome["summary"]))
  print(f"\ncompile {times['compile']:.1f}s, run {times['run']:.1f}s on "
        f"{outcome['device']['backend']}; wrote {path}")


if __name__ == "__main__":
  app.run(main)
