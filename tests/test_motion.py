"""stae_jax.models.motion: the classifier's motion inputs say which way things moved."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stae_jax.models import motion

SIZE, FRAMES = 32, 8
# Channel positions in motion_features' output (module docstring order).
U, V, CURL, DIV, ANISO = 3 + 3 + 2, 3 + 3 + 3, 3 + 3 + 4, 3 + 3 + 5, 3 + 3 + 6
FINE_CURL = ANISO + 1


def blob_clip(centre, angle=0.0, scale=1.0):
  """An elongated Gaussian blob per frame: centre(t) -> (x, y), angle(t), scale(t)."""
  y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
  frames = []
  for t in range(FRAMES):
    cx, cy = centre(t)
    a, s = angle * t, scale ** t
    dx, dy = x - cx, y - cy
    along, across = dx * np.cos(a) + dy * np.sin(a), -dx * np.sin(a) + dy * np.cos(a)
    frames.append(np.exp(-(along / (5 * s)) ** 2 - (across / (2 * s)) ** 2))
  grey = np.stack(frames)[None, ..., None] * np.ones(3)
  return jnp.asarray(grey * 2.0 - 1.0, jnp.float32)  # [1, T, H, W, 3], normalised-like range


def mean_channel(clip, channel, window=slice(None)):
  """Mean over the inner frames and a window of rows and columns (the whole frame by default)."""
  return float(motion.motion_features(clip)[0, 1:-1, window, window, channel].mean())


#: Where the blob is: a whole frame's mean curl or divergence is ~0 (a circulation/flux over the
#: frame's border, where nothing moves), so those are read over the blob.
BLOB = slice(10, 22)


def test_translation_gives_the_sign_of_the_motion():
  right = blob_clip(lambda t: (10 + t, 16))
  left = blob_clip(lambda t: (22 - t, 16))
  down = blob_clip(lambda t: (16, 10 + t))
  assert mean_channel(right, U) > 0.02 > -0.02 > mean_channel(left, U)
  assert mean_channel(down, V) > 0.02
  # A horizontal motion puts (almost) nothing in the vertical channel, and its energy is
  # horizontal whichever its sign.
  assert abs(mean_channel(right, V)) < 0.2 * mean_channel(right, U)
  assert mean_channel(right, ANISO) > 0.02 and mean_channel(left, ANISO) > 0.02
  assert mean_channel(down, ANISO) < -0.02


def test_rotation_and_expansion_have_signed_fields():
  centre = lambda t: (16, 16)
  clockwise, anticlockwise = blob_clip(centre, angle=0.2), blob_clip(centre, angle=-0.2)
  curl = [mean_channel(c, CURL, BLOB) for c in (clockwise, anticlockwise)]
  assert np.sign(curl[0]) == -np.sign(curl[1]) != 0 and min(map(abs, curl)) > 0.02, curl
  assert abs(mean_channel(clockwise, DIV, BLOB)) < 0.2 * abs(curl[0])
  grow, shrink = blob_clip(centre, scale=1.08), blob_clip(centre, scale=1 / 1.08)
  assert mean_channel(grow, DIV, BLOB) > 0.02 > -0.02 > mean_channel(shrink, DIV, BLOB)
  assert abs(mean_channel(grow, CURL, BLOB)) < 0.2 * mean_channel(grow, DIV, BLOB)


def test_pooled_features_keep_a_full_resolution_curl_and_colour_gated_curls():
  """Channels 13-25: the fine curl, it and the coarse curl times colour, opponent-gated."""
  centre = lambda t: (16, 16)
  clockwise, anticlockwise = blob_clip(centre, angle=0.2), blob_clip(centre, angle=-0.2)
  inner = slice(5, 11)  # the blob's pixels after 2x2 pooling
  fine = [float(motion.motion_features(c, 2)[0, 1:-1, inner, inner, FINE_CURL].mean())
          for c in (clockwise, anticlockwise)]
  assert np.sign(fine[0]) == -np.sign(fine[1]) == np.sign(mean_channel(clockwise, CURL, BLOB))
  assert min(map(abs, fine)) > 0.02, fine
  # Colour-gated copies: each curl times the pooled clip's colour channels.
  colour = clockwise * jnp.asarray([1.0, 0.5, -0.25])
  features = motion.motion_features(colour, 2)
  pooled = motion.average_pool(colour, 2)
  np.testing.assert_allclose(features[..., :3], pooled, atol=1e-6)
  np.testing.assert_allclose(features[..., 14:17], features[..., FINE_CURL:FINE_CURL + 1] * pooled,
                             atol=1e-6)
  np.testing.assert_allclose(features[..., 17:20], features[..., CURL:CURL + 1] * pooled, atol=1e-6)
  # Colour-opponent gates: the fine curl where one channel stands out of the pixel's channel mean
  # by more than OPPONENT_THRESHOLD, +chroma then -chroma (red stands out by up to 1.83 here).
  vivid = clockwise * jnp.asarray([2.5, 0.5, -1.0])
  features = motion.motion_features(vivid, 2)
  pooled = motion.average_pool(vivid, 2)
  chroma = pooled - pooled.mean(axis=-1, keepdims=True)
  gates = jnp.maximum(jnp.concatenate([chroma, -chroma], axis=-1) - motion.OPPONENT_THRESHOLD, 0)
  np.testing.assert_allclose(features[..., 20:26], features[..., FINE_CURL:FINE_CURL + 1] * gates,
                             atol=1e-6)
  assert float(jnp.abs(features[..., 20]).max()) > 0.01  # red, where the blob is bright
  assert float(jnp.abs(features[..., 21]).max()) == 0     # green's chroma stays under 1
  # A grey clip (all channels alike, however bright) opens no gate.
  assert float(jnp.abs(motion.motion_features(clockwise, 2)[..., 20:26]).max()) == 0
  with pytest.raises(ValueError, match="pool=3 must be >= 1 and divide"):
    motion.motion_features(colour, 3)


def test_a_still_clip_has_no_motion_and_the_frames_pass_through():
  still = blob_clip(lambda t: (16, 16))
  features = motion.motion_features(still)
  assert features.shape == (1, FRAMES, SIZE, SIZE, motion.MOTION_CHANNELS)
  np.testing.assert_array_equal(features[..., :3], still)
  np.testing.assert_allclose(features[..., 3:], 0.0, atol=1e-6)
  assert float(jnp.abs(motion.motion_features(still * 50)).max()) <= 50  # tanh-bounded fields


def test_bad_shapes_are_explained():
  with pytest.raises(ValueError, match="at least 2 frames"):
    motion.motion_features(jnp.zeros((1, 1, 8, 8, 3)))
  with pytest.raises(ValueError, match="batch, frames, height, width, 3"):
    motion.motion_features(jnp.zeros((1, 4, 8, 8)))


@pytest.mark.parametrize("offset", [-3, -1, 1, 2, 5])
@pytest.mark.parametrize("axis", [0, 1])
def test_a_shifts_gradient_is_the_adjoint_of_the_shift(offset, axis):
  """`_shift`'s hand-written gradient equals autodiff of the same shift to the bit, the edge that
  is copied several times included (a shift as long as the axis copies it everywhere)."""
  rng = np.random.default_rng(abs(offset) + 10 * axis)
  a = jnp.asarray(rng.normal(size=(6, 5)).astype(np.float32))
  weights = jnp.asarray(rng.normal(size=(6, 5)).astype(np.float32))
  written = jax.grad(lambda v: jnp.sum(motion._shift(v, offset, axis) * weights))(a)
  autodiff = jax.grad(lambda v: jnp.sum(motion._shift_forward(v, offset, axis) * weights))(a)
  np.testing.assert_array_equal(np.asarray(written), np.asarray(autodiff))


def test_the_motion_features_gradient_matches_autodiff(monkeypatch):
  """The features' gradient through the hand-written shifts is autodiff's up to rounding, and the
  features themselves are unchanged to the bit."""
  rng = np.random.default_rng(0)
  clip = jnp.asarray(rng.uniform(-1, 1, (2, 5, 16, 16, 3)).astype(np.float32))
  weights = jnp.asarray(rng.normal(size=(2, 5, 8, 8, motion.MOTION_CHANNELS)).astype(np.float32))
  loss = lambda x: jnp.sum(motion.motion_features(x, pool=2) * weights)
  value, grad = jax.jit(jax.value_and_grad(loss))(clip)
  monkeypatch.setattr(motion, "_shift", motion._shift_forward)
  ref_value, ref_grad = jax.jit(jax.value_and_grad(loss))(clip)
  assert float(value) == float(ref_value)
  assert np.abs(np.asarray(ref_grad)).max() > 1.0  # the gradient is not trivially zero
  np.testing.assert_allclose(np.asarray(grad), np.asarray(ref_grad), rtol=0, atol=1e-4)
