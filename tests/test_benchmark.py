"""The benchmark's FLOP counts, and a tiny run of it end to end."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, mnist_dir
from experiments import benchmark
from fgsm_jax import models


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


def test_tiny_benchmark_writes_json_with_sane_ratios(tmp_path):
  pytest.importorskip("torch")
  data_dir = mnist_dir()
  if data_dir is None:
    pytest.skip("real MNIST not found: set MNIST_DIR")
  out = tmp_path / "bench.json"
  cmd = [sys.executable, "-m", "experiments.benchmark", "--models=lenet5",
         "--batch_sizes=32,64", "--train_images=64", "--fgsm_images=64",
         "--pass_examples=96", "--round_train_size=256",
         "--round_test_size=128", "--repeats=1", "--pass_repeats=1",
         f"--data_dir={data_dir}", f"--json={out}"]
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ))
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(out.read_text())
  assert {r["work"] for r in report["rows"]} == {"train", "fgsm", "pass"}
  for row in report["rows"]:
    for key in ("ours_s", "pytorch_s", "roofline_s"):
      assert np.isfinite(row[key]) and row[key] > 0
    # Nothing runs faster than the matmul roofline.
    assert 0 < row["ours_over_roofline"] < 1
    assert row["xla_memory_bytes"]["temp_size"] >= 0
  (round_row,) = report["rounds"]
  assert round_row["ours_round_s"] > 0 and round_row["pytorch_round_s"] > 0
  assert report["matmul_gflops"]["peak"] > 0
