"""The paper's selection: the highest-loss FGSM examples still retained.

`forget_indices` / `select_forget` choose the forget set of a round; what a
round then does with it (the paper removes it: weight 0 from then on, and
keeps training on the rest) is a method's step, `methods.unlearn_step`.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


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
