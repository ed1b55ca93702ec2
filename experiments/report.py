r"""Robust accuracy of the models a comparison saved, under a suite of attacks.

  python -m experiments.report --compare_dir=runs/compare-<time>
  python -m experiments.report --compare_dir=DIR --test_size=1000 --pgd_restarts=2
  python -m experiments.report --unlearn_dir=runs/unlearn-<time>

The test set is the run's dataset (results.json / comparison.json say which).

For every model `experiments.compare` saved (the shared initial models and
each method's final ones, every seed), or the final models of an
`experiments.unlearn` run: clean accuracy, FGSM with true and
with predicted labels, PGD with restarts, AutoAttack (standard by default;
`--autoattack=fast|off`), random sign noise and transfer
from separately trained models of the same and of the other architecture,
the per-example worst case over all of them (robust accuracy), an epsilon
sweep (one vmap) and the gradient-masking checks with their evidence,
including what a stale evaluation (FGSM examples of the initial model) would
claim. Writes report.json after every model, then report.md (the paper's
Table 1 beside ours, the comparison under PGD, white-box vs stale, failed
checks) and the plots sweep.png, rounds.png and digits.png. Re-running on
the same folder with the same attacks keeps the models already measured (an
interrupted report resumes, within a seed from its last block of
--block_size examples). A run trained from another's initial models
(`experiments.compare --pretrained_from=DIR`) takes DIR's report blocks of
those models, its transfer examples and its raw-pixel model (the
explanation's) rather than measuring or training them again
(`--measured_in`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import common
from fgsm_jax import attacks
from fgsm_jax import config as config_lib
from fgsm_jax import data as data_lib
from fgsm_jax import autoattack
from fgsm_jax import local_forward
from fgsm_jax import models, paper_pipelines, pareto, plots, reporting, results
from fgsm_jax import robustness, runner

FLAGS = flags.FLAGS
flags.DEFINE_string("compare_dir", None, "output dir of experiments.compare")
flags.DEFINE_string("unlearn_dir", None,
                    "or: output dir of experiments.unlearn (one method, its "
                    "final models; no saved initial models)")
flags.DEFINE_integer("test_size", 0, "first N test examples (0 = all)")
flags.DEFINE_integer("subset_size", 0,
                     "the first N of the test set for every model not in "
                     "--whole_test_set_for (0 = the whole test set for all)")
flags.DEFINE_list("whole_test_set_for", [],
                  "models measured on the whole test set (--test_size) "
                  "while --subset_size limits the others, e.g. "
                  "initial,remove_retrain,control")
flags.DEFINE_integer("pgd_steps", 40, "PGD steps")
flags.DEFINE_float("pgd_step_size", 0.01, "PGD step size")
flags.DEFINE_integer("pgd_restarts", 10, "PGD random restarts (worst kept)")
flags.DEFINE_integer("noise_draws", 100, "sign-noise draws (worst kept)")
flags.DEFINE_enum("autoattack", "standard", ["standard", "fast", "off"],
                  "AutoAttack in the suite: 'standard' (APGD-CE, APGD-T, "
                  "FAB-T, Square), 'fast' (APGD-CE and APGD-T only, for quick "
                  "looks; named so in the report) or 'off'")
common.define_autoattack_flags()
flags.DEFINE_list("sweep", ["0", "0.05", "0.1", "0.2", "0.3", "0.4", "0.5"],
                  "epsilons of the sweep (PGD, 10 steps of 0.25 eps)")
flags.DEFINE_bool("transfer_other", True,
                  "also transfer from a model of the other architecture")
flags.DEFINE_bool("explain", True,
                  "MNIST runs with initial models: run the pipelines that "
                  "might have produced the paper's Table 1 on them "
                  "(fgsm_jax.paper_pipelines, and a model trained on raw "
                  "0-255 pixels) and add the explanation table")
flags.DEFINE_list("explain_epsilons", paper_pipelines.DEFAULT_EPSILONS,
                  "epsilons of the explanation's FGSM sweep (what epsilon "
                  "gives the paper's 0.0796)")
flags.DEFINE_bool("plots", True, "write sweep.png, rounds.png, digits.png")
flags.DEFINE_integer("chunk_size", 500, "examples per chunk")
flags.DEFINE_integer("block_size", 1000,
                     "a model measured on more test examples than this is "
                     "measured in blocks of this many (it must divide them), "
                     "each saved in report-blocks/ as it ends: an "
                     "interrupted seed goes on from its last block; 0: one "
                     "call per seed")
flags.DEFINE_integer("shards", 1,
                     "split the measuring across this many processes (cores "
                     "or machines sharing the folder): each measures its "
                     "share of the blocks and saves them in report-blocks/ "
                     "without writing the report; then one run without "
                     "--shards reads them all and writes it")
flags.DEFINE_integer("shard", 0, "this process's share, 0 .. --shards - 1")
flags.DEFINE_bool("help_shards", True,
                  "with --shards: once this shard's blocks are saved, measure "
                  "the other shards' unsaved ones, from the last one back")
flags.DEFINE_integer("seed", 0, "attack PRNG seed")
flags.DEFINE_string("measured_in", None,
                    "another report's folder whose saved blocks, transfer "
                    "examples and raw-pixel model are taken instead of measured again where they "
                    "measure the same thing: a file of the same name (model, "
                    "seed, block and every attack setting are in it) and, "
                    "for a block, that folder's model bit for bit the same "
                    "as ours for that seed. Default: the folder the run's "
                    "initial models came from (comparison.json's "
                    "pretrained_from); '' for none")
common.define_data_flags(dataset_default=None)

OTHER_MODEL = {"lenet": "lenet5", "lenet5": "lenet"}
GRID_MODELS = ("initial", "remove_retrain", "pgd_at")


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments {argv[1:]}")
  if bool(FLAGS.compare_dir) == bool(FLAGS.unlearn_dir):
    common.fail("give one of --compare_dir (the output dir of "
                "experiments.compare) or --unlearn_dir (of experiments.unlearn)")
  budget = common.autoattack_budget()
  run_dir = FLAGS.compare_dir or FLAGS.unlearn_dir
  path = os.path.join(run_dir, "comparison.json" if FLAGS.compare_dir
                      else "results.json")
  try:
    with open(path) as f:
      comparison = json.load(f)
    if FLAGS.unlearn_dir:
      comparison = reporting.comparison_from_unlearn(comparison)
  except (OSError, ValueError, KeyError) as e:
    common.fail(f"cannot read {path}: {e!r}")
  if (FLAGS.test_size < 0 or FLAGS.subset_size < 0 or FLAGS.pgd_restarts < 1
      or FLAGS.noise_draws < 1):
    common.fail("test_size and subset_size must be >= 0, pgd_restarts and "
                "noise_draws >= 1")
  if FLAGS.shards < 1 or not 0 <= FLAGS.shard < FLAGS.shards:
    common.fail(f"--shard={FLAGS.shard} --shards={FLAGS.shards}: need "
                "--shards >= 1 and 0 <= --shard < --shards")
  sweep = common.floats(FLAGS.sweep, "--sweep")
  explain_epsilons = common.floats(FLAGS.explain_epsilons,
                                   "--explain_epsilons")
  fields = {f.name for f in dataclasses.fields(config_lib.Config)}
  config = config_lib.Config(**{k: v for k, v in
                                comparison["methods"][0]["config"].items()
                                if k in fields})
  if FLAGS.dataset is not None and FLAGS.dataset != config.dataset:
    common.fail(f"--dataset={FLAGS.dataset} but {path} was trained and "
                f"scored on {config.dataset}; drop --dataset (the run's is "
                "used) or give the run's")
  dataset, source = common.load_data(dataclasses.replace(
      config, test_size=FLAGS.test_size))
  print(f"report: {data_lib.DATASETS[config.dataset].title} test set from "
        f"{source.description}", flush=True)
  apply_fn = models.make_apply(config.model, config.conv_impl)
  forward_impl = models.resolve_forward_conv_impl(config.model,
                                                  config.conv_impl)
  forward_fn = models.make_apply(config.model, forward_impl)
  square_forward = local_forward.for_model(config.model, forward_impl)
  suite = robustness.AttackSuite(FLAGS.pgd_steps, FLAGS.pgd_step_size,
                                 FLAGS.pgd_restarts, FLAGS.noise_draws)
  images = jnp.asarray(dataset.test_images)
  labels = jnp.asarray(dataset.test_labels)
  key = jax.random.key(FLAGS.seed)
  # Every model on the first `default_n` test examples, those named by
  # --whole_test_set_for on all of them.
  if FLAGS.subset_size > labels.shape[0]:
    common.fail(f"--subset_size={FLAGS.subset_size} but the test set has "
                f"{labels.shape[0]} examples")
  default_n = FLAGS.subset_size or int(labels.shape[0])

  # Transfer sources: trained like the initial models, on other seeds.
  source_configs = {"transfer_same": dataclasses.replace(
      config, seed=config.seed + 1000, seeds=1)}
  if FLAGS.transfer_other:
    source_configs["transfer_other"] = dataclasses.replace(
        config, model=OTHER_MODEL[config.model], seed=config.seed + 2000,
        seeds=1)

  def make_transfer():
    """Each source model's PGD test images, crafted once for all models and
    kept in the run folder (a resumed report scores on the same images)."""
    a = report["attacks"]  # What the transfer images depend on, alone.
    described = json.dumps([a["epsilon"], a["pgd"]["steps"],
                            a["pgd"]["step_size"], a["transfer_sources"],
                            int(labels.shape[0]), FLAGS.seed],
                           sort_keys=True)
    cache = os.path.join(run_dir, "transfer-%s.npz" % hashlib.sha256(
        described.encode()).hexdigest()[:12])
    if measured.take(cache):
      print(f"transfer examples: taken from {measured.folder}", flush=True)
    if os.path.exists(cache):
      with np.load(cache) as saved:
        crafted = {k: jnp.asarray(saved[k]) for k in source_configs}
        info = (json.loads(str(saved[_SOURCES])) if _SOURCES in saved.files
                else common.earlier_json(out_json).get("transfer_sources", {}))
      print(f"transfer examples: {cache}, kept", flush=True)
      return crafted, info
    crafted, info = {}, {}
    for i, (name, c) in enumerate(source_configs.items()):
      start = time.perf_counter()
      params, first = runner.train_one(c, dataset)
      source_apply = models.make_apply(c.model, c.conv_impl)
      crafted[name] = jax.jit(
          lambda p, x, y, k, f=source_apply: robustness.transfer_examples(
              f, p, x, y, config.epsilon, k, suite, FLAGS.chunk_size))(
                  params, images, labels, jax.random.fold_in(key, 100 + i))
      info[name] = {"source_clean_accuracy": float(first.clean_accuracy),
                    "source_pgd_accuracy": float(jnp.mean(
                        (jnp.argmax(source_apply(params, crafted[name]), -1)
                         == labels))),
                    "seconds": time.perf_counter() - start}
      print(f"{name}: source {c.model} (seed {c.seed}, {c.epochs} epochs) "
            f"clean {info[name]['source_clean_accuracy']:.4f}, its own PGD "
            f"{info[name]['source_pgd_accuracy']:.4f}", flush=True)
    tmp = cache + ".tmp.npz"
    np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in crafted.items()},
                        **{_SOURCES: np.asarray(json.dumps(info))})
    os.replace(tmp, cache)
    return crafted, info

  @jax.jit
  def evaluate(params, transfer, images, labels, key):
    """One model under the suite (one seed: PGD restarts skip examples
    already flipped, which needs the model unbatched) on `images`."""
    correct, pgd_trace = robustness.per_example_correct(
        apply_fn, params, images, labels, config.epsilon, key, suite,
        FLAGS.chunk_size, transfer=transfer)
    curve = robustness.accuracy_sweep(apply_fn, params, images, labels,
                                      jnp.asarray(sweep),
                                      jax.random.fold_in(key, 2),
                                      FLAGS.chunk_size)
    zero = robustness.zero_gradient_fraction(apply_fn, params, images,
                                             labels, FLAGS.chunk_size)
    aa = None
    if FLAGS.autoattack != "off":
      aa = autoattack.autoattack(apply_fn, params, images, labels,
                                 config.epsilon, jax.random.fold_in(key, 7),
                                 version=FLAGS.autoattack, budget=budget,
                                 chunk_size=FLAGS.aa_chunk_size,
                                 forward_fn=forward_fn,
                                 local_forward=square_forward)
    return correct, pgd_trace, curve, zero, aa

  def blocks_of(name, n, s, params):
    """(measure block b on the host, block count, path of block b's file) of
    one seed of one model on the first `n` test examples, in blocks of
    --block_size (each block's attack key folded from the block's index)."""
    block = FLAGS.block_size
    def one(b):
      part = slice(b * block, (b + 1) * block)
      return jax.device_get(evaluate(
          params, {k: v[part] for k, v in transfer.items()}, images[part],
          labels[part], jax.random.fold_in(jax.random.fold_in(key, 99), b)))
    path_of = lambda b: os.path.join(
        run_dir, "report-blocks",
        results.block_file(name, s, b, n // block, block_tag))
    for b in range(n // block):
      if params is not None and measured.take(path_of(b), name, s, params):
        print(f"  {name} seed {s + 1} block {b + 1}/{n // block}: taken from "
              f"{measured.folder} (the same model and attacks)", flush=True)
    return one, n // block, path_of

  def evaluate_seed(name, n, s, params):
    """One seed of one model on the first `n` test examples, on the host:
    in one call, or in blocks kept in report-blocks/ (`blocks_of`)."""
    if not FLAGS.block_size or n <= FLAGS.block_size:
      tr = {k: v[:n] for k, v in transfer.items()}
      return jax.device_get(evaluate(params, tr, images[:n], labels[:n], key))
    return _in_blocks(*blocks_of(name, n, s, params), f"{name} seed {s + 1}")

  attack_info = suite.describe(config.epsilon)
  attack_info["autoattack"] = ({"version": "off"} if FLAGS.autoattack == "off"
                               else budget.describe(FLAGS.autoattack,
                                                    config.epsilon))
  attack_info["transfer_sources"] = {
      name: {"model": c.model, "seed": c.seed, "epochs": c.epochs}
      for name, c in source_configs.items()}
  report = {
      "command": " ".join(["python -m experiments.report"] + sys.argv[1:]),
      "run_dir": run_dir,
      "models_command": comparison.get("command"),
      "dataset": config.dataset,
      "data_source": source.to_dict(),
      "test_examples": default_n,
      "whole_test_set_for": list(FLAGS.whole_test_set_for),
      "block_size": FLAGS.block_size,
      "attacks": attack_info,
      "sweep_attack": "PGD, 10 steps of 0.25 epsilon, random start",
      "models": [],
  }
  # What a saved block of a seed depends on besides the model and examples.
  block_tag = hashlib.sha256(json.dumps(
      [attack_info, sweep, FLAGS.seed, FLAGS.block_size],
      sort_keys=True).encode()).hexdigest()[:12]
  entries = {m["method"]: m for m in comparison["methods"]}
  measured = _Measured(
      FLAGS.measured_in if FLAGS.measured_in is not None
      else comparison.get("setup", {}).get("pretrained_from") or "", run_dir)
  params_files = {name: os.path.join(run_dir, f"params-{name}.msgpack")
                  for name in ["initial"] + list(entries)}
  if FLAGS.unlearn_dir:
    # The method's final models, and its control's when it ran beside it.
    params_files = {config.method: os.path.join(run_dir, "params.msgpack")}
    if "control" in entries:
      params_files["control"] = os.path.join(run_dir,
                                             "params-control.msgpack")
  out_json = os.path.join(run_dir, "report.json")
  unknown = sorted(set(FLAGS.whole_test_set_for) - set(params_files))
  if unknown:
    common.fail(f"--whole_test_set_for: no model {', '.join(unknown)} in "
                f"{run_dir} (models: {', '.join(params_files)})")
  sizes = {name: int(labels.shape[0]) if name in FLAGS.whole_test_set_for
           else default_n for name in params_files}
  uneven = sorted({n for n in sizes.values()
                   if FLAGS.block_size and n > FLAGS.block_size
                   and n % FLAGS.block_size})
  if FLAGS.block_size < 0 or uneven:
    common.fail(f"--block_size={FLAGS.block_size} must be >= 0 and divide "
                f"every model's test examples above it (not {uneven})")
  done, partial = _finished_models(out_json, report, FLAGS.seed, sweep, sizes)
  if FLAGS.shards > 1:
    unblocked = sorted(name for name, n in sizes.items()
                       if not FLAGS.block_size or n <= FLAGS.block_size)
    if unblocked:
      common.fail(f"--shards={FLAGS.shards} splits the blocks of every model, "
                  f"but {', '.join(unblocked)} would be measured in one call: "
                  "give a --block_size below every model's test examples")
    present = {name: path for name, path in params_files.items()
               if name not in done and os.path.exists(path)}
    transfer, _ = make_transfer()
    _measure_shard(present, sizes, blocks_of)
    return
  report["partial"] = dict(partial)  # Kept until their model is done.
  report["models_planned"] = [name for name, path in params_files.items()
                              if os.path.exists(path)]
  report["attack_seed"] = FLAGS.seed
  # An earlier report's explanation, carried through this run's writes
  # until it is kept or measured again at the end.
  earlier_explanation = common.earlier_json(out_json).get("explanation")
  if earlier_explanation:
    report["explanation"] = earlier_explanation
  report["sweep_epsilons"] = sweep
  transfer = None
  # The models on fewer examples first (the cheap ones: every model has
  # numbers early); the tables keep the comparison's order.
  order = list(params_files)
  for name in sorted(order, key=lambda n: sizes[n]):
    params_path = params_files[name]
    if name in done:
      report["models"].append(done[name])
      report["models"].sort(key=lambda m: order.index(m["model"]))
      print(f"{name}: already in {out_json} (same attacks, "
            f"{sizes[name]} test examples), kept", flush=True)
      continue
    if not os.path.exists(params_path):
      print(f"{name}: no {params_path}, skipped", flush=True)
      continue
    stacked = results.read_params(params_path)
    if transfer is None:
      transfer, report["transfer_sources"] = make_transfer()
    n = sizes[name]

    def save_seed(done_seeds, name=name):
      report["partial"][name] = done_seeds
      results.write_json_atomic(out_json, report)
    entry = _measure(name, stacked,
                     lambda s, p, name=name, n=n: evaluate_seed(name, n, s, p),
                     sweep, entries.get(name), partial.get(name, []),
                     save_seed, default_n)
    entry["test_examples"] = n
    report["models"].append(entry)
    report["models"].sort(key=lambda m: order.index(m["model"]))
    report["partial"].pop(name, None)
    results.write_json_atomic(out_json, report)
    acc = entry["accuracy"]
    aa = (f", AutoAttack ({FLAGS.autoattack}) "
          f"{acc['autoattack']['mean']:.4f}" if "autoattack" in acc else "")
    print(f"{name}: clean {acc['clean']['mean']:.4f}, FGSM "
          f"{acc['fgsm']['mean']:.4f}, PGD {acc['pgd']['mean']:.4f}{aa}, "
          f"robust {acc['robust']['mean']:.4f} ({entry['wall_time_s']:.0f}s)",
          flush=True)
  if "transfer_sources" not in report and done:
    report["transfer_sources"] = common.earlier_json(out_json).get("transfer_sources", {})
  results.write_json_atomic(out_json, report)
  if (FLAGS.explain and config.dataset == "mnist"
      and os.path.exists(params_files.get("initial", ""))):
    if measured.take(paper_pipelines.raw_pixel_params_path(config, dataset,
                                                           run_dir)):
      print(f"explanation: the raw-pixel model taken from {measured.folder}",
            flush=True)
    report["explanation"] = paper_pipelines.explain_run(
        config, dataset, sizes["initial"], comparison, run_dir,
        explain_epsilons, FLAGS.chunk_size, earlier_explanation)
    results.write_json_atomic(out_json, report)

  figures = []
  if FLAGS.plots and report["models"]:
    figures = _plots(report, comparison, params_files, run_dir, apply_fn,
                     images, labels, suite, config.epsilon, key)
  text = reporting.report_markdown(report, comparison, figures)
  text += _compute_section(report, comparison, run_dir)
  results.write_text_atomic(os.path.join(run_dir, "report.md"), text)
  print()
  print(text)


def _compute_section(report, comparison, out) -> str:
  """report.md's last section: robust accuracy against passes per training
  example, every finished model a point, the frontier marked
  (`fgsm_jax/pareto.py`), and compute.png with --plots (experiments.pareto's
  pareto.png, which may join other folders, is left alone); '' before a model is
  finished or for a run without passes counted per method."""
  try:
    pts, n = pareto.points(comparison, report)
  except (KeyError, TypeError, ValueError):
    return ""
  if len(pts) < 2:
    return ""
  front = pareto.frontier(pts)
  lines = [f"## Robust accuracy against compute "
           f"({reporting.dataset_title(comparison['setup'])})", "",
           pareto.table(pts, front, n)]
  if FLAGS.plots:
    plots.pareto_plot(pts, front, os.path.join(out, "compute.png"),
                      f"{reporting.dataset_title(comparison['setup'])}, "
                      f"model {comparison['setup']['model']}: robust accuracy "
                      f"on {n} test examples against compute")
    lines.append("![robust accuracy against passes per training example, "
                 "the frontier joined](compute.png)\n")
  return "\n" + "\n".join(lines)


def _measure_shard(params_files, sizes, blocks_of):
  """This process's share of every block (`blocks_of(name, n, seed,
  params)`) not saved yet: the blocks of all models, seed by seed (every
  model's seed 1 first), dealt out in turn, so the share of each --shard is
  the same on every run. Then, with --help_shards, the other shards'
  unsaved blocks from the last one back (their owners go forward: a shard
  that ends early keeps its core busy). A block is claimed while it is
  measured (`_claim`), so no two processes measure it at once. Writes no
  report."""
  stacked = {name: results.read_params(path)
             for name, path in params_files.items()}
  seeds = {name: jax.tree.leaves(p)[0].shape[0] for name, p in stacked.items()}
  units = [(name, s, b) for s in range(max(seeds.values(), default=0))
           for name in params_files if s < seeds[name]
           for b in range(sizes[name] // FLAGS.block_size)]
  mine = units[FLAGS.shard::FLAGS.shards]
  label = f"shard {FLAGS.shard}/{FLAGS.shards}"
  print(f"{label}: {len(mine)} of {len(units)} blocks are this shard's",
        flush=True)
  start = time.perf_counter()
  others = [u for i, u in reversed(list(enumerate(units)))
            if i % FLAGS.shards != FLAGS.shard] if FLAGS.help_shards else []
  for i, (name, s, b) in enumerate(mine + others):
    params = jax.tree.map(lambda x, s=s: x[s], stacked[name])
    one, count, path_of = blocks_of(name, sizes[name], s, params)
    where = (f"{label}: {i + 1}/{len(mine)}" if i < len(mine)
             else f"{label}: helping") + (
                 f": {name} seed {s + 1} block {b + 1}/{count}")
    if os.path.exists(path_of(b)):
      if i < len(mine):
        print(f"{where}: measured before, kept", flush=True)
      continue
    claim = path_of(b) + ".claim"
    if not _claim(claim):
      print(f"{where}: being measured by another process, left to it",
            flush=True)
      continue
    try:
      if os.path.exists(path_of(b)):  # Saved while this one claimed it.
        continue
      part = one(b)
      results.write_block(path_of(b), part)
    finally:
      _unclaim(claim)
    print(f"{where}: {_accuracies(part)} "
          f"({time.perf_counter() - start:.0f}s)", flush=True)
  missing = sum(not os.path.exists(
      blocks_of(name, sizes[name], s, None)[2](b)) for name, s, b in units)
  print(f"{label}: done; " + (
      f"{missing} block(s) of the other shards not saved yet" if missing
      else "every block is saved") + "; the same command without --shards "
      "writes the report (measuring what is missing)", flush=True)


# The transfer sources' description, kept in the transfer examples' file.
_SOURCES = "__sources__"


class _Measured:
  """Another report's folder (`folder`; '' for none) whose saved files this
  report takes instead of measuring them again (`take`)."""

  def __init__(self, folder: str, run_dir: str):
    self.folder, self._run_dir, self._params = folder, run_dir, {}

  def _same_model(self, name: str, s: int, params) -> bool:
    """Whether the folder's `name` model of seed index `s` is `params`, bit
    for bit."""
    if name not in self._params:
      path = os.path.join(self.folder, f"params-{name}.msgpack")
      self._params[name] = (results.read_params(path) if os.path.exists(path)
                            else None)
    theirs = self._params[name]
    if theirs is None or s >= jax.tree.leaves(theirs)[0].shape[0]:
      return False
    theirs = jax.tree.map(lambda x: np.asarray(x[s]), theirs)
    if jax.tree.structure(theirs) != jax.tree.structure(params):
      return False
    return all(np.array_equal(a, np.asarray(b)) for a, b in
               zip(jax.tree.leaves(theirs), jax.tree.leaves(params)))

  def take(self, path: str, name: str | None = None, s: int = 0,
           params=None) -> bool:
    """Copies `path`'s namesake in the folder to `path` when `path` does not
    exist yet and, for a model's file (`name`), the folder's model of seed
    `s` is `params`. True if copied."""
    if not self.folder or os.path.exists(path):
      return False
    source = os.path.join(self.folder, os.path.relpath(path, self._run_dir))
    if not os.path.exists(source) or (
        name is not None and not self._same_model(name, s, params)):
      return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    shutil.copyfile(source, tmp)
    os.replace(tmp, path)
    return True


def _claim(path) -> bool:
  """Claims a block for this process: creates `path` holding this host and
  process id, unless another live process holds it (one of this host whose
  process has ended, e.g. a shard that crashed, is taken over; another
  host's is trusted until its file is removed). True if claimed."""
  mine = f"{socket.gethostname()} {os.getpid()}"
  os.makedirs(os.path.dirname(path), exist_ok=True)
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
  except FileExistsError:
    try:
      with open(path) as f:
        host, pid = f.read().split()
      pid = int(pid)
    except (OSError, ValueError):
      return False  # Being written, or removed: someone else's moment.
    if host != socket.gethostname() or _alive(pid):
      return False
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
      f.write(mine)
    os.replace(tmp, path)  # The dead process's claim, taken over.
    return True
  with os.fdopen(fd, "w") as f:
    f.write(mine)
  return True


def _alive(pid: int) -> bool:
  """Whether process `pid` of this host is running."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _unclaim(path) -> None:
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def _accuracies(part) -> str:
  """'PGD a[, AutoAttack b]' of the suite's outputs (correct, pgd_trace,
  curve, zero, aa) of a block or a seed, for the progress lines."""
  correct, aa = part[0], part[4]
  return (f"PGD {float(np.mean(correct['pgd'])):.4f}"
          + (f", AutoAttack {float(np.mean(aa['correct'])):.4f}"
             if aa is not None else ""))


def _measure(name, stacked, evaluate, sweep, entry=None,
             done_seeds=(), save_seed=None, first_n=None) -> dict:
  """Every seed of one saved model under the suite (`evaluate(seed, params)`:
  the suite's outputs on the host), with the checks; `entry` (its comparison
  entry) adds the stale one.
  `done_seeds`: per-seed results of an interrupted report, kept;
  `save_seed(per_seed so far)` is called after each seed. When the model is
  measured on more than the first `first_n` test examples, each seed also
  records the accuracies over those (what models measured on fewer are
  paired against)."""
  start = time.perf_counter()
  seeds = jax.tree.leaves(stacked)[0].shape[0]
  per_seed = list(done_seeds)
  if per_seed:
    print(f"  {name}: seeds 1-{len(per_seed)} already measured, kept",
          flush=True)
  for s in range(len(per_seed), seeds):
    params = jax.tree.map(lambda x, s=s: x[s], stacked)
    part = evaluate(s, params)
    _, trace, curve, zero, aa = part
    correct = results.correct_by_attack(part)
    outcome = {} if aa is None else autoattack.summary(aa, FLAGS.autoattack)
    print(f"  {name} seed {s + 1}/{seeds}: {_accuracies(part)} "
          f"({time.perf_counter() - start:.0f}s)", flush=True)
    checks = robustness.masking_checks(
        correct, sweep, curve, float(zero),
        square_only=outcome.get("broken_by", {}).get("square"))
    if entry is not None:
      final = entry["per_seed"][s]["rounds"][-1]
      checks.append(robustness.stale_check(final["fgsm_accuracy"],
                                           final["transfer_accuracy"]))
    n = len(correct["clean"])
    per_seed.append({
        "test_examples": n,
        "accuracy": robustness.robust_accuracy(correct),
        **({"accuracy_first": {
            "examples": first_n,
            **robustness.robust_accuracy(
                {k: v[:first_n] for k, v in correct.items()})}}
           if first_n and first_n < n else {}),
        "pgd_accuracy_after_restart": trace.tolist(),
        "sweep": {"epsilons": sweep, "accuracy": curve.tolist()},
        "zero_gradient_fraction": float(zero),
        "checks": checks,
        **({"autoattack": outcome} if outcome else {}),
    })
    if save_seed is not None and len(per_seed) < seeds:
      save_seed(per_seed)
  names = per_seed[0]["accuracy"].keys()
  return {"model": name, "seeds": seeds, "per_seed": per_seed,
          "accuracy": {a: results.stat([p["accuracy"][a] for p in per_seed])
                       for a in names},
          "failed_checks": sorted({c["check"] for p in per_seed
                                   for c in p["checks"] if not c["passed"]}),
          "wall_time_s": time.perf_counter() - start}


def _plots(report, comparison, params_files, out, apply_fn, images, labels,
           suite, epsilon, key) -> list[tuple[str, str]]:
  """The three PNGs beside report.md; returns (file, caption) pairs."""
  a = report["attacks"]
  setting = (f"{reporting.dataset_title(comparison['setup'])}, "
             f"{report['test_examples']} test examples, model "
             f"{comparison['setup']['model']}")
  plots.sweep_plot(report["models"], os.path.join(out, "sweep.png"),
                   f"Accuracy vs epsilon ({report['sweep_attack']})\n"
                   f"{setting}, mean over seeds, band min-max",
                   {e["method"] for e in comparison["methods"]
                    if e.get("family") == "defense"})
  plots.rounds_plot(comparison["methods"], os.path.join(out, "rounds.png"),
                    f"Per round; epsilon {a['epsilon']}; {setting}",
                    comparison["setup"]["seeds"])
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
                     f"First {k} {reporting.dataset_title(comparison['setup'])}"
                     f" test images and their PGD-{suite.pgd_steps} "
                     f"examples (epsilon {epsilon}, one start) against each "
                     "model, seed 0; red = wrong")
    figures.append(("digits.png", "clean vs PGD digits with predictions"))
  return figures


def _in_blocks(evaluate_block, count, path_of, label):
  """The suite's outputs (correct, pgd_trace, curve, zero, aa) over `count`
  equal blocks of examples: each block measured by `evaluate_block(b)` and
  saved to `path_of(b)`, or read back from there when an earlier run saved
  it. Per-example arrays are joined; accuracies (traces, the sweep, the
  zero-gradient fraction) are averaged, exact for equal blocks."""
  parts = []
  start = time.perf_counter()
  for b in range(count):
    path = path_of(b)
    if os.path.exists(path):
      parts.append(results.read_block(path))
      print(f"  {label}: block {b + 1}/{count} measured before, kept",
            flush=True)
      continue
    part = evaluate_block(b)
    results.write_block(path, part)
    parts.append(results.read_block(path))
    print(f"  {label}: block {b + 1}/{count}: {_accuracies(part)} "
          f"({time.perf_counter() - start:.0f}s)", flush=True)
  join = lambda xs: np.concatenate(xs)
  mean = lambda xs: np.mean(np.stack(xs), axis=0)
  correct = {k: join([p[0][k] for p in parts]) for k in parts[0][0]}
  aa = None
  if parts[0][4] is not None:
    aa = {"correct": join([p[4]["correct"] for p in parts]),
          "broken_by": join([p[4]["broken_by"] for p in parts]),
          "trace": mean([p[4]["trace"] for p in parts])}
  return (correct, mean([p[1] for p in parts]), mean([p[2] for p in parts]),
          mean([p[3] for p in parts]), aa)


def _finished_models(path, report, seed, sweep, sizes) -> tuple[dict, dict]:
  """What an earlier, interrupted or complete, report with the same attacks
  already measured: (models done, per-seed results of models part done),
  each kept only where it used the test examples `sizes` gives the model
  now. Re-running resumes."""
  earlier = common.earlier_json(path)
  same = (earlier.get("attacks") == report["attacks"]
          and earlier.get("attack_seed") == seed
          and earlier.get("sweep_epsilons") == sweep)
  if not same:
    return {}, {}
  # Reports before per-model sizes: every model on `test_examples`.
  count = lambda m: m.get("test_examples", earlier.get("test_examples"))
  done = {m["model"]: m for m in earlier.get("models", [])
          if count(m) == sizes.get(m["model"])}
  partial = {name: seeds for name, seeds in earlier.get("partial", {}).items()
             if name in sizes and name not in done
             and all(p.get("test_examples") == sizes[name] for p in seeds)}
  return done, partial


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
