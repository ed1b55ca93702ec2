"""What the entry points share: config flags, one-line errors, data, output.

Every `Config` field is a flag (None = the preset's value); bad input ends
the run with one line on stderr and exit status 2.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import math
import os
import shutil
import sys
import time

from absl import flags
from absl import logging as absl_logging

# JAX logs at INFO that it found no TPU on every CPU machine; an error line
# should be the only thing on stderr when a run fails.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)

from fgsm_jax import config as config_lib
from fgsm_jax import data as data_lib
from fgsm_jax import methods

HELP = {
    "dataset": "mnist (the paper's; bundled) or fashion_mnist (see "
               "--data_dir)",
    "epsilon": "FGSM L-inf radius in [0, 1]",
    "train_epsilon": "the radius the defenses train at (0 = --epsilon); "
                     "selection and evaluation keep --epsilon",
    "model": "lenet (paper Fig. 3) or lenet5 (Fig. 4)",
    "conv_impl": "auto, shifted_matmul or xla",
    "seeds": "independent runs, vmapped",
    "seed": "base PRNG seed",
    "epochs": "initial training epochs",
    "retrain_epochs": "training epochs in each round",
    "rounds": "cap on unlearning rounds",
    "forget_per_round": "examples selected (removed) per round",
    "target_accuracy": "stop at this white-box FGSM accuracy (on the "
                       "validation split if any, else the test set)",
    "batch_size": "minibatch size",
    "learning_rate": "Adam learning rate",
    "lr_schedule": "the rounds' learning rate: constant (--learning_rate) "
                   "or cyclic (0 -> --lr_peak at 2/5 of all rounds' steps "
                   "-> 0, Wong et al. 2020)",
    "lr_peak": "the cyclic schedule's peak rate",
    "chunk_size": "examples per chunk of full-split passes",
    "train_size": "first N training examples (0 = all)",
    "test_size": "first N test examples (0 = all)",
    "validation_size": "hold out the last N training examples for the "
                       "stopping rule (0 = none: it reads the test set, as "
                       "the paper does)",
    "overfit_check_size": "PGD-10 on the first N validation digits after "
                          "every round, the catastrophic-overfitting check "
                          "(0 = off)",
    "method": f"one of {', '.join(methods.METHODS)}",
    "forget_batch_size": "forget-set examples beside each retain minibatch",
    "neggrad_alpha": "neggrad_plus: weight of the retain CE",
    "ascent_cap": "neggrad_plus, scrub: per-example cap of the ascent loss",
    "relabel_weight": "relabel, salun: weight of the forget term",
    "salun_sparsity": "salun: fraction of weights frozen",
    "scrub_alpha": "scrub: weight of the retain KD term",
    "scrub_gamma": "scrub: weight of the retain CE term",
    "scrub_temperature": "scrub: KD temperature",
    "scrub_max_epochs": "scrub: epochs with max steps",
    "fgsm_at_alpha": "fgsm_at: weight of the clean CE",
    "fgsm_rs_step": "fgsm_rs: step, in units of epsilon",
    "nfgsm_noise": "nfgsm: noise magnitude, in units of epsilon",
    "nfgsm_step": "nfgsm: step, in units of epsilon",
    "gradalign_lambda": "gradalign: weight of the gradient-alignment term",
    "pgd_steps": "pgd_at, trades: attack steps in training",
    "pgd_step_size": "pgd_at, trades: attack step size",
    "trades_beta": "trades: weight of the KL term",
    "equivalence_margin": "'no detectable effect' needs the whole interval "
                          "inside +-this (accuracy)",
    "confidence": "of the paired t intervals",
}
_DEFINE = {int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}
FIELDS = tuple(f.name for f in dataclasses.fields(config_lib.Config))


# --help's sections after the run's own flags: absl groups flags by the
# module that defined them, and these are registered under these names.
HYPERPARAMETER_GROUP = "method hyperparameters"
VERDICT_GROUP = "verdicts"
HELP_SECTIONS = (
    (HYPERPARAMETER_GROUP, "Method hyperparameters (fgsm_jax/config.py "
                           "gives each one's source)"),
    (VERDICT_GROUP, "Verdicts (a paired difference over seeds)"),
)


def main_module() -> str:
  """The name absl files the running entry point's own flags under."""
  return sys.argv[0]


def define_config_flags(exclude=()):
  """A flag per `Config` field: the run's own under the entry point, the
  method hyperparameters and the verdict numbers in groups of their own;
  then the data flags."""
  for field in dataclasses.fields(config_lib.Config):
    if field.name in exclude:
      continue
    group = (HYPERPARAMETER_GROUP
             if field.name in config_lib.METHOD_HYPERPARAMETERS else
             VERDICT_GROUP if field.name in config_lib.VERDICT_FIELDS
             else main_module())
    kind = type(field.default)
    text = HELP.get(field.name, f"Config.{field.name} (fgsm_jax/config.py)")
    if group != main_module():  # No preset changes these.
      text += f" (default {field.default})"
    _DEFINE[kind](field.name, None, text, module_name=group)
  define_data_flags(dataset=False)


def define_data_flags(dataset: bool = True, dataset_default: str | None = "mnist"):
  """--data_dir and --data_source (and --dataset, unless it is a config
  flag) of an entry point that reads a dataset."""
  if dataset:
    flags.DEFINE_enum("dataset", dataset_default, list(data_lib.DATASETS),
                      HELP["dataset"] + ("" if dataset_default else
                                         "; default: the run's"),
                      module_name=main_module())
  flags.DEFINE_string(
      "data_dir", None,
      "folder of the dataset's four IDX files; default $MNIST_DIR, else the "
      "MNIST bundled with the package (Fashion-MNIST: $FASHION_MNIST_DIR, "
      "else /usr/share/datasets/fashion-mnist, else a copy "
      "tensorflow-datasets prepared)",
      module_name=main_module())
  flags.DEFINE_enum(
      "data_source", "auto", list(data_lib.DATA_SOURCES),
      "auto: --data_dir's order; tfds: tensorflow-datasets only, "
      "downloading if it must (needs internet)",
      module_name=main_module())


def define_autoattack_flags():
  """AutoAttack's budget flags (the standard's numbers by default), for the
  entry points that run it; `autoattack_budget()` reads them."""
  flags.DEFINE_integer("aa_apgd_steps", 100, "AutoAttack: APGD steps per run",
                       module_name=main_module())
  flags.DEFINE_integer("aa_target_classes", 9,
                       "AutoAttack: target classes of APGD-T and FAB-T",
                       module_name=main_module())
  flags.DEFINE_integer("aa_fab_steps", 100,
                       "AutoAttack: FAB-T steps per target",
                       module_name=main_module())
  flags.DEFINE_integer("aa_square_queries", 5000,
                       "AutoAttack: Square queries", module_name=main_module())
  flags.DEFINE_integer("aa_chunk_size", 100,
                       "AutoAttack: examples per chunk of its passes (small "
                       "chunks leave fewer examples already broken in the "
                       "last chunk of each pass)", module_name=main_module())


def autoattack_budget(classes: int = 10):
  """The `autoattack.Budget` of the --aa_* flags; a bad one exits 2."""
  from fgsm_jax import autoattack
  f = flags.FLAGS
  try:
    budget = autoattack.Budget(
        apgd_steps=f.aa_apgd_steps, target_classes=f.aa_target_classes,
        fab_steps=f.aa_fab_steps, square_queries=f.aa_square_queries)
  except ValueError as e:
    fail(str(e))
  if f.aa_chunk_size < 1:
    fail(f"--aa_chunk_size must be >= 1, got {f.aa_chunk_size}")
  if budget.target_classes > classes - 1:
    fail(f"--aa_target_classes={budget.target_classes}: at most "
         f"{classes - 1} (the classes other than the true one; {classes} "
         "classes)")
  return budget


def help_text() -> str:
  """--help: the entry point's description, its own flags (the run's),
  then the method hyperparameters and the verdict numbers."""
  doc = (sys.modules["__main__"].__doc__ or "").strip()
  by_module = flags.FLAGS.flags_by_module_dict()
  parts = [doc, ""] if doc else []
  for module, title in ((main_module(), "Flags of this run"),) + HELP_SECTIONS:
    if module not in by_module:
      continue
    body = flags.FLAGS.module_help(module).strip("\n").split("\n", 1)[1]
    parts += [f"{title}:", body, ""]
  parts.append("--helpfull lists every flag, the libraries' too.")
  return "\n".join(parts)


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def folder_labels(dirs: list[str], flag: str) -> list[str]:
  """Each folder's name, which labels its entries in a table; one line and
  exit 2 if two folders of `flag` have the same name."""
  labels = [os.path.basename(os.path.normpath(d)) for d in dirs]
  twice = sorted({l for l in labels if labels.count(l) > 1})
  if twice:
    fail(f"{flag}: two folders named {', '.join(twice)}: give folders of "
         "different names")
  return labels


def check_methods(names: list[str]) -> None:
  """A --methods list of known methods, else one line and exit 2."""
  unknown = [m for m in names if m not in methods.METHODS]
  if unknown or not names:
    fail(f"unknown methods {unknown}; choose from "
         f"{', '.join(methods.METHODS)}")


def runtime_fail(message: str) -> None:
  """A failure of the run itself (not of its input): one line, exit 1."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(1)


def check_finite(records: list[dict], what: str,
                 discard: str | None = None) -> None:
  """Ends the run (exit 1) if a seed's test loss went NaN or infinite: the
  training diverged, and nothing of it is worth writing. `discard`: a
  folder of the run's own (its checkpoints) removed first, so the same
  folder takes the re-run with other settings."""
  bad = [(s, row["round"]) for s, r in enumerate(records)
         for row in r["rounds"]
         if row["clean_loss"] is None or not math.isfinite(row["clean_loss"])]
  if bad:
    if discard is not None:
      shutil.rmtree(discard, ignore_errors=True)
    seed, round_ = bad[0]
    runtime_fail(f"{what} diverged: the test loss is not finite (seed {seed}, "
                 f"round {round_}; {len(bad)} seed-round(s) in all); nothing "
                 "of it was written, earlier results are kept; try a lower "
                 "--learning_rate")


HELP_FLAGS = ("--help", "-help", "--helpshort", "-helpshort", "-?")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, a bad value one line and exit 2 like every other
  input error (`app.run(main, flags_parser=common.parse_flags)`); --help
  prints `help_text()` and exits 0."""
  if any(a in HELP_FLAGS for a in argv[1:]):
    print(help_text())
    sys.exit(0)
  try:
    argv = flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{e} (see --helpshort)")
  if not flags.FLAGS["verbosity"].present:
    # Libraries' INFO logs (orbax on every checkpoint, JAX on start-up) would
    # bury the progress lines and the one-line errors; --verbosity=0 shows them.
    absl_logging.set_verbosity(absl_logging.WARNING)
  return argv


def config_from_flags(preset: str, **fixed) -> config_lib.Config:
  """The preset with every flag that was given (and `fixed`) applied."""
  values = {f: getattr(flags.FLAGS, f, None) for f in FIELDS}
  values.update(fixed)
  try:
    return config_lib.get_config(preset, **values)
  except ValueError as e:
    fail(str(e))


def output_dir(given: str | None, prefix: str) -> str:
  """`given` or runs/<prefix>-<time>, created and checked writable."""
  path = given or os.path.join(
      "runs", prefix + "-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write-test-{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    fail(f"output dir {path!r} is not writable: {e}")
  return path


def interrupted_run(given: str | None, prefix: str, last_file: str) -> str:
  """The folder of an interrupted run to go on with: `given` if it holds
  checkpoints, else the newest runs/<prefix>-* holding checkpoints and not
  `last_file` (what a finished run writes last); fails (exit 2) when there
  is none."""
  def has_checkpoints(path):
    return os.path.exists(os.path.join(path, "checkpoints", "run.json"))
  if given is not None:
    if not has_checkpoints(given):
      fail(f"nothing to resume in {given!r}: it holds no checkpoints; drop "
           "--resume to start a run there")
    return given
  candidates = sorted(
      (os.path.join("runs", name) for name in os.listdir("runs")
       if name.startswith(prefix + "-")) if os.path.isdir("runs") else [],
      key=os.path.getmtime)
  candidates = [c for c in candidates if has_checkpoints(c)
                and not os.path.exists(os.path.join(c, last_file))]
  if not candidates:
    fail(f"nothing to resume: no runs/{prefix}-* folder holds checkpoints of "
         "an unfinished run; give --output_dir, or drop --resume")
  print(f"resuming the newest unfinished run, {candidates[-1]}", flush=True)
  return candidates[-1]


def earlier_json(path: str) -> dict:
  """What an earlier run wrote to `path`, or {} if it is missing or
  unreadable (the run then starts that part over)."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def load_full(name: str) -> tuple[data_lib.Dataset, data_lib.Source]:
  """Dataset `name`, whole, from --data_dir / --data_source's source, and
  that source; a bad or missing source is one line and exit 2."""
  try:
    return data_lib.load_dataset(name, flags.FLAGS.data_dir,
                                 flags.FLAGS.data_source)
  except data_lib.DataNotFound as e:
    fail(str(e))
  except data_lib.DataError as e:
    info = data_lib.DATASETS.get(name, data_lib.DATASETS["mnist"])
    fail(f"{e} (set --data_dir or {info.env} to a folder of the "
         f"{info.title} IDX files)")


def load_data(config: config_lib.Config
              ) -> tuple[data_lib.Dataset, data_lib.Source]:
  """`config.dataset`, cut to `config`'s sizes, and its source."""
  dataset, source = load_full(config.dataset)
  try:
    dataset = data_lib.hold_out(
        data_lib.take(dataset, config.train_size, config.test_size),
        config.validation_size)
  except data_lib.DataError as e:
    fail(str(e))
  check_test_selection([config.method], config, dataset)
  return dataset, source


def check_test_selection(names: list[str], config, dataset) -> None:
  """A method selecting on the test set (removing training examples by test
  index) needs no more test examples than training ones; else one line and
  exit 2."""
  n_train, n_test = len(dataset.train_labels), len(dataset.test_labels)
  for name in names:
    if n_test > n_train and methods.make_method(
        name, config, None).selects_on == "test":
      fail(f"--method={name} removes training examples by test index: it "
           f"needs at most as many test examples ({n_test}) as training "
           f"examples ({n_train}); lower --test_size")


def floats(values: list[str], flag: str) -> list[float]:
  """A list flag's values as numbers, or one line naming the flag."""
  try:
    return [float(v) for v in values]
  except ValueError:
    fail(f"{flag} must be numbers, got {','.join(values)}")


def header_line(config: config_lib.Config, source: data_lib.Source,
                methods_run: str | None = None) -> str:
  """What the run is, before its first epoch: model, dataset and source,
  epochs, rounds, method(s), seeds."""
  figure = {"lenet": "the paper's Fig. 3", "lenet5": "Fig. 4"}[config.model]
  rounds = (f"up to {config.rounds} round(s) of {config.retrain_epochs} "
            f"epoch(s)" + (f" (stop at FGSM {config.target_accuracy})"
                           if config.target_accuracy < 1 else ""))
  return (f"run: model {config.model} ({figure}); dataset "
          f"{data_lib.DATASETS[config.dataset].title} from "
          f"{source.description}; {config.epochs} initial epoch(s), "
          f"{rounds}; method {methods_run or config.method}; "
          f"{config.seeds} seed(s); epsilon {config.epsilon}")


class ProgressPrinter:
  """Prints one line per epoch and per round, averaged over the seeds.

  Reports arrive from inside the compiled program once per seed; a line is
  printed when every seed's report for that step is in. With `epochs` (the
  training epochs the program runs at most) each epoch line also says how
  many are done and the time left at the pace so far (an upper bound when
  the rounds can stop early at the target).
  """

  def __init__(self, seeds: int, label: str = "", epochs: int | None = None):
    self.seeds = seeds
    self.label = label
    self.epochs = epochs
    self.done = 0      # Epochs run by this process.
    self.restored = 0  # Epochs a resumed run restored instead of running.
    self.pending = {}
    self.start = time.perf_counter()

  def skip_epochs(self, epochs: int) -> None:
    """A resumed run restored `epochs` epochs: counted as done, not timed."""
    self.restored += epochs

  def eta(self, elapsed: float) -> str:
    """', epochs d/n, ~Ns left' after an epoch, or '' without a total."""
    self.done += 1
    if not self.epochs:
      return ""
    done = self.restored + self.done
    left = elapsed / self.done * max(self.epochs - done, 0)
    return f"; epochs {done}/{self.epochs}, about {left:.0f}s left at most"

  def labelled(self, label: str):
    """A progress function for another part of the same run (e.g. the
    control beside the method): its lines start with `label`, and its
    epochs count toward this printer's total and time left."""
    return functools.partial(self.report, label=label)

  def __call__(self, kind, values):
    self.report(kind, values, self.label)

  def report(self, kind, values, label: str):
    key = (label, kind, int(values["round"]), int(values.get("epoch", 0)))
    self.pending.setdefault(key, []).append(values)
    if len(self.pending[key]) < self.seeds:
      return
    reports = [v for v in self.pending.pop(key) if bool(v["active"])]
    if not reports:
      return
    elapsed = time.perf_counter() - self.start
    head = f"[{elapsed:7.1f}s] {label}"
    if kind == "epoch":
      loss = sum(float(v["loss"]) for v in reports) / len(reports)
      print(f"{head}round {key[2]} epoch {key[3]}/"
            f"{int(reports[0]['epochs'])}: train loss {loss:.4f}"
            f"{self.eta(elapsed)}", flush=True)
    else:
      def mean(name):
        return sum(float(getattr(v["metrics"], name)) for v in reports) / len(reports)
      print(f"{head}round {key[2]} done ({len(reports)} seed(s) "
            f"active): clean {mean('clean_accuracy'):.4f}, FGSM white-box "
            f"{mean('fgsm_accuracy'):.4f}, FGSM stale "
            f"{mean('transfer_accuracy'):.4f}"
            + ("" if math.isnan(mean("val_fgsm_accuracy")) else
               f", validation FGSM {mean('val_fgsm_accuracy'):.4f}")
            + ("" if math.isnan(mean("val_pgd_accuracy")) else
               f", validation PGD-10 {mean('val_pgd_accuracy'):.4f}")
            + f", removed {mean('removed'):.0f}", flush=True)
