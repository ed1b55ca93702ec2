"""Seeds sharded over 4 simulated CPU devices give the unsharded results."""

import os
import subprocess
import sys
import textwrap

from conftest import REPO, mnist_dir
from fgsm_jax import sharding

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    import fgsm_jax as fj
    from fgsm_jax import data, loop, sharding
    assert jax.device_count() == 4, jax.devices()
    config = fj.get_config("smoke", seeds=4, train_size=256, test_size=128,
                           rounds=1, chunk_size=128)
    mnist = data.take(fj.load_mnist(), config.train_size, config.test_size)
    program = jax.jit(loop.vmap_seeds(fj.make_unlearn(config), config.seeds))
    args = (fj.seed_keys(config), mnist, fj.hparams_from(config))
    alone = jax.device_get(program(*jax.device_put(args, jax.devices()[0])))
    mesh = sharding.seed_mesh(config.seeds)
    out = program(*sharding.place(mesh, *args))
    spec = out.history.clean_accuracy.sharding.spec
    assert tuple(spec) == ("seeds",), spec
    assert len(out.history.clean_accuracy.sharding.device_set) == 4
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=4e-3),
                 jax.device_get(out), alone)
    print("sharded == unsharded")
""")


def test_sharded_seeds_equal_unsharded_run():
  data_dir = mnist_dir()
  env = dict(os.environ, MNIST_DIR=data_dir,
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "sharded == unsharded" in result.stdout


def test_seed_device_count_divides_the_seeds():
  assert sharding.seed_device_count(8, 8) == 8
  assert sharding.seed_device_count(6, 8) == 6
  assert sharding.seed_device_count(12, 8) == 6
  assert sharding.seed_device_count(7, 4) == 1
  assert sharding.seed_device_count(1, 8) == 1
  assert sharding.seed_mesh(3).devices.size == 1  # One CPU device here.
