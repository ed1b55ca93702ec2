"""A newcomer's first run: the README's commands with nothing beside the
repo, the first screen (header, --help, rounds.png) and Fashion-MNIST."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, error_line, fashion_dir, mnist_dir
from fgsm_jax import config as config_lib
from fgsm_jax import data as data_lib
from fgsm_jax import plots

DATA_VARIABLES = ("MNIST_DIR", "FASHION_MNIST_DIR")


def bare_env(**extra):
  """The environment of a user who set nothing: no data variables."""
  env = {k: v for k, v in os.environ.items() if k not in DATA_VARIABLES}
  env.update(extra)
  return env


def run(module, *args, cwd, env):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd,
                        env=env, capture_output=True, text=True, timeout=900)


def readme_block_after(marker: str) -> list[str]:
  """The command lines of the README's first ```bash block after
  `marker`."""
  text = open(os.path.join(REPO, "README.md")).read()
  block = re.search(r"```bash\n(.*?)```", text[text.index(marker):], re.S)
  return [line for line in block.group(1).splitlines() if line.strip()]


def test_ci_runs_the_readmes_test_command_verbatim_without_data_variables():
  (test_command,) = readme_block_after("Tests (the command CI runs")
  ci = open(os.path.join(REPO, ".ci", "run")).read()
  assert test_command in ci.splitlines()
  assert not any(v in ci for v in DATA_VARIABLES)
  setup, run_command = readme_block_after("## Set-up and run")
  assert run_command == "python -m experiments.unlearn --epsilon=0.1"
  assert "pip install -e '.[test]'" in setup


def test_the_readmes_run_command_with_nothing_beside_the_repo(tmp_path):
  """The run command, cut to the smoke preset, from an empty folder with no
  data variable: the bundled MNIST, said so on the first line and in
  results.json."""
  result = run("experiments.unlearn", "--epsilon=0.1", "--preset=smoke",
               "--rounds=1", "--notensorboard", "--output_dir=out",
               cwd=tmp_path, env=bare_env())
  assert result.returncode == 0, result.stderr[-3000:]
  first = result.stdout.splitlines()[0]
  assert first.startswith("run: model lenet5")
  for part in ("dataset MNIST from the copy bundled with fgsm_jax",
               "1 initial epoch(s)", "up to 1 round(s) of 1 epoch(s)",
               "method remove_retrain", "1 seed(s)"):
    assert part in first, first
  outcome = json.loads((tmp_path / "out" / "results.json").read_text())
  assert outcome["data"]["dataset"] == "mnist"
  assert outcome["data"]["source"]["kind"] == "bundled"
  assert "accuracy (paper)" in result.stdout  # Table 1, on MNIST.
  assert (tmp_path / "out" / "rounds.png").exists()
  assert sorted(os.listdir(tmp_path)) == ["out"]


def test_a_folder_whose_checksums_fail_is_one_line_and_exit_2(tmp_path):
  """The bundled copy (with its SHA256SUMS), one byte altered, given as
  --data_dir: the run stops before training with one line naming it."""
  copy = tmp_path / "mnist"
  shutil.copytree(mnist_dir(), copy)
  path = copy / "t10k-labels-idx1-ubyte.gz"
  path.chmod(0o644)
  blob = bytearray(path.read_bytes())
  blob[-10] ^= 0xFF
  path.write_bytes(bytes(blob))
  if not (copy / "SHA256SUMS").exists():  # $MNIST_DIR without sums.
    pytest.skip("the MNIST folder in use has no SHA256SUMS")
  result = run("experiments.unlearn", "--preset=smoke", f"--data_dir={copy}",
               f"--output_dir={tmp_path}/out", cwd=tmp_path, env=bare_env())
  error_line(result, 2, "t10k-labels-idx1-ubyte.gz", "SHA256SUMS",
             "--data_dir or MNIST_DIR")
  assert not (tmp_path / "out" / "results.json").exists()


def test_help_lists_the_runs_flags_first_then_the_method_hyperparameters():
  result = run("experiments.unlearn", "--help", cwd=REPO, env=bare_env())
  assert result.returncode == 0, result.stderr
  text = result.stdout
  own = text.index("Flags of this run:")
  hyper = text.index("Method hyperparameters")
  verdicts = text.index("Verdicts")
  assert own < hyper < verdicts
  def section(start, end):
    return set(re.findall(r"^  --(?:\[no\])?(\w+):", text[start:end], re.M))
  run_flags = section(own, hyper)
  assert section(hyper, verdicts) == set(config_lib.METHOD_HYPERPARAMETERS)
  assert section(verdicts, len(text)) == set(config_lib.VERDICT_FIELDS)
  fields = {f for f in config_lib.Config.__dataclass_fields__}
  assert (fields - set(config_lib.METHOD_HYPERPARAMETERS)
          - set(config_lib.VERDICT_FIELDS)) <= run_flags
  assert {"dataset", "data_dir", "data_source", "output_dir", "preset",
          "resume"} <= run_flags
  assert "--helpfull" in text and "trades_beta" not in text[own:hyper]


def test_fashion_mnist_smoke_run_and_report(tmp_path):
  """--dataset=fashion_mnist through unlearn and report: the data from
  $FASHION_MNIST_DIR, named in the header, results.json, the tables and
  the report; no paper figures beside ours; the report refuses another
  dataset than the run's."""
  env = bare_env(FASHION_MNIST_DIR=fashion_dir())
  out = tmp_path / "out"
  result = run("experiments.unlearn", "--preset=smoke",
               "--dataset=fashion_mnist", "--rounds=1", "--notensorboard",
               "--noplots", f"--output_dir={out}", cwd=tmp_path, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  first = result.stdout.splitlines()[0]
  assert "dataset Fashion-MNIST from $FASHION_MNIST_DIR" in first, first
  assert "Fashion-MNIST test set" in result.stdout
  assert "paper" not in result.stdout.split("Fashion-MNIST test set")[1].split(
      "\n\n")[0].replace("the paper reports no figures", "")
  outcome = json.loads((out / "results.json").read_text())
  assert outcome["config"]["dataset"] == "fashion_mnist"
  assert outcome["data"]["source"] == {
      "kind": "env", "location": fashion_dir(),
      "description": f"$FASHION_MNIST_DIR {fashion_dir()}"}
  # The model learned Fashion-MNIST, not MNIST: scored on each test set.
  first_round = outcome["per_seed"][0]["rounds"][0]
  assert first_round["clean_accuracy"] > 0.3

  refused = run("experiments.report", f"--unlearn_dir={out}",
                "--dataset=mnist", cwd=tmp_path, env=env)
  error_line(refused, 2, "trained and scored on fashion_mnist")

  result = run("experiments.report", f"--unlearn_dir={out}", "--test_size=64",
               "--pgd_steps=3", "--pgd_restarts=1", "--noise_draws=2",
               "--notransfer_other", "--sweep=0,0.1", "--noplots",
               "--aa_apgd_steps=3", "--aa_target_classes=1",
               "--aa_fab_steps=3", "--aa_square_queries=20",
               cwd=tmp_path, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((out / "report.json").read_text())
  assert report["dataset"] == "fashion_mnist"
  assert report["data_source"]["kind"] == "env"
  text = (out / "report.md").read_text()
  assert "Setting: Fashion-MNIST" in text
  assert "The paper's Table 1" not in text
  assert "ours alone" in text and "under the attack suite (Fashion-MNIST)" in text
  # The standard AutoAttack's four attacks (at tiny budgets), and Square's
  # masking check.
  assert "| after fab_t | after square |" in text
  (seed,) = report["models"][0]["per_seed"]
  assert "square_not_stronger_than_white_box" in [
      c["check"] for c in seed["checks"]]


def _captured_rounds_plot(monkeypatch, methods_, seeds):
  figures = []
  monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
  plots.rounds_plot(methods_, "unused.png", "title", seeds)
  (fig,) = figures
  return fig


def _method(name, rows):
  return {"method": name, "per_seed": [{"rounds": [
      {"clean_accuracy": c, "fgsm_accuracy": f, "transfer_accuracy": t}
      for c, f, t in rows]}]}


def test_rounds_plot_shares_an_axis_per_metric_family(monkeypatch):
  """A change of 0.0001 in clean accuracy stays a flat line (the clean
  axis is at least 0.05 tall); the two FGSM panels share one axis holding
  both; the title says how many seeds each point averages."""
  methods_ = [_method("remove_retrain", [(0.9903, 0.20, 0.20),
                                         (0.9904, 0.30, 0.55)]),
              _method("control", [(0.9903, 0.20, 0.20),
                                  (0.9902, 0.25, 0.60)])]
  fig = _captured_rounds_plot(monkeypatch, methods_, seeds=3)
  clean, white, stale = fig.axes[:3]
  low, high = clean.get_ylim()
  assert high - low >= plots.MIN_SPAN and low <= 0.9902 and 0.9904 <= high
  assert white.get_ylim() == stale.get_ylim()
  low, high = white.get_ylim()
  assert low <= 0.20 and 0.60 <= high
  assert "3 seed(s)" in fig._suptitle.get_text()
  assert len(fig.axes) == 3  # No validation split: no fourth panel.


def test_rounds_plot_shows_the_validation_split_when_held_out(monkeypatch):
  """Rows with a validation FGSM accuracy get a fourth panel on the FGSM
  axis, drawn from those values."""
  methods_ = [_method("remove_retrain", [(0.99, 0.20, 0.20),
                                         (0.99, 0.30, 0.55)])]
  for row, val in zip(methods_[0]["per_seed"][0]["rounds"], (0.15, 0.65)):
    row["val_fgsm_accuracy"] = val
  fig = _captured_rounds_plot(monkeypatch, methods_, seeds=1)
  assert len(fig.axes) == 4
  white, validation = fig.axes[1], fig.axes[3]
  np.testing.assert_allclose(validation.lines[0].get_ydata(), [0.15, 0.65])
  assert validation.get_ylim() == white.get_ylim()
  assert "validation" in validation.get_ylabel()


@pytest.mark.parametrize("low,high", [(0.0, 0.0), (0.999, 1.0), (0.1, 0.9),
                                      (0.0, 1.0), (0.5, 0.5001)])
def test_accuracy_axes_hold_the_values_within_bounds(low, high):
  a, b = plots._accuracy_limits(low, high)
  assert a <= low and high <= b
  assert b - a >= plots.MIN_SPAN - 1e-12
  assert -0.02 - 1e-12 <= a and b <= 1.02 + 1e-12
  assert np.isfinite([a, b]).all()


def test_a_built_wheel_carries_the_bundled_mnist(tmp_path):
  """`pip install .` (not editable) must carry the data: the wheel holds
  the four files and their sums, and the package loads them from it."""
  pytest.importorskip("setuptools")
  # From a copy without build leftovers: an earlier build's egg-info lists
  # the data files and setuptools would take them from there.
  source = tmp_path / "source"
  shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
      ".git", ".venv", "build", "*.egg-info", "runs", "results",
      "__pycache__", ".pytest_cache"))
  built = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
       "--no-build-isolation", "-q", "-w", str(tmp_path / "wheel")],
      capture_output=True, text=True, timeout=600, cwd=tmp_path)
  assert built.returncode == 0, built.stderr[-3000:]
  import zipfile
  (wheel,) = (tmp_path / "wheel").iterdir()
  with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    z.extractall(tmp_path / "site")
  folder = "fgsm_jax/" + "/".join(data_lib.BUNDLED_FOLDER)
  for stems in data_lib.SPLIT_FILES.values():
    for stem in stems:
      assert f"{folder}/{stem}.gz" in names
  assert f"{folder}/SHA256SUMS" in names
  loaded = subprocess.run(
      [sys.executable, "-c",
       "import fgsm_jax; from fgsm_jax import data; "
       "d, s = data.load_dataset(); "
       "print(fgsm_jax.__file__, s.kind, len(d.train_labels))"],
      capture_output=True, text=True, timeout=300, cwd=tmp_path,
      env=bare_env(PYTHONPATH=str(tmp_path / "site")))
  assert loaded.returncode == 0, loaded.stderr[-3000:]
  path, kind, n = loaded.stdout.split()
  assert path.startswith(str(tmp_path / "site"))
  assert (kind, n) == ("bundled", "60000")
