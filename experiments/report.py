r"""Robust accuracy of the models a comparison saved, under a suite of attacks.

  python -m experiments.report --compare_dir=runs/compare-<time>
  python -m experiments.report --compare_dir=DIR --test_size=1000 --pgd_restarts=2

For every model `experiments.compare` saved (the shared initial models and
each method's final ones, every seed): clean accuracy, FGSM with true and
with predicted labels, PGD with restarts, random sign noise and transfer
from a separately trained model of the same architecture, the per-example
worst case over all of them (robust accuracy), an epsilon sweep (one vmap)
and the gradient-masking checks with their evidence. Writes report.json
after every model and report.md, the table it prints. Re-running on the same
folder with the same attacks keeps the models already measured (an
interrupted report resumes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments import common
from fgsm_jax import config as config_lib
from fgsm_jax import loop, models, results, robustness

FLAGS = flags.FLAGS
flags.DEFINE_string("compare_dir", None, "output dir of experiments.compare")
flags.DEFINE_integer("test_size", 0, "first N test examples (0 = all)")
flags.DEFINE_integer("pgd_steps", 40, "PGD steps")
flags.DEFINE_float("pgd_step_size", 0.01, "PGD step size")
flags.DEFINE_integer("pgd_restarts", 10, "PGD random restarts (worst kept)")
flags.DEFINE_integer("noise_draws", 100, "sign-noise draws (worst kept)")
flags.DEFINE_list("sweep", ["0", "0.05", "0.1", "0.2", "0.3", "0.4", "0.5"],
                  "epsilons of the sweep (PGD, 10 steps of 0.25 eps)")
flags.DEFINE_integer("chunk_size", 500, "examples per chunk")
flags.DEFINE_integer("seed", 0, "attack PRNG seed")
flags.DEFINE_string("data_dir", None,
                    "MNIST IDX folder; default $MNIST_DIR, else TFDS")


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments {argv[1:]}")
  if not FLAGS.compare_dir:
    common.fail("--compare_dir is required (the output dir of "
                "experiments.compare)")
  path = os.path.join(FLAGS.compare_dir, "comparison.json")
  try:
    with open(path) as f:
      comparison = json.load(f)
  except (OSError, ValueError) as e:
    common.fail(f"cannot read {path}: {e}")
  if FLAGS.test_size < 0 or FLAGS.pgd_restarts < 1 or FLAGS.noise_draws < 1:
    common.fail("test_size must be >= 0, pgd_restarts and noise_draws >= 1")
  try:
    sweep = [float(e) for e in FLAGS.sweep]
  except ValueError:
    common.fail(f"--sweep must be numbers, got {FLAGS.sweep}")
  fields = {f.name for f in dataclasses.fields(config_lib.Config)}
  config = config_lib.Config(**{k: v for k, v in
                                comparison["methods"][0]["config"].items()
                                if k in fields})
  mnist = common.load_data(dataclasses.replace(config,
                                               test_size=FLAGS.test_size))
  apply_fn = models.make_apply(config.model, config.conv_impl)
  suite = robustness.AttackSuite(FLAGS.pgd_steps, FLAGS.pgd_step_size,
                                 FLAGS.pgd_restarts, FLAGS.noise_draws)
  images = jnp.asarray(mnist.test_images)
  labels = jnp.asarray(mnist.test_labels)

  def make_evaluate(seeds):
    """All seeds' models under the suite, one program (seeds vmapped)."""
    # The transfer source: the same architecture and training, another seed.
    source_config = dataclasses.replace(config, seed=config.seed + 1000,
                                        seeds=1)
    pretrain = jax.jit(loop.vmap_seeds(loop.make_pretrain(source_config), 1))
    source = pretrain(loop.seed_keys(source_config), jax.device_put(mnist),
                      loop.hparams_from(source_config))
    source_params = jax.tree.map(lambda x: x[0], source.train.params)

    def evaluate(params, key):
      correct = robustness.per_example_correct(
          apply_fn, params, images, labels, config.epsilon, key, suite,
          FLAGS.chunk_size, source=(apply_fn, source_params))
      curve = robustness.accuracy_sweep(apply_fn, params, images, labels,
                                        jnp.asarray(sweep),
                                        jax.random.fold_in(key, 1),
                                        FLAGS.chunk_size)
      zero = robustness.zero_gradient_fraction(apply_fn, params, images,
                                               labels, FLAGS.chunk_size)
      return correct, curve, zero
    return jax.jit(loop.vmap_seeds(evaluate, seeds, batched=(True, False)))

  report = {
      "command": " ".join(["python -m experiments.report"] + sys.argv[1:]),
      "compare_dir": FLAGS.compare_dir,
      "compare_command": comparison.get("command"),
      "test_examples": int(labels.shape[0]),
      "attacks": suite.describe(config.epsilon),
      "sweep_attack": "PGD, 10 steps of 0.25 epsilon, random start",
      "models": [],
  }
  names = ["initial"] + [m["method"] for m in comparison["methods"]]
  out_json = os.path.join(FLAGS.compare_dir, "report.json")
  done = _finished_models(out_json, report, FLAGS.seed, sweep)
  report["attack_seed"] = FLAGS.seed
  report["sweep_epsilons"] = sweep
  key = jax.random.key(FLAGS.seed)
  evaluate = None
  for name in names:
    if name in done:
      report["models"].append(done[name])
      print(f"{name}: already in {out_json} (same attacks), kept", flush=True)
      continue
    params_path = os.path.join(FLAGS.compare_dir, f"params-{name}.msgpack")
    if not os.path.exists(params_path):
      print(f"{name}: no {params_path}, skipped", flush=True)
      continue
    stacked = results.read_params(params_path)
    seeds = jax.tree.leaves(stacked)[0].shape[0]
    if evaluate is None:
      evaluate = make_evaluate(seeds)  # Every model of a comparison has these.
    start = time.perf_counter()
    correct, curve, zero = jax.device_get(evaluate(stacked, key))
    per_seed = []
    for s in range(seeds):
      correct_s = {k: v[s] for k, v in correct.items()}
      per_seed.append({
          "accuracy": robustness.robust_accuracy(correct_s),
          "sweep": {"epsilons": sweep, "accuracy": curve[s].tolist()},
          "zero_gradient_fraction": float(zero[s]),
          "checks": robustness.masking_checks(correct_s, sweep, curve[s],
                                              float(zero[s])),
      })
    attacks_ = per_seed[0]["accuracy"].keys()
    entry = {"model": name, "seeds": seeds, "per_seed": per_seed,
             "accuracy": {a: results.stat([p["accuracy"][a] for p in per_seed])
                          for a in attacks_},
             "failed_checks": sorted({c["check"] for p in per_seed
                                      for c in p["checks"] if not c["passed"]}),
             "wall_time_s": time.perf_counter() - start}
    report["models"].append(entry)
    results.write_json_atomic(out_json, report)
    acc = entry["accuracy"]
    print(f"{name}: clean {acc['clean']['mean']:.4f}, FGSM "
          f"{acc['fgsm']['mean']:.4f}, PGD {acc['pgd']['mean']:.4f}, robust "
          f"{acc['robust']['mean']:.4f} ({entry['wall_time_s']:.0f}s)",
          flush=True)

  table = table_markdown(report)
  with open(os.path.join(FLAGS.compare_dir, "report.md"), "w") as f:
    f.write(f"`{report['command']}`\n\n{table}\n")
  print()
  print(table)


def _finished_models(path, report, seed, sweep) -> dict:
  """Models an earlier, interrupted or complete, report on the same test
  set with the same attacks already measured: re-running resumes."""
  try:
    with open(path) as f:
      earlier = json.load(f)
  except (OSError, ValueError):
    return {}
  same = (earlier.get("attacks") == report["attacks"]
          and earlier.get("test_examples") == report["test_examples"]
          and earlier.get("attack_seed") == seed
          and earlier.get("sweep_epsilons") == sweep)
  return {m["model"]: m for m in earlier.get("models", [])} if same else {}


def table_markdown(report) -> str:
  a = report["attacks"]
  pgd = a["pgd"]
  lines = [
      f"Test examples: {report['test_examples']}; epsilon {a['epsilon']} "
      f"(L-inf, white-box, untargeted). PGD: {pgd['steps']} steps of "
      f"{pgd['step_size']}, {pgd['restarts']} restarts, uniform start, "
      f"per-example worst. Noise: {a['noise']['draws']} sign draws. Transfer: "
      "PGD on a separately trained model of the same architecture. Robust = "
      "right under every attack (per example). Mean ± std over seeds.",
      "",
      "| model | seeds | clean | FGSM | FGSM (pred. labels) | PGD | noise | "
      "transfer | robust | masking checks failed |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for m in report["models"]:
    def cell(k):
      s = m["accuracy"][k]
      return f"{s['mean']:.4f} ± {s['std']:.4f}"
    lines.append(
        f"| {m['model']} | {m['seeds']} | {cell('clean')} | {cell('fgsm')} | "
        f"{cell('fgsm_predicted')} | {cell('pgd')} | {cell('noise')} | "
        f"{cell('transfer')} | {cell('robust')} | "
        f"{', '.join(m['failed_checks']) or 'none'} |")
  return "\n".join(lines)


if __name__ == "__main__":
  app.run(main)
