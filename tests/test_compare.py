"""experiments.compare as a user runs it: every method, seeds vmapped, JSON."""

import json
import subprocess
import sys

import pytest

from conftest import REPO, mnist_dir
from fgsm_jax import methods


def run_compare(*args):
  return subprocess.run(
      [sys.executable, "-m", "experiments.compare", *args], cwd=REPO,
      capture_output=True, text=True, timeout=900)


@pytest.mark.skipif(mnist_dir() is None, reason="real MNIST not found")
def test_every_method_from_one_initial_model(tmp_path):
  out = tmp_path / "out"
  result = run_compare("--preset=smoke", "--seeds=2", "--train_size=512",
                       "--test_size=256", "--rounds=1", "--pgd_steps=2",
                       f"--data_dir={mnist_dir()}", f"--output_dir={out}",
                       "--noprogress")
  assert result.returncode == 0, result.stderr[-3000:]
  comparison = json.loads((out / "comparison.json").read_text())
  entries = {e["method"]: e for e in comparison["methods"]}
  assert list(entries) == list(methods.METHODS)
  for e in entries.values():
    assert len(e["per_seed"]) == 2
    for key in ("clean_accuracy", "fgsm_accuracy", "fgsm_stale_accuracy"):
      assert all(0.0 <= v <= 1.0 for v in e[key]["values"])
    # Round 0 of every method is the same shared initial model.
    first = [s["rounds"][0]["clean_accuracy"] for s in e["per_seed"]]
    assert first == comparison["setup"]["initial"]["clean_accuracy"]["values"]
  # Seeds differ; the paper's method removed forget_per_round examples.
  assert len(set(entries["control"]["clean_accuracy"]["values"])) == 2
  assert entries["remove_retrain"]["removed"]["values"] == [32.0, 32.0]
  assert entries["control"]["removed"]["values"] == [0.0, 0.0]
  # Cost: PGD-2 training spends 3x the control's backward passes.
  rounds = {m: e["passes"]["rounds"]["mean"] for m, e in entries.items()}
  assert rounds["pgd_at"] == 3 * rounds["control"]
  assert rounds["remove_retrain"] > rounds["control"]
  # Every method's final models are saved, a leading axis per seed.
  from fgsm_jax import results
  for name in ["initial"] + list(methods.METHODS):
    params = results.read_params(str(out / f"params-{name}.msgpack"))
    assert params["Dense_0"]["kernel"].shape[0] == 2
  table = (out / "comparison.md").read_text()
  for name in methods.METHODS:
    assert f"| {name} |" in table
  # What was reduced from the paper's settings is stated.
  assert "model=lenet5 (paper: lenet)" in table
  assert "train_size=512 (paper: 0)" in table


def test_unknown_method_is_one_line_and_exit_2(tmp_path):
  result = run_compare("--methods=control,forget_all",
                       f"--output_dir={tmp_path}/out")
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "unknown methods ['forget_all']" in lines[0]
