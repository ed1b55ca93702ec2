"""Training state and epochs of weighted minibatch steps, all `lax.scan`."""

from __future__ import annotations

import functools
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from fgsm_jax import losses
from fgsm_jax.models import Params


@flax.struct.dataclass
class TrainState:
  params: Params
  opt_state: optax.OptState
  step: jax.Array  # int32, optimizer steps taken


def create_train_state(params: Params,
                       optimizer: optax.GradientTransformation) -> TrainState:
  return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def apply_gradients(state: TrainState, grads,
                    optimizer: optax.GradientTransformation,
                    mask=None) -> TrainState:
  """One optimizer step. `mask` (a params-shaped tree of 0/1, or None) zeroes
  both the gradient and the update of frozen parameters (Adam's momentum
  would otherwise keep moving them)."""
  if mask is not None:
    grads = jax.tree.map(jnp.multiply, grads, mask)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  if mask is not None:
    updates = jax.tree.map(jnp.multiply, updates, mask)
  return TrainState(optax.apply_updates(state.params, updates), opt_state,
                    state.step + 1)


def cyclic_rate(step: jax.Array, total_steps: int, peak: float) -> jax.Array:
  """The triangle of fast adversarial training (Wong et al. 2020): the rate
  at step `step` (from 0) of `total_steps`, rising linearly from 0 to
  `peak` at 2/5 of the steps and back to 0 at the end; as their script, the
  rate of a step is read at the end of it ((step + 1) / total)."""
  t = (jnp.asarray(step, jnp.float32) + 1.0) / total_steps
  return jnp.interp(t, jnp.array([0.0, 0.4, 1.0]),
                    jnp.array([0.0, peak, 0.0], jnp.float32))


def keep_if(cond: jax.Array, new, old):
  """`new` where `cond`, else `old`, leaf by leaf (e.g. skip an empty step)."""
  return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


# (state, images, labels, weights, key) -> (state, loss), e.g.
# `methods.train_step(apply_fn, optimizer)`.
StepFn = Callable


def epoch_batches(key: jax.Array, weights: jax.Array, batch_size: int):
  """A shuffled epoch as fixed-shape index and weight batches.

  Examples of weight > 0 come first in random order, so each is seen once per
  epoch; examples of weight 0 and the padding of the last batch fill the tail
  with weight 0.

  Returns:
    (indices int32 [num_batches, B], weights float [num_batches, B]).
  """
  n = weights.shape[0]
  num_batches = -(-n // batch_size)
  order = jax.random.permutation(key, n)
  order = order[jnp.argsort(weights[order] <= 0, stable=True)]
  pad = num_batches * batch_size - n
  indices = jnp.concatenate([order, order[:pad]])
  batch_weights = jnp.concatenate([weights[order], jnp.zeros(pad, weights.dtype)])
  return (indices.reshape(num_batches, batch_size),
          batch_weights.reshape(num_batches, batch_size))


def train_epoch(state: TrainState, images: jax.Array, labels: jax.Array,
                weights: jax.Array, key: jax.Array, *, step_fn: StepFn,
                batch_size: int):
  """One epoch of `step_fn` over shuffled minibatches (a `lax.scan`).

  Returns:
    (new state, mean of the minibatch losses over batches with examples).
  """
  order_key, step_key = jax.random.split(key)
  batch_indices, batch_weights = epoch_batches(order_key, weights, batch_size)

  def body(state, batch):
    index, idx, w = batch
    state, loss = step_fn(state, images[idx], labels[idx], w,
                          jax.random.fold_in(step_key, index))
    return state, (loss, jnp.sum(w) > 0)

  steps = jnp.arange(batch_indices.shape[0])
  state, (batch_losses, used) = jax.lax.scan(
      body, state, (steps, batch_indices, batch_weights))
  return state, losses.weighted_mean(batch_losses, used.astype(jnp.float32))


def make_train_epoch(step_fn: StepFn, batch_size: int):
  """`train_epoch` jitted, with the incoming state's buffers donated.

  For callers that carry the state between jitted calls (a Python loop of
  epochs, the benchmark): the new state reuses the old one's memory, and the
  donated state must not be used again.
  """
  return jax.jit(functools.partial(train_epoch, step_fn=step_fn,
                                   batch_size=batch_size), donate_argnums=0)
