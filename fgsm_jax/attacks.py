"""FGSM: one signed-gradient step of the cross-entropy, inside [0, 1]."""

import chex
import jax
import jax.numpy as jnp

from fgsm_jax import losses
from fgsm_jax.models import ApplyFn, Params


def input_gradient(apply_fn: ApplyFn, params: Params, images: jax.Array,
                   labels: jax.Array):
  """Gradient of the summed per-example loss w.r.t. the inputs, and the logits.

  Summing (not averaging) keeps each example's gradient equal to the gradient
  of its own loss, whatever the batch size.

  Returns:
    (grad [B, 28, 28, 1], logits [B, 10]) at `images`.
  """
  def total_loss(x):
    logits = apply_fn(params, x)
    return jnp.sum(losses.per_example_loss(logits, labels)), logits
  grad, logits = jax.grad(total_loss, has_aux=True)(images)
  return grad, logits


def fgsm_step(images: jax.Array, grad: jax.Array,
              epsilon: jax.Array | float) -> jax.Array:
  """The FGSM update from a given input gradient: clip(x + eps*sign(g), 0, 1).

  Split out so a pass that already has the gradient (and the clean logits
  that came with it, see `input_gradient`) does not compute it twice.
  """
  return jnp.clip(images + epsilon * jnp.sign(grad), 0.0, 1.0)


def fgsm(apply_fn: ApplyFn, params: Params, images: jax.Array,
         labels: jax.Array, epsilon: jax.Array | float, *,
         targeted: bool = False) -> jax.Array:
  """L-inf FGSM: clip(x + eps * sign(grad_x CE(f(x), y)), 0, 1).

  Args:
    apply_fn: (params, images) -> logits, inference mode.
    params: the attacked model's parameters.
    images: float [B, 28, 28, 1] in [0, 1].
    labels: int [B]: the true labels, or the model's predicted ones (an
      attacker without labels), or with `targeted` the target classes.
    epsilon: the L-inf radius (traced; a sweep is a vmap).
    targeted: step down the loss of `labels` (toward them) instead of up.

  Returns:
    Adversarial images, same shape, in [0, 1], within epsilon of `images`.
  """
  chex.assert_rank([images, labels], [4, 1])
  grad, _ = input_gradient(apply_fn, params, images, labels)
  return fgsm_step(images, -grad if targeted else grad, epsilon)


def kl_divergence(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
  """Per-example KL(softmax(p) || softmax(q)), float [B]."""
  p_log = jax.nn.log_softmax(p_logits)
  return jnp.sum(jnp.exp(p_log) * (p_log - jax.nn.log_softmax(q_logits)), -1)


def pgd(apply_fn: ApplyFn, params: Params, images: jax.Array,
        labels: jax.Array, epsilon: jax.Array | float, key: jax.Array | None,
        *, steps: int, step_size: jax.Array | float, loss_fn=None,
        start: str = "uniform") -> jax.Array:
  """L-inf PGD: `steps` signed-gradient ascent steps, projected on the ball.

  x_0 = x + U(-eps, eps) (random start; `key=None` starts at x), then
  x_{t+1} = clip(proj_eps(x_t + step_size * sign(grad)), 0, 1). With steps=1,
  no random start and step_size = eps this is exactly `fgsm`.

  Args:
    apply_fn, params: the attacked model (inference mode).
    images: float [B, 28, 28, 1] in [0, 1].
    labels: what `loss_fn` compares the logits with: int [B] for the default.
    epsilon: L-inf radius; key: random-start key or None.
    steps: ascent steps (static); step_size: size of each.
    loss_fn: (logits, labels) -> per-example loss [B] to maximize; default
      the cross-entropy.
    start: 'uniform' (U(-eps, eps), Madry et al.) or 'gaussian'
      (0.001 * N(0, 1), TRADES' start for its KL loss, zero-gradient at x).

  Returns:
    Adversarial images within epsilon of `images`, in [0, 1].
  """
  chex.assert_rank(images, 4)
  x = images
  if key is not None:
    if start == "uniform":
      noise = jax.random.uniform(key, images.shape, images.dtype, -epsilon,
                                 epsilon)
    elif start == "gaussian":
      noise = 0.001 * jax.random.normal(key, images.shape, images.dtype)
    else:
      raise ValueError(f"unknown start {start!r}: 'uniform' or 'gaussian'")
    x = jnp.clip(images + noise, 0.0, 1.0)
  return pgd_from(apply_fn, params, images, labels, epsilon, x, steps=steps,
                  step_size=step_size, loss_fn=loss_fn)


def noisy_fgsm(apply_fn: ApplyFn, params: Params, images: jax.Array,
               labels: jax.Array, epsilon: jax.Array | float, key: jax.Array,
               *, noise: float, step: float) -> jax.Array:
  """N-FGSM (de Jorge et al. 2022): FGSM from a noisy point, not projected.

  x_0 = clip(x + U(-noise * eps, noise * eps), 0, 1), then
  clip(x_0 + step * eps * sign(grad_x CE(f(x_0), y)), 0, 1). Unlike
  FGSM-RS there is no projection onto the eps-ball: the result may lie up
  to (noise + step) * eps from `images`. A training attack, not an
  evaluation one (evaluations stay inside the ball).

  Args:
    apply_fn, params: the attacked model (inference mode).
    images: float [B, 28, 28, 1] in [0, 1]; labels: int [B].
    epsilon: the radius both magnitudes are relative to; key: the noise's.
    noise, step: the noise's and the step's magnitudes in units of eps.

  Returns:
    Perturbed images in [0, 1].
  """
  chex.assert_rank([images, labels], [4, 1])
  start = jnp.clip(images + jax.random.uniform(
      key, images.shape, images.dtype, -noise * epsilon, noise * epsilon),
                   0.0, 1.0)
  grad, _ = input_gradient(apply_fn, params, start, labels)
  return fgsm_step(start, grad, step * epsilon)


def pgd_from(apply_fn: ApplyFn, params: Params, images: jax.Array,
             labels: jax.Array, epsilon, start: jax.Array, *, steps: int,
             step_size, loss_fn=None) -> jax.Array:
  """`pgd`'s ascent steps from a given start (in the ball around `images`)."""
  loss_fn = loss_fn or losses.per_example_loss

  def total_loss(x):
    return jnp.sum(loss_fn(apply_fn(params, x), labels))

  def body(_, x):
    x = x + step_size * jnp.sign(jax.grad(total_loss)(x))
    return jnp.clip(jnp.clip(x, images - epsilon, images + epsilon), 0.0, 1.0)
  return jax.lax.fori_loop(0, steps, body, start)


def uniform_start(images: jax.Array, epsilon, keys: jax.Array) -> jax.Array:
  """clip(x + U(-eps, eps)) with one key per example, so an example's start
  does not depend on which other examples share its batch."""
  noise = jax.vmap(lambda k: jax.random.uniform(
      k, images.shape[1:], images.dtype, -epsilon, epsilon))(keys)
  return jnp.clip(images + noise, 0.0, 1.0)


def keep_worst(apply_fn: ApplyFn, params: Params, images: jax.Array,
               labels: jax.Array, keys: jax.Array, attack) -> jax.Array:
  """Per example, the worst of several draws of a random attack.

  attack(key) -> adversarial images; run once per key (a `lax.scan`).
  Per example the kept input is one the model gets wrong if any draw is,
  else the one of highest loss, starting from the clean input. Used for
  PGD restarts and random-noise draws.
  """
  def score(x):
    logits = apply_fn(params, x)
    return (losses.per_example_loss(logits, labels),
            jnp.argmax(logits, -1) != labels)

  def body(best, key):
    best_x, best_loss, best_wrong = best
    x = attack(key)
    loss, wrong = score(x)
    better = jnp.logical_or(
        jnp.logical_and(wrong, ~best_wrong),
        jnp.logical_and(wrong == best_wrong, loss > best_loss))
    pick = better[:, None, None, None]
    return (jnp.where(pick, x, best_x), jnp.where(better, loss, best_loss),
            jnp.where(better, wrong, best_wrong)), None

  (best_x, _, _), _ = jax.lax.scan(body, (images,) + score(images), keys)
  return best_x


def pgd_restarts(apply_fn: ApplyFn, params: Params, images: jax.Array,
                 labels: jax.Array, epsilon, key: jax.Array, *, steps: int,
                 step_size, restarts: int) -> jax.Array:
  """`pgd` from `restarts` random starts, the per-example worst kept."""
  return keep_worst(apply_fn, params, images, labels,
                    jax.random.split(key, restarts),
                    lambda k: pgd(apply_fn, params, images, labels, epsilon, k,
                                  steps=steps, step_size=step_size))


def sign_noise(apply_fn: ApplyFn, params: Params, images: jax.Array,
               labels: jax.Array, epsilon, key: jax.Array, *,
               draws: int) -> jax.Array:
  """Random corners of the L-inf ball, clip(x + eps * s, 0, 1) with s
  uniform in {-1, +1}^d, `draws` of them, the per-example worst kept. Needs
  no gradient: a model it beats more often than white-box attacks masks its
  gradients."""
  def draw(k):
    signs = jax.random.rademacher(k, images.shape, images.dtype)
    return jnp.clip(images + epsilon * signs, 0.0, 1.0)
  return keep_worst(apply_fn, params, images, labels,
                    jax.random.split(key, draws), draw)
