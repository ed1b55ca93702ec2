"""Per-example cross-entropy and accuracy: shape [B], reduced by the caller."""

import chex
import jax
import jax.numpy as jnp
import optax


def per_example_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Softmax cross-entropy of integer labels.

  Args:
    logits: float [B, C].
    labels: int [B] in [0, C).

  Returns:
    float [B].
  """
  chex.assert_rank([logits, labels], [2, 1])
  chex.assert_equal_shape_prefix([logits, labels], 1)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def per_example_correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """float [B]: 1.0 where argmax(logits) == label."""
  chex.assert_rank([logits, labels], [2, 1])
  return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  """sum(w * v) / sum(w), and 0 where every weight is 0."""
  chex.assert_equal_shape([values, weights])
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1e-12)
