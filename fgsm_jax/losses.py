"""Per-example losses and accuracy, shape [B], reduced by the caller: the
cross-entropy, the DLR losses of APGD (untargeted and targeted) and the margin
of the Square attack."""

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


def dlr_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Difference of Logits Ratio (Croce & Hein 2020, eq. 5), float [B].

  -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12), with z_pi1 >= z_pi2 >=
  ... the sorted logits: invariant to shifting and rescaling the logits, so
  a model cannot hide behind their scale. Positive once the example is
  misclassified.
  """
  chex.assert_rank([logits, labels], [2, 1])
  top, _ = jax.lax.top_k(logits, 3)
  return -margin(logits, labels) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr_loss(logits: jax.Array, labels: jax.Array,
                      targets: jax.Array) -> jax.Array:
  """Targeted DLR (Croce & Hein 2020, eq. 6), float [B]:
  -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12). Needs >= 4 classes."""
  chex.assert_rank([logits, labels, targets], [2, 1, 1])
  top, _ = jax.lax.top_k(logits, 4)
  true = jnp.take_along_axis(logits, labels[:, None], -1)[:, 0]
  target = jnp.take_along_axis(logits, targets[:, None], -1)[:, 0]
  return -(true - target) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def margin(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """z_y - max_{i != y} z_i, float [B]: negative iff misclassified (ties
  aside); what the Square attack minimizes."""
  chex.assert_rank([logits, labels], [2, 1])
  true = jnp.take_along_axis(logits, labels[:, None], -1)[:, 0]
  other = jnp.max(jnp.where(jax.nn.one_hot(labels, logits.shape[-1]) > 0,
                            -jnp.inf, logits), -1)
  return true - other
