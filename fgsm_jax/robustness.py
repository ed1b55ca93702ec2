"""Robust accuracy that an attack cannot be tuned to inflate, and checks for
gradient masking that return pass/fail with their evidence.

Robust accuracy is per example: the fraction of test examples that no attack
of the suite flips (clean, FGSM with true and with predicted labels, PGD
with restarts, random sign noise, and transfer from other models when
given), not the best attack's average. Every pass is chunked, so memory
is one chunk's whatever the split size.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from fgsm_jax import attacks, evaluation, losses
from fgsm_jax.models import ApplyFn, Params


@dataclasses.dataclass(frozen=True)
class AttackSuite:
  """Attack parameters, written next to every number they produce.

  Defaults follow the evaluation standard the project keeps: PGD with a
  random start, 40 steps of 0.01, 10 restarts; 100 sign-noise draws.
  """
  pgd_steps: int = 40
  pgd_step_size: float = 0.01
  pgd_restarts: int = 10
  noise_draws: int = 100

  def describe(self, epsilon: float) -> dict[str, Any]:
    return {
        "threat_model": "L-inf, inputs in [0, 1], white-box, untargeted",
        "epsilon": float(epsilon),
        "fgsm": "one step of epsilon, true labels",
        "fgsm_predicted": "one step of epsilon, the model's predicted labels",
        "pgd": {"steps": self.pgd_steps, "step_size": self.pgd_step_size,
                "restarts": self.pgd_restarts,
                "start": "uniform in the ball", "labels": "true",
                "kept": "per-example worst over restarts"},
        "noise": {"draws": self.noise_draws,
                  "kept": "per-example worst over draws",
                  "distribution": "uniform signs, size epsilon"},
        "transfer": "PGD (same steps and step size, 1 random start) "
                    "against separately trained source models, crafted once "
                    "and scored on every evaluated model",
    }


def per_example_correct(apply_fn: ApplyFn, params: Params, images: jax.Array,
                        labels: jax.Array, epsilon, key: jax.Array,
                        suite: AttackSuite, chunk_size: int,
                        transfer: dict[str, jax.Array] | None = None):
  """1.0 where the model is right, per attack and per example.

  Args:
    transfer: name -> adversarial test images crafted on another model
      (`transfer_examples`, [N, 28, 28, 1]); the model is scored on them.

  Returns:
    (correct, pgd_trace): correct is a dict attack name -> float [N]:
    'clean', 'fgsm', 'fgsm_predicted', 'pgd' (`pgd_restarts_correct`),
    'noise', and one entry per `transfer` name; pgd_trace [restarts] is
    the PGD accuracy after each restart (flat at the end: more restarts
    would not have found more).
  """
  transfer = transfer or {}

  def chunk(batch):
    x, y, index, crafted = batch
    k = jax.random.fold_in(jax.random.fold_in(key, 0), index[0])
    clean_logits = apply_fn(params, x)
    predicted = jnp.argmax(clean_logits, -1).astype(y.dtype)
    adv = {
        "fgsm": attacks.fgsm(apply_fn, params, x, y, epsilon),
        "fgsm_predicted": attacks.fgsm(apply_fn, params, x, predicted, epsilon),
        "noise": attacks.sign_noise(apply_fn, params, x, y, epsilon,
                                    jax.random.fold_in(k, 1),
                                    draws=suite.noise_draws),
        **crafted,
    }
    out = {"clean": losses.per_example_correct(clean_logits, y)}
    for name, x_adv in adv.items():
      out[name] = losses.per_example_correct(apply_fn(params, x_adv), y)
    return out
  out = evaluation.chunked_map(
      chunk, (images, labels, jnp.arange(labels.shape[0]), transfer),
      chunk_size)
  out["pgd"], trace = pgd_restarts_correct(
      apply_fn, params, images, labels, epsilon, jax.random.fold_in(key, 1),
      steps=suite.pgd_steps, step_size=suite.pgd_step_size,
      restarts=suite.pgd_restarts, chunk_size=chunk_size)
  return out, trace


def pgd_restarts_correct(apply_fn: ApplyFn, params: Params,
                         images: jax.Array, labels: jax.Array, epsilon,
                         key: jax.Array, *, steps: int, step_size,
                         restarts: int, chunk_size: int):
  """(correct [N], accuracy after each restart [restarts]): 1.0 where the model is right on the clean input and after each of
  `restarts` PGD runs from random starts: the per-example worst case over
  restarts, as `attacks.pgd_restarts` keeps it, at a fraction of the cost.

  An example that one run flips stays wrong whatever the other runs do, so
  each restart sorts the examples still right to the front and skips
  (`lax.cond`) the chunks that hold none of them: a model PGD breaks costs
  about one run, a robust one `restarts` runs. Every example's start comes
  from its own key (fold_in(fold_in(key, restart), example index)), so the
  result does not depend on the order. Skipping needs real branches, and
  under `vmap` `lax.cond` runs both: call it once per model (the result is
  the same either way, only slower).
  """
  n = labels.shape[0]
  index = jnp.arange(n)

  def clean_chunk(batch):
    x, y = batch
    return losses.per_example_correct(apply_fn(params, x), y)
  clean = evaluation.chunked_map(clean_chunk, (images, labels), chunk_size)

  def restart(correct, r):
    restart_key = jax.random.fold_in(key, r)

    def attack(batch, _):
      x, y, i = batch
      keys = jax.vmap(lambda j: jax.random.fold_in(restart_key, j))(i)
      start = attacks.uniform_start(x, epsilon, keys)
      x_adv = attacks.pgd_from(apply_fn, params, x, y, epsilon, start,
                               steps=steps, step_size=step_size)
      return losses.per_example_correct(apply_fn(params, x_adv), y)
    correct = evaluation.still_right_pass(attack, correct,
                                          (images, labels, index), chunk_size)
    return correct, jnp.mean(correct)
  return jax.lax.scan(restart, clean, jnp.arange(restarts))


def transfer_examples(source_apply: ApplyFn, source_params: Params,
                      images: jax.Array, labels: jax.Array, epsilon,
                      key: jax.Array, suite: AttackSuite,
                      chunk_size: int) -> jax.Array:
  """PGD test images crafted on a source model (the suite's steps and step
  size, one random start), once, for every evaluated model to be scored on."""
  def chunk(batch):
    x, y, index = batch
    return attacks.pgd(source_apply, source_params, x, y, epsilon,
                       jax.random.fold_in(key, index[0]),
                       steps=suite.pgd_steps, step_size=suite.pgd_step_size)
  return evaluation.chunked_map(
      chunk, (images, labels, jnp.arange(labels.shape[0])), chunk_size)


def robust_accuracy(correct: dict[str, Any]) -> dict[str, float]:
  """Each attack's accuracy and 'robust': the fraction right under all."""
  correct = {k: np.asarray(v) for k, v in correct.items()}
  out = {k: float(v.mean()) for k, v in correct.items()}
  out["robust"] = float(np.prod(np.stack(list(correct.values())), 0).mean())
  return out


def accuracy_sweep(apply_fn: ApplyFn, params: Params, images: jax.Array,
                   labels: jax.Array, epsilons: jax.Array, key: jax.Array,
                   chunk_size: int, attack: Callable | None = None):
  """Accuracy under `attack` at every epsilon, as one `vmap` over epsilon.

  attack(apply_fn, params, x, y, epsilon, key) -> adversarial x; default
  PGD of 10 steps of 2.5 eps / 10 from a random start (the step scales with
  epsilon, so large radii are reached).
  """
  if attack is None:
    def attack(apply_fn, params, x, y, eps, key):
      return attacks.pgd(apply_fn, params, x, y, eps, key, steps=10,
                         step_size=0.25 * eps)

  def at(eps):
    def chunk(batch):
      x, y, index = batch
      x_adv = attack(apply_fn, params, x, y, eps,
                     jax.random.fold_in(key, index[0]))
      return losses.per_example_correct(apply_fn(params, x_adv), y)
    return jnp.mean(evaluation.chunked_map(
        chunk, (images, labels, jnp.arange(labels.shape[0])), chunk_size))
  return jax.vmap(at)(jnp.asarray(epsilons, jnp.float32))


def zero_gradient_fraction(apply_fn: ApplyFn, params: Params,
                           images: jax.Array, labels: jax.Array,
                           chunk_size: int) -> jax.Array:
  """Fraction of examples whose input gradient of the loss is exactly 0."""
  def chunk(batch):
    x, y = batch
    grad, _ = attacks.input_gradient(apply_fn, params, x, y)
    return jnp.all(grad.reshape(grad.shape[0], -1) == 0, axis=1).astype(
        jnp.float32)
  return jnp.mean(evaluation.chunked_map(chunk, (images, labels), chunk_size))


def masking_checks(correct: dict[str, Any], epsilons, sweep_accuracy,
                   zero_gradients: float, tolerance: float = 0.01,
                   chance: float = 0.1,
                   square_only: float | None = None) -> list[dict[str, Any]]:
  """The red flags of gradient masking, each as pass/fail with its evidence.

  Args:
    correct: `per_example_correct`'s output (numpy or jax arrays).
    epsilons, sweep_accuracy: an `accuracy_sweep` from 0 up to about 0.5.
    zero_gradients: `zero_gradient_fraction`.
    tolerance: slack for attack noise, as a fraction of the test set.
    chance: accuracy regarded as "about zero" at the largest epsilon.
    square_only: the fraction of examples AutoAttack's Square (black-box)
      broke after its white-box attacks (APGD-CE, APGD-T, FAB-T) had left
      them right, when Square ran: above `tolerance`, the gradients mislead.
  """
  c = {k: np.asarray(v, bool) for k, v in correct.items()}
  checks = []

  def add(name, passed, **evidence):
    checks.append({"check": name, "passed": bool(passed), "evidence": evidence})

  fgsm_only = float(np.mean(~c["fgsm"] & c["pgd"]))
  add("fgsm_not_stronger_than_pgd",
      c["pgd"].mean() <= c["fgsm"].mean() and fgsm_only <= tolerance,
      fgsm_accuracy=float(c["fgsm"].mean()),
      pgd_accuracy=float(c["pgd"].mean()),
      flipped_by_fgsm_not_pgd=fgsm_only)
  white_box = c["fgsm"] & c["pgd"]
  for name in sorted(c):
    if name == "noise" or name.startswith("transfer"):
      only = float(np.mean(~c[name] & white_box))
      add(f"{name}_not_stronger_than_white_box",
          c[name].mean() >= white_box.mean() - tolerance and only <= tolerance,
          attack_accuracy=float(c[name].mean()),
          white_box_accuracy=float(white_box.mean()),
          flipped_by_it_not_white_box=only)
  if square_only is not None:
    add("square_not_stronger_than_white_box", square_only <= tolerance,
        broken_by_square_after_white_box=float(square_only))
  eps = np.asarray(epsilons, float)
  acc = np.asarray(sweep_accuracy, float)
  rises = float(np.max(np.diff(acc), initial=0.0))
  add("accuracy_falls_with_epsilon", rises <= tolerance,
      epsilons=eps.tolist(), accuracy=acc.tolist(), largest_rise=rises)
  add("accuracy_near_zero_at_large_epsilon", acc[-1] <= chance,
      epsilon=float(eps[-1]), accuracy=float(acc[-1]), threshold=chance)
  add("few_zero_input_gradients", zero_gradients <= tolerance,
      fraction_of_examples=float(zero_gradients))
  return checks


def stale_check(white_box: float, stale: float,
                tolerance: float = 0.01) -> dict[str, Any]:
  """What a stale evaluation would claim: accuracy on FGSM examples crafted
  against an earlier model (`stale`) above FGSM against the model itself
  (`white_box`) is transfer, not robustness; fails if the gap exceeds
  `tolerance`."""
  return {"check": "stale_fgsm_not_above_white_box",
          "passed": bool(stale - white_box <= tolerance),
          "evidence": {"white_box_fgsm_accuracy": float(white_box),
                       "stale_fgsm_accuracy": float(stale),
                       "stale_minus_white_box": float(stale - white_box)}}
