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

from fgsm_jax import attacks, config as config_lib, loop, methods, models
from fgsm_jax import training
from fgsm_jax.data import Dataset

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
                                config, n)
  steps = math.ceil(n / config.batch_size) * config.retrain_epochs
  control = passes("control")
  assert control == {"forward": steps * 128, "backward": steps * 128}
  # The paper's method adds the selection pass: FGSM (1 + 1) and the loss
  # on its output (1 forward) for every training example.
  assert passes("remove_retrain") == {"forward": control["forward"] + 2 * n,
                                      "backward": control["backward"] + n}
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


# ---------------------------------------------------------------------------
# The defenses' recipes, against computations written out here from the
# published recipes (not the library's attack or loss helpers).

def _input_gradient_reference(params, loss_of_logits, x):
  return jax.grad(lambda z: jnp.sum(loss_of_logits(APPLY(params, z))))(x)


def _pgd_reference(params, x, loss_of_logits, start, steps, step, eps):
  """Signed ascent steps, each projected on the eps-ball around x and on
  [0, 1]."""
  z = start
  for _ in range(steps):
    g = _input_gradient_reference(params, loss_of_logits, z)
    z = jnp.clip(jnp.clip(z + step * jnp.sign(g), x - eps, x + eps), 0.0, 1.0)
  return z


def _weighted(values, weights):
  return jnp.sum(weights * values) / jnp.sum(weights)


def _recipe(name, params, retain, key, eps):
  """(crafted images, loss(params, crafted)) of defense `name` by its paper:
  FGSM-AT (Goodfellow et al. 2015): 0.5 CE(x) + 0.5 CE(FGSM(x)).
  FGSM-RS (Wong et al. 2020): x + U(-eps, eps), one step of 1.25 eps.
  PGD-AT (Madry et al. 2018): x + U(-eps, eps), `pgd_steps` of `pgd_step_size`.
  TRADES (Zhang et al. 2019): CE(f(x)) + beta KL(f(x) || f(x')), x' from
  x + 0.001 N(0, 1) by signed ascent on that KL.
  `key` is the step's attack key (the step uses fold_in(key, 3))."""
  x, y, w = retain.images, retain.labels, retain.weights
  ce = lambda logits: _ce_reference(logits, y)
  uniform = jnp.clip(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps),
                     0.0, 1.0)
  if name == "fgsm_at":
    adv = jnp.clip(x + eps * jnp.sign(_input_gradient_reference(params, ce, x)),
                   0.0, 1.0)
    return adv, lambda p, a: (0.5 * _weighted(ce(APPLY(p, x)), w)
                              + 0.5 * _weighted(ce(APPLY(p, a)), w))
  if name == "fgsm_rs":
    adv = _pgd_reference(params, x, ce, uniform, 1, 1.25 * eps, eps)
    return adv, lambda p, a: _weighted(ce(APPLY(p, a)), w)
  if name == "pgd_at":
    adv = _pgd_reference(params, x, ce, uniform, CONFIG.pgd_steps,
                         CONFIG.pgd_step_size, eps)
    return adv, lambda p, a: _weighted(ce(APPLY(p, a)), w)
  assert name == "trades"
  clean = APPLY(params, x)
  start = jnp.clip(x + 0.001 * jax.random.normal(key, x.shape, x.dtype), 0, 1)
  adv = _pgd_reference(params, x, lambda logits: _kl_reference(clean, logits),
                       start, CONFIG.pgd_steps, CONFIG.pgd_step_size, eps)
  def loss(p, a):
    natural = APPLY(p, x)
    return _weighted(ce(natural) + CONFIG.trades_beta
                     * _kl_reference(natural, APPLY(p, a)), w)
  return adv, loss


DEFENSES = ["fgsm_at", "fgsm_rs", "pgd_at", "trades"]


def test_the_defenses_defaults_are_the_published_ones():
  c = config_lib.Config()
  assert (c.fgsm_at_alpha, c.fgsm_rs_step) == (0.5, 1.25)
  assert (c.pgd_steps, c.pgd_step_size, c.trades_beta) == (40, 0.01, 6.0)


@pytest.mark.parametrize("name", DEFENSES)
def test_each_defense_follows_its_published_recipe(name):
  method = _method(name)
  state, retain, forget, ctx = _problem(n=32)
  # Trained a little, so the input gradients are not those of a random net.
  for i in range(5):
    state, _ = _step(_method("control"))(state, retain, forget,
                                         jax.random.key(100 + i), ctx)
  key = jax.random.key(11)
  eps = float(ctx.epsilon)
  attack_key = jax.random.fold_in(key, 3)
  crafted = method.craft(state.params, retain, attack_key, ctx)
  expected, loss = _recipe(name, state.params, retain, attack_key, eps)
  # The crafted images: within the ball and [0, 1], and the recipe's pixel
  # for pixel but where a near-zero gradient's sign rounds either way (none
  # here on the machine this was written on; 0.2% = 50 pixels of slack).
  delta = np.asarray(crafted - retain.images)
  assert np.abs(delta).max() <= eps + 1e-6
  assert 0.0 <= float(crafted.min()) and float(crafted.max()) <= 1.0
  differs = np.abs(np.asarray(crafted) - np.asarray(expected)) > 1e-5
  assert differs.mean() <= 2e-3, f"{differs.mean():.2%} of pixels differ"
  # The objective at those images and at images far from the clean ones
  # on a confident network (its last layer scaled up: there KL(p || q) and
  # KL(q || p) differ; near x on this barely trained one both are ~0.003),
  # and the gradient the step descends.
  sharp = jax.tree.map(lambda x: x, state.params)
  sharp["Dense_2"] = jax.tree.map(lambda x: 30.0 * x, sharp["Dense_2"])
  for params, images in ((state.params, crafted), (sharp, 1.0 - retain.images)):
    np.testing.assert_allclose(
        method.loss(params, retain, forget, images, key, ctx),
        loss(params, images), rtol=1e-5)
  grads, _ = _gradient_of_step(method, state, retain, forget, key, ctx)
  reference = jax.grad(loss)(state.params, crafted)
  flat = lambda t: np.concatenate(
      [np.asarray(x).ravel() for x in jax.tree.leaves(t)])
  a, b = flat(grads), flat(reference)
  # The step crafts its images again in its own program (same key): equal
  # but for sign roundings, as above.
  assert np.linalg.norm(a - b) <= 2e-2 * np.linalg.norm(b)


# ---------------------------------------------------------------------------
# Passes counted in what runs: the program traced, the network's layers
# counted. A forward pass of LeNet-5 has one (rows, 84) x (84, 10) product
# (its last layer); a backward pass one (rows, 120) x (120, 400) product (the
# gradient reaching the first dense layer's input, needed for the weights'
# and for the input's gradients alike). Loops count as many times as they
# run (scan length); of a cond's branches the costlier.

def _count_passes(jaxpr, skip_rows=()):
  counts = {"forward": 0, "backward": 0}

  def walk(jaxpr, times, into):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "dot_general":
        (lhs, _), out = [v.aval.shape for v in eqn.invars], eqn.outvars[0].aval.shape
        rows = out[0] if len(out) == 2 else None
        if rows is not None and rows not in skip_rows and lhs[0] == rows:
          if lhs[1:] == (84,) and out[1:] == (10,):
            into["forward"] += rows * times
          elif lhs[1:] == (120,) and out[1:] == (400,):
            into["backward"] += rows * times
      subs = [x.jaxpr if hasattr(x, "jaxpr") else x
              for v in eqn.params.values()
              for x in (v if isinstance(v, (tuple, list)) else [v])
              if hasattr(x, "eqns") or hasattr(getattr(x, "jaxpr", None), "eqns")]
      if eqn.primitive.name == "cond":
        branches = []
        for sub in subs:
          branch = {"forward": 0, "backward": 0}
          walk(sub, times, branch)
          branches.append(branch)
        best = max(branches, key=lambda b: (b["backward"], b["forward"]))
        for k in into:
          into[k] += best[k]
        continue
      # A while loop's body counts once: the rounds loop, one round.
      inner = times * eqn.params.get("length", 1)
      for sub in subs:
        walk(sub, inner, into)
  walk(jaxpr.jaxpr, 1, counts)
  return counts


@pytest.mark.parametrize("name", NAMES)
def test_a_steps_passes_are_what_it_declares(name):
  method = _method(name)
  state, retain, forget, ctx = _problem(n=16, f=8)
  jaxpr = jax.make_jaxpr(functools.partial(
      methods.unlearn_step, method=method, optimizer=OPTIMIZER))(
          state, retain, forget, jax.random.key(0), ctx)  # Epoch 0: ascent.
  declared = [16 * method.retain_passes[i]
              + 8 * method.forget_passes[i] * method.uses_forget
              + 8 * method.ascent_passes[i] * (method.ascent is not None)
              for i in (0, 1)]
  counted = _count_passes(jaxpr)
  assert [counted["forward"], counted["backward"]] == declared


@pytest.mark.parametrize("name", ["remove_retrain", "control", "fgsm_rs",
                                  "pgd_at", "trades", "salun", "scrub"])
def test_a_rounds_passes_are_counted_in_the_round_program(name):
  """One round of the loop, traced: selection pass, forget re-crafting,
  SalUn's mask gradient and every training step, as `round_passes` says.
  The test-set evaluation (20 examples a chunk, skipped) is measurement."""
  config = dataclasses.replace(
      CONFIG, method=name, train_size=96, test_size=20, batch_size=16,
      chunk_size=48, forget_per_round=12, forget_batch_size=4,
      retrain_epochs=2, rounds=1)
  rng = np.random.default_rng(0)
  data = jax.device_put(Dataset(
      rng.random((96, 28, 28, 1), np.float32),
      rng.integers(0, 10, 96).astype(np.int32),
      rng.random((20, 28, 28, 1), np.float32),
      rng.integers(0, 10, 20).astype(np.int32)))
  hp = loop.hparams_from(config)
  pre = jax.eval_shape(lambda k: loop.make_pretrain(config)(k, data, hp),
                       jax.random.key(0))
  segment = loop.make_round_segment(config)
  state = jax.eval_shape(lambda p: loop.init_rounds(config, p, data, hp), pre)
  jaxpr = jax.make_jaxpr(lambda s, p, k: segment(s, k, p, data, hp,
                                                 jnp.int32(1)))(
                                                     state, pre,
                                                     jax.random.key(0))
  counted = _count_passes(jaxpr, skip_rows=(20,))
  method = methods.make_method(name, config, APPLY)
  assert counted == methods.round_passes(method, config, 96)
