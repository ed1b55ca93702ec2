import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from fgsm_jax import attacks, evaluation, losses, models


def linear_apply(params, x, dropout_key=None):
  """A softmax regression: its CE is convex in x, its gradient known."""
  del dropout_key
  return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


def linear_params(seed=0):
  kw, kb = jax.random.split(jax.random.key(seed))
  return {"w": jax.random.normal(kw, (784, 10)) * 0.1,
          "b": jax.random.normal(kb, (10,)) * 0.1}


def batch(seed=0, n=16):
  kx, ky = jax.random.split(jax.random.key(seed))
  return (jax.random.uniform(kx, (n, 28, 28, 1)),
          jax.random.randint(ky, (n,), 0, 10))


class LossesTest(parameterized.TestCase):

  def test_per_example_loss_matches_numpy_and_batch_mean(self):
    logits = jax.random.normal(jax.random.key(0), (9, 10)) * 3
    labels = jnp.arange(9) % 10
    per_example = losses.per_example_loss(logits, labels)
    chex.assert_shape(per_example, (9,))
    z = np.asarray(logits, np.float64)
    log_softmax = z - z.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    expected = -log_softmax[np.arange(9), np.asarray(labels)]
    np.testing.assert_allclose(per_example, expected, rtol=1e-5)
    np.testing.assert_allclose(jnp.mean(per_example), expected.mean(),
                               rtol=1e-5)

  def test_weighted_mean_ignores_zero_weights(self):
    values = jnp.array([1.0, 2.0, 100.0])
    self.assertAlmostEqual(float(losses.weighted_mean(
        values, jnp.array([1.0, 1.0, 0.0]))), 1.5)
    self.assertEqual(float(losses.weighted_mean(values, jnp.zeros(3))), 0.0)


class FgsmTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_bounds_and_identity(self):
    params = models.init_params(jax.random.key(0), "lenet5")
    apply_fn = models.make_apply("lenet5")
    x, y = batch()
    attack = self.variant(lambda x, eps: attacks.fgsm(apply_fn, params, x, y,
                                                      eps))
    for eps in (0.05, 0.1, 0.3):
      x_adv = attack(x, eps)
      self.assertLessEqual(float(jnp.max(jnp.abs(x_adv - x))), eps + 1e-6)
      self.assertGreaterEqual(float(jnp.min(x_adv)), 0.0)
      self.assertLessEqual(float(jnp.max(x_adv)), 1.0)
      # Not a no-op: most pixels move by exactly eps (or to the box edge).
      moved = jnp.abs(x_adv - x) > 0
      self.assertGreater(float(jnp.mean(moved)), 0.5)
    np.testing.assert_array_equal(attack(x, 0.0), x)

  def test_matches_closed_form_on_softmax_regression(self):
    params = linear_params()
    x, y = batch(1)
    eps = 0.1
    got = attacks.fgsm(linear_apply, params, x, y, eps)
    # d CE / d x = W (softmax(Wx + b) - onehot(y)), per example.
    w, b = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
    flat = np.asarray(x, np.float64).reshape(len(y), -1)
    z = flat @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), np.asarray(y)] -= 1
    grad = p @ w.T
    expected = np.clip(flat + eps * np.sign(grad), 0, 1).reshape(x.shape)
    np.testing.assert_allclose(got, expected, atol=1e-6)

  def test_loss_never_decreases_for_a_convex_model(self):
    params = linear_params(2)
    x, y = batch(3, n=64)
    before = losses.per_example_loss(linear_apply(params, x), y)
    x_adv = attacks.fgsm(linear_apply, params, x, y, 0.1)
    after = losses.per_example_loss(linear_apply(params, x_adv), y)
    self.assertTrue(bool(jnp.all(after >= before - 1e-6)))
    self.assertGreater(float(jnp.mean(after - before)), 0.1)

  def test_loss_increases_on_average_for_lenet(self):
    params = models.init_params(jax.random.key(0), "lenet")
    apply_fn = models.make_apply("lenet")
    x, y = batch(4, n=32)
    before = losses.per_example_loss(apply_fn(params, x), y)
    after = losses.per_example_loss(
        apply_fn(params, attacks.fgsm(apply_fn, params, x, y, 0.1)), y)
    self.assertGreater(float(jnp.mean(after)), float(jnp.mean(before)))


class ChunkedPassTest(parameterized.TestCase):

  @parameterized.parameters(7, 16, 100)
  def test_chunked_pass_equals_one_batch(self, chunk_size):
    params = linear_params()
    x, y = batch(5, n=37)
    out = evaluation.fgsm_pass(linear_apply, params, x, y, 0.1, chunk_size)
    x_adv = attacks.fgsm(linear_apply, params, x, y, 0.1)
    logits = linear_apply(params, x_adv)
    np.testing.assert_allclose(out["loss"], losses.per_example_loss(logits, y),
                               rtol=1e-5)
    np.testing.assert_array_equal(out["correct"],
                                  losses.per_example_correct(logits, y))

  def test_evaluate_equals_separate_computations(self):
    params = linear_params()
    x, y = batch(6, n=40)
    stale = attacks.fgsm(linear_apply, linear_params(9), x, y, 0.2)
    metrics = evaluation.evaluate(linear_apply, params, x, y, stale, 0.1, 16)
    x_adv = attacks.fgsm(linear_apply, params, x, y, 0.1)
    for prefix, inputs in (("clean", x), ("fgsm", x_adv), ("transfer", stale)):
      logits = linear_apply(params, inputs)
      np.testing.assert_allclose(
          getattr(metrics, prefix + "_accuracy"),
          jnp.mean(losses.per_example_correct(logits, y)), rtol=1e-6)
      np.testing.assert_allclose(
          getattr(metrics, prefix + "_loss"),
          jnp.mean(losses.per_example_loss(logits, y)), rtol=1e-5)

  def test_evaluate_without_stale_set_returns_its_fgsm_images(self):
    params = linear_params()
    x, y = batch(7, n=40)
    metrics, adv = evaluation.evaluate(linear_apply, params, x, y, None, 0.1,
                                       16)
    np.testing.assert_allclose(adv, attacks.fgsm(linear_apply, params, x, y,
                                                 0.1), atol=1e-6)
    self.assertEqual(float(metrics.transfer_accuracy),
                     float(metrics.fgsm_accuracy))
    again = evaluation.evaluate(linear_apply, params, x, y, adv, 0.1, 16)
    chex.assert_trees_all_close(again, metrics, rtol=1e-6)
