"""The benchmark's PyTorch reference is the same network as ours."""

import jax
import numpy as np
import pytest

from fgsm_jax import attacks, models

torch = pytest.importorskip("torch")
from experiments import torch_reference as ref  # noqa: E402


@pytest.mark.parametrize("name", ["lenet", "lenet5"])
def test_same_parameters_give_the_same_logits_and_fgsm(name):
  params = models.init_params(jax.random.key(0), name)
  module = ref.load_flax_params(ref.build(name), params).eval()
  assert sum(p.numel() for p in module.parameters()) == sum(
      x.size for x in jax.tree.leaves(params))
  x = np.asarray(jax.random.uniform(jax.random.key(1), (16, 28, 28, 1)))
  y = np.arange(16) % 10
  ours = np.asarray(models.lenet_apply(params, x, model=name))
  with torch.no_grad():
    theirs = module(ref.to_nchw(x)).numpy()
  np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)

  apply_fn = models.make_apply(name)
  ours_adv = np.asarray(attacks.fgsm(apply_fn, params, x, y, 0.1))
  theirs_adv = ref.fgsm(module, ref.to_nchw(x), torch.from_numpy(y), 0.1)
  # Signs can differ only where a gradient is ~0; allow a few such pixels.
  mismatch = np.mean(np.abs(theirs_adv.numpy().transpose(0, 2, 3, 1)
                            - ours_adv) > 1e-5)
  assert mismatch < 1e-3, mismatch


def test_init_and_optimizer_match_the_keras_defaults():
  module = ref.build("lenet", seed=3)
  fc1 = module.fc1.weight.detach().numpy()
  limit = np.sqrt(6 / (9216 + 128))  # Glorot-uniform.
  assert np.abs(fc1).max() <= limit and np.abs(fc1).max() > 0.9 * limit
  assert not module.fc1.bias.detach().numpy().any()
  group = ref.adam(module).param_groups[0]
  assert group["lr"] == 1e-3 and group["eps"] == 1e-8
