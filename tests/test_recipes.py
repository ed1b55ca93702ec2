"""Each defense against its published recipe, written out here; and the
forward and backward passes every method declares against what its traced
step and round compute."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgsm_jax import config as config_lib, loop, methods
from fgsm_jax.data import Dataset
from test_methods import (APPLY, CONFIG, NAMES, OPTIMIZER, _ce_reference,
                          _gradient_of_step, _kl_reference, _method, _problem,
                          _step)


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
  N-FGSM (de Jorge et al. 2022): x + U(-2 eps, 2 eps), one step of eps, no
  projection onto the ball.
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
  if name == "nfgsm":
    # De Jorge et al.'s train.py: eta = U(-2 eps, 2 eps), x + eta kept in
    # [0, 1]; delta = eta + eps * sign(grad at x + eta), x + delta kept in
    # [0, 1]; no clamp of delta to the ball (--clip -1).
    eta = jax.random.uniform(key, x.shape, x.dtype, -2 * eps, 2 * eps)
    eta = jnp.clip(x + eta, 0.0, 1.0) - x
    g = _input_gradient_reference(params, ce, x + eta)
    delta = jnp.clip(x + eta + eps * jnp.sign(g), 0.0, 1.0) - x
    return x + delta, lambda p, a: _weighted(ce(APPLY(p, a)), w)
  if name == "gradalign":
    # Andriushchenko & Flammarion's train.py (--attack=fgsm
    # --attack_init=zero): delta = clamp(0 + 1.25 eps sign(g1), -eps, eps),
    # x + delta clamped to [0, 1]; loss = CE(x + delta) + lambda (1 - mean
    # cos(g1, g2)), g1 the input gradient at x (detached), g2 at x + eta,
    # eta = U(-eps, eps) not clamped to [0, 1], differentiated through; the
    # mean over the pairs whose two norms are > 0.
    g1 = _input_gradient_reference(params, ce, x)
    delta = jnp.clip(1.25 * eps * jnp.sign(g1), -eps, eps)
    adv = jnp.clip(x + delta, 0.0, 1.0)
    noisy = x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps)

    def loss(p, a):
      g2 = _input_gradient_reference(p, ce, noisy)
      flat1, flat2 = g1.reshape(len(x), -1), g2.reshape(len(x), -1)
      n1 = jnp.linalg.norm(flat1, axis=1)
      n2 = jnp.linalg.norm(flat2, axis=1)
      keep = np.asarray((n1 > 0) & (n2 > 0) & (w > 0))
      cos = (jnp.sum(flat1[keep] * flat2[keep], axis=1)
             / (n1[keep] * n2[keep]))
      return (_weighted(ce(APPLY(p, a)), w)
              + CONFIG.gradalign_lambda * (1.0 - jnp.mean(cos)))
    return adv, loss
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


DEFENSES = ["fgsm_at", "fgsm_rs", "nfgsm", "gradalign", "pgd_at", "trades"]


def test_the_defenses_defaults_are_the_published_ones():
  c = config_lib.Config()
  assert (c.fgsm_at_alpha, c.fgsm_rs_step) == (0.5, 1.25)
  assert (c.nfgsm_noise, c.nfgsm_step) == (2.0, 1.0)
  assert c.gradalign_lambda == 0.2
  assert (c.pgd_steps, c.pgd_step_size, c.trades_beta) == (40, 0.01, 6.0)


@pytest.mark.parametrize("name", DEFENSES)
def test_each_defense_follows_its_published_recipe(name):
  method = _method(name)
  state, retain, forget, ctx = _problem(n=32)
  # Trained a little, so the input gradients are not those of a random net.
  train = _step(_method("control"))
  for i in range(5):
    state, _ = train(state, retain, forget, jax.random.key(100 + i), ctx)
  key = jax.random.key(11)
  eps = float(ctx.epsilon)
  attack_key = jax.random.fold_in(key, 3)
  crafted = method.craft(state.params, retain, attack_key, ctx)
  expected, loss = _recipe(name, state.params, retain, attack_key, eps)
  # GradAlign's craft also hands its loss the two gradients' points.
  pieces = crafted if isinstance(crafted, dict) else None
  with_images = lambda a: a if pieces is None else {**pieces, "adv": a}
  if name == "gradalign":
    noise = np.asarray(crafted["noisy"] - retain.images)
    assert np.abs(noise).max() <= eps + 1e-6
    assert float(crafted["noisy"].min()) < 0.0  # Not clipped to [0, 1].
    crafted = crafted["adv"]
  # The crafted images: within the ball and [0, 1], and the recipe's pixel
  # for pixel but where a near-zero gradient's sign rounds either way (none
  # here on the machine this was written on; 0.2% = 50 pixels of slack).
  delta = np.asarray(crafted - retain.images)
  # N-FGSM leaves the ball on purpose (noise 2 eps + step eps); the others
  # stay in it.
  reach = 3 * eps if name == "nfgsm" else eps
  assert np.abs(delta).max() <= reach + 1e-6
  if name == "nfgsm":
    assert np.abs(delta).max() > 1.5 * eps  # Not projected.
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
        method.loss(params, retain, forget, with_images(images), key, ctx),
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
                                  "nfgsm", "pgd_at", "trades", "salun",
                                  "scrub"])
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
