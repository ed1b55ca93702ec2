r"""Times the Fig. 3 LeNet's costly layers, per implementation, on this device.

  python -m experiments.profile_layers [--batch_size=128] [--repeats=7]

Prints the median milliseconds of the forward pass, and of the forward pass
with the weight or the input gradient, of conv2 (32 -> 64 channels, 3x3, on 26x26) for XLA's convolution
and for the shifted-matmul convolution, and of max pooling's gradient for
`nn.max_pool` and the reshape-and-max pooling the models use; and the three
matmul shapes of conv2's shifted-matmul passes beside square matmuls. This is the
evidence behind `conv_impl='auto'` and `max_pool_2x2` (BUILD_NOTES.md). Last, the training throughput of the whole
network, run plainly and under `vmap` over one seed (`loop.vmap_seeds`).
"""

import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from absl import app, flags

from experiments import common

from fgsm_jax import methods, models, training

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 128, "images per call")
flags.DEFINE_integer("repeats", 7, "timed calls per measurement (median)")


def median_ms(fn, *args):
  jax.block_until_ready(fn(*args))  # Compile and warm up.
  times = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


def xla_conv(x, kernel):
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def main(argv):
  del argv
  b = FLAGS.batch_size
  kx, kw = jax.random.split(jax.random.key(0))
  h1 = jax.random.uniform(kx, (b, 26, 26, 32))
  kernel = jax.random.normal(kw, (3, 3, 32, 64)) * 0.05
  print(f"device {jax.devices()[0]}, batch {b}, median of {FLAGS.repeats}")
  for name, conv in (("xla", xla_conv),
                     ("shifted_matmul", models.conv_valid_shifted)):
    def objective(x, w, conv=conv):
      return jnp.sum(conv(x, w) ** 2)
    fwd = median_ms(jax.jit(conv), h1, kernel)
    grad_w = median_ms(jax.jit(jax.grad(objective, argnums=1)), h1, kernel)
    grad_x = median_ms(jax.jit(jax.grad(objective, argnums=0)), h1, kernel)
    print(f"conv2 {name:15s} forward {fwd:6.1f} ms | forward + weight grad "
          f"{grad_w:6.1f} ms | forward + input grad {grad_x:6.1f} ms")
  # The three matmuls of conv2's shifted-matmul forward and backward.
  rows = b * 24 * 24
  for name, (m, k, n) in (("forward  patches @ W", (rows, 288, 64)),
                          ("weight grad dy^T @ patches", (64, rows, 288)),
                          ("input grad dy @ W^T", (rows, 64, 288))):
    a = jax.random.normal(kx, (m, k))
    c = jax.random.normal(kw, (k, n))
    ms = median_ms(jax.jit(lambda a, c: a @ c), a, c)
    print(f"matmul {name:27s} [{m},{k}]x[{k},{n}] {ms:6.1f} ms "
          f"{2 * m * k * n / ms / 1e6:5.0f} GFLOP/s")
  for n in (1024, 2048):
    a = jax.random.normal(kx, (n, n))
    ms = median_ms(jax.jit(lambda a: a @ a), a)
    print(f"matmul square {n:5d}: {ms:6.1f} ms {2 * n**3 / ms / 1e6:5.0f} GFLOP/s")
  h2 = jax.random.uniform(kx, (b, 24, 24, 64))
  for name, pool in (("nn.max_pool", lambda x: nn.max_pool(x, (2, 2), (2, 2))),
                     ("max_pool_2x2", models.max_pool_2x2)):
    fwd = median_ms(jax.jit(pool), h2)
    grad = median_ms(jax.jit(jax.grad(lambda x, pool=pool: jnp.sum(pool(x) ** 2))),
                     h2)
    print(f"maxpool {name:13s} forward {fwd:6.1f} ms | forward + grad "
          f"{grad:6.1f} ms")

  optimizer = optax.adam(1e-3)
  step = methods.train_step(models.make_apply("lenet"), optimizer)
  steps = 10
  images = jax.random.uniform(kx, (steps, b, 28, 28, 1))
  labels = jax.random.randint(kw, (steps, b), 0, 10)

  def train(key):
    state = training.create_train_state(
        models.init_params(key, "lenet"), optimizer)
    def body(state, batch):
      x, y, i = batch
      return step(state, x, y, jnp.ones(b), jax.random.fold_in(key, i))
    return jax.lax.scan(body, state, (images, labels, jnp.arange(steps)))[1]

  keys = jax.random.split(jax.random.key(1), 1)
  plain = median_ms(jax.jit(lambda k: train(k[0])), keys)
  vmapped = median_ms(jax.jit(jax.vmap(train)), keys)
  print(f"lenet training, {steps} steps: plain {steps * b / plain * 1000:6.0f}"
        f" img/s, vmap over 1 seed {steps * b / vmapped * 1000:6.0f} img/s")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
