"""3D-2D CNN decoder: shapes and range, exact pass-through of received pixels, the temporal fill it
starts from, information carried across time into dropped frames, bfloat16 against float32."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import hmdb51, synthetic
from stae_jax.models.decoder import Decoder, SpaceTimeConv, depth_to_space, space_to_depth, temporal_fill

B, T, SIZE = 2, 6, 16


def rngs(seed=0):
  """Parameter keys with the "rbg" PRNG: its kernels compile ~5x faster than threefry's on a CPU,
  and eager initialisation compiles one kernel per parameter shape (seconds per model)."""
  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def inputs(seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  received = jax.random.uniform(k1, (B, T, SIZE, SIZE, 3), jnp.float32, 0, 255)
  mask = (jax.random.uniform(k2, (B, T, SIZE, SIZE, 1)) < 0.4).astype(jnp.float32)
  mask = mask.at[:, 2].set(0.0)  # a dropped frame
  return received * mask, mask


def run(decoder, received, mask):
  graphdef, state = nnx.split(decoder)
  return jax.jit(lambda s, r, m: nnx.merge(graphdef, s)(r, m))(state, received, mask)


def test_shape_range_and_exact_pass_through():
  decoder = Decoder(width=8, rngs=rngs(0))
  received, mask = inputs()
  out = run(decoder, received, mask)
  assert out.shape == received.shape and out.dtype == jnp.float32
  assert float(out.min()) >= 0.0 and float(out.max()) <= 255.0
  kept = np.asarray(mask[..., 0]) > 0
  np.testing.assert_array_equal(np.asarray(out)[kept], np.asarray(received)[kept])  # bit-exact
  # Where nothing was received the prediction is not a constant fill.
  assert float(out[:, 2].std()) > 0


def test_dropped_frame_is_filled_from_its_neighbours():
  """Changing the received content of frame 1 or 3 changes the prediction of dropped frame 2."""
  decoder = Decoder(width=8, temporal_layers=1, rngs=rngs(1))
  received, mask = inputs()
  base = run(decoder, received, mask)
  for neighbour in (1, 3):
    changed = received.at[:, neighbour].set(255.0 * mask[:, neighbour])
    out = run(decoder, changed, mask)
    assert float(jnp.abs(out[:, 2] - base[:, 2]).max()) > 1e-3, neighbour


def test_temporal_fill_interpolates_between_received_frames():
  """One pixel received at t=1 (value 1) and t=5 (value 5): in between the fill is linear in time,
  before the first and after the last it holds the nearest; received pixels are their own fill;
  a place received in no frame is unknown (0)."""
  values = jnp.zeros((1, 8, 1, 2, 1)).at[0, 1, 0, 0].set(1.0).at[0, 5, 0, 0].set(5.0)
  mask = jnp.zeros((1, 8, 1, 2, 1)).at[0, 1, 0, 0].set(1.0).at[0, 5, 0, 0].set(1.0)
  fill, known = jax.jit(temporal_fill)(values, mask)
  np.testing.assert_allclose(fill[0, :, 0, 0, 0], [1, 1, 2, 3, 4, 5, 5, 5], atol=1e-6)
  np.testing.assert_array_equal(known[0, :, 0, 0, 0], np.ones(8))
  np.testing.assert_array_equal(fill[0, :, 0, 1, 0], np.zeros(8))  # never received
  np.testing.assert_array_equal(known[0, :, 0, 1, 0], np.zeros(8))


def test_temporal_fill_gradient_stays_bounded():
  """The interpolation weights take no gradient (a ratio over a vanishing denominator at received
  pixels made the mask's gradient explode in training); values still get theirs."""
  received, mask = inputs()
  values = received / 127.5 - 1.0

  def loss(values, mask):
    fill, _ = temporal_fill(values * mask, mask)
    return jnp.sum(fill ** 2)

  g_values, g_mask = jax.jit(jax.grad(loss, argnums=(0, 1)))(values, mask)
  assert float(jnp.abs(g_values).sum()) > 0
  # Through the gated values alone a mask entry reaches at most T frames x 3 channels of fill
  # (|values| <= 1): |d/dmask| <= 2 * T * 3 * 2 = 72 here. The weights' path gave ~1e6.
  assert bool(jnp.isfinite(g_mask).all()) and float(jnp.abs(g_mask).max()) <= 72.0


def test_fresh_decoder_returns_the_temporal_fill():
  """The output layer starts at zero, so an untrained decoder predicts the temporal interpolation
  of what was received (a clip a frozen classifier recognises), not noise."""
  decoder = Decoder(width=8, rngs=rngs(5))
  received, mask = inputs()
  fill, _ = temporal_fill(received / 127.5 - 1.0, mask)
  np.testing.assert_allclose(run(decoder, received, mask), jnp.clip((fill + 1.0) * 127.5, 0, 255),
                             atol=1e-3)


def test_space_to_depth_round_trip():
  x = jax.random.normal(jax.random.key(1), (2, 8, 12, 3))
  cells = space_to_depth(x, 4)
  assert cells.shape == (2, 2, 3, 48)
  np.testing.assert_array_equal(cells[0, 1, 2].reshape(4, 4, 3), x[0, 4:8, 8:12])
  np.testing.assert_array_equal(depth_to_space(cells, 4), x)


def test_gradient_reaches_every_parameter_and_the_mask():
  decoder = Decoder(width=8, rngs=rngs(2))
  # The output layer starts at zero (see test_fresh_decoder_returns_the_temporal_fill), which
  # blocks gradients to the layers below it until its first update; give it that update.
  decoder.out.kernel[...] = 0.01 * jax.random.normal(jax.random.key(7), decoder.out.kernel.shape)
  received, mask = inputs()
  graphdef, params = nnx.split(decoder, nnx.Param)

  def loss(params, mask):
    return jnp.mean(nnx.merge(graphdef, params)(received, mask) ** 2)

  grads, mask_grad = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, mask)
  for path, g in nnx.to_flat_state(grads):
    assert bool(jnp.isfinite(g[...]).all()) and float(jnp.abs(g[...]).sum()) > 0, path
  assert float(jnp.abs(mask_grad).sum()) > 0  # the straight-through selection mask learns


def test_bfloat16_agrees_with_float32():
  f32 = Decoder(width=8, rngs=rngs(3))
  bf16 = Decoder(width=8, dtype=jnp.bfloat16, rngs=rngs(3))
  nnx.update(bf16, nnx.state(f32, nnx.Param))
  received, mask = inputs()
  a, b = run(f32, received, mask), run(bf16, received, mask)
  assert b.dtype == jnp.float32
  np.testing.assert_allclose(b, a, atol=0.03 * 255)
  kept = np.asarray(mask[..., 0]) > 0
  np.testing.assert_array_equal(np.asarray(b)[kept], np.asarray(received)[kept])


@pytest.mark.parametrize("module", [synthetic, hmdb51])
def test_config_sizes(module):
  config = module.get_config(None)
  t, size = config.data.frames, config.data.resolution
  decoder = nnx.eval_shape(lambda: Decoder(**config.systems.stae.model.decoder, rngs=rngs(0)))
  graphdef, state = nnx.split(decoder)
  out = jax.eval_shape(lambda s, r, m: nnx.merge(graphdef, s)(r, m), state,
                       jax.ShapeDtypeStruct((1, t, size, size, 3), jnp.float32),
                       jax.ShapeDtypeStruct((1, t, size, size, 1), jnp.float32))
  assert out.shape == (1, t, size, size, 3) and out.dtype == jnp.float32


def test_bad_shapes_are_explained():
  decoder = Decoder(width=4, rngs=rngs(0))
  with pytest.raises(ValueError, match=r"mask \[B,T,H,W,1\]"):
    decoder(jnp.zeros((1, 2, 8, 8, 3)), jnp.zeros((1, 2, 8, 8, 3)))
  with pytest.raises(ValueError, match="divisible by 8"):
    decoder(jnp.zeros((1, 2, 10, 10, 3)), jnp.zeros((1, 2, 10, 10, 1)))


def test_space_time_conv_is_a_3d_convolution():
  conv = SpaceTimeConv(3, 5, strides=2, rngs=rngs(4))
  x = jax.random.normal(jax.random.key(0), (2, 5, 8, 8, 3))
  kernel = conv.conv.kernel[...].reshape(3, 3, 3, 3, 5).transpose(2, 0, 1, 3, 4)  # [kt,kh,kw,C,O]
  expected = jax.lax.conv_general_dilated(
      x, kernel, (1, 2, 2), ((1, 1), (0, 1), (0, 1)),
      dimension_numbers=("NDHWC", "DHWIO", "NDHWC")) + conv.conv.bias[...]
  np.testing.assert_allclose(conv(x), expected, atol=1e-5)
