import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from fgsm_jax import models


def count(params):
  return sum(x.size for x in jax.tree.leaves(params))


class ModelsTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # Fig. 3: 320 + 18,496 + 9216*128+128 + 1,290 (the Keras mnist_cnn shape).
      ("lenet", "lenet", 1_199_882),
      # Fig. 4: 60 + 880 + 400*120+120 + 120*84+84 + 84*10+10.
      ("lenet5", "lenet5", 60_074),
  )
  def test_parameter_count(self, name, expected):
    params = models.init_params(jax.random.key(0), name)
    self.assertEqual(count(params), expected)

  @parameterized.named_parameters(("lenet", "lenet"), ("lenet5", "lenet5"))
  def test_logits_shape(self, name):
    x = jax.random.uniform(jax.random.key(1), (5, 28, 28, 1))
    params = models.init_params(jax.random.key(0), name)
    chex.assert_shape(models.lenet_apply(params, x, model=name), (5, 10))

  def test_shifted_conv_matches_xla_conv(self):
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (4, 13, 11, 3))
    kernel = jax.random.normal(kw, (3, 3, 3, 7))
    expected = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision="highest")
    got = models.conv_valid_shifted(x, kernel)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

  @parameterized.named_parameters(("3x3", (3, 3)), ("2x4", (2, 4)))
  def test_shifted_conv_gradients_match_xla_conv(self, kernel_hw):
    kx, kw, kd = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(kx, (3, 12, 10, 4))
    kernel = jax.random.normal(kw, (*kernel_hw, 4, 5))

    def reference(x, kernel):
      return jax.lax.conv_general_dilated(
          x, kernel, (1, 1), "VALID",
          dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest")

    out, vjp = jax.vjp(models.conv_valid_shifted, x, kernel)
    ref_out, ref_vjp = jax.vjp(reference, x, kernel)
    dy = jax.random.normal(kd, out.shape)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-4)
    for got, expected in zip(vjp(dy), ref_vjp(dy)):
      chex.assert_equal_shape((got, expected))
      np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)

  @parameterized.named_parameters(("lenet", "lenet"), ("lenet5", "lenet5"))
  def test_impls_agree_on_outputs_and_gradients(self, name):
    x = jax.random.uniform(jax.random.key(1), (6, 28, 28, 1))
    y = jnp.arange(6) % 10
    params = models.init_params(jax.random.key(0), name)

    def loss(p, impl):
      logits = models.lenet_apply(p, x, model=name, conv_impl=impl)
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(6), y])

    for fn in (loss, jax.grad(loss)):
      a = fn(params, "shifted_matmul")
      b = fn(params, "xla")
      chex.assert_trees_all_close(a, b, rtol=2e-3, atol=2e-5)

  @parameterized.named_parameters(("lenet", "lenet"), ("lenet5", "lenet5"))
  def test_impls_agree_on_the_weight_gradient_of_an_input_gradient(self,
                                                                   name):
    """What GradAlign differentiates (double backprop): through the
    hand-written VJPs of the shifted-matmul convolution and the max pool
    as through XLA's own convolution."""
    x = jax.random.uniform(jax.random.key(1), (6, 28, 28, 1))
    v = jax.random.normal(jax.random.key(2), x.shape)
    y = jnp.arange(6) % 10
    params = models.init_params(jax.random.key(0), name)

    def alignment(p, impl):
      def loss(z):
        logits = models.lenet_apply(p, z, model=name, conv_impl=impl)
        return -jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(6), y])
      return jnp.sum(jax.grad(loss)(x) * v)

    a = jax.grad(alignment)(params, "shifted_matmul")
    b = jax.grad(alignment)(params, "xla")
    chex.assert_trees_all_close(a, b, rtol=2e-3, atol=2e-5)
    self.assertGreater(float(jnp.abs(b["Conv3x3_0"]["kernel"]).max()), 1e-4)

  def test_forward_conv_impl(self):
    for model in models.MODELS:
      for impl in ("shifted_matmul", "xla"):
        self.assertEqual(models.resolve_forward_conv_impl(model, impl), impl)
      expected = (models.CPU_FORWARD_CONV_IMPL[model]
                  if jax.default_backend() == "cpu" else "xla")
      self.assertEqual(models.resolve_forward_conv_impl(model), expected)
    with self.assertRaisesRegex(ValueError, "conv_impl must be one of"):
      models.resolve_forward_conv_impl("lenet", "fast")

  def test_max_pool_and_its_gradient_match_flax(self):
    x = jax.random.normal(jax.random.key(0), (3, 24, 24, 5))
    flax_pool = lambda x: nn.max_pool(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(models.max_pool_2x2(x), flax_pool(x))
    dy = jax.random.normal(jax.random.key(1), (3, 12, 12, 5))
    got = jax.vjp(models.max_pool_2x2, x)[1](dy)[0]
    np.testing.assert_array_equal(got, jax.vjp(flax_pool, x)[1](dy)[0])
    self.assertEqual(int(jnp.sum(got != 0)), dy.size)  # One per window.

  def test_dropout_only_with_a_key(self):
    x = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1))
    params = models.init_params(jax.random.key(0), "lenet")
    a = models.lenet_apply(params, x)
    np.testing.assert_array_equal(a, models.lenet_apply(params, x))
    k1, k2 = jax.random.split(jax.random.key(2))
    d1 = models.lenet_apply(params, x, dropout_key=k1)
    self.assertFalse(np.allclose(d1, a))
    self.assertFalse(np.allclose(d1, models.lenet_apply(params, x,
                                                        dropout_key=k2)))
    np.testing.assert_array_equal(
        d1, models.lenet_apply(params, x, dropout_key=k1))

  def test_bad_names_are_errors(self):
    with self.assertRaisesRegex(ValueError, "unknown model"):
      models.init_params(jax.random.key(0), "resnet")
    with self.assertRaisesRegex(ValueError, "conv_impl"):
      models.resolve_conv_impl("cuda")
