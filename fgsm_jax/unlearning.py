"""The paper's unlearning: pick the highest-loss FGSM examples, drop them.

`select_forget` chooses the forget set of a round; `unlearn_step` is one
optimizer step of the objective that removes it (weight 0) and keeps training
on the rest.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax

from fgsm_jax import losses, training
from fgsm_jax.models import ApplyFn
from fgsm_jax.training import TrainState


def forget_indices(scores: jax.Array, retained: jax.Array, k: int):
  """Indices of the `k` highest-scoring examples among those still retained.

  Args:
    scores: float [N], e.g. the per-example loss of each training example's
      FGSM version against the current model.
    retained: bool [N], False for examples removed in earlier rounds.
    k: forget-set size (static).

  Returns:
    (indices int32 [k], valid bool [k]): valid is False for slots beyond the
    number of retained examples.
  """
  chex.assert_equal_shape([scores, retained])
  values, indices = jax.lax.top_k(jnp.where(retained, scores, -jnp.inf), k)
  return indices, values > -jnp.inf


def select_forget(scores: jax.Array, retained: jax.Array, k: int) -> jax.Array:
  """`forget_indices` as a mask: bool [N], True for the chosen examples and
  never True where `retained` is False (fewer than k if fewer are retained)."""
  return indices_to_mask(*forget_indices(scores, retained, k),
                         scores.shape[0])


def indices_to_mask(indices: jax.Array, valid: jax.Array, n: int) -> jax.Array:
  """bool [n]: True at the valid ones of `indices`."""
  return jnp.zeros(n, bool).at[indices].set(valid)


def unlearn_step(state: TrainState, images: jax.Array, labels: jax.Array,
                 weights: jax.Array, key: jax.Array, *, apply_fn: ApplyFn,
                 optimizer: optax.GradientTransformation):
  """One step of the paper's unlearning objective: sum(w * CE) / sum(w).

  Removing an example is giving it weight 0 from then on; with all weights 1
  this is plain training, which the initial epochs use.

  A minibatch whose weights are all 0 leaves the state untouched (no Adam step
  on a zero gradient), so examples of weight 0 are exactly absent.

  Args:
    state: current `TrainState`.
    images: [B, 28, 28, 1]; labels: int [B]; weights: float [B] >= 0.
    key: dropout key for this step.
    apply_fn: `lenet_apply` with the model fixed.
    optimizer: the optax transformation that owns `state.opt_state`.

  Returns:
    (new state, the minibatch's weighted mean loss).
  """
  chex.assert_rank([images, labels, weights], [4, 1, 1])
  chex.assert_equal_shape_prefix([images, labels, weights], 1)

  def loss_fn(params):
    logits = apply_fn(params, images, dropout_key=key)
    return losses.weighted_mean(losses.per_example_loss(logits, labels),
                                weights)
  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  stepped = training.apply_gradients(state, grads, optimizer)
  return training.keep_if(jnp.sum(weights) > 0, stepped, state), loss
