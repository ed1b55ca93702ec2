"""Memory-bounded passes over a whole split: clean, FGSM and stale-FGSM metrics.

Every pass walks the split in fixed-size chunks with `lax.map`, so its memory is
that of one chunk whatever the split size, and it stays inside the caller's
jitted program.
"""

from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp

from fgsm_jax import attacks, losses
from fgsm_jax.models import ApplyFn, Params


def chunked_map(fn: Callable, xs, chunk_size: int):
  """Applies `fn` to `xs` chunk by chunk (`lax.map`), padding the last chunk.

  Args:
    fn: maps a pytree with leading axis `chunk_size` to a pytree with the same
      leading axis (per-example outputs).
    xs: a pytree whose leaves share the leading axis N.
    chunk_size: examples per chunk; bounds memory.

  Returns:
    `fn`'s outputs for all N examples, leading axis N.
  """
  leaves = jax.tree.leaves(xs)
  n = leaves[0].shape[0]
  chunk_size = min(chunk_size, n)
  num_chunks = -(-n // chunk_size)
  pad = num_chunks * chunk_size - n

  def to_chunks(a):
    if pad:
      a = jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)])
    return a.reshape((num_chunks, chunk_size) + a.shape[1:])

  out = jax.lax.map(fn, jax.tree.map(to_chunks, xs))
  return jax.tree.map(
      lambda a: a.reshape((num_chunks * chunk_size,) + a.shape[2:])[:n], out)


def fgsm_pass(apply_fn: ApplyFn, params: Params, images: jax.Array,
              labels: jax.Array, epsilon, chunk_size: int):
  """FGSM against `params` and the per-example loss on the result, fused.

  Args:
    apply_fn, params: the attacked (and scored) model.
    images: float [N, 28, 28, 1]; labels: int [N].
    epsilon: L-inf radius.
    chunk_size: examples per chunk.

  Returns:
    dict with 'loss' [N] and 'correct' [N] on the FGSM images.
  """
  def chunk(batch):
    x, y = batch
    x_adv = attacks.fgsm(apply_fn, params, x, y, epsilon)
    logits = apply_fn(params, x_adv)
    return {"loss": losses.per_example_loss(logits, y),
            "correct": losses.per_example_correct(logits, y)}
  return chunked_map(chunk, (images, labels), chunk_size)


@flax.struct.dataclass
class EvalMetrics:
  """Test-set metrics of one model (scalars, or stacked over rounds/seeds).

  fgsm_*: FGSM crafted against this very model (white-box).
  transfer_*: the FGSM test set crafted against the round-0 model, i.e. what a
    stale evaluation measures.
  """
  clean_accuracy: jax.Array
  clean_loss: jax.Array
  fgsm_accuracy: jax.Array
  fgsm_loss: jax.Array
  transfer_accuracy: jax.Array
  transfer_loss: jax.Array


def evaluate(apply_fn: ApplyFn, params: Params, images: jax.Array,
             labels: jax.Array, stale_adv_images: jax.Array | None, epsilon,
             chunk_size: int):
  """Clean, white-box FGSM and stale-FGSM accuracy and mean loss, one pass.

  Args:
    apply_fn, params: the evaluated model.
    images: clean test images [N, 28, 28, 1]; labels: int [N].
    stale_adv_images: FGSM test images crafted against an earlier model
      [N, 28, 28, 1], or None: then this pass's own FGSM images are the stale
      set of the rounds to come (transfer = white-box) and are returned.
    epsilon: L-inf radius of the white-box FGSM.
    chunk_size: examples per chunk.

  Returns:
    `EvalMetrics`, and with `stale_adv_images=None` also the FGSM images.
  """
  def chunk(batch):
    x, y = batch[:2]
    grad, clean_logits = attacks.input_gradient(apply_fn, params, x, y)
    x_adv = attacks.fgsm_step(x, grad, epsilon)
    adv_logits = apply_fn(params, x_adv)
    stale_logits = adv_logits if len(batch) == 2 else apply_fn(params, batch[2])
    out = {}
    for name, logits in (("clean", clean_logits), ("fgsm", adv_logits),
                         ("transfer", stale_logits)):
      out[name + "_loss"] = losses.per_example_loss(logits, y)
      out[name + "_accuracy"] = losses.per_example_correct(logits, y)
    if len(batch) == 2:
      out["images"] = x_adv
    return out
  inputs = (images, labels)
  if stale_adv_images is not None:
    inputs += (stale_adv_images,)
  per_example = chunked_map(chunk, inputs, chunk_size)
  adv_images = per_example.pop("images", None)
  metrics = EvalMetrics(**{k: jnp.mean(v) for k, v in per_example.items()})
  return metrics if adv_images is None else (metrics, adv_images)


def still_right_pass(attack: Callable, correct: jax.Array, xs,
                     chunk_size: int) -> jax.Array:
  """Runs `attack` on the examples still right only; returns the new correct.

  An example an earlier attack flipped stays wrong whatever later attacks
  do, so the examples still right are sorted to the front and the chunks
  that hold none of them are skipped (`lax.cond`): the pass costs what the
  examples still right cost. Under `vmap` `lax.cond` runs both branches
  (same result, no saving): call it once per model.

  Args:
    attack: (chunk of `xs`, active bool [chunk]) -> correct float [chunk]
      after the attack; it should attack the active examples.
    correct: float [N], 1.0 where the model is still right.
    xs: a pytree of per-example inputs, leading axis N (images, labels, the
      example indices for per-example keys, ...).
    chunk_size: examples per chunk.

  Returns:
    float [N]: `correct` times the attack's outcome.
  """
  order = jnp.argsort(correct == 0, stable=True)  # Still right first.

  def chunk(batch):
    data, right = batch
    return jax.lax.cond(jnp.any(right > 0),
                        lambda _: right * attack(data, right > 0),
                        lambda _: jnp.zeros_like(right), None)
  now = chunked_map(chunk, (jax.tree.map(lambda a: a[order], xs),
                            correct[order]), chunk_size)
  return jnp.zeros_like(correct).at[order].set(now)
