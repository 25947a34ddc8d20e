"""The DeepISC baseline: shapes, its rate is the prior's bits, nested operating points, gradients."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import hmdb51 as hmdb51_config
from stae_jax.models import deepisc as deepisc_lib
from stae_jax.systems import deepisc as deepisc_method
from stae_jax.models import vit as vit_lib

FRAMES, SIZE, TOKENS, CHANNELS = 4, 16, 8, 4


def tiny_config():
  c = ml_collections.ConfigDict()
  c.data = dict(frames=FRAMES, resolution=SIZE)
  c.model = ml_collections.ConfigDict()
  c.model.vit = dict(size="Ti", width=16, depth=1, num_heads=2, tubelet=2, patch=8, num_classes=3,
                     head_init_scale=1.0)
  c.systems = dict(deepisc=dict(method="deepisc", model=dict(deepisc=dict(
      patch=4, width=16, encoder_depth=1, decoder_depth=1, num_heads=2, max_tokens=TOKENS,
      channels=CHANNELS, token_choices=(1, 2, 4, 8)))))
  return c


def build_deepisc(config, rngs):
  return deepisc_method.build(config.systems.deepisc, config.data, rngs=rngs)["deepisc"]


@pytest.fixture(scope="module")
def system():
  """(graph, state, jitted forward) of a tiny DeepISC + ViT."""
  config = tiny_config()
  model = build_deepisc(config, nnx.Rngs(0))
  vit = vit_lib.vit_from_config(config, rngs=nnx.Rngs(1))
  graph, state = nnx.split((model, vit))

  def forward(state, video, rng, num_tokens, training):
    model, vit = nnx.merge(graph, state)
    return deepisc_lib.deepisc_forward(model, vit, video, num_tokens=num_tokens,
                                       training=training, rng=rng)

  jitted = jax.jit(forward, static_argnames=("training",))
  static = jax.jit(forward, static_argnames=("num_tokens", "training"))
  return graph, state, jitted, static


def clip(batch=2, seed=0):
  shape = (batch, FRAMES, SIZE, SIZE, 3)
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


def test_shapes_and_ranges(system):
  _, state, _, static = system
  out = static(state, clip(), None, num_tokens=4, training=False)
  assert out["logits"].shape == (2, 3)
  assert out["reconstruction"].shape == (2, FRAMES, SIZE, SIZE, 3)
  assert out["reconstruction"].dtype == jnp.float32
  assert 0 <= float(out["reconstruction"].min()) and float(out["reconstruction"].max()) <= 255
  assert out["latents"].shape == (2, FRAMES, 4, CHANNELS)
  np.testing.assert_array_equal(out["latents"], np.round(out["latents"]))
  assert set(out["bits"]) == {"payload", "masks", "total"}
  for value in out["bits"].values():
    assert value.shape == (2,)
  np.testing.assert_array_equal(out["bits"]["masks"], 0)
  np.testing.assert_array_equal(out["bits"]["total"], out["bits"]["payload"])
  np.testing.assert_array_equal(out["num_tokens"], [4, 4])


def test_bits_are_the_priors_bits_of_the_sent_latents(system):
  graph, state, _, static = system
  out = static(state, clip(), None, num_tokens=8, training=False)
  latents = np.asarray(out["latents"])
  assert np.abs(latents).max() >= 2  # the rate is over a real spread of integers
  model, _ = nnx.merge(graph, state)
  expected = model.prior.bits(jnp.asarray(latents)).sum(axis=(1, 2, 3))
  np.testing.assert_allclose(out["bits"]["payload"], expected, rtol=1e-6)
  # Latents are the rounded encoder output.
  np.testing.assert_array_equal(latents, np.round(model.encode(clip())))


def test_fewer_tokens_cost_fewer_bits(system):
  _, state, _, static = system
  bits = [np.asarray(static(state, clip(), None, num_tokens=k, training=False)["bits"]["total"])
          for k in (1, 2, 4, 8)]
  for fewer, more in zip(bits, bits[1:]):
    assert np.all(fewer < more)


def test_masked_tokens_give_the_same_result_as_sliced_tokens(system):
  """Training's per-clip masking and evaluation's static slicing are the same operating point."""
  _, state, jitted, static = system
  video = clip()
  sliced = static(state, video, None, num_tokens=2, training=False)
  masked = jitted(state, video, None, jnp.array([2, 2]), training=False)
  np.testing.assert_allclose(masked["reconstruction"], sliced["reconstruction"], atol=1e-3)
  np.testing.assert_allclose(masked["bits"]["total"], sliced["bits"]["total"], rtol=1e-6)
  np.testing.assert_allclose(masked["logits"], sliced["logits"], atol=1e-4)
  np.testing.assert_array_equal(masked["latents"][:, :, 2:], 0)
  # Per-clip counts: clip 0 at 1 token and clip 1 at 8 tokens, in one batch.
  mixed = jitted(state, video, None, jnp.array([1, 8]), training=False)
  for i, k in enumerate((1, 8)):
    alone = static(state, video, None, num_tokens=k, training=False)
    np.testing.assert_allclose(mixed["bits"]["total"][i], alone["bits"]["total"][i], rtol=1e-6)
    np.testing.assert_allclose(mixed["reconstruction"][i], alone["reconstruction"][i], atol=1e-3)


def test_training_draws_token_counts_and_gradients_reach_the_encoder(system):
  graph, state, jitted, _ = system
  video = clip(batch=4)
  labels = jnp.array([0, 1, 2, 0])

  def loss(state, rng):
    out = jitted(state, video, rng, None, training=True)
    log_probs = jax.nn.log_softmax(out["logits"])
    task = -jnp.take_along_axis(log_probs, labels[:, None], axis=1).mean()
    distortion = jnp.mean((out["reconstruction"] - video) ** 2) / 255.0 ** 2
    return out["bits"]["total"].mean() * 1e-3 + distortion + task, out

  grads, out = jax.grad(loss, has_aux=True)(state, jax.random.key(0))
  assert set(np.asarray(out["num_tokens"])) <= {1, 2, 4, 8}
  model_grads, _ = nnx.merge(graph, grads)
  # The learned paths' output layers start at zero: they get gradients at once, the layers behind
  # them from the first update on (here: small random output layers).
  for name in ("to_latent", "to_pixels"):
    assert np.abs(getattr(model_grads, name).kernel[...]).max() > 0, name
  model, vit = nnx.merge(graph, jax.tree.map(jnp.copy, state))  # the fixture's state stays as it is
  rng = np.random.default_rng(0)
  for layer in (model.to_latent, model.to_pixels):
    layer.kernel[...] = jnp.asarray(0.02 * rng.standard_normal(layer.kernel.shape), jnp.float32)
  _, updated = nnx.split((model, vit))
  grads, out = jax.grad(loss, has_aux=True)(updated, jax.random.key(0))
  model_grads, _ = nnx.merge(graph, grads)
  for name in ("patch_embed", "to_latent", "from_latent", "to_pixels"):
    kernel = getattr(model_grads, name).kernel[...]
    assert np.all(np.isfinite(kernel)) and np.abs(kernel).max() > 0, name
  assert np.abs(model_grads.encoder_queries[...]).max() > 0
  assert np.abs(model_grads.prior.matrix_0[...]).max() > 0
  for leaf in jax.tree.leaves(grads):
    assert np.all(np.isfinite(leaf))
  with pytest.raises(ValueError, match="needs rng"):
    jitted(state, video, None, None, training=False)


def test_bad_arguments_are_explained(system):
  graph, state, _, _ = system
  model, vit = nnx.merge(graph, state)
  with pytest.raises(ValueError, match="outside 1..8"):
    deepisc_lib.deepisc_forward(model, vit, clip(), num_tokens=9, training=False, rng=None)
  with pytest.raises(ValueError, match="built for 16x16 frames"):
    model.encode(jnp.zeros((1, FRAMES, 32, 32, 3), jnp.uint8))
  with pytest.raises(ValueError, match="token_choices"):
    deepisc_lib.DeepISC(frame_size=16, patch=4, width=8, encoder_depth=0, decoder_depth=0,
                        num_heads=2, mlp_dim=8, max_tokens=4, channels=2, token_choices=(2, 8),
                        rngs=nnx.Rngs(0))


def test_fresh_codec_sends_patch_colours_coarse_first():
  """A fresh DeepISC is the patch-colour code: all tokens rebuild each patch's mean colour (to the
  code's quantisation), one token the frame's mean colour; its learned parts start at zero."""
  # 16 tokens for the 16 patches of a 16x16 frame: the whole colour grid fits the code.
  model = deepisc_lib.DeepISC(frame_size=SIZE, patch=4, width=16, encoder_depth=1, decoder_depth=1,
                              num_heads=2, mlp_dim=16, max_tokens=16, channels=CHANNELS,
                              token_choices=(1, 16), rngs=nnx.Rngs(0))
  video = clip(batch=2)
  frames = np.asarray(video, np.float32)
  p, g = model.patch, SIZE // model.patch
  patch_means = frames.reshape(2, FRAMES, g, p, g, p, 3).mean(axis=(3, 5))
  rounded = jnp.round(model.encode(video))
  full = np.asarray(model.decode(rounded, 16)).reshape(2, FRAMES, g, p, g, p, 3)
  # Every pixel of a patch gets the patch's mean back, within the code's rounding (step 8 levels,
  # spread over the orthonormal DCT) and the 8-bit clip of the logit base.
  assert np.abs(full - full.mean(axis=(3, 5), keepdims=True)).max() < 1e-3
  assert np.sqrt(np.mean((full.mean(axis=(3, 5)) - patch_means) ** 2)) < 4.0
  one = np.asarray(model.decode(rounded[:, :, :1], 1))
  np.testing.assert_allclose(one.mean(axis=(2, 3)), frames.mean(axis=(2, 3)), atol=4.0)
  assert np.ptp(one, axis=(2, 3)).max() < 1e-3  # one flat colour per frame
  code = deepisc_lib.patch_colour_code((4, 4), 16)
  np.testing.assert_allclose(code.T @ code, np.eye(16), atol=1e-5)  # orthonormal, all kept
  np.testing.assert_allclose(code[:, 0], 0.25)  # the DC column: the mean times sqrt(16)
  assert not deepisc_lib.patch_colour_code((4, 4), 20)[:, 16:].any()
  with pytest.raises(ValueError, match="init_step"):
    deepisc_lib.DeepISC(frame_size=16, patch=4, width=8, encoder_depth=0, decoder_depth=0,
                        num_heads=2, mlp_dim=8, max_tokens=4, channels=2, token_choices=(2,),
                        init_step=0.0, rngs=nnx.Rngs(0))


def test_hmdb51_config_shapes_abstractly():
  config = hmdb51_config.get_config()
  model = nnx.eval_shape(lambda: build_deepisc(config, nnx.Rngs(0)))
  vit = nnx.eval_shape(lambda: vit_lib.vit_from_config(config, rngs=nnx.Rngs(1)))
  graph, state = nnx.split((model, vit))
  video = jax.ShapeDtypeStruct((2, 16, 224, 224, 3), jnp.uint8)

  def forward(state, video):
    model, vit = nnx.merge(graph, state)
    return deepisc_lib.deepisc_forward(model, vit, video, num_tokens=16, training=False, rng=None)

  out = jax.eval_shape(forward, state, video)
  assert out["logits"].shape == (2, 51)
  assert out["reconstruction"].shape == (2, 16, 224, 224, 3)
  assert out["latents"].shape == (2, 16, 16, 32)
