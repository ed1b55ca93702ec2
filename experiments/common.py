"""What the entry points share: config flags, one-line errors, data, output.

Every `Config` field is a flag (None = the preset's value); bad input ends
the run with one line on stderr and exit status 2.
"""

from __future__ import annotations

import dataclasses
import datetime
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
    "epsilon": "FGSM L-inf radius in [0, 1]",
    "model": "lenet (paper Fig. 3) or lenet5 (Fig. 4)",
    "conv_impl": "auto, shifted_matmul or xla",
    "seeds": "independent runs, vmapped",
    "seed": "base PRNG seed",
    "epochs": "initial training epochs",
    "retrain_epochs": "training epochs in each round",
    "rounds": "cap on unlearning rounds",
    "forget_per_round": "examples selected (removed) per round",
    "target_accuracy": "stop at this white-box FGSM accuracy",
    "batch_size": "minibatch size",
    "learning_rate": "Adam learning rate",
    "chunk_size": "examples per chunk of full-split passes",
    "train_size": "first N training examples (0 = all)",
    "test_size": "first N test examples (0 = all)",
    "method": f"one of {', '.join(methods.METHODS)}",
}
_DEFINE = {int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}
FIELDS = tuple(f.name for f in dataclasses.fields(config_lib.Config))


def define_config_flags(exclude=()):
  """A flag per `Config` field (method hyperparameters: see config.py)."""
  for field in dataclasses.fields(config_lib.Config):
    if field.name in exclude:
      continue
    kind = type(field.default)
    _DEFINE[kind](field.name, None,
                  HELP.get(field.name, f"Config.{field.name} (fgsm_jax/config.py)"))
  flags.DEFINE_string("data_dir", None,
                      "folder of the four MNIST IDX files; default "
                      "$MNIST_DIR, else tensorflow-datasets")


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


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


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, a bad value one line and exit 2 like every other
  input error (`app.run(main, flags_parser=common.parse_flags)`)."""
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


def load_data(config: config_lib.Config) -> data_lib.Dataset:
  try:
    return data_lib.take(data_lib.load_mnist(flags.FLAGS.data_dir),
                         config.train_size, config.test_size)
  except data_lib.DataError as e:
    fail(f"{e} (set --data_dir or MNIST_DIR to a folder of the MNIST IDX files)")


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
    self.restored = epochs

  def eta(self, elapsed: float) -> str:
    """', epochs d/n, ~Ns left' after an epoch, or '' without a total."""
    self.done += 1
    if not self.epochs:
      return ""
    done = self.restored + self.done
    left = elapsed / self.done * max(self.epochs - done, 0)
    return f"; epochs {done}/{self.epochs}, about {left:.0f}s left at most"

  def __call__(self, kind, values):
    key = (kind, int(values["round"]), int(values.get("epoch", 0)))
    self.pending.setdefault(key, []).append(values)
    if len(self.pending[key]) < self.seeds:
      return
    reports = [v for v in self.pending.pop(key) if bool(v["active"])]
    if not reports:
      return
    elapsed = time.perf_counter() - self.start
    head = f"[{elapsed:7.1f}s] {self.label}"
    if kind == "epoch":
      loss = sum(float(v["loss"]) for v in reports) / len(reports)
      print(f"{head}round {key[1]} epoch {key[2]}/"
            f"{int(reports[0]['epochs'])}: train loss {loss:.4f}"
            f"{self.eta(elapsed)}", flush=True)
    else:
      def mean(name):
        return sum(float(getattr(v["metrics"], name)) for v in reports) / len(reports)
      print(f"{head}round {key[1]} done ({len(reports)} seed(s) "
            f"active): clean {mean('clean_accuracy'):.4f}, FGSM white-box "
            f"{mean('fgsm_accuracy'):.4f}, FGSM stale "
            f"{mean('transfer_accuracy'):.4f}, removed "
            f"{mean('removed'):.0f}", flush=True)
