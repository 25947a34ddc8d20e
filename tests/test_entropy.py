"""The learned entropy model: its rate is the exact information content under the frozen tables."""

import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stae_jax.coding import tables as tables_lib
from stae_jax.models.entropy import FactorizedPrior, lower_bound, mask_bits, quantize


@pytest.fixture(scope="module")
def prior():
  model = FactorizedPrior(5, rngs=nnx.Rngs(3), init_scale=4.0)
  # Perturb away from the symmetric initialisation so channels differ and factors matter.
  rng = np.random.default_rng(7)
  perturbed = jax.tree.map(
      lambda v: jnp.asarray(np.asarray(v) + 0.3 * rng.standard_normal(v.shape).astype(np.float32)),
      nnx.state(model, nnx.Param))
  nnx.update(model, perturbed)
  return model


def test_cdf_is_monotone_float32_and_in_unit_interval(prior):
  x = jnp.linspace(-200, 200, 2001)[:, None] * jnp.ones((1, 5))
  cdf = prior.cdf(x.astype(jnp.bfloat16))
  assert cdf.dtype == jnp.float32
  assert bool(jnp.all(jnp.diff(prior.cdf(x), axis=0) >= 0))
  assert float(cdf.min()) >= 0 and float(cdf.max()) <= 1
  assert float(prior.cdf(jnp.full((1, 5), -1e4)).max()) < 1e-6
  assert float(prior.cdf(jnp.full((1, 5), 1e4)).min()) > 1 - 1e-6


def test_likelihoods_over_support_sum_to_one(prior):
  lower, upper = prior.support(1e-9)
  assert lower.shape == upper.shape == (5,) and (lower < upper).all()
  values = np.arange(lower.min(), upper.max() + 1)[:, None] * np.ones((1, 5))
  inside = (values >= lower) & (values <= upper)
  mass = np.where(inside, np.asarray(prior.likelihood(jnp.asarray(values, jnp.float32))), 0)
  np.testing.assert_allclose(mass.sum(axis=0), 1.0, atol=1e-5)
  # A narrower support loses about its tail mass.
  lower_1, upper_1 = prior.support(0.1)
  assert (lower_1 >= lower).all() and (upper_1 <= upper).all()


def test_rate_equals_information_content_under_frozen_tables(prior):
  tables = tables_lib.freeze(prior)
  y = jax.random.normal(jax.random.key(0), (6, 7, 5)) * 6.0
  y_rate, y_decoder = quantize(y, training=False)
  np.testing.assert_array_equal(np.asarray(y_rate), np.asarray(y_decoder))
  latents = np.asarray(y_decoder).astype(np.int32)
  assert ((latents >= tables.lower) & (latents <= tables.upper)).all()
  model_bits = np.asarray(prior.bits(y_rate), np.float64)
  table_bits = tables.information_content(latents)
  # float32 model vs float64 tables: the same density, so agreement to float32 precision.
  np.testing.assert_allclose(model_bits, table_bits, rtol=1e-4, atol=2e-4)
  table_probability = tables.probabilities[np.arange(5), latents - tables.lower]
  np.testing.assert_allclose(model_bits, -np.log2(table_probability), rtol=1e-4, atol=2e-4)


def test_bfloat16_input_gives_float32_rate(prior):
  y = jnp.round(jax.random.normal(jax.random.key(1), (4, 5)) * 5)
  bits_bf16 = prior.bits(y.astype(jnp.bfloat16))
  assert bits_bf16.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(bits_bf16), np.asarray(prior.bits(y)))
  y_rate, y_decoder = quantize(y.astype(jnp.bfloat16) * 37, training=True, rng=jax.random.key(2))
  assert y_rate.dtype == jnp.float32 and y_decoder.dtype == jnp.bfloat16


def test_quantize_training_noise_and_straight_through():
  y = jnp.linspace(-3.7, 4.2, 101)
  y_rate, y_decoder = quantize(y, training=True, rng=jax.random.key(0))
  noise = np.asarray(y_rate - y)
  assert np.abs(noise).max() <= 0.5 and noise.std() > 0.2
  np.testing.assert_array_equal(np.asarray(y_decoder), np.round(np.asarray(y)))
  grad = jax.grad(lambda v: quantize(v, training=True, rng=jax.random.key(0))[1].sum())(y)
  np.testing.assert_array_equal(np.asarray(grad), 1.0)
  with pytest.raises(ValueError, match="rng"):
    quantize(y, training=True)


def test_gradients_are_finite_even_far_in_the_tails(prior):
  graphdef, params = nnx.split(prior)

  @jax.jit
  def rate(params, y):
    return nnx.merge(graphdef, params).bits(y).sum()

  y = jnp.array([[0.0, 3.3, -250.0, 1e4, -1e5]])
  grad_params, grad_y = jax.grad(rate, argnums=(0, 1))(params, y)
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grad_params))
  assert bool(jnp.isfinite(grad_y).all())
  assert float(rate(params, y)) > 0
  # The bound lets gradients through when they push the likelihood back up.
  assert float(jax.grad(lambda x: -jnp.log(lower_bound(x, 1e-9)))(1e-12)) < 0


def test_mask_bits_is_exact_log2_binomial():
  for n, k in [(16, 0), (16, 16), (16, 8), (64, 16), (196, 98), (1568, 700), (5000, 1234)]:
    assert mask_bits(n, k) == math.log2(math.comb(n, k))
  assert mask_bits(0, 0) == 0.0
  with pytest.raises(ValueError, match="0 <= k <= n"):
    mask_bits(4, 5)


def test_channel_mismatch_is_a_clear_error(prior):
  with pytest.raises(ValueError, match="channels"):
    prior.bits(jnp.zeros((3, 4)))
