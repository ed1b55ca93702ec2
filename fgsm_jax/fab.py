"""FAB-T (Croce & Hein, ICML 2020): the targeted Fast Adaptive Boundary
attack, L-inf, inputs in [0, 1].

A minimum-norm attack: it walks to the decision boundary between the true
class y and a target class t, keeping the misclassified point closest to the
clean image. Per step, with f = z_t - z_y linearized at the iterate x:

- d1 = the smallest L-inf step from x onto the hyperplane f(x) + g.(z - x) = 0
  inside [0, 1]^d, d2 the same from the clean image x0;
- alpha = min(|d1| / (|d1| + |d2|), alpha_max), x <- clip((x + eta d1)
  (1 - alpha) + (x0 + eta d2) alpha, 0, 1): overshoot by eta and bias toward
  the clean image;
- when x is misclassified (as any class other than y), keep it if it is the
  closest so far and step back toward x0: x <- x0 + beta (x - x0).

An example is broken when a misclassified point within epsilon was found.
No random start (the standard AutoAttack runs FAB-T once per target, from the
clean image). The loop stops early once every attacked example is broken.
"""

from __future__ import annotations

import chex
import flax.struct
import jax
import jax.numpy as jnp

from fgsm_jax.models import ApplyFn, Params

# Halvings of the bracket in `linf_step_to_hyperplane`: [0, 1] down to
# 2^-30, finer than float32's spacing near 1 (2^-24).
BISECTIONS = 30


def linf_step_to_hyperplane(point: jax.Array, w: jax.Array,
                            change: jax.Array) -> jax.Array:
  """The smallest L-inf step d with w.d = change and point + d in [0, 1].

  For one example (flat, [D]). Moving each coordinate by up to lam in the
  direction that raises w.d (sign(w) * sign(change)), capped by its room to
  the box, changes w.d by g(lam) = sum_i |w_i| min(lam, room_i): increasing
  and piecewise linear. Bisection on lam (BISECTIONS halvings of [0, max
  room], elementwise work only: a sort is slow on CPU backends) brackets the
  solution, then the linear piece at the bracket's low end solves it
  exactly. Where no step inside the box reaches the hyperplane, the box's
  farthest corner in that direction.
  """
  sign = jnp.where(change >= 0, 1.0, -1.0).astype(w.dtype)
  w = w * sign
  need = jnp.abs(change)
  room = jnp.where(w > 0, 1.0 - point, point)
  room = jnp.where(w == 0, 0.0, room)
  a = jnp.abs(w)
  reach = lambda lam: jnp.sum(a * jnp.minimum(lam, room))
  top = jnp.max(room)

  def halve(_, bracket):
    lo, hi = bracket
    mid = 0.5 * (lo + hi)
    above = reach(mid) >= need
    return jnp.where(above, lo, mid), jnp.where(above, mid, hi)
  lo, hi = jax.lax.fori_loop(0, BISECTIONS, halve,
                             (jnp.zeros_like(need), top))
  # On (lo, hi], g(lam) = sum_{room <= lo} |w| room + lam sum_{room > lo} |w|.
  free = room > lo
  slope = jnp.sum(jnp.where(free, a, 0.0))
  base = jnp.sum(jnp.where(free, 0.0, a * room))
  lam = jnp.clip((need - base) / jnp.maximum(slope, 1e-12), lo, hi)
  lam = jnp.where(reach(top) >= need, lam, top)
  return jnp.sign(w) * jnp.minimum(lam, room)


@flax.struct.dataclass
class _State:
  """One FAB-T run's per-example state between steps."""
  i: jax.Array
  x: jax.Array
  x_best: jax.Array
  best_norm: jax.Array


def fab_targeted(apply_fn: ApplyFn, params: Params, images: jax.Array,
                 labels: jax.Array, targets: jax.Array, epsilon, *,
                 steps: int = 100, alpha_max: float = 0.1, eta: float = 1.05,
                 beta: float = 0.9, active: jax.Array | None = None,
                 forward_fn: ApplyFn | None = None):
  """One FAB-T run per example (module docstring).

  Args:
    apply_fn, params: the attacked model (inference mode).
    images: float [B, H, W, C] in [0, 1]; labels, targets: int [B].
    epsilon: L-inf radius a found point must be within to count.
    steps: iterations (static); alpha_max, eta, beta: the paper's constants.
    active: bool [B], the examples to attack (default all); the loop stops
      once each of them is broken.
    forward_fn: the same model for the passes without a gradient (is the
      new point misclassified?); default `apply_fn`.

  Returns:
    (correct float [B]: 0.0 where a point within epsilon is misclassified;
    adversarial images [B, ...]: that point, else the clean image).
  """
  chex.assert_rank([images, labels, targets], [4, 1, 1])
  forward_fn = forward_fn or apply_fn
  active = jnp.ones(labels.shape, bool) if active is None else active
  n = labels.shape[0]
  flat = lambda a: a.reshape(n, -1)
  x0 = flat(images)

  def gap_and_grad(x):
    def total(x):
      logits = apply_fn(params, x)
      pick = lambda c: jnp.take_along_axis(logits, c[:, None], -1)[:, 0]
      gap = pick(targets) - pick(labels)
      return jnp.sum(gap), gap
    grad, gap = jax.grad(total, has_aux=True)(x)
    return gap, grad

  step_to = jax.vmap(linf_step_to_hyperplane)

  def body(s):
    gap, grad = gap_and_grad(s.x)
    w, x = flat(grad), flat(s.x)
    d1 = step_to(x, w, -gap)
    d2 = step_to(x0, w, -gap + jnp.sum(w * (x - x0), -1))
    a1 = jnp.maximum(jnp.max(jnp.abs(d1), -1), 1e-8)
    a2 = jnp.maximum(jnp.max(jnp.abs(d2), -1), 1e-8)
    alpha = jnp.clip(a1 / (a1 + a2), 0.0, alpha_max)[:, None]
    x = jnp.clip((x + eta * d1) * (1 - alpha) + (x0 + eta * d2) * alpha,
                 0.0, 1.0)
    wrong = jnp.argmax(forward_fn(params, x.reshape(images.shape)),
                       -1) != labels
    norm = jnp.max(jnp.abs(x - x0), -1)
    closer = wrong & (norm < s.best_norm)
    return _State(
        i=s.i + 1,
        x=jnp.where(wrong[:, None], x0 + beta * (x - x0), x).reshape(
            images.shape),
        x_best=jnp.where(closer[:, None], x, flat(s.x_best)).reshape(
            images.shape),
        best_norm=jnp.where(closer, norm, s.best_norm))

  def running(s):
    return jnp.logical_and(s.i < steps,
                           jnp.any(active & (s.best_norm > epsilon)))

  init = _State(i=jnp.zeros((), jnp.int32), x=images, x_best=images,
                best_norm=jnp.full(labels.shape, jnp.inf, images.dtype))
  out = jax.lax.while_loop(running, body, init)
  found = out.best_norm <= epsilon
  x_adv = jnp.where(found[:, None, None, None], out.x_best, images)
  right = jnp.argmax(forward_fn(params, x_adv), -1) == labels
  return right.astype(jnp.float32), x_adv
