import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized

from fgsm_jax import methods, models, training, unlearning


class SelectForgetTest(parameterized.TestCase):

  def test_takes_the_top_k_retained(self):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=200).astype(np.float32)
    retained = rng.random(200) > 0.3
    chosen = np.asarray(unlearning.select_forget(
        jnp.asarray(scores), jnp.asarray(retained), 10))
    candidates = np.where(retained)[0]
    expected = candidates[np.argsort(-scores[candidates])[:10]]
    self.assertEqual(set(np.where(chosen)[0]), set(expected))

  def test_never_reselects_removed_examples(self):
    scores = jnp.arange(10.0)  # The highest scores are already removed.
    retained = jnp.array([True] * 6 + [False] * 4)
    chosen = np.asarray(unlearning.select_forget(scores, retained, 3))
    np.testing.assert_array_equal(np.where(chosen)[0], [3, 4, 5])

  def test_fewer_retained_than_k(self):
    retained = jnp.array([True, False, True, False])
    chosen = unlearning.select_forget(jnp.ones(4), retained, 3)
    np.testing.assert_array_equal(chosen, retained)

  def test_repeated_rounds_remove_disjoint_sets(self):
    rng = np.random.default_rng(1)
    retained = jnp.ones(50, bool)
    seen = np.zeros(50, int)
    for _ in range(5):
      chosen = unlearning.select_forget(
          jnp.asarray(rng.normal(size=50), jnp.float32), retained, 10)
      seen += np.asarray(chosen)
      retained = retained & ~chosen
    np.testing.assert_array_equal(seen, np.ones(50))


def _setup(model="lenet5", n=8):
  apply_fn = models.make_apply(model)
  # Plain SGD: its update is linear in the gradient, so two programs that
  # round a near-zero gradient differently give the same parameters to
  # float precision. Adam's first steps are about lr * sign(g) and would
  # turn that rounding into a 2 * lr difference on another CPU.
  optimizer = optax.sgd(0.05)
  state = training.create_train_state(
      models.init_params(jax.random.key(0), model), optimizer)
  kx, ky = jax.random.split(jax.random.key(1))
  x = jax.random.uniform(kx, (n, 28, 28, 1))
  y = jax.random.randint(ky, (n,), 0, 10)
  step = jax.jit(methods.train_step(apply_fn, optimizer))
  return state, x, y, step


class UnlearnStepTest(parameterized.TestCase):

  @parameterized.named_parameters(("lenet", "lenet"), ("lenet5", "lenet5"))
  def test_removed_examples_contribute_no_gradient(self, model):
    state, x, y, step = _setup(model)
    weights = jnp.array([1, 0, 1, 1, 0, 1, 1, 1], jnp.float32)
    key = jax.random.key(3)
    # Replace the removed examples' inputs and labels by anything else.
    x_other = x.at[1].set(1.0 - x[1]).at[4].set(0.0)
    y_other = y.at[1].set((y[1] + 3) % 10).at[4].set((y[4] + 5) % 10)
    a, loss_a = step(state, x, y, weights, key)
    b, loss_b = step(state, x_other, y_other, weights, key)
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-6, atol=1e-7)
    self.assertAlmostEqual(float(loss_a), float(loss_b), places=5)
    # ... and they would have mattered with weight 1.
    c, _ = step(state, x_other, y_other, jnp.ones(8), key)
    d, _ = step(state, x, y, jnp.ones(8), key)
    self.assertFalse(all(np.allclose(p, q) for p, q in zip(
        jax.tree.leaves(c.params), jax.tree.leaves(d.params))))

  def test_all_zero_weights_leave_the_state_alone(self):
    state, x, y, step = _setup()
    new, _ = step(state, x, y, jnp.zeros(8), jax.random.key(0))
    chex.assert_trees_all_equal(new, state)

  def test_a_step_lowers_the_batch_loss(self):
    state, x, y, step = _setup(n=32)
    for i in range(5):
      state, loss = step(state, x, y, jnp.ones(32), jax.random.key(i))
      if i == 0:
        first = loss
    _, last = step(state, x, y, jnp.ones(32), jax.random.key(9))
    self.assertLess(float(last), float(first))


class EpochBatchesTest(parameterized.TestCase):

  @parameterized.parameters((100, 16), (128, 32), (5, 8))
  def test_each_retained_example_once_removed_never(self, n, batch_size):
    rng = np.random.default_rng(n)
    weights = (rng.random(n) > 0.2).astype(np.float32)
    idx, w = training.epoch_batches(jax.random.key(0), jnp.asarray(weights),
                                    batch_size)
    idx, w = np.asarray(idx).ravel(), np.asarray(w).ravel()
    self.assertEqual(idx.size % batch_size, 0)
    counts = np.bincount(idx[w > 0], minlength=n)
    np.testing.assert_array_equal(counts, weights.astype(int))
    np.testing.assert_array_equal(w[w > 0], 1.0)

  def test_jitted_epoch_donates_the_state_and_equals_the_plain_epoch(self):
    state, x, y, step = _setup(n=32)
    args = (x, y, jnp.ones(32), jax.random.key(4))
    plain, plain_loss = training.train_epoch(state, *args, step_fn=step,
                                             batch_size=8)
    epoch = training.make_train_epoch(step, batch_size=8)
    donated = jax.tree.map(jnp.copy, state)
    new, loss = epoch(donated, *args)
    self.assertTrue(all(leaf.is_deleted() for leaf in jax.tree.leaves(donated)))
    chex.assert_trees_all_close(new, plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-5)
