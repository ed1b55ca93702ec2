"""Forward passes for inputs that change in one square (Square's queries).

A Square query differs from the point it starts from in one square of the
image only, and a convolution's output changes only near its input's
change. A `LocalForward` splits a model's forward pass in three:

  features(params, x) -> f         what is kept between queries
  head(params, f) -> logits        the rest of the network
  update(params, f, x_new, top, left, side) -> f_new
                                   the features of x_new, given the features
                                   f of an image that x_new equals outside
                                   the square of `side` (static) at rows
                                   top.., columns left.. (int [B])

`full(apply_fn)` does this for any model: the features are the image, the
head is the whole network. `lenet(conv_impl)` is the Fig. 3 LeNet's: its
features are the pooled activations [B, 12, 12, 64] (the two convolutions,
88% of its multiply-adds, and the pooling), and `update` recomputes the
window of them the square touches from a patch of the image: for a square of
side 2 or 3 a 4 x 4 window (8 x 8 of the second convolution's 24 x 24
outputs), about a ninth of the convolutions. The dense layers run whole.
Equal to the model's own forward pass up to float rounding (tests).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from fgsm_jax import models
from fgsm_jax.models import ApplyFn, Params


class LocalForward(NamedTuple):
  """A forward pass split for inputs that change in one square (module
  docstring)."""
  features: Callable[[Params, jax.Array], Any]
  head: Callable[[Params, Any], jax.Array]
  update: Callable[..., Any]


def full(apply_fn: ApplyFn) -> LocalForward:
  """Any model, nothing saved: every query is a whole forward pass."""
  return LocalForward(
      features=lambda params, x: x,
      head=lambda params, x: apply_fn(params, x),
      update=lambda params, f, x_new, top, left, side: x_new)


# Two 3x3 'valid' convolutions: an output pixel sees 5 x 5 input pixels, so a
# change in input rows [t, t + s) reaches their output rows [t - 4, t + s).
_HALO = 4


def lenet_window(side: int) -> int:
  """Pooled rows (and columns) `update` recomputes for a square of `side`.

  The outputs [t - 4, t + s) of the convolutions fall in pooled rows
  floor((t - 4) / 2) .. floor((t + s - 1) / 2): at most floor(s / 2) + 3 of
  them, whatever t (near the top, row 0 .. floor(s / 2) + 1 at most)."""
  return side // 2 + _HALO // 2 + 1


def lenet(conv_impl: str = "auto") -> LocalForward:
  """The Fig. 3 LeNet (`models.LeNet`, inference mode) split after its
  pooling; `update` recomputes the pooled window the square touches."""

  def features(params, x):
    a = jax.nn.relu(models.conv_valid(x, params["Conv3x3_0"]["kernel"],
                                      conv_impl) + params["Conv3x3_0"]["bias"])
    a = jax.nn.relu(models.conv_valid(a, params["Conv3x3_1"]["kernel"],
                                      conv_impl) + params["Conv3x3_1"]["bias"])
    return models.max_pool_2x2(a)

  def head(params, f):
    h = jax.nn.relu(f.reshape(f.shape[0], -1) @ params["Dense_0"]["kernel"]
                    + params["Dense_0"]["bias"])
    return h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]

  def update(params, f, x_new, top, left, side):
    window = lenet_window(side)
    if window >= min(f.shape[1], f.shape[2]):
      return features(params, x_new)
    # The window's first pooled row: where the change starts, moved inside.
    row = jnp.clip(jnp.floor_divide(top - _HALO, 2), 0, f.shape[1] - window)
    col = jnp.clip(jnp.floor_divide(left - _HALO, 2), 0, f.shape[2] - window)
    span = 2 * window + _HALO  # The image rows the window's outputs see.
    patches = jax.vmap(lambda x, r, c: jax.lax.dynamic_slice(
        x, (2 * r, 2 * c, 0), (span, span, x.shape[-1])))(x_new, row, col)
    return jax.vmap(lambda f1, new, r, c: jax.lax.dynamic_update_slice(
        f1, new, (r, c, 0)))(f, features(params, patches), row, col)

  return LocalForward(features, head, update)


# The models with a pass that recomputes a window; the others (LeNet-5,
# whose whole pass is already cheap) run `full`.
WINDOWED = {"lenet": lenet}


def for_model(model: str, conv_impl: str = "auto") -> LocalForward:
  """`model`'s local forward pass: its `WINDOWED` one, else `full`."""
  if model in WINDOWED:
    return WINDOWED[model](conv_impl)
  return full(models.make_apply(model, conv_impl))
