r"""Robust accuracy of the models a comparison saved, under a suite of attacks.

  python -m experiments.report --compare_dir=runs/compare-<time>
  python -m experiments.report --compare_dir=DIR --test_size=1000 --pgd_restarts=2
  python -m experiments.report --unlearn_dir=runs/unlearn-<time>

For every model `experiments.compare` saved (the shared initial models and
each method's final ones, every seed), or the final models of an
`experiments.unlearn` run: clean accuracy, FGSM with true and
with predicted labels, PGD with restarts, random sign noise and transfer
from separately trained models of the same and of the other architecture,
the per-example worst case over all of them (robust accuracy), an epsilon
sweep (one vmap) and the gradient-masking checks with their evidence,
including what a stale evaluation (FGSM examples of the initial model) would
claim. Writes report.json after every model, then report.md (the paper's
Table 1 beside ours, the comparison under PGD, white-box vs stale, failed
checks) and the plots sweep.png, rounds.png and digits.png. Re-running on
the same folder with the same attacks keeps the models already measured (an
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
import numpy as np
from absl import app, flags

from experiments import common
from fgsm_jax import attacks
from fgsm_jax import config as config_lib
from fgsm_jax import loop, models, plots, results, robustness

FLAGS = flags.FLAGS
flags.DEFINE_string("compare_dir", None, "output dir of experiments.compare")
flags.DEFINE_string("unlearn_dir", None,
                    "or: output dir of experiments.unlearn (one method, its "
                    "final models; no saved initial models)")
flags.DEFINE_integer("test_size", 0, "first N test examples (0 = all)")
flags.DEFINE_integer("pgd_steps", 40, "PGD steps")
flags.DEFINE_float("pgd_step_size", 0.01, "PGD step size")
flags.DEFINE_integer("pgd_restarts", 10, "PGD random restarts (worst kept)")
flags.DEFINE_integer("noise_draws", 100, "sign-noise draws (worst kept)")
flags.DEFINE_list("sweep", ["0", "0.05", "0.1", "0.2", "0.3", "0.4", "0.5"],
                  "epsilons of the sweep (PGD, 10 steps of 0.25 eps)")
flags.DEFINE_bool("transfer_other", True,
                  "also transfer from a model of the other architecture")
flags.DEFINE_bool("plots", True, "write sweep.png, rounds.png, digits.png")
flags.DEFINE_integer("chunk_size", 500, "examples per chunk")
flags.DEFINE_integer("seed", 0, "attack PRNG seed")
flags.DEFINE_string("data_dir", None,
                    "MNIST IDX folder; default $MNIST_DIR, else TFDS")

OTHER_MODEL = {"lenet": "lenet5", "lenet5": "lenet"}
GRID_MODELS = ("initial", "remove_retrain", "pgd_at")


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments {argv[1:]}")
  if bool(FLAGS.compare_dir) == bool(FLAGS.unlearn_dir):
    common.fail("give one of --compare_dir (the output dir of "
                "experiments.compare) or --unlearn_dir (of experiments.unlearn)")
  run_dir = FLAGS.compare_dir or FLAGS.unlearn_dir
  path = os.path.join(run_dir, "comparison.json" if FLAGS.compare_dir
                      else "results.json")
  try:
    with open(path) as f:
      comparison = json.load(f)
    if FLAGS.unlearn_dir:
      comparison = comparison_from_unlearn(comparison)
  except (OSError, ValueError, KeyError) as e:
    common.fail(f"cannot read {path}: {e!r}")
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
  key = jax.random.key(FLAGS.seed)

  # Transfer sources: trained like the initial models, on other seeds.
  source_configs = {"transfer_same": dataclasses.replace(
      config, seed=config.seed + 1000, seeds=1)}
  if FLAGS.transfer_other:
    source_configs["transfer_other"] = dataclasses.replace(
        config, model=OTHER_MODEL[config.model], seed=config.seed + 2000,
        seeds=1)

  def make_transfer():
    """Each source model's PGD test images, crafted once for all models."""
    crafted, info = {}, {}
    for i, (name, c) in enumerate(source_configs.items()):
      start = time.perf_counter()
      pretrain = jax.jit(loop.vmap_seeds(loop.make_pretrain(c), 1))
      source = pretrain(loop.seed_keys(c), jax.device_put(mnist),
                        loop.hparams_from(c))
      params = jax.tree.map(lambda x: x[0], source.train.params)
      source_apply = models.make_apply(c.model, c.conv_impl)
      crafted[name] = jax.jit(
          lambda p, x, y, k, f=source_apply: robustness.transfer_examples(
              f, p, x, y, config.epsilon, k, suite, FLAGS.chunk_size))(
                  params, images, labels, jax.random.fold_in(key, 100 + i))
      info[name] = {"source_clean_accuracy": float(source.first.clean_accuracy[0]),
                    "source_pgd_accuracy": float(jnp.mean(
                        (jnp.argmax(source_apply(params, crafted[name]), -1)
                         == labels))),
                    "seconds": time.perf_counter() - start}
      print(f"{name}: source {c.model} (seed {c.seed}, {c.epochs} epochs) "
            f"clean {info[name]['source_clean_accuracy']:.4f}, its own PGD "
            f"{info[name]['source_pgd_accuracy']:.4f}", flush=True)
    return crafted, info

  @jax.jit
  def evaluate(params, transfer):
    """One model under the suite (one seed: PGD restarts skip examples
    already flipped, which needs the model unbatched)."""
    correct, pgd_trace = robustness.per_example_correct(
        apply_fn, params, images, labels, config.epsilon, key, suite,
        FLAGS.chunk_size, transfer=transfer)
    curve = robustness.accuracy_sweep(apply_fn, params, images, labels,
                                      jnp.asarray(sweep),
                                      jax.random.fold_in(key, 2),
                                      FLAGS.chunk_size)
    zero = robustness.zero_gradient_fraction(apply_fn, params, images,
                                             labels, FLAGS.chunk_size)
    return correct, pgd_trace, curve, zero

  attack_info = suite.describe(config.epsilon)
  attack_info["transfer_sources"] = {
      name: {"model": c.model, "seed": c.seed, "epochs": c.epochs}
      for name, c in source_configs.items()}
  report = {
      "command": " ".join(["python -m experiments.report"] + sys.argv[1:]),
      "run_dir": run_dir,
      "models_command": comparison.get("command"),
      "test_examples": int(labels.shape[0]),
      "attacks": attack_info,
      "sweep_attack": "PGD, 10 steps of 0.25 epsilon, random start",
      "models": [],
  }
  entries = {m["method"]: m for m in comparison["methods"]}
  params_files = {name: os.path.join(run_dir, f"params-{name}.msgpack")
                  for name in ["initial"] + list(entries)}
  if FLAGS.unlearn_dir:
    params_files = {config.method: os.path.join(run_dir, "params.msgpack")}
  out_json = os.path.join(run_dir, "report.json")
  done = _finished_models(out_json, report, FLAGS.seed, sweep)
  report["attack_seed"] = FLAGS.seed
  report["sweep_epsilons"] = sweep
  transfer = None
  for name, params_path in params_files.items():
    if name in done:
      report["models"].append(done[name])
      print(f"{name}: already in {out_json} (same attacks), kept", flush=True)
      continue
    if not os.path.exists(params_path):
      print(f"{name}: no {params_path}, skipped", flush=True)
      continue
    stacked = results.read_params(params_path)
    seeds = jax.tree.leaves(stacked)[0].shape[0]
    if transfer is None:
      transfer, report["transfer_sources"] = make_transfer()
    start = time.perf_counter()
    per_seed = []
    for s in range(seeds):
      params = jax.tree.map(lambda x, s=s: x[s], stacked)
      correct, trace, curve, zero = jax.device_get(evaluate(params, transfer))
      print(f"  {name} seed {s + 1}/{seeds}: PGD "
            f"{float(correct['pgd'].mean()):.4f} "
            f"({time.perf_counter() - start:.0f}s)", flush=True)
      checks = robustness.masking_checks(correct, sweep, curve, float(zero))
      if name in entries:
        final = entries[name]["per_seed"][s]["rounds"][-1]
        checks.append(robustness.stale_check(final["fgsm_accuracy"],
                                             final["transfer_accuracy"]))
      per_seed.append({
          "accuracy": robustness.robust_accuracy(correct),
          "pgd_accuracy_after_restart": trace.tolist(),
          "sweep": {"epsilons": sweep, "accuracy": curve.tolist()},
          "zero_gradient_fraction": float(zero),
          "checks": checks,
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
  if "transfer_sources" not in report and done:
    report["transfer_sources"] = _earlier(out_json).get("transfer_sources", {})
  results.write_json_atomic(out_json, report)

  figures = []
  if FLAGS.plots and report["models"]:
    figures = _plots(report, comparison, params_files, run_dir, apply_fn,
                     images, labels, suite, config.epsilon, key)
  text = report_markdown(report, comparison, figures)
  with open(os.path.join(run_dir, "report.md"), "w") as f:
    f.write(text)
  print()
  print(text)


def comparison_from_unlearn(outcome) -> dict:
  """An experiments.unlearn results.json as a one-method comparison."""
  config = outcome["config"]
  records = outcome["per_seed"]
  def stat(key, row):
    return results.stat([r["rounds"][row][key] for r in records])
  fields = {f.name for f in dataclasses.fields(config_lib.Config)}
  return {
      "command": outcome["command"],
      "setup": {"preset": "see the command",
                "settings": config_lib.describe(config_lib.Config(
                    **{k: v for k, v in config.items() if k in fields})),
                "model": config["model"], "epsilon": config["epsilon"],
                "seeds": len(records),
                "train_examples": outcome["data"]["train_examples"],
                "test_examples": outcome["data"]["test_examples"],
                "initial": {"clean_accuracy": stat("clean_accuracy", 0),
                            "fgsm_accuracy": stat("fgsm_accuracy", 0)}},
      "methods": [{"method": config["method"], "config": config,
                   "per_seed": records,
                   "clean_accuracy": stat("clean_accuracy", -1),
                   "fgsm_accuracy": stat("fgsm_accuracy", -1),
                   "fgsm_stale_accuracy": stat("transfer_accuracy", -1)}],
  }


def _plots(report, comparison, params_files, out, apply_fn, images, labels,
           suite, epsilon, key) -> list[tuple[str, str]]:
  """The three PNGs beside report.md; returns (file, caption) pairs."""
  a = report["attacks"]
  setting = (f"MNIST, {report['test_examples']} test examples, model "
             f"{comparison['setup']['model']}")
  plots.sweep_plot(report["models"], os.path.join(out, "sweep.png"),
                   f"Accuracy vs epsilon ({report['sweep_attack']})\n"
                   f"{setting}, mean over seeds, band min-max")
  plots.rounds_plot(comparison["methods"], os.path.join(out, "rounds.png"),
                    f"Per round, mean over {comparison['setup']['seeds']} "
                    f"seed(s); epsilon {a['epsilon']}; {setting}")
  figures = [("sweep.png", "accuracy vs epsilon for every model"),
             ("rounds.png", "per-round clean, white-box FGSM and stale "
                            "(transfer from the initial model) accuracy")]
  k = 8
  rows = []
  for name in GRID_MODELS:
    path = params_files.get(name)
    if path is None or not os.path.exists(path):
      continue
    params = jax.tree.map(lambda x: x[0], results.read_params(path))
    x_adv = attacks.pgd(apply_fn, params, images[:k], labels[:k], epsilon,
                        jax.random.fold_in(key, 3), steps=suite.pgd_steps,
                        step_size=suite.pgd_step_size)
    predicted = jnp.argmax(apply_fn(params, x_adv), -1)
    rows.append((f"{name}\n(PGD vs it)", np.asarray(x_adv),
                 np.asarray(predicted)))
  if rows:
    plots.digit_grid(np.asarray(images[:k]), np.asarray(labels[:k]), rows,
                     os.path.join(out, "digits.png"),
                     f"First {k} test digits and their PGD-{suite.pgd_steps} "
                     f"examples (epsilon {epsilon}, one start) against each "
                     "model, seed 0; red = wrong")
    figures.append(("digits.png", "clean vs PGD digits with predictions"))
  return figures


def _earlier(path) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _finished_models(path, report, seed, sweep) -> dict:
  """Models an earlier, interrupted or complete, report on the same test
  set with the same attacks already measured: re-running resumes."""
  earlier = _earlier(path)
  same = (earlier.get("attacks") == report["attacks"]
          and earlier.get("test_examples") == report["test_examples"]
          and earlier.get("attack_seed") == seed
          and earlier.get("sweep_epsilons") == sweep)
  return {m["model"]: m for m in earlier.get("models", [])} if same else {}


def _cell(stat) -> str:
  return f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def report_markdown(report, comparison, figures=()) -> str:
  """report.md: Table 1 beside the paper's, what holds, every method under
  PGD, white-box vs stale, the failed checks, the plots."""
  setup = comparison["setup"]
  models_ = {m["model"]: m for m in report["models"]}
  entries = {e["method"]: e for e in comparison["methods"]}
  lines = ["# Robustness report", "",
           f"Models: `{report.get('models_command')}`  ",
           f"Attacks: `{report['command']}`  ",
           f"Setting: MNIST, model {setup['model']}, epsilon "
           f"{setup['epsilon']}, {setup['seeds']} seed(s), preset "
           f"{setup['preset']}: {setup['settings']}.", ""]
  if "remove_retrain" in entries:
    summary = results.summarize(entries["remove_retrain"]["per_seed"])
    lines += ["## The paper's Table 1 beside ours (the paper's method: "
              "remove_retrain)", "", results.table1_markdown(summary), ""]
    lines += _verdict(summary, entries, models_) + [""]
  lines += ["## Every model under the attack suite", "",
            table_markdown(report), ""]
  lines += ["## White-box vs stale FGSM", "",
            "Stale = FGSM examples crafted against the initial model (what an "
            "evaluation that does not re-attack measures); white-box = FGSM "
            "against the model itself. A positive gap is what a stale "
            "evaluation would overstate.", "",
            "| method | white-box FGSM | stale FGSM | stale − white-box | "
            "PGD (suite) |", "|---|---|---|---|---|"]
  for name, e in entries.items():
    gap = (np.asarray(e["fgsm_stale_accuracy"]["values"])
           - np.asarray(e["fgsm_accuracy"]["values"]))
    pgd = (_cell(models_[name]["accuracy"]["pgd"]) if name in models_
           else "not measured")
    lines.append(f"| {name} | {_cell(e['fgsm_accuracy'])} | "
                 f"{_cell(e['fgsm_stale_accuracy'])} | {gap.mean():+.4f} ± "
                 f"{gap.std():.4f} | {pgd} |")
  lines += ["", "## Checks that failed (first failing seed's evidence)", ""]
  failed = 0
  for m in report["models"]:
    for check in m["failed_checks"]:
      evidence = next(c["evidence"] for p in m["per_seed"]
                      for c in p["checks"]
                      if c["check"] == check and not c["passed"])
      seeds = sum(not c["passed"] for p in m["per_seed"] for c in p["checks"]
                  if c["check"] == check)
      lines.append(f"- {m['model']}: `{check}` on {seeds} of {m['seeds']} "
                   f"seed(s): {json.dumps(evidence)}")
      failed += 1
  if not failed:
    lines.append("- none")
  if figures:
    lines += ["", "## Plots", ""]
    lines += [f"![{caption}]({name})\n" for name, caption in figures]
  return "\n".join(lines) + "\n"


def _verdict(summary, entries, models_) -> list[str]:
  """The paper's claims next to what we measured, in plain sentences."""
  paper = results.PAPER_TABLE1
  updated = summary["updated_fgsm"]["accuracy"]
  stale = summary["updated_fgsm_stale"]["accuracy"]
  original = summary["original_fgsm"]["accuracy"]
  out = ["What holds and what does not:", ""]
  out.append(
      f"- The original model's FGSM accuracy: paper {paper['original_fgsm'][0]:.4f}, "
      f"ours {_cell(original)} (network, training length and seeds differ; "
      "see the setting).")
  holds = updated["mean"] >= 0.9
  out.append(
      f"- The claim that unlearning brings white-box FGSM accuracy to "
      f"{paper['updated_fgsm'][0]:.4f}: ours {_cell(updated)} white-box, "
      f"{_cell(stale)} on stale examples: "
      + ("reached." if holds else "**not reached** in this setting."))
  if "control" in entries:
    diff = (np.asarray(entries["remove_retrain"]["fgsm_accuracy"]["values"])
            - np.asarray(entries["control"]["fgsm_accuracy"]["values"]))
    separated = abs(diff.mean()) > 2 * diff.std() and diff.mean() > 0
    out.append(
        f"- Removing the selected examples vs continuing to train on all "
        f"(control, same schedule): white-box FGSM difference "
        f"{diff.mean():+.4f} ± {diff.std():.4f} (paired over seeds): "
        + ("removal helps." if separated else
           "**no effect of removal beyond continued training**."))
  if "remove_retrain" in models_ and "initial" in models_:
    pgd_u = models_["remove_retrain"]["accuracy"]["pgd"]
    pgd_i = models_["initial"]["accuracy"]["pgd"]
    best = max((m for m in models_.values()),
               key=lambda m: m["accuracy"]["robust"]["mean"])
    out.append(
        f"- Under PGD the original model keeps {_cell(pgd_i)}, the unlearned "
        f"one {_cell(pgd_u)}; the most robust model here is {best['model']} "
        f"(PGD {_cell(best['accuracy']['pgd'])}, robust "
        f"{_cell(best['accuracy']['robust'])}).")
  return out


def table_markdown(report) -> str:
  a = report["attacks"]
  pgd = a["pgd"]
  sources = a.get("transfer_sources", {})
  transfer = [k for k in report["models"][0]["accuracy"]
              if k.startswith("transfer")] if report["models"] else []
  described = "; ".join(
      f"{k} from {v['model']} (seed {v['seed']}, {v['epochs']} epochs)"
      for k, v in sources.items())
  lines = [
      f"Test examples: {report['test_examples']}; epsilon {a['epsilon']} "
      f"(L-inf, white-box, untargeted). PGD: {pgd['steps']} steps of "
      f"{pgd['step_size']}, {pgd['restarts']} restarts, uniform start, "
      f"per-example worst (the extra flips column: the fraction of test "
      f"examples the last restart flipped that the others had not). Noise: {a['noise']['draws']} sign draws. Transfer "
      f"(PGD, one start, on a separately trained model): {described}. "
      "Robust = right under every attack (per example). Mean ± std over "
      "seeds.",
      "",
      "| model | seeds | clean | FGSM | FGSM (pred. labels) | PGD | PGD: "
      "last restart's extra flips | noise | " + " | ".join(transfer)
      + " | robust | masking checks failed |",
      "|---|---|---|---|---|---|---|---|" + "---|" * len(transfer) + "---|---|",
  ]
  for m in report["models"]:
    cells = [_cell(m["accuracy"][k]) for k in
             ("clean", "fgsm", "fgsm_predicted", "pgd")]
    traces = [p.get("pgd_accuracy_after_restart", []) for p in m["per_seed"]]
    last = [t[-2] - t[-1] for t in traces if len(t) > 1]
    cells.append(f"{np.mean(last):.4f}" if last else "—")
    cells += [_cell(m["accuracy"][k]) for k in ("noise", *transfer, "robust")]
    lines.append(f"| {m['model']} | {m['seeds']} | " + " | ".join(cells)
                 + f" | {', '.join(m['failed_checks']) or 'none'} |")
  return "\n".join(lines)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
