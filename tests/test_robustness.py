"""Attacks and robust accuracy on a briefly trained LeNet-5 (real MNIST)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgsm_jax import attacks, losses, models, robustness

MODEL = "lenet5"
APPLY = models.make_apply(MODEL)
SUITE = robustness.AttackSuite(pgd_steps=10, pgd_step_size=0.025,
                               pgd_restarts=2, noise_draws=10)


@pytest.fixture(scope="module")
def trained(trained_lenet5):
  """conftest's LeNet-5; 256 test digits."""
  return trained_lenet5


def _accuracy(apply_fn, params, x, y):
  return float(jnp.mean(losses.per_example_correct(apply_fn(params, x), y)))


def test_more_pgd_steps_never_weaken_the_attack(trained):
  params, x, y = trained
  acc = [_accuracy(APPLY, params, attacks.pgd(
      APPLY, params, x, y, 0.1, None, steps=s, step_size=0.025), y)
         for s in (1, 4, 16)]
  assert acc[1] <= acc[0] + 0.01 and acc[2] <= acc[1] + 0.01, acc
  assert acc[2] < acc[0]


def test_restarts_keep_the_per_example_worst(trained):
  params, x, y = trained
  key = jax.random.key(3)
  kwargs = dict(steps=3, step_size=0.03)
  kept = attacks.pgd_restarts(APPLY, params, x, y, 0.1, key, restarts=4,
                              **kwargs)
  singles = [attacks.pgd(APPLY, params, x, y, 0.1, k, **kwargs)
             for k in jax.random.split(key, 4)]
  def score(x_adv):
    logits = APPLY(params, x_adv)
    return (np.asarray(losses.per_example_loss(logits, y)),
            np.asarray(jnp.argmax(logits, -1) != y))
  kept_loss, kept_wrong = score(kept)
  single = [score(s) for s in singles]
  any_wrong = np.any([w for _, w in single], axis=0)
  np.testing.assert_array_equal(kept_wrong, any_wrong)
  best_loss = np.max([l for l, _ in single], axis=0)
  right = ~any_wrong
  assert np.all(kept_loss[right] >= best_loss[right] - 1e-5)
  assert np.abs(np.asarray(kept - x)).max() <= 0.1 + 1e-6


def test_skipping_flipped_examples_changes_no_restart_outcome(trained):
  # Every restart on every example, same per-example starts: the reference.
  params, x, y = trained
  key, eps, kwargs = jax.random.key(5), 0.1, dict(steps=3, step_size=0.03)
  index = jnp.arange(y.shape[0])
  expected = np.array(losses.per_example_correct(APPLY(params, x), y))
  for r in range(3):
    keys = jax.vmap(lambda j: jax.random.fold_in(
        jax.random.fold_in(key, r), j))(index)
    x_adv = attacks.pgd_from(APPLY, params, x, y, eps,
                             attacks.uniform_start(x, eps, keys), **kwargs)
    expected *= np.asarray(losses.per_example_correct(APPLY(params, x_adv), y))
  assert 0.05 < expected.mean() < 0.95  # Some chunks get skipped, some not.
  # Chunks of 100 over 256 examples: padding and a partly flipped chunk.
  skipping = jax.jit(functools.partial(
      robustness.pgd_restarts_correct, APPLY, restarts=3, chunk_size=100,
      **kwargs))
  correct, trace = skipping(params, x, y, eps, key)
  np.testing.assert_array_equal(correct, expected)
  assert np.all(np.diff(trace) <= 0) and trace[-1] == expected.mean()
  # Under vmap over models (both branches run) the result is the same.
  two = jax.tree.map(lambda a: jnp.stack([a, a]), params)
  batched, _ = jax.vmap(skipping, in_axes=(0, None, None, None, None))(
      two, x, y, eps, key)
  np.testing.assert_array_equal(batched, np.stack([expected, expected]))


def test_robust_accuracy_is_at_most_every_attacks(trained):
  params, x, y = trained
  correct, _ = robustness.per_example_correct(
      APPLY, params, x, y, 0.1, jax.random.key(0), SUITE, chunk_size=128,
      transfer={"transfer_x": robustness.transfer_examples(
          APPLY, models.init_params(jax.random.key(9), MODEL), x, y, 0.1,
          jax.random.key(4), SUITE, chunk_size=128)})
  acc = robustness.robust_accuracy(correct)
  assert set(acc) == {"clean", "fgsm", "fgsm_predicted", "pgd", "noise",
                      "transfer_x", "robust"}
  for name, value in acc.items():
    assert acc["robust"] <= value
  assert acc["clean"] > 0.8 and acc["pgd"] < acc["clean"]


def test_the_sweep_is_per_epsilon_calls_and_reaches_zero(trained):
  params, x, y = trained
  epsilons = [0.0, 0.1, 0.3, 0.5]
  def fgsm(apply_fn, params, x, y, eps, key):
    return attacks.fgsm(apply_fn, params, x, y, eps)
  sweep = np.asarray(robustness.accuracy_sweep(
      APPLY, params, x, y, epsilons, jax.random.key(0), 100, attack=fgsm))
  single = [_accuracy(APPLY, params, attacks.fgsm(APPLY, params, x, y, e), y)
            for e in epsilons]
  np.testing.assert_allclose(sweep, single, atol=1e-6)
  # Undefended: PGD at epsilon 0.5 leaves about nothing.
  pgd_sweep = np.asarray(robustness.accuracy_sweep(
      APPLY, params, x, y, epsilons, jax.random.key(0), 128))
  assert pgd_sweep[0] == pytest.approx(single[0])
  assert pgd_sweep[-1] <= 0.05
  assert np.all(np.diff(pgd_sweep) <= 0.01)


def _checks(apply_fn, params, x, y):
  correct, _ = robustness.per_example_correct(
      apply_fn, params, x, y, 0.1, jax.random.key(1), SUITE, chunk_size=128)
  epsilons = [0.0, 0.1, 0.2, 0.3, 0.5]
  sweep = robustness.accuracy_sweep(apply_fn, params, x, y, epsilons,
                                    jax.random.key(2), 128)
  zero = float(robustness.zero_gradient_fraction(apply_fn, params, x, y, 128))
  return {c["check"]: c for c in robustness.masking_checks(
      correct, epsilons, sweep, zero)}


def test_masking_checks_flag_a_saturated_softmax_and_pass_the_plain_model(
    trained):
  # Logits x 1e4: the softmax saturates in float32, the loss gradient of
  # every confidently classified input is exactly 0, FGSM and PGD are blind,
  # and the model looks robust to them without being any more robust.
  def saturated(params, x, dropout_key=None):
    return 1e4 * APPLY(params, x)
  checks = _checks(saturated, *trained)
  plain = _checks(APPLY, *trained)
  for label, found in (("plain", plain), ("saturated", checks)):
    for name, c in found.items():  # Shown with pytest -s.
      print(label, name, c["passed"], c["evidence"])
  assert not checks["few_zero_input_gradients"]["passed"]
  assert checks["few_zero_input_gradients"]["evidence"][
      "fraction_of_examples"] > 0.5
  # The classic sign: PGD (which starts and stays where the gradient is 0)
  # flips fewer examples than FGSM.
  assert not checks["fgsm_not_stronger_than_pgd"]["passed"]
  # The same model unscaled is no different, and passes.
  assert all(c["passed"] for c in plain.values())


def test_sign_noise_stays_on_the_corners_and_keeps_the_worst_draw(trained):
  params, x, y = trained
  eps, draws, key = 0.3, 8, jax.random.key(5)
  kept = np.asarray(attacks.sign_noise(APPLY, params, x, y, eps, key,
                                       draws=draws))
  x = np.asarray(x)
  up, down = np.clip(x + eps, 0, 1), np.clip(x - eps, 0, 1)
  corner = (kept == up) | (kept == down)
  # Every pixel on a corner of the ball (cut by [0, 1]), except examples
  # no draw beat and whose kept input is the clean one.
  unchanged = np.all(kept == x, axis=(1, 2, 3))
  assert np.all(corner.reshape(len(x), -1).all(1) | unchanged)
  # Wrong under some draw, or already on the clean input (kept then).
  wrong_any = np.array(jnp.argmax(APPLY(params, jnp.asarray(x)), -1) != y)
  for k in jax.random.split(key, draws):
    signs = np.asarray(jax.random.rademacher(k, x.shape, jnp.float32))
    logits = APPLY(params, jnp.asarray(np.clip(x + eps * signs, 0, 1)))
    wrong_any |= np.asarray(jnp.argmax(logits, -1) != y)
  kept_wrong = np.asarray(jnp.argmax(APPLY(params, jnp.asarray(kept)), -1) != y)
  assert wrong_any.any() and not wrong_any.all()  # A case with both.
  np.testing.assert_array_equal(kept_wrong, wrong_any)
