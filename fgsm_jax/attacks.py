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
         labels: jax.Array, epsilon: jax.Array | float) -> jax.Array:
  """Untargeted L-inf FGSM: clip(x + eps * sign(grad_x CE(f(x), y)), 0, 1).

  Args:
    apply_fn: (params, images) -> logits, inference mode.
    params: the attacked model's parameters.
    images: float [B, 28, 28, 1] in [0, 1].
    labels: int [B], the true labels.
    epsilon: the L-inf radius (traced; a sweep is a vmap).

  Returns:
    Adversarial images, same shape, in [0, 1], within epsilon of `images`.
  """
  chex.assert_rank([images, labels], [4, 1])
  grad, _ = input_gradient(apply_fn, params, images, labels)
  return fgsm_step(images, grad, epsilon)
