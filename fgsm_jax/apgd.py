"""APGD (Croce & Hein, ICML 2020): PGD with momentum and a step size that
halves itself, on the cross-entropy, the DLR loss or the targeted DLR loss.

L-inf, inputs in [0, 1]. One run, per example:

- start at x + eps * t / max|t|, t ~ U(-1, 1)^d (a random point of the ball
  touching its surface), clipped to [0, 1]; step size eta = 2 eps;
- z = P(x_k + eta sign(grad)), x_{k+1} = P(x_k + a (z - x_k) + (1 - a)
  (x_k - x_{k-1})), a = 1 at the first step and 0.75 after (P: projection on
  the ball and [0, 1]);
- at the checkpoints (after 22% of the steps, then at windows shrinking by 3%
  down to 6%: 22, 41, 57, 70, 80, 87, 93, 99 for 100 steps) the step size
  halves and the iterate restarts from the best point found where (1) the
  loss went up in at most rho = 75% of the window's steps, or (2) the step
  was not halved at the previous checkpoint and the best loss has not grown
  since;
- an example counts as broken if any iterate (or the start) is
  misclassified.

The loop stops early once every example it attacks is broken (its outcome
cannot change after that), so a weak model costs a few steps.
"""

from __future__ import annotations

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from fgsm_jax import losses
from fgsm_jax.models import ApplyFn, Params

LOSSES = ("ce", "dlr", "dlr_targeted")
MOMENTUM = 0.75


def checkpoints(steps: int) -> tuple[np.ndarray, np.ndarray]:
  """(is_checkpoint [steps] bool, window [steps] int): after which steps
  (0-based) the step-size conditions are checked, and over how many steps."""
  first = max(int(0.22 * steps), 1)
  shrink = max(int(0.03 * steps), 1)
  shortest = max(int(0.06 * steps), 1)
  is_check = np.zeros(steps, bool)
  window = np.zeros(steps, np.int32)
  i, k = first - 1, first
  while i < steps:
    is_check[i], window[i] = True, k
    k = max(k - shrink, shortest)
    i += k
  return is_check, window


def random_start(images: jax.Array, epsilon, keys: jax.Array) -> jax.Array:
  """clip(x + eps * t / max|t|, 0, 1), t ~ U(-1, 1)^d, one key per example."""
  def one(x, k):
    t = jax.random.uniform(k, x.shape, x.dtype, -1.0, 1.0)
    return x + epsilon * t / (jnp.max(jnp.abs(t)) + 1e-12)
  return jnp.clip(jax.vmap(one)(images, keys), 0.0, 1.0)


def loss_function(loss: str, targets: jax.Array | None):
  """(logits, labels) -> per-example loss [B] to maximize."""
  if loss not in LOSSES:
    raise ValueError(f"unknown APGD loss {loss!r}: one of {LOSSES}")
  if (loss == "dlr_targeted") != (targets is not None):
    raise ValueError("targets go with loss='dlr_targeted' and only with it")
  if loss == "ce":
    return losses.per_example_loss
  if loss == "dlr":
    return losses.dlr_loss
  return lambda logits, labels: losses.targeted_dlr_loss(logits, labels,
                                                         targets)


@flax.struct.dataclass
class _State:
  """One APGD run's per-example state between steps."""
  i: jax.Array
  x: jax.Array
  x_prev: jax.Array
  grad: jax.Array
  loss_prev: jax.Array
  x_best: jax.Array
  grad_best: jax.Array
  loss_best: jax.Array
  correct: jax.Array
  x_adv: jax.Array
  step: jax.Array
  increases: jax.Array
  best_at_check: jax.Array
  halved_at_check: jax.Array


def apgd(apply_fn: ApplyFn, params: Params, images: jax.Array,
         labels: jax.Array, epsilon, keys: jax.Array, *, steps: int = 100,
         loss: str = "ce", targets: jax.Array | None = None,
         rho: float = 0.75, active: jax.Array | None = None):
  """One APGD run per example (module docstring).

  Args:
    apply_fn, params: the attacked model (inference mode).
    images: float [B, H, W, C] in [0, 1]; labels: int [B].
    epsilon: L-inf radius.
    keys: one PRNG key per example [B] (the random start), so an example's
      run does not depend on the others in its batch.
    steps: iterations (static); loss: 'ce', 'dlr' or 'dlr_targeted' (with
      `targets`, int [B]); rho: the oscillation threshold.
    active: bool [B], the examples to attack; the loop stops once none of
      them is right. Default: all.

  Returns:
    (correct float [B]: 1.0 where the start and every iterate are classified
    right; adversarial images [B, ...]: a misclassified iterate where there
    is one, else the clean image; the iterate of highest loss [B, ...]).
    Every image is within epsilon of `images` and in [0, 1].
  """
  chex.assert_rank([images, labels], [4, 1])
  loss_fn = loss_function(loss, targets)
  active = jnp.ones(labels.shape, bool) if active is None else active
  is_check, window = (jnp.asarray(a) for a in checkpoints(steps))

  def value_and_grad(x):
    def total(x):
      logits = apply_fn(params, x)
      per_example = loss_fn(logits, labels)
      return jnp.sum(per_example), (per_example, logits)
    grad, (value, logits) = jax.grad(total, has_aux=True)(x)
    return value, jnp.argmax(logits, -1) == labels, grad

  def project(x):
    return jnp.clip(jnp.clip(x, images - epsilon, images + epsilon), 0.0, 1.0)

  def per_example(mask, a, b):
    return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

  x0 = random_start(images, epsilon, keys)
  loss0, right0, grad0 = value_and_grad(x0)
  init = _State(
      i=jnp.zeros((), jnp.int32), x=x0, x_prev=x0, grad=grad0,
      loss_prev=loss0, x_best=x0, grad_best=grad0, loss_best=loss0,
      correct=right0, x_adv=x0,
      step=jnp.full(labels.shape, 2.0, images.dtype) * epsilon,
      increases=jnp.zeros(labels.shape, jnp.int32), best_at_check=loss0,
      halved_at_check=jnp.ones(labels.shape, bool))

  def running(s):
    return jnp.logical_and(s.i < steps, jnp.any(s.correct & active))

  def body(s):
    a = jnp.where(s.i == 0, 1.0, MOMENTUM).astype(images.dtype)
    z = project(s.x + s.step[:, None, None, None] * jnp.sign(s.grad))
    x = project(s.x + a * (z - s.x) + (1 - a) * (s.x - s.x_prev))
    value, right, grad = value_and_grad(x)
    x_adv = per_example(~right, x, s.x_adv)
    increases = s.increases + (value > s.loss_prev).astype(jnp.int32)
    better = value > s.loss_best
    x_best = per_example(better, x, s.x_best)
    grad_best = per_example(better, grad, s.grad_best)
    loss_best = jnp.where(better, value, s.loss_best)
    check = is_check[s.i]
    oscillating = increases <= window[s.i] * rho
    stalled = ~s.halved_at_check & (s.best_at_check >= loss_best)
    halve = check & (oscillating | stalled)
    return _State(
        i=s.i + 1, x=per_example(halve, x_best, x), x_prev=s.x,
        grad=per_example(halve, grad_best, grad), loss_prev=value,
        x_best=x_best, grad_best=grad_best, loss_best=loss_best,
        correct=s.correct & right, x_adv=x_adv,
        step=jnp.where(halve, s.step / 2, s.step),
        increases=jnp.where(check, 0, increases),
        best_at_check=jnp.where(check, loss_best, s.best_at_check),
        halved_at_check=jnp.where(check, halve, s.halved_at_check))

  out = jax.lax.while_loop(running, body, init)
  return (out.correct.astype(jnp.float32),
          per_example(out.correct, images, out.x_adv), out.x_best)
