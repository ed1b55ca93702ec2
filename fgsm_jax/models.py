"""The paper's two networks (Flax Linen) behind one pure `lenet_apply`.

`lenet` is the paper's Fig. 3 network (the one it trains, ~1.2 M parameters);
`lenet5` its Fig. 4 LeNet-5-like network (~60 k parameters). Both return
logits; the softmax lives in the loss. Keras defaults are kept where the paper
relies on them: 'valid' padding, Glorot-uniform kernels, zero biases.

Convolutions pick their kernel per backend. XLA's CPU convolution is slow to
differentiate with respect to its weights, so on CPU a 3x3 'valid' convolution
is a matmul over the nine shifted views of the input (im2col by slicing) with
a hand-written VJP: the weight gradient is one large matmul over the saved
shifted views, and the input gradient one matmul folded back onto the input.
Max pooling is a reshape and a max with a hand-written VJP too. On GPU/TPU
XLA's native convolution is used. BUILD_NOTES.md has the profile.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

Params = Any
ApplyFn = Callable[..., jax.Array]  # (params, images [B,28,28,1]) -> [B,10]

CONV_IMPLS = ("auto", "shifted_matmul", "xla")


def check_conv_impl(impl: str) -> None:
  """Raises ValueError for an unknown name; touches no JAX backend."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")


def resolve_conv_impl(impl: str) -> str:
  """'auto' becomes 'shifted_matmul' on CPU and 'xla' on accelerators."""
  check_conv_impl(impl)
  if impl == "auto":
    return "shifted_matmul" if jax.default_backend() == "cpu" else "xla"
  return impl


# Passes without a gradient on CPU (e.g. Square's queries): XLA's convolution
# is faster for the Fig. 3 network's wide layers (32 and 64 channels), the
# shifted matmul for LeNet-5's narrow ones (BUILD_NOTES.md, "AutoAttack in
# JAX": speed).
CPU_FORWARD_CONV_IMPL = {"lenet": "xla", "lenet5": "shifted_matmul"}


def resolve_forward_conv_impl(model: str, impl: str = "auto") -> str:
  """The convolution of passes that need no gradient: `impl` if given, else
  per model on CPU (`CPU_FORWARD_CONV_IMPL`) and 'xla' on accelerators."""
  check_conv_impl(impl)
  if impl == "auto" and jax.default_backend() == "cpu":
    return CPU_FORWARD_CONV_IMPL.get(model, "shifted_matmul")
  return resolve_conv_impl(impl)


def _shifted_patches(x: jax.Array, kh: int, kw: int) -> jax.Array:
  """[B, H, W, C] -> [B, H-kh+1, W-kw+1, kh*kw*C], ordered like a HWIO kernel."""
  out_h, out_w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  return jnp.concatenate(
      [x[:, i:i + out_h, j:j + out_w, :] for i in range(kh) for j in range(kw)],
      axis=-1)


@jax.custom_vjp
def conv_valid_shifted(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """A stride-1 'valid' convolution as one matmul over shifted views.

  Args:
    x: [B, H, W, C].
    kernel: [kh, kw, C, O].

  Returns:
    [B, H - kh + 1, W - kw + 1, O], equal to `lax.conv_general_dilated` with
    'VALID' padding up to float rounding, and so are its gradients (tests).
    Reverse mode only (a custom VJP): `jax.jvp` through it is an error.
  """
  return _conv_shifted_fwd(x, kernel)[0]


def _conv_shifted_fwd(x, kernel):
  kh, kw, c, o = kernel.shape
  patches = _shifted_patches(x, kh, kw)
  return patches @ kernel.reshape(kh * kw * c, o), (patches, kernel)


def _conv_shifted_bwd(residuals, dy):
  patches, kernel = residuals
  kh, kw, c, o = kernel.shape
  dy_rows = dy.reshape(-1, o)
  # Weight gradient: [O, rows] @ [rows, kh*kw*C], one matmul.
  d_kernel = (dy_rows.T @ patches.reshape(-1, kh * kw * c)).T
  # Input gradient: the patches' gradient, one matmul, folded back onto the
  # input as a sum of the shifted views' shares, each padded into place
  # (one fused elementwise pass; in-place `.at[].add` updates were slower).
  d_patches = (dy_rows @ kernel.reshape(kh * kw * c, o).T).reshape(
      *dy.shape[:3], kh * kw, c)
  dx = sum(jnp.pad(d_patches[..., i * kw + j, :],
                   ((0, 0), (i, kh - 1 - i), (j, kw - 1 - j), (0, 0)))
           for i in range(kh) for j in range(kw))
  return dx, d_kernel.reshape(kernel.shape)


conv_valid_shifted.defvjp(_conv_shifted_fwd, _conv_shifted_bwd)


class Conv3x3(nn.Module):
  """A 3x3 'valid' convolution with a per-backend kernel (see module doc)."""
  features: int
  impl: str = "auto"

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.glorot_uniform(),
                        (3, 3, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return conv_valid(x, kernel, self.impl) + bias


def conv_valid(x: jax.Array, kernel: jax.Array, impl: str = "auto"):
  """A stride-1 'valid' convolution of [B, H, W, C] by an HWIO kernel with
  `impl`'s kernel (`resolve_conv_impl`); no bias."""
  if resolve_conv_impl(impl) == "shifted_matmul":
    return conv_valid_shifted(x, kernel)
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling, stride 2, of [B, H, W, C] with even H and W.

  A reshape and a max; its gradient goes to every input equal to its window's
  maximum, one elementwise select. `nn.max_pool`'s select-and-scatter
  gradient, and autodiff of the reshape-max (which splits the gradient among
  ties and counts them), are slower on CPU (BUILD_NOTES.md). Without ties the
  gradients are the same (a test); after a ReLU the only likely ties are
  zeros, whose gradient the ReLU discards anyway.
  """
  b, h, w, c = x.shape
  return jnp.max(x.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def _max_pool_fwd(x):
  y = max_pool_2x2(x)
  return y, (x, y)


def _max_pool_bwd(residuals, dy):
  x, y = residuals
  b, h, w, c = x.shape

  def upsample(a):
    a = jnp.broadcast_to(a[:, :, None, :, None, :], (b, h // 2, 2, w // 2, 2, c))
    return a.reshape(b, h, w, c)
  return (jnp.where(x == upsample(y), upsample(dy), 0.0),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


def _dense(features):
  return nn.Dense(features, kernel_init=nn.initializers.glorot_uniform())


class LeNet(nn.Module):
  """Fig. 3: Conv32-Conv64-MaxPool-Drop.25-Dense128-Drop.5-Dense10."""
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(Conv3x3(32, self.conv_impl)(x))
    x = nn.relu(Conv3x3(64, self.conv_impl)(x))
    x = max_pool_2x2(x)
    x = nn.Dropout(0.25, deterministic=not train)(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(_dense(128)(x))
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return _dense(10)(x)


class LeNet5(nn.Module):
  """Fig. 4: Conv6-AvgPool-Conv16-AvgPool-Dense120-Dense84-Dense10."""
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # No dropout in this network.
    x = nn.relu(Conv3x3(6, self.conv_impl)(x))
    x = nn.avg_pool(x, (2, 2), (2, 2))
    x = nn.relu(Conv3x3(16, self.conv_impl)(x))
    x = nn.avg_pool(x, (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(_dense(120)(x))
    x = nn.relu(_dense(84)(x))
    return _dense(10)(x)


MODELS = {"lenet": LeNet, "lenet5": LeNet5}


def get_model(name: str, conv_impl: str = "auto") -> nn.Module:
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
  return MODELS[name](conv_impl=conv_impl)


def init_params(key: jax.Array, model: str = "lenet",
                conv_impl: str = "auto") -> Params:
  """Fresh parameters of `model` for 28x28x1 inputs."""
  module = get_model(model, conv_impl)
  return module.init(key, jnp.zeros((1, 28, 28, 1), jnp.float32))["params"]


def lenet_apply(params: Params, images: jax.Array, *, model: str = "lenet",
                dropout_key: jax.Array | None = None,
                conv_impl: str = "auto") -> jax.Array:
  """Logits of `model` on `images`.

  Args:
    params: the model's parameters (`init_params`).
    images: float32 [B, 28, 28, 1] in [0, 1].
    model: 'lenet' (Fig. 3) or 'lenet5' (Fig. 4).
    dropout_key: a PRNG key switches dropout on (training); None is inference.
    conv_impl: 'auto', 'shifted_matmul' or 'xla' (see `resolve_conv_impl`).

  Returns:
    float32 logits [B, 10].
  """
  chex.assert_rank(images, 4)
  module = get_model(model, conv_impl)
  if dropout_key is None:
    return module.apply({"params": params}, images, train=False)
  return module.apply({"params": params}, images, train=True,
                      rngs={"dropout": dropout_key})


def make_apply(model: str, conv_impl: str = "auto") -> ApplyFn:
  """`lenet_apply` with the architecture fixed: apply(params, x, dropout_key)."""
  get_model(model, conv_impl)  # Fail early on a bad name.
  return functools.partial(lenet_apply, model=model, conv_impl=conv_impl)
