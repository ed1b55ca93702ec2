"""The benchmark's FLOP counts and its resumable AutoAttack timing. (A tiny
run of the other parts end to end: test_notebook.py, which runs the
notebook.)"""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, error_line
from experiments import benchmark
from fgsm_jax import autoattack, models, results


@pytest.mark.parametrize("name", ["lenet", "lenet5"])
def test_forward_flops_match_xla_cost_analysis(name):
  """Our count of matmul FLOPs is XLA's count of conv and dot FLOPs, within
  the few elementwise FLOPs (bias, ReLU, pooling) XLA adds."""
  params = models.init_params(jax.random.key(0), name)
  x = np.zeros((1, 28, 28, 1), np.float32)
  apply = jax.jit(lambda p, x: models.lenet_apply(p, x, model=name,
                                                  conv_impl="xla"))
  cost = apply.lower(params, x).compile().cost_analysis()
  if isinstance(cost, list):
    cost = cost[0]
  ours = benchmark.FORWARD_FLOPS[name][1]
  assert ours <= cost["flops"] <= 1.1 * ours, (ours, cost["flops"])


def test_work_flops_are_ordered():
  for name in ("lenet", "lenet5"):
    w = benchmark.work_flops(name)
    assert w["fgsm"] < w["train"] < w["pass"]
    assert w["pass"] == 3 * benchmark.FORWARD_FLOPS[name][1]


# --- The AutoAttack timing, block by block ----------------------------------

TINY_AUTOATTACK = ["--parts=autoattack", "--aa_model=lenet5",
                   "--aa_apgd_steps=5", "--aa_target_classes=2",
                   "--aa_fab_steps=5", "--aa_square_queries=20",
                   "--aa_chunk_size=4"]


def run_benchmark(*args):
  return subprocess.run(
      [sys.executable, "-m", "experiments.benchmark", *args], cwd=REPO,
      capture_output=True, text=True, timeout=600)


def test_autoattack_timing_resumes_at_the_next_block(tmp_path, trained_lenet5):
  """A run that finds an earlier run's blocks of the same work in --json
  keeps them as they are, times the rest, and totals over all of them."""
  pytest.importorskip("torchattacks")
  weights = str(tmp_path / "params.msgpack")
  results.write_params(weights, jax.tree.map(lambda a: a[None],
                                             trained_lenet5[0]))
  budget = autoattack.Budget(apgd_steps=5, target_classes=2, fab_steps=5,
                             square_queries=20)
  work = {"model": "lenet5", "examples": 8, "block": 4, "chunk_size": 4,
          "weights": {"params": weights},
          "budget": budget.describe("standard", 0.1),
          "square_queries": "whole pass"}  # LeNet-5's (local_forward.full)
  planted = {"block": 0, "first": 0, "ours_s": 3.0, "torchattacks_s": 6.0,
             "ours_correct": 1, "torchattacks_correct": 2,
             "ours_over_torchattacks": 2.0, "cpu": "a planted CPU",
             "planted": True}
  out = tmp_path / "benchmark.json"
  out.write_text(json.dumps({"autoattack": dict(work, blocks=[planted])}))
  result = run_benchmark(*TINY_AUTOATTACK, f"--aa_params={weights}",
                         "--aa_examples=8", "--aa_block=4",
                         "--aa_noskip_examples=4", f"--json={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "1 of 2 blocks timed by an earlier run, kept" in result.stdout
  assert "the blocks ran on 2 CPUs" in result.stdout
  row = json.loads(out.read_text())["autoattack"]
  assert [b["block"] for b in row["blocks"]] == [0, 1]
  assert row["blocks"][0] == planted
  new = row["blocks"][1]
  assert new["first"] == 4 and "planted" not in new
  assert 0 <= new["ours_correct"] <= 4 and 0 <= new["torchattacks_correct"] <= 4
  assert new["ours_correct"] + sum(new["ours_broken_by"].values()) <= 4
  assert row["ours_s"] == pytest.approx(3.0 + new["ours_s"])
  assert row["torchattacks_s"] == pytest.approx(6.0 + new["torchattacks_s"])
  assert row["ours_over_torchattacks"] == pytest.approx(
      row["torchattacks_s"] / row["ours_s"])
  assert row["ours_robust_accuracy"] == pytest.approx(
      (1 + new["ours_correct"]) / 8)
  assert row["cpus"] == sorted({"a planted CPU", new["cpu"]})
  assert row["skipping"]["examples"] == 4
  assert row["skipping"]["same_outcome"] is True


def test_autoattack_block_must_divide_the_examples():
  pytest.importorskip("torchattacks")
  error_line(run_benchmark(*TINY_AUTOATTACK, "--aa_examples=8",
                           "--aa_block=3"), 2,
             "--aa_block must divide --aa_examples")
