r"""How the cost of a run grows with seeds and with the training-set size.

  python -m experiments.scaling \
      [--seeds=1,2,4,8] [--seed_train_size=6000] \
      [--train_sizes=7500,15000,30000,60000] [--json=FILE]

Each point is one whole compiled run of the default preset cut down to one
initial epoch and one round (1 retraining epoch), on `--test_size` test
examples, compile and run timed apart. The seed sweep runs all seeds as one
vmapped program (sharded over the local devices when there are several); the
size sweep runs one seed on the first N training examples.
"""

from __future__ import annotations

import sys

from absl import app, flags

from experiments import common

import fgsm_jax as fj
from fgsm_jax import data, results, runner

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "lenet", "lenet or lenet5")
flags.DEFINE_list("seeds", ["1", "2", "4", "8"], "seed counts to run")
flags.DEFINE_integer("seed_train_size", 6000, "training examples, seed sweep")
flags.DEFINE_list("train_sizes", ["7500", "15000", "30000", "60000"],
                  "training-set sizes, one seed")
flags.DEFINE_integer("test_size", 1000, "test examples in every run")
common.define_data_flags()
flags.DEFINE_string("json", None, "also write the results to this file")


def timed_run(mnist, seeds: int, train_size: int) -> dict:
  config = fj.get_config("default", dataset=FLAGS.dataset,
                         model=FLAGS.model, seeds=seeds, epochs=1,
                         retrain_epochs=1, rounds=1, train_size=train_size,
                         test_size=FLAGS.test_size)
  out = runner.run_unlearning(
      config, data.take(mnist, config.train_size, config.test_size))
  return {"seeds": seeds, "train_size": train_size,
          "compile_s": out["wall_time_s"]["compile"],
          "run_s": out["wall_time_s"]["run"],
          "seed_devices": out["device"]["seed_devices"]}


def main(argv):
  del argv
  mnist, source = common.load_full(FLAGS.dataset)
  out = {"command": " ".join(["python -m experiments.scaling"] + sys.argv[1:]),
         "dataset": FLAGS.dataset, "data_source": source.to_dict(),
         "model": FLAGS.model, "test_size": FLAGS.test_size, "seeds": [],
         "train_sizes": []}
  for seeds in map(int, FLAGS.seeds):
    row = timed_run(mnist, seeds, FLAGS.seed_train_size)
    base = out["seeds"][0]["run_s"] if out["seeds"] else row["run_s"]
    row["run_over_one_seed"] = row["run_s"] / base
    row["run_s_per_seed"] = row["run_s"] / seeds
    out["seeds"].append(row)
    print(f"seeds {seeds}: run {row['run_s']:7.1f} s ({row['run_s_per_seed']:6.1f}"
          f" s per seed, {row['run_over_one_seed']:4.2f}x one seed; compile "
          f"{row['compile_s']:.1f} s; {row['seed_devices']} device(s))",
          flush=True)
  for size in map(int, FLAGS.train_sizes):
    row = timed_run(mnist, 1, size)
    row["run_s_per_1k_examples"] = 1000 * row["run_s"] / size
    out["train_sizes"].append(row)
    print(f"train size {size}: run {row['run_s']:7.1f} s "
          f"({row['run_s_per_1k_examples']:5.2f} s per 1,000 examples; compile "
          f"{row['compile_s']:.1f} s)", flush=True)
  if FLAGS.json:
    results.write_json_atomic(FLAGS.json, out)
    print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
