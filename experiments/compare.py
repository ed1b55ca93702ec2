r"""Every method from the same trained models, under one budget and evaluation.

  python -m experiments.compare --epsilon=0.1 --seeds=2
  python -m experiments.compare --methods=control,remove_retrain,pgd_at
  python -m experiments.compare --dataset=fashion_mnist --seeds=3

Trains the initial model of each seed once (seeds vmapped), then runs each
method's rounds from it (one compiled program per method, seeds vmapped) and
writes comparison.json and the method's final models (params-<method>.msgpack,
a leading seed axis; params-initial.msgpack for the shared ones) after every
method and comparison.md, the table it prints at the end.

Nothing finished is lost: the initial training is saved (orbax, in
OUTPUT_DIR/checkpoints), each method's rounds as they end, and their epochs
in rounds of several (in OUTPUT_DIR/checkpoints/method-<name>, removed once
the method is done) and each method's results as it ends, so the same
command run again after a crash restores the initial models, keeps the
methods done and goes on with the one cut off from its last round or
epoch. A
later run with other --methods and the same settings adds them to the
comparison; other settings in the same folder are refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import sys

import jax
import numpy as np
from absl import app, flags

from experiments import common
from fgsm_jax import config as config_lib
from fgsm_jax import (checkpoint, loop, methods, models, reporting, results,
                      runner, sharding)

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "compare",
                    f"one of {sorted(config_lib.PRESETS)}; flags override it")
common.define_config_flags(exclude=("method",))
flags.DEFINE_list("methods", [m for m in methods.METHODS
                              if m not in methods.HYPOTHESES],
                  f"methods to compare, from: {', '.join(methods.METHODS)} "
                  f"(by default all but {', '.join(methods.HYPOTHESES)})")
flags.DEFINE_string("output_dir", None,
                    "where comparison.json/.md go; default runs/compare-<time>")
flags.DEFINE_bool("progress", True, "print per-epoch and per-round progress")
flags.DEFINE_string("pretrained_from", None,
                    "start every method from the initial models of another "
                    "comparison's folder (its first --seeds seeds; its "
                    "pretraining settings must equal these) instead of "
                    "training them; methods of different recipes may then "
                    "share this --output_dir, each entry keeping its own "
                    "config")
flags.DEFINE_bool("resume", False,
                  "go on with an interrupted comparison: the one in "
                  "--output_dir, else the newest runs/compare-* without a "
                  "comparison.md (without --resume, the same --output_dir "
                  "goes on too)")


def method_entry(config, outcome, n_train, n_test, compile_s, run_s):
  """One method's results: config, per-seed metrics, passes, wall time."""
  records = results.per_seed_records(outcome)
  passes = [methods.run_passes(config, n_train, r["rounds_completed"],
                               n_test=n_test)
            for r in records]
  final = [r["rounds"][-1] for r in records]
  return {
      "method": config.method,
      "family": methods.make_method(config.method, config, None).family,
      "description": methods.METHODS[config.method],
      "config": config.to_dict(),
      "clean_accuracy": results.stat([f["clean_accuracy"] for f in final]),
      "fgsm_accuracy": results.stat([f["fgsm_accuracy"] for f in final]),
      "fgsm_stale_accuracy": results.stat([f["transfer_accuracy"] for f in final]),
      "removed": results.stat([f["removed"] for f in final]),
      # The final models on the validation split (what tuning reads; None
      # without one), PGD-10 from the catastrophic-overfitting check.
      "val_accuracy": results.stat([f.get("val_accuracy") for f in final]),
      "val_fgsm_accuracy": results.stat([f.get("val_fgsm_accuracy")
                                         for f in final]),
      "val_pgd_accuracy": results.stat([f.get("val_pgd_accuracy")
                                        for f in final]),
      "overfitting_rounds": [r["overfitting_rounds"] for r in records],
      "rounds_completed": [r["rounds_completed"] for r in records],
      # Where the paper's rule (FGSM >= 0.9) would have stopped each seed,
      # read on the validation split when there is one.
      "paper_rule_round": results.first_round_reaching(
          records, results.stopping_rule(
              config.target_accuracy, config.validation_size)["metric"],
          results.PAPER_TARGET),
      "passes": {"rounds": results.stat([p["rounds"]["backward"] for p in passes]),
                 "rounds_forward": results.stat([p["rounds"]["forward"]
                                          for p in passes])},
      "wall_time_s": {"compile": compile_s, "run": run_s},
      "per_seed": records,
  }


def table_markdown(comparison) -> str:
  """The comparison as a markdown table, the control's FGSM gain beside each."""
  info = comparison["setup"]
  entries = comparison["methods"]
  control = next((e for e in entries if e["method"] == "control"), None)
  margin, confidence = reporting.margin_and_confidence(entries)
  n = info["train_examples"]
  lines = [
      f"{reporting.dataset_title(info)}, {info['seeds']} seed(s), mean ± std "
      "(ddof = 1); model "
      f"{info['model']}, "
      f"epsilon {info['epsilon']}, preset {info['preset']}, "
      f"{info['settings']} (the paper's rounds cap is ours: it sets none)",
      "Initial model (shared): clean "
      f"{results.mean_std(info['initial']['clean_accuracy'])}, FGSM "
      f"{results.mean_std(info['initial']['fgsm_accuracy'])}",
      "FGSM = white-box FGSM (against the final model) on the "
      f"{info['test_examples']} test examples; stale = FGSM examples crafted "
      "against the initial model. Backward passes of the rounds only (the "
      f"shared initial training cost {info['pretrain_passes']['backward'] / n:.0f}"
      " x N), in units of the training set N = "
      f"{n}. FGSM only: `experiments.report` attacks the saved models with "
      "PGD, noise and transfer. FGSM − control: the mean paired difference "
      f"over seeds, its {confidence:.0%} t interval and the verdict (margin "
      f"±{margin:g}; BUILD_NOTES.md, \"Verdicts\").",
      "",
      "| method | family | clean | FGSM | FGSM − control | FGSM stale | "
      "removed | backward passes (x N) | run s (all seeds) |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  for e in entries:
    gain = "—"
    if control is not None and e is not control:
      gain = results.difference_cell(results.paired_difference(
          e["fgsm_accuracy"]["values"], control["fgsm_accuracy"]["values"],
          margin, confidence))
    def acc(key):
      return results.mean_std(e[key])
    lines.append(
        f"| {e['method']} | {e['family']} "
        f"| {acc('clean_accuracy')} | {acc('fgsm_accuracy')} | {gain} | "
        f"{acc('fgsm_stale_accuracy')} | {e['removed']['mean']:.0f} | "
        f"{e['passes']['rounds']['mean'] / n:.1f} | "
        f"{e['wall_time_s']['run']:.0f} |")
  lines += validation_table(entries)
  lines += ["", overfitting_sentence(entries)]
  return "\n".join(lines)


def validation_table(entries) -> list[str]:
  """The final models on the validation split, the figures a recipe is
  chosen by (never the test set's); nothing when no entry has them."""
  def cell(e, key):
    stat = e.get(key)
    if not stat or stat.get("mean") is None:
      return "—"
    return results.mean_std(stat)
  shown = [e for e in entries
           if cell(e, "val_accuracy") != "—" or cell(e, "val_pgd_accuracy") != "—"]
  if not shown:
    return []
  lines = ["", "On the validation split (held-out training digits; what a "
           "recipe is tuned on, the test set never is): clean, white-box "
           "FGSM, and PGD-10 on its first digits (the catastrophic-"
           "overfitting check's).", "",
           "| method | clean | FGSM | PGD-10 |", "|---|---|---|---|"]
  lines += [f"| {e['method']} | {cell(e, 'val_accuracy')} | "
            f"{cell(e, 'val_fgsm_accuracy')} | {cell(e, 'val_pgd_accuracy')} |"
            for e in shown]
  return lines


def overfitting_sentence(entries) -> str:
  """What the catastrophic-overfitting check found, method by method."""
  checked = [e for e in entries if any(
      row.get("val_pgd_accuracy") is not None
      for r in e["per_seed"] for row in r["rounds"])]
  if not checked:
    return ("Catastrophic-overfitting check: not run (no validation split, "
            "or --overfit_check_size=0).")
  found = [f"{e['method']} seed {s + 1} round(s) "
           f"{', '.join(map(str, rounds))}"
           for e in checked
           for s, rounds in enumerate(e.get("overfitting_rounds", []))
           if rounds]
  rule = (f"validation PGD-10 at least {results.OVERFIT_PGD_DROP:g} below "
          "its best earlier round while validation FGSM stays within "
          f"{results.OVERFIT_FGSM_SLACK:g} of its best")
  return (f"Catastrophic-overfitting check ({rule}; {len(checked)} "
          f"method(s) checked): "
          + ("; ".join(found) if found else "no round flagged") + ".")


def pretrained_from(source_dir, config, dataset, sizes, sharding_, progress):
  """The initial models of the first `config.seeds` seeds of the comparison
  in `source_dir` (restored, or rebuilt from its last epoch's checkpoint
  with one evaluation pass and saved there), placed like `sharding_`. Its
  pretraining settings (`config_lib.PRETRAINING_FIELDS`) and data sizes
  must be this run's, and it must hold at least as many seeds."""
  folder = os.path.join(source_dir, "checkpoints")
  try:
    with open(os.path.join(folder, "run.json")) as f:
      source = config_lib.read_saved_run(json.load(f))
  except (OSError, ValueError) as e:
    common.fail(f"--pretrained_from={source_dir}: cannot read its "
                f"checkpoints/run.json ({e})")
  if "config" not in source:
    common.fail(f"--pretrained_from={source_dir}: it holds no initial "
                "models of its own")
  theirs = source["config"]
  differ = [f"{name} ({theirs.get(name)!r} there, {getattr(config, name)!r} "
            "here)" for name in config_lib.PRETRAINING_FIELDS
            if theirs.get(name) != getattr(config, name)]
  differ += [f"{name} ({source.get(name)} there, {value} here)"
             for name, value in sizes.items() if source.get(name) != value]
  if differ:
    common.fail(f"--pretrained_from={source_dir}: its initial models were "
                f"trained otherwise: {'; '.join(differ)}")
  if theirs["seeds"] < config.seeds:
    common.fail(f"--pretrained_from={source_dir}: it has {theirs['seeds']} "
                f"seed(s), fewer than --seeds={config.seeds}")
  source_config = dataclasses.replace(config, seeds=theirs["seeds"])
  mesh = sharding.seed_mesh(source_config.seeds)
  keys, data, hp = sharding.place(
      mesh, loop.seed_keys(source_config),
      type(dataset)(*(np.asarray(a) for a in dataset)),
      loop.hparams_from(source_config))
  try:
    saved = checkpoint.RunCheckpoints(folder, source,
                                      config_lib.read_saved_run)
  except checkpoint.CheckpointMismatch as e:
    common.fail(str(e))
  if not saved.has_pretrained() and saved.latest_epoch() != config.epochs:
    common.fail(f"--pretrained_from={source_dir}: its initial training is "
                f"not finished (epoch {saved.latest_epoch() or 0} of "
                f"{config.epochs})")
  pre, _, _, _ = runner.pretrain_saved(
      source_config, keys, data, hp, saved,
      common.ProgressPrinter(source_config.seeds, "initial: ", config.epochs)
      if progress else None)
  first = jax.tree.map(lambda x: x[:config.seeds], pre)
  return jax.device_put(first, sharding_)


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments {argv[1:]}")
  common.check_methods(FLAGS.methods)
  config = common.config_from_flags(FLAGS.preset)
  out_dir = common.output_dir(
      common.interrupted_run(FLAGS.output_dir, "compare", "comparison.md")
      if FLAGS.resume else FLAGS.output_dir, "compare")
  dataset, source = common.load_data(config)
  common.check_test_selection(FLAGS.methods, config, dataset)
  n_train = int(dataset.train_labels.shape[0])
  print(common.header_line(config, source, ", ".join(FLAGS.methods)),
        flush=True)
  print(f"settings: {config_lib.describe(config)}", flush=True)

  mesh = sharding.seed_mesh(config.seeds)
  keys, data, hp = sharding.place(mesh, loop.seed_keys(config),
                                  type(dataset)(*(np.asarray(a) for a in dataset)),
                                  loop.hparams_from(config))
  def printer(label, epochs):
    return (common.ProgressPrinter(config.seeds, label, epochs)
            if FLAGS.progress else None)

  json_path = os.path.join(out_dir, "comparison.json")
  sizes = {"train_examples": n_train,
           "test_examples": int(dataset.test_labels.shape[0])}
  if FLAGS.pretrained_from:
    # This folder is identified by where its initial models come from, not
    # by the recipe: each method entry keeps its own config.
    identity = {"pretrained_from": os.path.abspath(FLAGS.pretrained_from),
                "pretraining": config.pretraining_identity(),
                "seeds": config.seeds, **sizes}
  else:
    identity = {"config": config.identity(), **sizes}
  try:
    saved = checkpoint.RunCheckpoints(os.path.join(out_dir, "checkpoints"),
                                      identity, config_lib.read_saved_run)
  except checkpoint.CheckpointMismatch as e:
    common.fail(str(e))
  if FLAGS.pretrained_from:
    resumed = os.path.exists(os.path.join(out_dir, "params-initial.msgpack"))
  else:
    # The initial models saved whole, or only their last epoch (a clone:
    # `pretrained/` is not committed, and is rebuilt from that epoch by one
    # evaluation pass): either way the folder's earlier results stand.
    resumed = (saved.has_pretrained()
               or saved.latest_epoch() == config.epochs)
  if not resumed and FLAGS.output_dir is None:
    print(f"saving results in {out_dir} as each method ends; if the run "
          "stops, the same command with --resume goes on", flush=True)
  earlier = common.earlier_json(json_path) if resumed else {}
  if FLAGS.pretrained_from:
    pre = pretrained_from(FLAGS.pretrained_from, config, dataset, sizes,
                          keys.sharding, FLAGS.progress)
    saved.write_identity()  # This folder holds no initial models of its own.
    pretrain_s = None
    print(f"the initial models of the first {config.seeds} seed(s) of "
          f"{FLAGS.pretrained_from}, not trained here", flush=True)
  else:
    pre, compile_s, run_s, restored = runner.pretrain_saved(
        config, keys, data, hp, saved, printer("initial: ", config.epochs))
    if resumed:
      pretrain_s = earlier.get("setup", {}).get("pretrain_wall_time_s")
      print(f"resumed from {saved.directory}: the initial models were "
            "restored, not trained again", flush=True)
    else:
      pretrain_s = {"compile": compile_s, "run": run_s}
      if restored:
        print(f"resumed the initial training after epoch {restored} (from "
              f"{saved.directory}); its wall time counts only the epochs "
              "run here", flush=True)
  first = jax.device_get(pre.first)
  common.check_finite(
      [{"rounds": [{"round": 0, "clean_loss": float(loss)}]}
       for loss in first.clean_loss], "the initial training")
  if not resumed:
    results.write_params(os.path.join(out_dir, "params-initial.msgpack"),
                         pre.train.params)
  # Methods an earlier run in this folder finished (results and models).
  done = {e["method"]: e for e in earlier.get("methods", [])
          if os.path.exists(os.path.join(out_dir,
                                         f"params-{e['method']}.msgpack"))}
  def ordered():
    """The asked methods done so far in the asked order, then the earlier
    ones this run does not ask for (kept)."""
    return ([done[m] for m in FLAGS.methods if m in done]
            + [e for m, e in done.items() if m not in FLAGS.methods])

  comparison = {
      "command": " ".join(["python -m experiments.compare"] + sys.argv[1:]),
      "setup": {
          "preset": FLAGS.preset,
          "settings": config_lib.describe(config),
          "model": config.model, "epsilon": config.epsilon,
          "dataset": config.dataset, "data_source": source.to_dict(),
          "seeds": config.seeds, "train_examples": n_train,
          "test_examples": int(dataset.test_labels.shape[0]),
          "validation_examples": int(dataset.val_labels.shape[0]),
          "stopping_rule": results.stopping_rule(
              config.target_accuracy, int(dataset.val_labels.shape[0])),
          "initial": {"clean_accuracy": results.stat(first.clean_accuracy),
                      "fgsm_accuracy": results.stat(first.fgsm_accuracy)},
          "pretrain_passes": methods.pretrain_passes(config, n_train),
          # Of the run that trained them (None: unknown).
          "pretrain_wall_time_s": pretrain_s,
          # The folder whose initial models these are (None: trained here).
          "pretrained_from": FLAGS.pretrained_from,
          "conv_impl_used": models.resolve_conv_impl(config.conv_impl),
          "versions": {"jax": jax.__version__,
                       "python": platform.python_version()},
          "device": {"backend": jax.default_backend(),
                     "devices": [str(d) for d in jax.local_devices()]},
      },
      "methods": ordered(),
  }
  results.write_json_atomic(json_path, comparison)
  for name in FLAGS.methods:
    if name in done:
      print(f"{name}: finished by an earlier run in this folder, kept",
            flush=True)
      continue
    method_config = dataclasses.replace(config, method=name)
    rounds_dir = os.path.join(out_dir, "checkpoints", f"method-{name}")
    try:
      method_saved = checkpoint.RunCheckpoints(
          rounds_dir, {"config": method_config.identity(),
                       "train_examples": n_train,
                       "test_examples": int(dataset.test_labels.shape[0])},
          config_lib.read_saved_run)
    except checkpoint.CheckpointMismatch as e:
      common.fail(str(e))
    state, compile_s, run_s, restored = runner.run_rounds_saved(
        method_config, mesh, keys, pre, data, hp, method_saved,
        printer(f"{name}: ", config.rounds * config.retrain_epochs))
    if restored is not None:
      print(f"{name}: resumed after round {restored} (restored from "
            f"{rounds_dir})", flush=True)
    outcome = jax.device_get(loop.finish_rounds(state))
    entry = method_entry(method_config, outcome, n_train,
                         int(dataset.test_labels.shape[0]), compile_s, run_s)
    # Rounds restored from a cut-off run (its wall time counts only the
    # rounds run here); None: none.
    entry["resumed_after_round"] = restored
    common.check_finite(entry["per_seed"], f"method {name}")
    results.write_params(os.path.join(out_dir, f"params-{name}.msgpack"),
                         outcome.final_params)
    done[name] = entry
    comparison["methods"] = ordered()
    results.write_json_atomic(json_path, comparison)
    shutil.rmtree(rounds_dir, ignore_errors=True)  # Its results are saved.
    print(f"{name}: clean {entry['clean_accuracy']['mean']:.4f}, FGSM "
          f"{entry['fgsm_accuracy']['mean']:.4f}, compile {compile_s:.1f}s, "
          f"run {run_s:.1f}s", flush=True)

  table = table_markdown(comparison)
  md_path = os.path.join(out_dir, "comparison.md")
  results.write_text_atomic(md_path, f"`{comparison['command']}`\n\n{table}\n")
  print()
  print(table)
  print(f"\nwrote {json_path} and {md_path}")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
