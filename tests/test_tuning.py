"""Choosing a recipe on the validation split: which candidate wins, over
which seeds, at what cost, and the entry point on comparison folders."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, error_line
from fgsm_jax import config as config_lib
from fgsm_jax import tuning

N_TRAIN = 1000


def _entry(method, val_pgd, val_clean=0.995, seeds=None, flagged=(),
           rounds=2, **fields):
  """A comparison's method entry as experiments.compare writes it."""
  config = dict(config_lib.Config().to_dict(), method=method,
                retrain_epochs=1, rounds=rounds, **fields)
  val_pgd = list(val_pgd)
  n = len(val_pgd)
  steps = math.ceil(N_TRAIN / config["batch_size"]) * rounds
  per_example = {"control": 1, "fgsm_rs": 2}[method]  # Forward = backward.
  passes = steps * config["batch_size"] * per_example
  def stat(values):
    return {"mean": sum(values) / len(values), "values": list(values)}
  return {"method": method, "config": config,
          "val_accuracy": stat([val_clean] * n),
          "val_fgsm_accuracy": stat([min(1.0, v + 0.01) for v in val_pgd]),
          "val_pgd_accuracy": stat(val_pgd),
          "overfitting_rounds": [[2] if i in flagged else [] for i in range(n)],
          "rounds_completed": [rounds] * n,
          "passes": {"rounds": stat([passes] * n),
                     "rounds_forward": stat([passes] * n)}}


def _comparison(*entries):
  return {"setup": {"train_examples": N_TRAIN, "validation_examples": 500},
          "methods": list(entries)}


def test_the_most_robust_eligible_candidate_is_chosen_over_shared_seeds():
  comparisons = {
      # Best on its first seed, but below the clean floor.
      "a": _comparison(_entry("fgsm_rs", [0.99, 0.99], val_clean=0.990)),
      # Best of the eligible on the first seed; its second seed is poor.
      "b": _comparison(_entry("fgsm_rs", [0.97, 0.50])),
      # Better only on seeds the others did not run.
      "c": _comparison(_entry("fgsm_rs", [0.96, 0.99, 0.99, 0.99])),
      # Flagged as catastrophic overfitting on seed 1.
      "d": _comparison(_entry("fgsm_rs", [0.98], flagged=(0,))),
      "e": _comparison(_entry("control", [0.70])),
  }
  cands = tuning.candidates(comparisons)
  choice = tuning.choose(cands, clean_floor=0.992, passes_fraction=1 / 3)
  assert choice["seeds"] == 1
  assert choice["chosen"] == "b/fgsm_rs"
  rows = {r["name"]: r for r in choice["rows"]}
  assert rows["c/fgsm_rs"]["val_pgd_accuracy"] == pytest.approx(0.96)
  assert "validation clean" in rows["a/fgsm_rs"]["why_not"][0]
  assert "catastrophic overfitting" in rows["d/fgsm_rs"]["why_not"][0]
  assert rows["e/control"]["eligible"]
  # A cap below FGSM-RS's cost leaves the control alone eligible.
  capped = tuning.choose(cands, 0.992, passes_fraction=0.04)
  assert capped["chosen"] == "e/control"
  assert "of PGD-AT's" in {r["name"]: r for r in capped["rows"]}[
      "b/fgsm_rs"]["why_not"][0]
  # Nothing eligible: no choice.
  assert tuning.choose(cands, clean_floor=1.0, passes_fraction=1)[
      "chosen"] is None
  # Equal robustness: the cheaper one.
  tie = tuning.candidates({"x": _comparison(_entry("fgsm_rs", [0.9]),
                                            _entry("control", [0.9]))})
  assert tuning.choose(tie, 0.992, 1)["chosen"] == "x/control"
  # A validation clean accuracy on the floor, as the float32 ratio of counts
  # a run writes (4960 / 5000 = 0.99199998), is eligible; one digit less not.
  on, under = (float(np.float32(k) / np.float32(5000)) for k in (4960, 4959))
  floor = tuning.candidates({"on": _comparison(_entry("fgsm_rs", [0.9],
                                                      val_clean=on)),
                             "under": _comparison(_entry(
                                 "fgsm_rs", [0.95], val_clean=under))})
  rows = {r["name"]: r for r in tuning.choose(floor, 0.992, 1)["rows"]}
  assert rows["on/fgsm_rs"]["eligible"]
  assert not rows["under/fgsm_rs"]["eligible"]


def test_passes_and_pgd_ats_are_counted_on_each_schedule():
  """Passes per training example as the run counted them; PGD-AT's on the
  same schedule written out: pgd_steps + 1 forward and backward passes per
  example a step, whole minibatches."""
  cands = tuning.candidates({"a": _comparison(_entry("fgsm_rs", [0.9],
                                                     rounds=3,
                                                     pgd_steps=7))})
  [c] = cands
  batches = math.ceil(N_TRAIN / 128) * 128 * 3
  assert c["passes"] == pytest.approx(2 * 2 * batches / N_TRAIN)
  # PGD-AT is the default 40 steps, not the entry's 7.
  assert c["pgd_at_passes"] == pytest.approx(2 * 41 * batches / N_TRAIN)
  assert tuning.recipe_fields(
      tuning.candidates({"a": _comparison(_entry("fgsm_rs", [0.9])),
                         "b": _comparison(_entry("fgsm_rs", [0.9],
                                                 train_epsilon=0.15,
                                                 chunk_size=7))})) == [
      "train_epsilon"]
  bare = _entry("fgsm_rs", [0.9])
  bare["val_pgd_accuracy"] = None
  with pytest.raises(ValueError, match="no validation figures"):
    tuning.candidates({"a": _comparison(bare)})


def _tune(*args):
  return subprocess.run([sys.executable, "-m", "experiments.tune", *args],
                        cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_entry_point_writes_the_choice_and_refuses_bad_input(tmp_path):
  dirs = []
  for name, entry in (("plain", _entry("fgsm_rs", [0.95, 0.96])),
                      ("wide", _entry("fgsm_rs", [0.97, 0.98],
                                      train_epsilon=0.15))):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "comparison.json").write_text(json.dumps(_comparison(entry)))
    dirs.append(str(folder))
  out = tmp_path / "tuned"
  result = _tune(f"--run_dirs={','.join(dirs)}", f"--output_dir={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "chosen: wide/fgsm_rs" in result.stdout
  saved = json.loads((out / "tuning.json").read_text())
  assert saved["chosen"] == "wide/fgsm_rs" and saved["seeds"] == 2
  assert saved["recipe_fields"] == ["train_epsilon"]
  text = (out / "tuning.md").read_text()
  assert "| wide/fgsm_rs | 0.15 | " in text and "**yes**" in text
  # train_epsilon 0 trains at epsilon, and the table says which radius.
  eps = _comparison(entry)["methods"][0]["config"]["epsilon"]
  assert f"| plain/fgsm_rs | {eps} (epsilon) | " in text
  assert "The test set is not read." in text
  error_line(_tune(f"--output_dir={out}"), 2, "give --run_dirs")
  error_line(_tune(f"--run_dirs={dirs[0]}"), 2, "give --output_dir")
  error_line(_tune(f"--run_dirs={tmp_path}", f"--output_dir={out}"), 2,
             "no finished method in")
  error_line(_tune(f"--run_dirs={dirs[0]},{dirs[0]}", f"--output_dir={out}"),
             2, "--run_dirs: two folders named plain")
  error_line(_tune(f"--run_dirs={dirs[0]}", f"--output_dir={out}",
                   "--passes_fraction=0"), 2, "--passes_fraction=0.0 must be")
