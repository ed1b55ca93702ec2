"""The Fig. 3 LeNet's forward pass for one-square changes (Square's queries):
the same logits as the model, the same features as a whole pass wherever
the square lies, and the same Square run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgsm_jax import local_forward, models, square

PARAMS = models.init_params(jax.random.key(3), "lenet")


def _images(n, seed=0):
  return jax.random.uniform(jax.random.key(seed), (n, 28, 28, 1))


@pytest.mark.parametrize("impl", ["xla", "shifted_matmul"])
def test_head_of_features_is_the_model(impl):
  """Split by hand from the parameters: a wrong layer, order or name would
  give other logits than the Flax module's."""
  split = local_forward.lenet(impl)
  x = _images(16)
  logits = split.head(PARAMS, split.features(PARAMS, x))
  np.testing.assert_allclose(
      logits, models.make_apply("lenet", impl)(PARAMS, x), atol=1e-4)
  whole = local_forward.for_model("lenet5")
  lenet5 = models.init_params(jax.random.key(4), "lenet5")
  np.testing.assert_array_equal(
      whole.head(lenet5, whole.features(lenet5, x)),
      models.make_apply("lenet5")(lenet5, x))


@pytest.mark.parametrize("side", [1, 2, 3, 4, 6, 9, 13, 18])
def test_update_is_the_whole_pass_wherever_the_square_is(side):
  """Every top row and every left column (the edges, where the window is
  moved inside, included): the window recomputed must hold every feature
  the square changed. One row or column too few leaves a stale one."""
  split = local_forward.lenet("xla")
  positions = np.arange(28 - side + 1)
  top = jnp.asarray(positions)
  left = jnp.asarray(np.random.default_rng(side).permutation(positions))
  n = len(positions)
  x_best = _images(n, seed=side)
  rows = jnp.arange(28)[None, :, None, None]
  cols = jnp.arange(28)[None, None, :, None]
  inside = ((rows >= top[:, None, None, None])
            & (rows < top[:, None, None, None] + side)
            & (cols >= left[:, None, None, None])
            & (cols < left[:, None, None, None] + side))
  # A large change, so any feature it reaches moves.
  x_new = jnp.where(inside, 1.0 - x_best, x_best)
  updated = split.update(PARAMS, split.features(PARAMS, x_best), x_new, top,
                         left, side)
  whole = split.features(PARAMS, x_new)
  assert float(jnp.max(jnp.abs(whole - split.features(PARAMS, x_best)))) > 0.01
  np.testing.assert_allclose(updated, whole, atol=1e-4)


def test_square_runs_the_same_with_the_window():
  """Square through the window pass takes the same steps as through whole
  passes (the same draws): features kept for the wrong point, or not kept
  on acceptance, would send it elsewhere. In float64: in float32 the two
  passes round differently, and a proposal equal to the current point
  (a square moved to the corner it is at) ties in one and not in the
  other (7 of these 48 trajectories parted so)."""
  with jax.enable_x64(True):
    params = jax.tree.map(lambda a: a.astype(jnp.float64), PARAMS)
    apply_fn = models.make_apply("lenet", "xla")
    x = jax.random.uniform(jax.random.key(7), (48, 28, 28, 1), jnp.float64)
    y = jnp.argmax(apply_fn(params, x), -1)  # Every example right at first.
    keys = jax.vmap(lambda j: jax.random.fold_in(jax.random.key(1), j))(
        jnp.arange(48))
    # p_init 0.05: sides 6, 4, 3 and 2 within 300 queries.
    outcomes = [square.square(apply_fn, params, x, y, 0.03, keys, queries=300,
                              p_init=0.05, local_forward=lf)
                for lf in (None, local_forward.lenet("xla"))]
    (whole_right, whole_x), (window_right, window_x) = outcomes
    assert 0.1 < float(jnp.mean(whole_right)) < 0.9  # Some broken, not all.
    np.testing.assert_array_equal(whole_right, window_right)
    np.testing.assert_array_equal(whole_x, window_x)
