"""Every method as one step: its objective, its limits, its cost, under vmap."""

import dataclasses
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fgsm_jax import attacks, config as config_lib, methods, models
from fgsm_jax import training

MODEL = "lenet5"
CONFIG = config_lib.get_config("smoke", pgd_steps=3, pgd_step_size=0.05)
APPLY = models.make_apply(MODEL)
OPTIMIZER = optax.adam(1e-3)
NAMES = list(methods.METHODS)


def _problem(n=16, f=8, seed=0):
  keys = jax.random.split(jax.random.key(seed), 6)
  params = models.init_params(keys[0], MODEL)
  state = training.create_train_state(params, OPTIMIZER)
  retain = methods.Batch(jax.random.uniform(keys[1], (n, 28, 28, 1)),
                         jax.random.randint(keys[2], (n,), 0, 10),
                         jnp.ones(n))
  labels = jax.random.randint(keys[4], (f,), 0, 10)
  forget = methods.ForgetBatch(jax.random.uniform(keys[3], (f, 28, 28, 1)),
                               labels, (labels + 1) % 10, jnp.ones(f))
  # A teacher unlike the student, so SCRUB's KL terms have a gradient.
  teacher = models.init_params(keys[5], MODEL)
  ctx = methods.RoundContext(teacher, None, jnp.int32(0), jnp.float32(0.1))
  return state, retain, forget, ctx


def _method(name, **overrides):
  config = dataclasses.replace(CONFIG, method=name, **overrides)
  return methods.make_method(name, config, APPLY)


def _step(method):
  return jax.jit(functools.partial(methods.unlearn_step, method=method,
                                   optimizer=OPTIMIZER))


def _objective(method, params, retain, forget, key, ctx, craft_params):
  adv = None
  if method.craft is not None:  # The attack the step saw, held fixed.
    adv = method.craft(craft_params, retain, jax.random.fold_in(key, 3), ctx)
  return float(method.loss(params, retain, forget, adv, key, ctx))


@pytest.mark.parametrize("name", NAMES)
def test_one_step_lowers_its_own_objective(name):
  method = _method(name)
  state, retain, forget, ctx = _problem()
  ctx = ctx.replace(epoch=jnp.int32(99))  # Descent only (SCRUB's min step).
  key = jax.random.key(7)
  before = _objective(method, state.params, retain, forget, key, ctx,
                      state.params)
  new, loss = _step(method)(state, retain, forget, key, ctx)
  after = _objective(method, new.params, retain, forget, key, ctx,
                     state.params)
  np.testing.assert_allclose(float(loss), before, rtol=1e-5)
  assert after < before


def test_scrub_max_step_raises_the_forget_divergence():
  method = _method("scrub")
  state, retain, forget, ctx = _problem()
  retain = retain.replace(weights=jnp.zeros_like(retain.weights))  # Max only.
  key = jax.random.key(3)
  ascent_key = jax.random.fold_in(key, 2)
  before = float(method.ascent(state.params, forget, ascent_key, ctx))
  step = _step(method)
  new, _ = step(state, retain, forget, key, ctx)
  assert int(new.step) == 1  # The ascent ran; the descent was skipped.
  assert float(method.ascent(new.params, forget, ascent_key, ctx)) > before
  # Past scrub_max_epochs there is no max step.
  later, _ = step(state, retain, forget, key,
                  ctx.replace(epoch=jnp.int32(CONFIG.scrub_max_epochs)))
  chex.assert_trees_all_equal(later, state)


# Plain SGD where a test compares parameters after a step: its update is
# linear in the gradient, so two programs that round a near-zero gradient
# differently still agree to float precision. Adam's first step is about
# lr * sign(g) and turns that rounding into a 2 * lr difference on another
# CPU (seen: TRADES under vmap on an AMD EPYC).
SGD = optax.sgd(1e-2)


def _sgd_step(method):
  return jax.jit(functools.partial(methods.unlearn_step, method=method,
                                   optimizer=SGD))


@pytest.mark.parametrize("name", ["remove_retrain", "finetune", "control",
                                  "neggrad_plus", "relabel", "salun", "scrub"])
def test_an_empty_forget_set_is_plain_training(name):
  """With every forget weight 0 these methods train on the retain set alone,
  their update a scaled plain-training update (NegGrad+'s alpha, SCRUB's
  gamma). SCRUB only for one step: its distillation term is 0 (with 0
  gradient) while the student equals the teacher, not after."""
  method = _method(name)
  scale = {"neggrad_plus": CONFIG.neggrad_alpha,
           "scrub": CONFIG.scrub_gamma}.get(name, 1.0)
  state, retain, forget, ctx = _problem()
  state = training.create_train_state(state.params, SGD)
  forget = forget.replace(weights=jnp.zeros_like(forget.weights))
  mask = methods.saliency_mask(APPLY, state.params, forget, 0.5)
  assert all(bool(jnp.all(m == 1)) for m in jax.tree.leaves(mask))
  ctx = ctx.replace(teacher=state.params, mask=mask)
  plain_step = jax.jit(methods.train_step(APPLY, SGD))
  ours, plain, step = state, state, _sgd_step(method)
  steps = 3 if scale == 1.0 else 1  # Scaled updates drift apart after one.
  for i in range(steps):
    key = jax.random.key(i)
    ours, _ = step(ours, retain, forget, key, ctx)
    plain, _ = plain_step(plain, retain.images, retain.labels, retain.weights,
                          key)
  moved = jax.tree.map(jnp.subtract, ours.params, state.params)
  expected = jax.tree.map(lambda a, b: scale * (a - b), plain.params,
                          state.params)
  # atol: one rounding of parameters of size ~0.1 (ulp 7e-9) in the
  # differences; the update itself is ~1e-2 * |g|.
  chex.assert_trees_all_close(moved, expected, rtol=1e-3, atol=1e-7)


def _ce_reference(logits, labels):
  """Cross-entropy per example from log-softmax, written out."""
  logits = logits - jnp.max(logits, -1, keepdims=True)
  log_p = logits - jnp.log(jnp.sum(jnp.exp(logits), -1, keepdims=True))
  return -jnp.take_along_axis(log_p, labels[:, None], -1)[:, 0]


def _kl_reference(p_logits, q_logits):
  """KL(softmax(p) || softmax(q)) per example, written out."""
  log_p = jax.nn.log_softmax(p_logits)
  log_q = jax.nn.log_softmax(q_logits)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), -1)


def _gradient_of_step(method, state, retain, forget, key, ctx):
  """The gradient a step descended: SGD with learning rate 1 moves the
  parameters by exactly minus the gradient (up to one rounding)."""
  sgd = optax.sgd(1.0)
  state = training.create_train_state(state.params, sgd)
  new, loss = jax.jit(functools.partial(methods.unlearn_step, method=method,
                                        optimizer=sgd))(
                                            state, retain, forget, key, ctx)
  return jax.tree.map(jnp.subtract, state.params, new.params), loss


@pytest.mark.parametrize("name", ["remove_retrain", "control", "finetune"])
def test_the_papers_step_descends_the_weighted_cross_entropy(name):
  """sum(w * CE) / sum(w) over the retain batch, removed examples (weight 0)
  absent: the gradient of the step against one written out here."""
  method = _method(name)
  state, retain, forget, ctx = _problem()
  retain = retain.replace(weights=retain.weights.at[:5].set(0.0))
  key = jax.random.key(5)
  grads, loss = _gradient_of_step(method, state, retain, forget, key, ctx)

  def reference(params):
    ce = _ce_reference(APPLY(params, retain.images), retain.labels)
    return jnp.sum(retain.weights * ce) / jnp.sum(retain.weights)
  value, expected = jax.value_and_grad(reference)(state.params)
  np.testing.assert_allclose(loss, value, rtol=1e-5)
  chex.assert_trees_all_close(grads, expected, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("name", ["neggrad_plus", "scrub"])
def test_ascent_terms_stay_bounded_over_many_steps(name):
  # Mostly ascent, a large learning rate, 300 steps: unbounded ascent would
  # diverge; the capped terms stop at the cap.
  method = _method(name, neggrad_alpha=0.1)
  optimizer = optax.adam(1e-2)
  state, retain, forget, ctx = _problem()
  state = training.create_train_state(state.params, optimizer)
  step = functools.partial(methods.unlearn_step, method=method,
                           optimizer=optimizer)

  @jax.jit
  def run(state):
    def body(state, i):
      state, loss = step(state, retain, forget, jax.random.key(i), ctx)
      return state, loss
    return jax.lax.scan(body, state, jnp.arange(300))
  state, step_losses = run(state)
  assert np.all(np.isfinite(np.asarray(step_losses)))
  assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(state.params))
  logits = APPLY(state.params, forget.images)
  if name == "neggrad_plus":
    # The wrong labels were pushed down to about the cap, not to -inf.
    wrong = np.asarray(optax.softmax_cross_entropy_with_integer_labels(
        logits, forget.predicted))
    assert np.all(np.isfinite(wrong))
    assert np.median(wrong) > 0.5 * CONFIG.ascent_cap
  else:
    kl = float(method.ascent(state.params, forget, jax.random.key(0), ctx))
    assert np.isfinite(kl) and kl <= CONFIG.ascent_cap + 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_every_method_runs_under_vmap_over_seeds(name):
  """Seed 1 of a vmapped step equals the step run alone. SGD, not Adam: the
  comparison is of the gradient step, which does not depend on how each
  program rounds a near-zero gradient (see SGD above)."""
  method = _method(name)
  state, retain, forget, ctx = _problem()
  state = training.create_train_state(state.params, SGD)
  states = jax.tree.map(lambda x: jnp.stack([x, x]), state)
  keys = jax.random.split(jax.random.key(1), 2)
  step = functools.partial(methods.unlearn_step, method=method, optimizer=SGD)
  batched, losses = jax.jit(jax.vmap(step, in_axes=(0, None, None, 0, None)))(
      states, retain, forget, keys, ctx)
  single, loss = jax.jit(step)(state, retain, forget, keys[1], ctx)
  moved_batched = jax.tree.map(lambda a, b: a[1] - b, batched.params,
                               state.params)
  moved_single = jax.tree.map(jnp.subtract, single.params, state.params)
  if method.craft is None:
    chex.assert_trees_all_close(moved_batched, moved_single, rtol=1e-3,
                                atol=1e-7)
  else:
    # The defenses craft their inputs with sign(gradient): where a pixel's
    # gradient is near 0 (TRADES' KL at its start is), the two programs'
    # rounding can flip its sign and move the crafted input, which moves
    # single elements of the step by up to ~16% here; the step as a whole
    # (its norm) stays within a few tenths of a percent.
    flat = lambda t: np.concatenate(
        [np.asarray(x).ravel() for x in jax.tree.leaves(t)])
    a, b = flat(moved_batched), flat(moved_single)
    assert np.linalg.norm(a - b) <= 2e-2 * np.linalg.norm(b)
  np.testing.assert_allclose(losses[1], loss, rtol=1e-5)
  # The two seeds' keys differ, so a step that draws randomness (dropout-free
  # LeNet-5: the defenses' random starts) must not give seed 0's result
  # (identical keys would give identical bits; the losses of this untrained
  # model differ in the fifth digit).
  if method.craft is not None and name != "fgsm_at":
    assert float(losses[0]) != float(losses[1])


def test_saliency_mask_keeps_the_largest_gradients():
  state, _, forget, _ = _problem()
  mask = methods.saliency_mask(APPLY, state.params, forget, 0.5)
  grads = jax.grad(lambda p: methods._ce(APPLY, p, forget.images,
                                         forget.predicted, forget.weights))(
                                             state.params)
  g = np.concatenate([np.abs(np.asarray(x)).ravel()
                      for x in jax.tree.leaves(grads)])
  m = np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(mask)])
  # At most half are kept, fewer only when more than half have no gradient
  # at all (dead units of this random problem: 61% here).
  assert 0 < m.mean() <= 0.5 + 1e-4
  assert g[m == 1].min() >= g[m == 0].max()
  assert np.all(g[m == 1] > 0)
  if m.mean() < 0.5:
    assert np.sum(g > 0) == np.sum(m)


def test_a_masked_step_moves_only_salient_weights():
  method = _method("salun")
  state, retain, forget, ctx = _problem()
  mask = methods.saliency_mask(APPLY, state.params, forget, 0.5)
  new, _ = _step(method)(state, retain, forget, jax.random.key(0),
                         ctx.replace(mask=mask))
  for old, p, m in zip(jax.tree.leaves(state.params),
                       jax.tree.leaves(new.params), jax.tree.leaves(mask)):
    np.testing.assert_array_equal(np.asarray(p)[np.asarray(m) == 0],
                                  np.asarray(old)[np.asarray(m) == 0])


def test_pgd_of_one_plain_step_is_fgsm_and_stays_in_the_ball():
  state, retain, _, _ = _problem()
  params = state.params
  fgsm = attacks.fgsm(APPLY, params, retain.images, retain.labels, 0.1)
  pgd1 = attacks.pgd(APPLY, params, retain.images, retain.labels, 0.1, None,
                     steps=1, step_size=0.1)
  np.testing.assert_array_equal(pgd1, fgsm)
  pgd = attacks.pgd(APPLY, params, retain.images, retain.labels, 0.1,
                    jax.random.key(0), steps=10, step_size=0.03)
  delta = np.asarray(pgd - retain.images)
  assert np.abs(delta).max() <= 0.1 + 1e-6
  assert 0.0 <= float(pgd.min()) and float(pgd.max()) <= 1.0


def test_passes_are_counted_from_the_loop_structure():
  config = dataclasses.replace(CONFIG, retrain_epochs=2, pgd_steps=40,
                               method="control")
  n = 1000
  def passes(name):
    return methods.round_passes(methods.make_method(name, config, None),
                                config, n, n_test=300)
  steps = math.ceil(n / config.batch_size) * config.retrain_epochs
  control = passes("control")
  assert control == {"forward": steps * 128, "backward": steps * 128}
  # The paper's method adds the selection pass: FGSM (1 + 1) and the loss
  # on its output (1 forward) for every training example.
  assert passes("remove_retrain") == {"forward": control["forward"] + 2 * n,
                                      "backward": control["backward"] + n}
  # The paper's Figs. 8-9: the selection pass scores the 300 test examples.
  assert passes("remove_test_indices") == {
      "forward": control["forward"] + 2 * 300,
      "backward": control["backward"] + 300}
  # PGD-40 training: 41 forward and backward passes per training example.
  assert passes("pgd_at")["backward"] == 41 * control["backward"]
  assert passes("fgsm_rs")["backward"] == 2 * control["backward"]
  total = methods.run_passes(config, n, 3)
  assert total["total"]["backward"] == (
      methods.pretrain_passes(config, n)["backward"] + 3 * control["backward"])


def test_unknown_method_is_refused():
  with pytest.raises(ValueError, match="unknown method 'forget_all'"):
    config_lib.get_config("smoke", method="forget_all")


def test_a_zero_distillation_temperature_is_refused():
  with pytest.raises(ValueError, match="scrub_temperature must be > 0"):
    config_lib.get_config("smoke", scrub_temperature=0.0)
