"""The benchmark's FLOP counts. (A tiny run of it end to end:
test_notebook.py, which runs the notebook.)"""

import jax
import numpy as np
import pytest

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
