"""The compute frontier: which points it keeps, which test examples it
reads, and the entry point on a folder of the two JSON files."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, error_line
from fgsm_jax import config as config_lib
from fgsm_jax import pareto


def _point(name, passes, robust):
  return {"model": name, "passes": passes, "robust": robust}


def test_the_frontier_keeps_exactly_the_undominated_points():
  pts = [_point("a", 0, 0.40), _point("b", 8, 0.89), _point("c", 10, 0.41),
         _point("d", 12, 0.89), _point("e", 164, 0.92), _point("f", 170, 0.91),
         _point("g", 8, 0.50)]
  # c, f and g are beaten by a cheaper or equal point; d ties b's accuracy
  # at a higher cost.
  assert pareto.frontier(pts) == ["a", "b", "e"]
  # Every point off the frontier has one on it at no more cost and no less
  # accuracy; no frontier point has such a point off it.
  front = set(pareto.frontier(pts))
  for p in pts:
    beaten = any(q["passes"] <= p["passes"] and q["robust"] >= p["robust"]
                 and q is not p and (q["passes"], q["robust"])
                 != (p["passes"], p["robust"]) for q in pts)
    assert beaten == (p["model"] not in front)


def _model(name, n, robust, first=None):
  seed = {"test_examples": n, "accuracy": {"robust": robust, "clean": 0.99}}
  if first is not None:
    seed["accuracy_first"] = {"examples": first[0], "robust": first[1],
                              "clean": 0.98}
  return {"model": name, "per_seed": [seed, seed]}


def _comparison(*methods):
  def entry(name, family, backward, forward):
    stat = lambda v: {"mean": v}
    return {"method": name, "family": family, "wall_time_s": {"run": 1.0},
            "passes": {"rounds": stat(backward), "rounds_forward": stat(forward)}}
  return {"setup": {"train_examples": 100, "dataset": "mnist",
                    "model": "lenet5", "epsilon": 0.1},
          "methods": [entry(*m) for m in methods]}


def test_a_model_measured_on_more_examples_is_read_over_the_common_first():
  comparison = _comparison(("control", "control", 200, 300),
                           ("pgd_at", "defense", 8200, 8200))
  report = {"models": [_model("initial", 10000, 0.30, (1000, 0.42)),
                       _model("control", 10000, 0.31, (1000, 0.44)),
                       _model("pgd_at", 1000, 0.92)],
            "models_planned": ["initial", "control", "pgd_at", "trades"]}
  pts, n = pareto.points(comparison, report)
  assert n == 1000
  by = {p["model"]: p for p in pts}
  assert by["initial"]["robust"] == pytest.approx(0.42)
  assert by["control"]["robust"] == pytest.approx(0.44)
  assert by["initial"]["passes"] == 0
  assert by["control"]["passes"] == pytest.approx(5.0)
  assert by["pgd_at"]["passes"] == pytest.approx(164.0)
  assert pareto.frontier(pts) == ["initial", "control", "pgd_at"]


def _run(*args):
  return subprocess.run([sys.executable, "-m", "experiments.pareto", *args],
                        cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_entry_point_writes_its_three_files(tmp_path):
  comparison = _comparison(("control", "control", 200, 300),
                           ("fgsm_rs", "defense", 400, 400))
  report = {"models": [_model("control", 500, 0.45),
                       _model("fgsm_rs", 500, 0.90)],
            "models_planned": ["control", "fgsm_rs", "trades"]}
  (tmp_path / "comparison.json").write_text(json.dumps(comparison))
  (tmp_path / "report.json").write_text(json.dumps(report))
  done = _run(f"--run_dir={tmp_path}")
  assert done.returncode == 0, done.stderr[-2000:]
  out = json.loads((tmp_path / "pareto.json").read_text())
  assert out["frontier"] == ["control", "fgsm_rs"]
  assert out["pending"] == ["trades"] and out["test_examples"] == 500
  text = (tmp_path / "pareto.md").read_text()
  assert "| fgsm_rs | defense | 8.0 | 0.9000" in text and "trades" in text
  assert (tmp_path / "pareto.png").stat().st_size > 0


def test_the_entry_point_refuses_a_folder_without_a_report(tmp_path):
  (tmp_path / "comparison.json").write_text(json.dumps(_comparison()))
  error_line(_run(f"--run_dir={tmp_path}"), 2, "report.json")
  error_line(_run(), 2, "--run_dir")


def test_other_folders_join_the_frontier_over_the_examples_all_share(tmp_path):
  """A tuned recipe's folder, trained from the same initial models: its
  models are points named by the folder, its initial models are not drawn
  twice, and every point is read over the test examples all folders have."""
  main, tuned, other = (tmp_path / "frontier", tmp_path / "fgsm_rs-e0.2",
                        tmp_path / "elsewhere")
  for folder in (main, tuned, other):
    folder.mkdir()
  def write(folder, comparison, report, pretrained_from):
    comparison["setup"]["pretrained_from"] = pretrained_from
    (folder / "comparison.json").write_text(json.dumps(comparison))
    (folder / "report.json").write_text(json.dumps(report))
  write(main, _comparison(("control", "control", 200, 300),
                          ("fgsm_rs", "defense", 400, 400)),
        {"models": [_model("initial", 1000, 0.40, (500, 0.46)),
                    _model("control", 1000, 0.41, (500, 0.47)),
                    _model("fgsm_rs", 1000, 0.90, (500, 0.91))]}, "study")
  write(tuned, _comparison(("fgsm_rs", "defense", 400, 400)),
        {"models": [_model("initial", 500, 0.46),
                    _model("fgsm_rs", 500, 0.95)],
         "models_planned": ["initial", "fgsm_rs", "nfgsm"]}, "study")
  write(other, _comparison(("control", "control", 200, 300)),
        {"models": [_model("initial", 500, 0.30),
                    _model("control", 500, 0.31)]}, "another")
  done = _run(f"--run_dir={main}", f"--with_dirs={tuned},{other}")
  assert done.returncode == 0, done.stderr[-2000:]
  out = json.loads((main / "pareto.json").read_text())
  assert out["test_examples"] == 500
  by = {p["model"]: p for p in out["points"]}
  assert sorted(by) == ["control", "elsewhere/control", "elsewhere/initial",
                        "fgsm_rs", "fgsm_rs-e0.2/fgsm_rs", "initial"]
  assert by["fgsm_rs"]["robust"] == pytest.approx(0.91)
  assert by["fgsm_rs-e0.2/fgsm_rs"]["robust"] == pytest.approx(0.95)
  assert out["frontier"] == ["initial", "control", "fgsm_rs-e0.2/fgsm_rs"]
  assert out["pending"] == ["fgsm_rs-e0.2/nfgsm"]
  # The most robust point against the others trained from its initial
  # models; the other folder's models do not pair with it.
  paired = out["paired"]
  assert paired["reference"] == "fgsm_rs-e0.2/fgsm_rs"
  assert paired["unpaired"] == ["elsewhere/initial", "elsewhere/control"]
  assert {(r["method"], r["metric"]) for r in paired["rows"]} == {
      (m, k) for m in ("initial", "control", "fgsm_rs")
      for k in ("robust", "clean")}
  robust = {r["method"]: r["mean"] for r in paired["rows"]
            if r["metric"] == "robust"}
  assert robust["fgsm_rs"] == pytest.approx(0.91 - 0.95)
  assert "## Every point against fgsm_rs-e0.2/fgsm_rs" in (
      main / "pareto.md").read_text()
  error_line(_run(f"--run_dir={main}", f"--with_dirs={tuned},{tuned}"), 2,
             "two folders named fgsm_rs-e0.2")


def test_points_pair_with_the_reference_seed_by_seed_from_its_initial_models():
  """Each point minus the reference, robust and clean, per seed: the mean
  and t interval computed here independently; a point from other initial
  models, or with other seeds, is named and not paired."""
  from scipy import stats
  def point(name, robust, clean, group=0, passes=20.0):
    return {"model": name, "passes": passes, "robust": float(np.mean(robust)),
            "robust_values": robust, "clean_values": clean,
            "seeds": len(robust), "initial_models": group}
  best = point("best", [0.97, 0.96, 0.98], [0.993, 0.995, 0.994])
  pts = [point("initial", [0.40, 0.55, 0.45], [0.994, 0.993, 0.996], passes=0),
         best, point("close", [0.95, 0.97, 0.975], [0.990, 0.996, 0.995]),
         point("elsewhere", [0.99, 0.99, 0.99], [0.99] * 3, group=1),
         point("two_seeds", [0.99, 0.99], [0.99] * 2)]
  rows, unpaired = pareto.paired_against(pts, "best", 0.02, 0.95)
  assert sorted(unpaired) == ["elsewhere", "two_seeds"]
  by = {(r["method"], r["metric"]): r for r in rows}
  assert sorted(by) == [("close", "clean"), ("close", "robust"),
                        ("initial", "clean"), ("initial", "robust")]
  for (name, metric), r in by.items():
    p = next(q for q in pts if q["model"] == name)
    diff = (np.array(p[f"{metric}_values"])
            - np.array(best[f"{metric}_values"]))
    half = stats.t.ppf(0.975, 2) * diff.std(ddof=1) / np.sqrt(3)
    assert r["baseline"] == "best" and r["n"] == 3
    assert r["mean"] == pytest.approx(diff.mean(), abs=1e-12)
    assert r["interval"] == pytest.approx(
        [diff.mean() - half, diff.mean() + half], abs=1e-9)
  assert by[("initial", "robust")]["verdict"] == "hurts"
  assert by[("close", "robust")]["verdict"] == "underpowered"


def _target_point(name, passes, robust, clean, pgd_at=120.0):
  return {"model": name, "passes": passes, "robust": robust, "clean": clean,
          "pgd_at_passes": pgd_at}


def test_the_target_is_met_within_the_budget_and_the_clean_floor_only():
  initial = {"model": "initial", "passes": 0.0, "robust": 0.99,
             "clean": 0.999, "pgd_at_passes": None}
  pts = [initial, _target_point("cheap", 20, 0.96, 0.993),
         _target_point("dear", 50, 0.99, 0.995),  # Over 1/3 of 120.
         _target_point("blurry", 20, 0.98, 0.990),  # Below the clean floor.
         _target_point("good", 40, 0.976, 0.993)]
  t = pareto.target(pts, 0.975, 0.992, 1 / 3)
  assert t["met_by"] == ["good"] and t["budgets"] == [40.0]
  assert "**met** by good" in pareto.target_line(t)
  # Without it, the best within budget and floor misses by 0.015; the
  # initial models (no training to count) are never the answer.
  t = pareto.target(pts[:4], 0.975, 0.992, 1 / 3)
  assert t["met_by"] == [] and t["best_within"] == "cheap"
  assert t["shortfall"] == pytest.approx(0.015)
  assert "**missed** by 0.0150" in pareto.target_line(t)
  t = pareto.target(pts[:1] + pts[2:4], 0.975, 0.992, 1 / 3)
  assert t["best_within"] is None and "no model is within" in (
      pareto.target_line(t))
  # Accuracies on the target, as float32 ratios of counts (9920 / 10000 =
  # 0.99199998, 900 / 1000 = 0.89999998), meet it.
  f32 = lambda k, n: float(np.float32(k) / np.float32(n))
  t = pareto.target([_target_point("edge", 20, f32(900, 1000),
                                   f32(9920, 10000))], 0.9, 0.992, 1 / 3)
  assert t["met_by"] == ["edge"]


def test_the_budget_is_pgd_at_on_the_runs_own_schedule(tmp_path):
  """PGD-AT's passes counted independently: Madry's 40 steps, so 41
  forward and as many backward per example per epoch, over every round's
  epochs, whatever PGD steps the entry trained with; a PGD-AT of 5 steps
  is a candidate within a third of that."""
  def entry(name, backward, rounds, epochs, steps):
    config = dict(config_lib.Config().to_dict(), method=name,
                  retrain_epochs=epochs, pgd_steps=steps, batch_size=50)
    return {"method": name, "family": "defense", "config": config,
            "rounds_completed": [rounds, rounds],
            "wall_time_s": {"run": 1.0},
            "passes": {"rounds": {"mean": backward},
                       "rounds_forward": {"mean": backward}}}
  comparison = {"setup": {"train_examples": 100, "dataset": "mnist",
                          "model": "lenet", "epsilon": 0.1},
                "methods": [entry("fgsm_rs", 1000, 5, 1, 40),
                            entry("nfgsm", 1200, 2, 3, 10),
                            entry("pgd_at", 3600, 5, 1, 5)]}
  report = {"models": [_model("fgsm_rs", 500, 0.97),
                       _model("nfgsm", 500, 0.98),
                       _model("pgd_at", 500, 0.985)]}
  (tmp_path / "comparison.json").write_text(json.dumps(comparison))
  (tmp_path / "report.json").write_text(json.dumps(report))
  done = _run(f"--run_dir={tmp_path}", "--target_robust=0.975",
              "--target_clean=0.99")
  assert done.returncode == 0, done.stderr[-2000:]
  out = json.loads((tmp_path / "pareto.json").read_text())
  by = {p["model"]: p for p in out["points"]}
  assert by["fgsm_rs"]["pgd_at_passes"] == pytest.approx(2 * 41 * 5)
  assert by["nfgsm"]["pgd_at_passes"] == pytest.approx(2 * 41 * 2 * 3)
  assert by["pgd_at"]["pgd_at_passes"] == pytest.approx(2 * 41 * 5)
  # All within a third of PGD-AT (20 <= 136.7, 24 <= 164, 72 <= 136.7);
  # nfgsm and the 5-step PGD-AT reach 0.975.
  assert out["target"]["met_by"] == ["nfgsm", "pgd_at"]
  assert "**met** by nfgsm, pgd_at" in (tmp_path / "pareto.md").read_text()
  # A missed target: by how much, the best within, and what comes next, in
  # pareto.md (and under pareto.png's panels).
  done = _run(f"--run_dir={tmp_path}", "--target_robust=0.99",
              "--target_clean=0.99", "--next_step=train longer")
  assert done.returncode == 0, done.stderr[-2000:]
  text = (tmp_path / "pareto.md").read_text()
  assert "**missed** by 0.0050: the most robust within the budget" in text
  assert "Next step: train longer" in text
  assert (tmp_path / "pareto.png").stat().st_size > 0
  error_line(_run(f"--run_dir={tmp_path}", "--next_step=more"), 2,
             "--target_robust")
  error_line(_run(f"--run_dir={tmp_path}", "--target_robust=1.5"), 2,
             "--target_robust=1.5")


def _save_block(folder, name, s, b, count, tag, clean, pgd, aa):
  """A block as experiments.report saves it (per-example 1/0 arrays)."""
  import numpy as np
  from fgsm_jax import results
  blocks = folder / "report-blocks"
  blocks.mkdir(exist_ok=True)
  f = lambda v: np.asarray(v, np.float32)
  np.savez(blocks / results.block_file(name, s, b, count, tag),
           **{"correct/clean": f(clean), "correct/pgd": f(pgd),
              "aa/correct": f(aa), "aa/broken_by": np.zeros(len(aa), np.int32),
              "trace": f([0.5]), "curve": f([0.5]), "zero": f(0.0)})


def test_a_report_under_way_gives_points_over_the_blocks_all_models_saved(
    tmp_path):
  """--from_blocks: robust accuracy is the per-example worst case over the
  attacks (AutoAttack's included) on the blocks every model and seed of
  every folder saved, never on a block one of them lacks; a block of other
  attacks, or a model with nothing saved, is refused."""
  main, tuned = tmp_path / "frontier", tmp_path / "tuned"
  for folder in (main, tuned):
    folder.mkdir()
  comparison = _comparison(("control", "control", 200, 300))
  comparison["setup"].update(seeds=2, pretrained_from="study")
  (main / "comparison.json").write_text(json.dumps(comparison))
  comparison = _comparison(("fgsm_rs", "defense", 400, 400))
  comparison["setup"].update(seeds=2, pretrained_from="study")
  (tuned / "comparison.json").write_text(json.dumps(comparison))
  right, wrong = [1, 1, 1, 1], [0, 0, 0, 0]
  for s in range(2):
    for b in (0, 2):  # Blocks 1 and 3 of 4, four examples each.
      # PGD breaks examples 1 and 2, AutoAttack 2 and 3: robust 1/4, while
      # clean 1, PGD 1/2, AutoAttack 1/2.
      for folder, name in ((main, "initial"), (main, "control"),
                           (tuned, "fgsm_rs")):
        _save_block(folder, name, s, b, 4, "abc123", right, [0, 0, 1, 1],
                    [1, 0, 0, 1])
    # Block 2 saved for all but control's seed 2, all wrong: not read.
    for folder, name in ((main, "initial"), (tuned, "fgsm_rs")) + (
        ((main, "control"),) if s == 0 else ()):
      _save_block(folder, name, s, 1, 4, "abc123", wrong, wrong, wrong)
  # The tuned folder's initial models are the frontier's: not required.
  done = _run(f"--run_dir={main}", f"--with_dirs={tuned}", "--from_blocks")
  assert done.returncode == 0, done.stderr[-2000:]
  assert not (main / "pareto.json").exists()
  out = json.loads((main / "pareto-blocks.json").read_text())
  assert out["test_examples"] == 8
  by = {p["model"]: p for p in out["points"]}
  assert sorted(by) == ["control", "initial", "tuned/fgsm_rs"]
  for p in by.values():
    assert p["robust"] == pytest.approx(0.25) and p["clean"] == 1.0
    assert p["seeds"] == 2
  text = (main / "pareto-blocks.md").read_text()
  assert "test examples 1-4, 9-12 (blocks 1, 3 of the report's 4" in text
  # Another attack setting's block beside them: refused, not mixed in.
  _save_block(tuned, "fgsm_rs", 0, 3, 4, "def456", right, right, right)
  error_line(_run(f"--run_dir={main}", f"--with_dirs={tuned}",
                  "--from_blocks"), 2, "different attacks")
  (tuned / "report-blocks" / "fgsm_rs-seed1-block4of4-def456.npz").unlink()
  for file in (main / "report-blocks").glob("control-seed2-*"):
    file.unlink()
  error_line(_run(f"--run_dir={main}", "--from_blocks"), 2,
             "no report block is saved yet for control seed 2")


def test_a_block_reads_back_as_written_and_scores_its_worst_case(tmp_path):
  """results.write_block / read_block: the report's and pareto's one block
  format. Every array comes back under its name (AutoAttack's too, or None
  when it was off), no temporary file is left, and correct_by_attack adds
  AutoAttack's per-example outcome, so the worst case counts it."""
  import numpy as np
  from fgsm_jax import results, robustness
  correct = {"clean": np.array([1, 1, 1, 0], np.float32),
             "pgd": np.array([1, 0, 1, 0], np.float32)}
  aa = {"correct": np.array([1, 1, 0, 0], np.float32),
        "broken_by": np.array([0, 0, 2, 1], np.int32)}
  trace, curve, zero = np.array([0.5, 0.5]), np.array([0.75]), np.array(0.25)
  path = str(tmp_path / "blocks" / results.block_file("m", 0, 0, 1, "ab12"))
  for with_aa in (aa, None):
    results.write_block(path, (correct, trace, curve, zero, with_aa))
    back = results.read_block(path)
    assert sorted(back[0]) == ["clean", "pgd"]
    for k in correct:
      np.testing.assert_array_equal(back[0][k], correct[k])
    for got, want in zip(back[1:4], (trace, curve, zero)):
      np.testing.assert_array_equal(got, want)
    if with_aa is None:
      assert back[4] is None
      assert sorted(results.correct_by_attack(back)) == ["clean", "pgd"]
    else:
      assert sorted(back[4]) == ["broken_by", "correct"]
      np.testing.assert_array_equal(back[4]["broken_by"], aa["broken_by"])
      scored = results.correct_by_attack(back)
      assert "autoattack" not in back[0]  # The block itself is untouched.
      # PGD breaks example 2, AutoAttack example 3, clean misses 4.
      assert robustness.robust_accuracy(scored)["robust"] == 0.25
  assert [f.name for f in (tmp_path / "blocks").iterdir()] == [
      "m-seed1-block1of1-ab12.npz"]
  assert results.saved_blocks(str(tmp_path / "blocks"))[0]["path"] == path
