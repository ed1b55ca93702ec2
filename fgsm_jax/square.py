"""The Square attack (Andriushchenko et al., ECCV 2020), L-inf: a random
search that needs the model's scores only, no gradient.

Per example: start from vertical stripes, x + eps * s with one random sign
per column and channel; then, per query, move one random square of side
`size(i)` to a random corner of the ball (+-eps per channel) and keep the
move if it lowers the margin z_y - max_{i != y} z_i. The square's area is
a fraction p of the image, p = p_init (0.8) halved on the schedule of the
reference implementation (after 10, 50, 200, 500, 1000, 2000, 4000, 6000
and 8000 queries). Squares and signs are drawn per example from the
example's own key (the reference draws one square per batch), so the result
does not depend on the batch. The loop stops early once every attacked
example is misclassified.

The queries run in phases of one square side each (a static size), so a
model's `local_forward.LocalForward` can recompute only what the square
touches (the Fig. 3 LeNet's: a few times fewer multiply-adds a query);
by default every query is a whole forward pass.

Gradient masking does not stop it: a model whose input gradient is zero
(or useless) falls to Square where APGD finds nothing.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from fgsm_jax import local_forward as local_forward_lib
from fgsm_jax import losses
from fgsm_jax.models import ApplyFn, Params

# (queries after which p halves again): the reference's p_selection.
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_sizes(queries: int, p_init: float, height: int,
                 width: int) -> np.ndarray:
  """Side of the square at each query (0-based), int [queries]."""
  i = np.arange(queries)
  p = p_init / 2.0 ** np.searchsorted(np.asarray(HALVINGS), i, side="left")
  side = np.maximum(np.round(np.sqrt(p * height * width)).astype(int), 1)
  return np.minimum(side, min(height, width)).astype(np.int32)


def phases(sizes: np.ndarray) -> list[tuple[int, int, int]]:
  """(first query, end, side) of each run of queries with one side."""
  starts = [0] + [i for i in range(1, len(sizes)) if sizes[i] != sizes[i - 1]]
  ends = starts[1:] + [len(sizes)]
  return [(a, b, int(sizes[a])) for a, b in zip(starts, ends)]


@flax.struct.dataclass
class _State:
  """One Square run's per-example state between queries."""
  i: jax.Array
  x_best: jax.Array
  features: Any  # The model's LocalForward features of x_best.
  margin_best: jax.Array


def square(apply_fn: ApplyFn, params: Params, images: jax.Array,
           labels: jax.Array, epsilon, keys: jax.Array, *,
           queries: int = 5000, p_init: float = 0.8,
           active: jax.Array | None = None,
           local_forward: local_forward_lib.LocalForward | None = None):
  """One Square run per example (module docstring).

  Args:
    apply_fn, params: the attacked model (inference mode; scores only).
    images: float [B, H, W, C] in [0, 1]; labels: int [B].
    epsilon: L-inf radius; keys: one PRNG key per example [B].
    queries: queries after the first (static); p_init: the first square's
      share of the image.
    active: bool [B], the examples to attack (default all).
    local_forward: the same model's forward pass split for one-square
      changes (`local_forward.for_model`); default `full(apply_fn)`. The
      final check is `apply_fn`'s.

  Returns:
    (correct float [B], adversarial images [B, ...]: the last accepted point,
    within epsilon of `images` and in [0, 1]).
  """
  chex.assert_rank([images, labels], [4, 1])
  active = jnp.ones(labels.shape, bool) if active is None else active
  model = local_forward or local_forward_lib.full(apply_fn)
  _, height, width, channels = images.shape
  sizes = square_sizes(queries, p_init, height, width)
  rows = jnp.arange(height)[:, None, None]
  cols = jnp.arange(width)[None, :, None]

  def score(features):
    return losses.margin(model.head(params, features), labels)

  def stripes(x, k):
    signs = jax.random.rademacher(k, (1, width, channels), x.dtype)
    return x + epsilon * signs

  start = jnp.clip(jax.vmap(stripes)(images, keys), 0.0, 1.0)

  def propose(x_best, x, k, side):
    k_row, k_col, k_sign = jax.random.split(k, 3)
    top = jax.random.randint(k_row, (), 0, height - side + 1)
    left = jax.random.randint(k_col, (), 0, width - side + 1)
    signs = jax.random.rademacher(k_sign, (1, 1, channels), x.dtype)
    inside = ((rows >= top) & (rows < top + side) & (cols >= left)
              & (cols < left + side))
    moved = x_best + jnp.where(inside, 2.0 * epsilon * signs, 0.0)
    return (jnp.clip(jnp.clip(moved, x - epsilon, x + epsilon), 0.0, 1.0),
            top, left)

  def phase(state, end, side):
    def body(s):
      step_keys = jax.vmap(lambda k: jax.random.fold_in(k, s.i + 1))(keys)
      x_new, top, left = jax.vmap(propose, (0, 0, 0, None))(
          s.x_best, images, step_keys, side)
      features = model.update(params, s.features, x_new, top, left, side)
      margin = score(features)
      accept = (s.margin_best > 0) & (margin < s.margin_best)

      def keep(new, old):
        return jnp.where(accept.reshape((-1,) + (1,) * (new.ndim - 1)),
                         new, old)
      return _State(i=s.i + 1, x_best=keep(x_new, s.x_best),
                    features=jax.tree.map(keep, features, s.features),
                    margin_best=keep(margin, s.margin_best))

    def running(s):
      return jnp.logical_and(s.i < end,
                             jnp.any(active & (s.margin_best > 0)))
    return jax.lax.while_loop(running, body, state)

  features = model.features(params, start)
  state = _State(i=jnp.zeros((), jnp.int32), x_best=start, features=features,
                 margin_best=score(features))
  for _, end, side in phases(sizes):
    state = phase(state, end, side)
  right = jnp.argmax(apply_fn(params, state.x_best), -1) == labels
  return right.astype(jnp.float32), state.x_best
