"""experiments.compare and .report as a user runs them: methods, seeds, JSON."""

import json
import re
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, error_line, mnist_dir
from fgsm_jax import paper_pipelines, pareto, reporting


# One method of each kind of round: nothing selected, selection and removal,
# forget batches with a saliency mask, an ascent step with a teacher, a
# per-minibatch attack. (Every method's step runs under vmap in
# test_methods.py; the compare default runs all.)
METHODS = ["control", "remove_retrain", "salun", "scrub", "pgd_at"]


def run_module(module, *args):
  return subprocess.run(
      [sys.executable, "-m", module, *args], cwd=REPO,
      capture_output=True, text=True, timeout=900)


def run_compare(*args):
  return run_module("experiments.compare", *args)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
  """A comparison run as if cut off after two methods and run again with
  the whole list, from a folder holding the initial models' last epoch
  only (as a clone does): the second run rebuilds the initial models from
  it, keeps the two methods, and runs only the rest."""
  out = tmp_path_factory.mktemp("compare") / "out"
  def run(methods, *extra):
    result = run_compare("--preset=smoke", "--seeds=2", "--train_size=512",
                         "--test_size=256", "--rounds=1", "--pgd_steps=2",
                         f"--methods={','.join(methods)}",
                         f"--data_dir={mnist_dir()}", f"--output_dir={out}",
                         *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return result
  first = run(METHODS[:2])
  assert "initial: round 0 epoch 1/1" in first.stdout
  before = json.loads((out / "comparison.json").read_text())
  models = {name: (out / f"params-{name}.msgpack").read_bytes()
            for name in ["initial"] + METHODS[:2]}
  # As an earlier version would have saved it: without a field added since
  # (its default is what that version computed) and with another chunk size
  # (an execution field). The resume must accept both.
  run_json = out / "checkpoints" / "run.json"
  saved = json.loads(run_json.read_text())
  del saved["config"]["scrub_gamma"]
  saved["config"]["chunk_size"] = 500
  run_json.write_text(json.dumps(saved))
  # As a clone of a committed folder has it: the last epoch's checkpoint,
  # not the whole initial models (rebuilt from that epoch).
  shutil.rmtree(out / "checkpoints" / "pretrained")
  second = run(METHODS, "--resume")
  return out, second, before, models


def test_a_rerun_keeps_what_was_finished(compared):
  out, second, before, models = compared
  assert "the initial models were restored, not trained again" in second.stdout
  assert "initial: round 0 epoch" not in second.stdout  # Nothing trained.
  for name in METHODS[:2]:
    assert f"{name}: finished by an earlier run in this folder, kept" \
        in second.stdout
    assert f"{name}: round 1" not in second.stdout
  for name in METHODS[2:]:
    assert f"{name}: round 1 epoch 1/1" in second.stdout
  after = json.loads((out / "comparison.json").read_text())
  assert after["methods"][:2] == before["methods"]
  assert after["setup"]["initial"] == before["setup"]["initial"]
  for name, saved in models.items():  # Not written again.
    assert (out / f"params-{name}.msgpack").read_bytes() == saved
  # Other settings in the same folder are refused, the results kept.
  other = run_compare("--preset=smoke", "--seeds=1", "--train_size=512",
                      "--test_size=256", "--rounds=1", "--methods=control",
                      f"--data_dir={mnist_dir()}", f"--output_dir={out}")
  error_line(other, 2, "checkpoints of a different run", "config.seeds")
  assert json.loads((out / "comparison.json").read_text()) == after


def test_every_method_from_one_initial_model(compared):
  out = compared[0]
  comparison = json.loads((out / "comparison.json").read_text())
  entries = {e["method"]: e for e in comparison["methods"]}
  assert list(entries) == METHODS
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
  for name in ["initial"] + METHODS:
    params = results.read_params(str(out / f"params-{name}.msgpack"))
    assert params["Dense_0"]["kernel"].shape[0] == 2
  table = (out / "comparison.md").read_text()
  for name in METHODS:
    assert f"| {name} |" in table
  # What was reduced from the paper's settings is stated.
  assert "model=lenet5 (paper: lenet)" in table
  assert "train_size=512 (paper: 0)" in table


def test_resume_without_checkpoints_is_one_line_and_exit_2(tmp_path):
  result = run_compare("--resume", f"--output_dir={tmp_path}")
  error_line(result, 2, "nothing to resume in")


def test_unknown_method_is_one_line_and_exit_2(tmp_path):
  result = run_compare("--methods=control,forget_all",
                       f"--output_dir={tmp_path}/out")
  error_line(result, 2, "unknown methods ['forget_all']")


def test_report_attacks_every_saved_model(compared):
  compared = compared[0]
  args = (f"--compare_dir={compared}", "--test_size=128", "--pgd_steps=3",
          "--pgd_restarts=2", "--noise_draws=4", "--sweep=0,0.1,0.5",
          "--autoattack=fast", "--aa_apgd_steps=4", "--aa_target_classes=2",
          "--subset_size=64", "--whole_test_set_for=initial,control",
          "--block_size=64", f"--data_dir={mnist_dir()}")
  result = run_module("experiments.report", *args)
  assert result.returncode == 0, result.stderr[-3000:]
  # The models on all 128 in two blocks of 64, each saved as it ends.
  assert "control seed 2: block 2/2: PGD " in result.stdout
  assert "salun seed 1: block" not in result.stdout
  report = json.loads((compared / "report.json").read_text())
  assert [m["model"] for m in report["models"]] == ["initial"] + METHODS
  assert report["test_examples"] == 64
  # --whole_test_set_for: those models on all 128 test examples, and their
  # accuracies over the first 64 too, which the others are paired against.
  sizes = {m["model"]: m["test_examples"] for m in report["models"]}
  assert sizes == {"initial": 128, "control": 128, "remove_retrain": 64,
                   "salun": 64, "scrub": 64, "pgd_at": 64}
  for m in report["models"]:
    for seed in m["per_seed"]:
      assert seed["test_examples"] == sizes[m["model"]]
      assert ("accuracy_first" in seed) == (sizes[m["model"]] == 128)
  first = report["models"][0]["per_seed"][0]["accuracy_first"]
  assert first["examples"] == 64
  # Paired on the same 64 examples: salun against the control's first 64.
  by = {m["model"]: m for m in report["models"]}
  comparison = json.loads((compared / "comparison.json").read_text())
  row = next(r for r in reporting.paired_rows(comparison, report)
             if r["method"] == "salun" and r["metric"] == "pgd")
  expected = np.mean([a["accuracy"]["pgd"] - b["accuracy_first"]["pgd"]
                      for a, b in zip(by["salun"]["per_seed"],
                                      by["control"]["per_seed"])])
  assert row["mean"] == pytest.approx(expected)
  assert report["attacks"]["pgd"]["restarts"] == 2
  assert report["attacks"]["autoattack"]["version"] == "fast"
  assert report["attacks"]["autoattack"]["apgd_t"]["target_classes"] == 2
  assert set(report["transfer_sources"]) == {"transfer_same",
                                             "transfer_other"}
  sources = report["attacks"]["transfer_sources"]
  assert sources["transfer_other"]["model"] == "lenet"  # The other network.
  for m in report["models"]:
    for seed in m["per_seed"]:
      acc = seed["accuracy"]
      assert {"transfer_same", "transfer_other", "autoattack"} <= set(acc)
      assert seed["autoattack"]["attacks"] == ["apgd_ce", "apgd_t"]
      assert all(acc["robust"] <= v for v in acc.values())
      # Every unlearned model also says what a stale evaluation would claim.
      names = [c["check"] for c in seed["checks"]]
      assert len(names) == (7 if m["model"] == "initial" else 8)
      assert ("stale_fgsm_not_above_white_box" in names) == (
          m["model"] != "initial")
      assert seed["sweep"]["epsilons"] == [0.0, 0.1, 0.5]
  text = (compared / "report.md").read_text()
  assert "| pgd_at | 2 | 64 |" in text and "| control | 2 | 128 |" in text
  assert "all 128 for initial, control (the test examples column)" in text
  assert "AutoAttack (fast: APGD-CE and APGD-T only" in text
  assert "| model | clean | after apgd_ce | after apgd_t |" in text.split(
      "## AutoAttack, attack by attack (MNIST")[1]
  assert "original model, FGSM test set | " in text  # Table 1, ours | paper.
  assert "0.0796" in text and "0.9669" in text
  assert "| remove_retrain | " in text.split(
      "## White-box vs stale FGSM (MNIST")[1]
  # Two seeds: every paired difference is shown, none gets a verdict.
  paired = text.split("## Every method against the control (paired; MNIST")[1]
  assert "| remove_retrain | pgd | 2 |" in paired
  assert "no verdict (2 paired seed(s): at least 3" in text
  assert "**underpowered**" not in text and "**helps**" not in text
  table = (compared / "comparison.md").read_text()
  assert "(n = 2, no interval)" in table
  for png in ("sweep.png", "rounds.png", "digits.png", "compute.png"):
    assert (compared / png).read_bytes()[:4] == b"\x89PNG"
  # Robust accuracy against compute: every model a point, over the 64 test
  # examples all were measured on, the frontier marked.
  compute = text.split("## Robust accuracy against compute (MNIST)")[1]
  points, n = pareto.points(
      json.loads((compared / "comparison.json").read_text()), report)
  assert n == 64 and len(points) == 1 + len(METHODS)
  front = pareto.frontier(points)
  for p in points:
    [row] = [line for line in compute.splitlines()
             if line.startswith(f"| {p['model']} | ")]
    assert row.startswith(f"| {p['model']} | {p['family']} | "
                          f"{p['passes']:.1f} | {p['robust']:.4f} ± ")
    assert row.endswith("| yes |" if p["model"] in front else "|  |")
  # Table 1 explained, on the initial models: the standard pipeline is the
  # suite's FGSM (one example of 128 for a sign rounded apart).
  explanation = report["explanation"]
  assert explanation["settings"]["test_examples"] == 128
  for seed, measured in zip(explanation["per_seed"],
                            by["initial"]["per_seed"]):
    assert set(seed["pipelines"]) == {p.name for p in paper_pipelines.PIPELINES}
    assert abs(seed["pipelines"]["standard"]["fgsm_accuracy"]
               - measured["accuracy"]["fgsm"]) <= 1 / 128
    assert seed["sweep"]["epsilon"][0] == 0.0
  assert len(list(compared.glob("params-raw_pixels-*.msgpack"))) == 1
  explained = text.split("## The paper's Table 1, explained")[1].split("##")[0]
  for p in paper_pipelines.PIPELINES:
    assert p.hypothesis in explained
  assert "(e) stale evaluation: the paper's method" in explained
  # Interrupted after the initial models, one seed of remove_retrain and,
  # of the control, its blocks only: a re-run keeps those and measures the
  # rest. A planted block (control, seed 1, block 1: clean all wrong) is
  # read back, not measured again.
  control, third = report["models"][1], report["models"][2]
  report["models"] = report["models"][:1]
  kept = dict(third["per_seed"][0], planted=True)  # Measured again: no mark.
  report["partial"] = {third["model"]: [kept]}
  (compared / "report.json").write_text(json.dumps(report))
  [planted] = (compared / "report-blocks").glob("control-seed1-block1of2-*.npz")
  with np.load(planted) as saved:
    arrays = dict(saved)
  second_clean = np.load(str(planted).replace("block1of2", "block2of2"))[
      "correct/clean"]
  arrays["correct/clean"] = np.zeros_like(arrays["correct/clean"])
  np.savez_compressed(planted, **arrays)
  again = run_module("experiments.report", *args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("(same attacks, ") == 1
  assert f"{third['model']}: seeds 1-1 already measured, kept" in again.stdout
  assert "control seed 2: block 2/2 measured before, kept" in again.stdout
  assert "transfer examples: " in again.stdout  # Crafted once, reused.
  assert "explanation: measured before with the same settings, kept" in again.stdout
  resumed = json.loads((compared / "report.json").read_text())
  assert resumed["models"][:1] == report["models"]
  assert resumed["models"][2]["per_seed"][0] == kept
  again_control = resumed["models"][1]["per_seed"]
  assert again_control[1] == control["per_seed"][1]
  assert again_control[0]["accuracy"]["clean"] == pytest.approx(
      second_clean.mean() / 2)
  assert resumed["partial"] == {}
  assert [m["model"] for m in resumed["models"]] == ["initial"] + METHODS


def test_explain_is_the_reports_explanation(compared):
  """experiments.explain on the report's 128 test examples: the report's
  explanation (the same function, run again), the raw-pixel model the
  report trained reused; explanation.md has the table."""
  out = compared[0]
  report = json.loads((out / "report.json").read_text())
  result = run_module("experiments.explain", f"--compare_dir={out}",
                      "--test_size=128", f"--data_dir={mnist_dir()}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "training a lenet5 on raw" not in result.stdout
  explanation = json.loads((out / "explanation.json").read_text())
  assert explanation["settings"] == report["explanation"]["settings"]
  raw, reported = (dict(e["raw_pixel_model"]) for e in
                   (explanation, report["explanation"]))
  assert raw.pop("after_scaled_retraining") == pytest.approx(
      reported.pop("after_scaled_retraining"))
  assert raw == pytest.approx(reported)
  for ours, theirs in zip(explanation["per_seed"],
                          report["explanation"]["per_seed"]):
    for name, metrics in ours["pipelines"].items():
      assert metrics == pytest.approx(theirs["pipelines"][name], abs=1e-6)
  text = (out / "explanation.md").read_text()
  assert text.startswith("`python -m experiments.explain --compare_dir=")
  assert "| hypothesis | ours: accuracy / loss |" in text
  again = run_module("experiments.explain", f"--compare_dir={out}",
                     "--test_size=128", f"--data_dir={mnist_dir()}")
  assert "measured before with the same settings, kept" in again.stdout


def test_explain_refuses_bad_input_in_one_line(tmp_path, compared):
  error_line(run_module("experiments.explain"), 2, "give --compare_dir")
  error_line(run_module("experiments.explain", f"--compare_dir={tmp_path}"),
             2, "cannot read")
  error_line(run_module("experiments.explain", f"--compare_dir={compared[0]}",
                        "--epsilons=0,x"), 2, "--epsilons must be numbers")


def test_report_without_a_comparison_is_one_line_and_exit_2(tmp_path):
  result = run_module("experiments.report", f"--compare_dir={tmp_path}")
  error_line(result, 2, "cannot read")


def test_report_refuses_an_empty_autoattack_budget(tmp_path):
  result = run_module("experiments.report", f"--compare_dir={tmp_path}",
                      "--aa_square_queries=0")
  error_line(result, 2, "square_queries must be >= 1")


def test_report_names_an_unknown_whole_test_set_model(compared):
  result = run_module("experiments.report", f"--compare_dir={compared[0]}",
                      "--whole_test_set_for=initial,trades",
                      f"--data_dir={mnist_dir()}")
  error_line(result, 2, "--whole_test_set_for: no model trades")


def test_report_refuses_blocks_that_do_not_divide_the_examples(compared):
  result = run_module("experiments.report", f"--compare_dir={compared[0]}",
                      "--test_size=128", "--subset_size=64",
                      "--whole_test_set_for=initial", "--block_size=48",
                      f"--data_dir={mnist_dir()}")
  error_line(result, 2, "--block_size=48 must be >= 0 and divide every "
             "model's test examples above it (not [64, 128])")


def test_report_needs_exactly_one_run_dir(tmp_path):
  for args in ((), (f"--compare_dir={tmp_path}", f"--unlearn_dir={tmp_path}")):
    result = run_module("experiments.report", *args)
    error_line(result, 2, "give one of --compare_dir")


def test_the_study_is_compare_then_report_on_the_study_preset(tmp_path):
  """experiments.study's commands: the study preset's comparison (the
  literal arm: 3 rounds of 15 epochs, one seed), then the report on its
  folder; the comparison command runs as printed (here cut to a slice)."""
  out = tmp_path / "study"
  dry = run_module("experiments.study", "--dry_run", f"--output_dir={out}",
                   f"--data_dir={mnist_dir()}")
  assert dry.returncode == 0, dry.stderr[-3000:]
  compare_line, report_line = dry.stdout.strip().splitlines()
  assert compare_line.startswith("-m experiments.compare --preset=study ")
  assert ("--methods=remove_retrain,control,remove_test_indices"
          in compare_line)
  assert "--seeds" not in compare_line  # The preset's five.
  assert report_line.startswith(
      f"-m experiments.report --compare_dir={out} --subset_size=1000 "
      "--block_size=250 ")
  assert not out.exists()  # A dry run writes nothing.
  literal = run_module("experiments.study", "--dry_run", "--literal",
                       "--pretrained_from=results/study-mnist")
  literal_compare = literal.stdout.splitlines()[0]
  assert "--seeds=1 --retrain_epochs=15 --rounds=3" in literal_compare
  assert "--methods=remove_retrain,control " in literal_compare
  assert "--pretrained_from=results/study-mnist" in literal_compare
  assert "results/study-mnist-literal" in literal.stdout
  chosen = run_module("experiments.study", "--dry_run", "--literal",
                      "--methods=remove_retrain,control,remove_test_indices")
  assert ("--methods=remove_retrain,control,remove_test_indices "
          in chosen.stdout.splitlines()[0])
  assert "--pretrained_from" not in chosen.stdout
  # Table 1's hypothesis (f) is MNIST's: another dataset trains two arms.
  fashion = run_module("experiments.study", "--dry_run",
                       "--dataset=fashion_mnist", "--seeds=3")
  assert ("--methods=remove_retrain,control "
          in fashion.stdout.splitlines()[0])
  bad = run_module("experiments.study", "--methods=remove_retrain,nope")
  error_line(bad, 2, "unknown methods ['nope']")

  args = compare_line.split("   (output:")[0].split()[2:]
  ran = run_compare(*args, "--model=lenet5", "--train_size=384",
                    "--validation_size=128", "--test_size=128", "--epochs=1",
                    "--rounds=1", "--seeds=2")
  assert ran.returncode == 0, ran.stderr[-3000:]
  comparison = json.loads((out / "comparison.json").read_text())
  setup = comparison["setup"]
  assert setup["preset"] == "study"
  assert setup["validation_examples"] == 128
  # The validation split's figures (what tuning reads) and the
  # catastrophic-overfitting check, per method, in JSON and in the table.
  table = (out / "comparison.md").read_text()
  assert "On the validation split" in table
  assert "method(s) checked" in table
  for entry in comparison["methods"]:
    for key in ("val_accuracy", "val_fgsm_accuracy", "val_pgd_accuracy"):
      assert 0.0 <= entry[key]["mean"] <= 1.0, (entry["method"], key)
    assert entry["val_pgd_accuracy"]["mean"] <= (
        entry["val_fgsm_accuracy"]["mean"] + 0.05)
    assert len(entry["overfitting_rounds"]) == 2  # One list per seed.
  assert setup["stopping_rule"]["split"] == "validation"


def test_a_comparison_from_another_folders_initial_models(compared,
                                                          tmp_path):
  """--pretrained_from: the first seed of the fixture's two, not trained
  again: the same initial models and round-0 figures; a second recipe
  (another rounds count) joins the same folder, each entry with its own
  config; other pretraining settings, or more seeds than the source has,
  are refused in one line."""
  from fgsm_jax import results
  source = compared[0]
  out = tmp_path / "frontier"
  common = ["--preset=smoke", "--train_size=512", "--test_size=256",
            f"--data_dir={mnist_dir()}", f"--pretrained_from={source}",
            f"--output_dir={out}"]
  first = run_compare(*common, "--seeds=1", "--rounds=1",
                      "--methods=fgsm_rs")
  assert first.returncode == 0, first.stderr[-3000:]
  assert "initial: round 0 epoch" not in first.stdout  # Nothing trained.
  theirs = json.loads((source / "comparison.json").read_text())["setup"]
  ours = json.loads((out / "comparison.json").read_text())
  assert ours["setup"]["pretrained_from"] == str(source)
  for metric in ("clean_accuracy", "fgsm_accuracy"):
    assert (ours["setup"]["initial"][metric]["values"]
            == theirs["initial"][metric]["values"][:1])
  mine = results.read_params(str(out / "params-initial.msgpack"))
  source_params = results.read_params(str(source / "params-initial.msgpack"))
  for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(source_params)):
    np.testing.assert_array_equal(a[0], b[0])
  second = run_compare(*common, "--seeds=1", "--rounds=2",
                       "--methods=control")
  assert second.returncode == 0, second.stderr[-3000:]
  entries = {e["method"]: e for e in json.loads(
      (out / "comparison.json").read_text())["methods"]}
  assert entries["fgsm_rs"]["config"]["rounds"] == 1
  assert entries["control"]["config"]["rounds"] == 2
  error_line(run_compare(*common, "--seeds=3", "--methods=control",
                         f"--output_dir={tmp_path}/more"),
             2, "it has 2 seed(s), fewer than --seeds=3")
  error_line(run_compare(*common, "--seeds=1", "--epochs=2",
                         "--methods=control", f"--output_dir={tmp_path}/x"),
             2, "trained otherwise: epochs (1 there, 2 here)")


def _small_report(out, *extra):
  """experiments.report on `out` with the suite cut to seconds: 64 test
  digits in blocks of 32, one transfer source, no explanation or plots."""
  return run_module(
      "experiments.report", f"--compare_dir={out}", "--test_size=64",
      "--block_size=32", "--pgd_steps=2", "--pgd_restarts=1",
      "--noise_draws=2", "--sweep=0,0.1", "--autoattack=fast",
      "--aa_apgd_steps=2", "--aa_target_classes=1", "--notransfer_other",
      "--noexplain", "--noplots", f"--data_dir={mnist_dir()}", *extra)


def test_report_shards_split_the_blocks_and_one_run_writes_the_report(
    compared, tmp_path):
  """Two --shards processes measure disjoint halves of the blocks and write
  no report; one whose share is saved helps with the other's unsaved
  blocks, leaving those another live process claimed; the run without
  --shards then measures only what is missing, and its report is the one a
  single process writes."""
  def copy(name):
    out = tmp_path / name
    out.mkdir()
    shutil.copy(compared[0] / "comparison.json", out)
    for model in ("initial", "control", "pgd_at"):  # The rest: skipped.
      shutil.copy(compared[0] / f"params-{model}.msgpack", out)
    return out
  sharded, single = copy("sharded"), copy("single")
  blocks = lambda: {p.name for p in (sharded / "report-blocks").glob("*.npz")}
  first = _small_report(sharded, "--shards=2", "--shard=0", "--nohelp_shards")
  assert first.returncode == 0, first.stderr[-3000:]
  # 3 models x 2 seeds x 2 blocks, dealt out seed by seed.
  assert "shard 0/2: 6 of 12 blocks are this shard's" in first.stdout
  assert "6 block(s) of the other shards not saved yet" in first.stdout
  assert not (sharded / "report.json").exists()
  after_first = blocks()
  assert len(after_first) == 6
  # Three of shard 0's blocks lost: one unclaimed, one claimed by a process
  # of another host (left to it), one by an ended process of this host (a
  # crashed shard: taken over).
  lost = sorted(after_first)[:3]
  for name in lost:
    (sharded / "report-blocks" / name).unlink()
  ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                         capture_output=True, text=True, check=True)
  claims = {lost[1]: "another-host 1",
            lost[2]: f"{socket.gethostname()} {ended.stdout.strip()}"}
  for name, holder in claims.items():
    (sharded / "report-blocks" / f"{name}.claim").write_text(holder)
  second = _small_report(sharded, "--shards=2", "--shard=1")
  assert second.returncode == 0, second.stderr[-3000:]
  assert len(re.findall(r"shard 1/2: \d/6: .*: PGD", second.stdout)) == 6
  assert len(re.findall(r"shard 1/2: helping: .*: PGD", second.stdout)) == 2
  assert second.stdout.count("being measured by another process") == 1
  assert "1 block(s) of the other shards not saved yet" in second.stdout
  assert len(blocks()) == 11 and lost[1] not in blocks()
  assert sorted(p.name for p in (sharded / "report-blocks").glob("*.claim")
                ) == [f"{lost[1]}.claim"]  # The helper's own: removed.
  whole = _small_report(sharded)
  assert whole.returncode == 0, whole.stderr[-3000:]
  # Every block read back but the one left to the other host's process.
  assert len(re.findall(r"block \d/2: PGD", whole.stdout)) == 1
  assert whole.stdout.count("measured before, kept") == 11
  alone = _small_report(single)
  assert alone.returncode == 0, alone.stderr[-3000:]
  got, want = (json.loads((out / "report.json").read_text())["models"]
               for out in (sharded, single))
  assert [m["model"] for m in got] == ["initial", "control", "pgd_at"]
  for a, b in zip(got, want):
    assert [s["accuracy"] for s in a["per_seed"]] == [
        s["accuracy"] for s in b["per_seed"]]
  unblocked = _small_report(sharded, "--shards=2", "--block_size=0")
  error_line(unblocked, 2, "would be measured in one call")
  bad = _small_report(sharded, "--shards=2", "--shard=2")
  error_line(bad, 2, "--shard=2 --shards=2: need")


def test_a_report_takes_what_the_initial_models_folder_measured(compared,
                                                                tmp_path):
  """A run whose initial models came from another folder (comparison.json's
  pretrained_from) takes that folder's report blocks of a model only where
  the model of that seed is bit for bit the same, and its transfer
  examples (whose file name holds everything they depend on); the rest is
  measured; so is its raw-pixel model (the explanation's). The blocks
  taken read back as the figures measured there."""
  from fgsm_jax import results
  source, ours = tmp_path / "source", tmp_path / "ours"
  for out in (source, ours):
    out.mkdir()
    for model in ("initial", "control"):
      shutil.copy(compared[0] / f"params-{model}.msgpack", out)
  comparison = json.loads((compared[0] / "comparison.json").read_text())
  (source / "comparison.json").write_text(json.dumps(comparison))
  comparison["setup"]["pretrained_from"] = str(source)
  (ours / "comparison.json").write_text(json.dumps(comparison))
  # Our control's second seed differs from the source's by one weight.
  control = results.read_params(str(ours / "params-control.msgpack"))
  leaves, tree = jax.tree.flatten(control)
  leaves[0] = np.asarray(leaves[0]).copy()
  leaves[0][1].flat[0] += 0.5
  results.write_params(str(ours / "params-control.msgpack"),
                       jax.tree.unflatten(tree, leaves))
  first = _small_report(source, "--explain")
  assert first.returncode == 0, first.stderr[-3000:]
  assert "transfer_same: source" in first.stdout
  assert "explanation: training a lenet5 on raw" in first.stdout
  taken = _small_report(ours, "--explain")
  assert taken.returncode == 0, taken.stderr[-3000:]
  assert "transfer examples: taken from" in taken.stdout
  assert "transfer_same: source" not in taken.stdout  # Not trained again.
  assert "explanation: the raw-pixel model taken from" in taken.stdout
  assert "explanation: training a lenet5 on raw" not in taken.stdout
  # initial: 2 seeds x 2 blocks; control: seed 1's 2 blocks.
  assert len(re.findall(r"block \d/2: taken from", taken.stdout)) == 6
  assert "control seed 2 block 1/2: taken" not in taken.stdout
  assert len(re.findall(r"control seed 2: block \d/2: PGD", taken.stdout)) == 2
  got, want = (json.loads((out / "report.json").read_text())
               for out in (ours, source))
  assert got["transfer_sources"] == want["transfer_sources"] != {}
  assert (got["explanation"]["raw_pixel_model"]["clean_accuracy"]
          == want["explanation"]["raw_pixel_model"]["clean_accuracy"])
  got, want = ({m["model"]: m for m in r["models"]} for r in (got, want))
  assert got["initial"]["per_seed"] == want["initial"]["per_seed"]
  assert (got["control"]["per_seed"][0]["accuracy"]
          == want["control"]["per_seed"][0]["accuracy"])
