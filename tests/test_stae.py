"""STAE encoder: selection counts, shapes at the config sizes, gradients through the selection,
attention switches, random selection, pixel mode, and bfloat16 against float32."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import hmdb51, synthetic
from stae_jax.models import stae as stae_lib
from stae_jax.models.stae import (STAE, comb_mask, comb_table, keep_count, segment_top_mask,
                                  spread_top_k_mask, top_k_mask)

T, SIZE, P = 8, 32, 8  # small clip for most tests: 16 blocks per frame
N = (SIZE // P) ** 2


def rngs(seed=0):
  """Parameter keys with the "rbg" PRNG: its kernels compile ~5x faster than threefry's on a CPU,
  and eager initialisation compiles one kernel per parameter shape (seconds per model)."""
  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def small_stae(**overrides):
  kwargs = dict(block_size=P, latent_channels=4, transform_width=8, frame_pool=2,
                frame_widths=(8, 8, 8), spatial_widths=(8, 8), rngs=rngs(0))
  kwargs.update(overrides)
  return STAE(**kwargs)


def run(model, video, **kwargs):
  """The model's forward under jax.jit: one compile, far cheaper on a CPU than op-by-op dispatch."""
  graphdef, state = nnx.split(model)
  rng = kwargs.pop("rng", None)
  fn = jax.jit(lambda state, video, rng: nnx.merge(graphdef, state)(video, rng=rng, **kwargs))
  return fn(state, video, rng)


def clip(batch=2, frames=T, size=SIZE, seed=0):
  return jax.random.randint(jax.random.key(seed), (batch, frames, size, size, 3), 0, 256,
                            jnp.int32).astype(jnp.uint8)


def test_keep_count_rounds_and_checks():
  assert keep_count(0.5, 16) == 8 and keep_count(0.25, 196) == 49 and keep_count(0.1, 16) == 2
  assert keep_count(0.01, 16) == 1  # never zero: an empty selection has nothing to code
  assert keep_count(1.0, 7) == 7
  with pytest.raises(ValueError, match="keep ratio"):
    keep_count(0.0, 16)
  with pytest.raises(ValueError, match="keep ratio"):
    keep_count(1.5, 16)


def test_blockify_round_trip():
  video = clip(batch=1)
  blocks = stae_lib.blockify(video, P)
  assert blocks.shape == (1, T, N, P, P, 3)
  np.testing.assert_array_equal(blocks[0, 0, 1], video[0, 0, :P, P:2 * P])  # raster order
  np.testing.assert_array_equal(stae_lib.unblockify(blocks, SIZE, SIZE), video)


@pytest.mark.parametrize("training", [False, True])
def test_masks_keep_exactly_k_and_match_indices(training):
  model = small_stae()
  out = run(model, clip(), frame_keep=0.5, block_keep=0.25, training=training,
            rng=jax.random.key(1))
  k_f, k_s = keep_count(0.5, T), keep_count(0.25, N)
  np.testing.assert_array_equal(out["frame_mask"].sum(-1), k_f)
  blocks_kept = np.asarray(out["block_mask"].sum(-1))
  np.testing.assert_array_equal(blocks_kept, np.where(out["frame_mask"], k_s, 0))
  frame_index = np.asarray(out["frame_index"])
  block_index = np.asarray(out["block_index"])
  assert frame_index.shape == (2, k_f) and block_index.shape == (2, k_f, k_s)
  assert (np.diff(frame_index, axis=-1) > 0).all() and (np.diff(block_index, axis=-1) > 0).all()
  for b in range(2):
    np.testing.assert_array_equal(np.flatnonzero(out["frame_mask"][b]), frame_index[b])
    for j, f in enumerate(frame_index[b]):
      np.testing.assert_array_equal(np.flatnonzero(out["block_mask"][b, f]), block_index[b, j])
  assert out["latents"].shape == (2, k_f, k_s, P // 4, P // 4, 4)
  np.testing.assert_array_equal(out["latents"], jnp.round(out["latents"]))
  # Pixels are received exactly where blocks are kept.
  mask = np.asarray(stae_lib.blockify(out["pixel_mask"], P)[..., 0, 0, 0])
  np.testing.assert_array_equal(mask, np.asarray(out["block_mask"], np.float32))
  assert float(jnp.abs(out["received"] * (1 - out["pixel_mask"])).max()) == 0.0


def test_training_and_inference_select_and_receive_the_same():
  """Training computes densely with straight-through masks; its forward must equal inference."""
  model = small_stae()
  video = clip()
  a = run(model, video, frame_keep=0.5, block_keep=0.5, training=False)
  b = run(model, video, frame_keep=0.5, block_keep=0.5, training=True, rng=jax.random.key(3))
  for key in ("frame_mask", "block_mask", "frame_index", "block_index", "latents", "pixel_mask"):
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  np.testing.assert_allclose(a["received"], b["received"], atol=1e-3)
  assert b["rate_latents"].shape == (2, T, N, 2, 2, 4)  # dense in training
  # The noisy rate latents (y + U(-1/2, 1/2)) are within a step of the integers round(y) sent.
  kept = b["rate_latents"][jnp.arange(2)[:, None, None], b["frame_index"][:, :, None],
                           b["block_index"]]
  assert float(jnp.abs(kept - a["latents"]).max()) < 1.0


@pytest.mark.parametrize("n", [16, 13])
def test_segment_rule_keeps_the_best_item_of_each_stretch(n):
  """k equal stretches (item j in stretch j*k//n), the highest score of each kept, ties to the
  lower index; a traced k per row keeps what a static k does; k == n keeps everything."""
  scores = jax.random.normal(jax.random.key(0), (5, n))
  scores = scores.at[0, 1].set(scores[0, 0])  # a tie
  for k in range(1, n + 1):
    mask = np.asarray(segment_top_mask(scores, k, training=False))
    stretch = np.arange(n) * k // n
    for row, s in zip(mask, np.asarray(scores)):
      assert set(np.unique(row)) <= {0.0, 1.0} and row.sum() == k
      for part in range(k):
        members = np.flatnonzero(stretch == part)
        np.testing.assert_array_equal(np.flatnonzero(row[members]), [np.argmax(s[members])])
  ks = jnp.array([1, 2, 4, 8, n])
  traced = jax.jit(lambda s, k: segment_top_mask(s, k, training=True))(scores, ks)
  for row, k in enumerate(np.asarray(ks)):
    np.testing.assert_array_equal(traced[row], segment_top_mask(scores[row], int(k),
                                                                training=False))


def test_segment_rule_gradient_is_straight_through_within_each_stretch():
  scores = jnp.array([[0.0, 1.0, 5.0, 2.0], [3.0, 3.5, 0.0, 9.0]])
  weights = jnp.arange(1.0, 5.0)
  g = np.asarray(jax.grad(lambda s: (segment_top_mask(s, 2, training=True) * weights).sum())(
      scores))
  assert (g != 0).all()  # every item is in a stretch of two: each can move its mask
  g_all = np.asarray(jax.grad(lambda s: segment_top_mask(s, 4, training=True).sum())(scores))
  np.testing.assert_array_equal(g_all, 0.0)  # stretches of one item: nothing to choose


@pytest.mark.parametrize("training", [False, True])
def test_segment_frame_rule_spreads_the_kept_frames(training):
  """With frame_rule="segments" the model keeps one frame of each of k stretches (its masks,
  indices and received pixels agree as with top-k); "top_k" may keep neighbours."""
  model = small_stae(frame_rule="segments")
  out = run(model, clip(batch=4), frame_keep=0.25, block_keep=0.5, training=training,
            rng=jax.random.key(1))
  index = np.asarray(out["frame_index"])  # k_f = 2 of T = 8: one of frames 0-3, one of 4-7
  np.testing.assert_array_equal(index // (T // 2), [[0, 1]] * 4)
  np.testing.assert_array_equal(np.asarray(out["frame_mask"]).sum(-1), 2)
  with pytest.raises(ValueError, match="frame_rule"):
    small_stae(frame_rule="best")


@pytest.mark.parametrize("n", [16, 7])
def test_comb_rule_keeps_the_best_evenly_spaced_frames(n):
  """The kept items are the comb {s, s+d, ..., s+(k-1)d} with the highest mean score plus
  spacing[k, d] (found here by brute force over every start and gap); a traced k per row keeps
  what a static k does."""
  masks, valid, _ = comb_table(n)
  assert masks.shape[1] == n * (n - 1) // 2 and valid[2].sum() == n * (n - 1) // 2
  assert valid[n].sum() == 1 and not valid[0].any()
  key_s, key_p = jax.random.split(jax.random.key(0))
  scores = jax.random.normal(key_s, (4, n))
  spacing = jax.random.normal(key_p, (n + 1, n))
  for k in range(1, n + 1):
    mask = np.asarray(comb_mask(scores, k, spacing, training=False))
    for row, s in zip(mask, np.asarray(scores)):
      best, best_value = None, -np.inf
      for d in range(1, (n - 1) // max(k - 1, 1) + 1) if k > 1 else [1]:
        for start in range(n - (k - 1) * d):
          items = [start + j * d for j in range(k)]
          value = s[items].mean() + float(spacing[k, d])
          if value > best_value + 1e-6:
            best, best_value = items, value
      np.testing.assert_array_equal(np.flatnonzero(row), best, err_msg=f"k={k}")
  ks = jnp.array([1, 2, 3, n])
  traced = jax.jit(lambda s, k: comb_mask(s, k, spacing, training=True))(scores, ks)
  for row, k in enumerate(np.asarray(ks)):
    np.testing.assert_array_equal(traced[row], comb_mask(scores[row], int(k), spacing,
                                                         training=False))


def test_comb_rule_gradient_reaches_scores_and_gaps():
  scores = jnp.array([[0.0, 1.0, 5.0, 2.0, 0.5, 0.1]])
  spacing = jnp.zeros((7, 6))
  weights = jnp.arange(1.0, 7.0)
  g_scores, g_spacing = jax.grad(
      lambda s, p: (comb_mask(s, 2, p, training=True) * weights).sum(), argnums=(0, 1))(
          scores, spacing)
  assert (np.asarray(g_scores) != 0).all()
  assert (np.asarray(g_spacing)[2, 1:6] != 0).all() and (np.asarray(g_spacing)[3:] == 0).all()
  g_all = jax.grad(lambda s: comb_mask(s, 6, spacing, training=True).sum())(scores)
  np.testing.assert_array_equal(g_all, 0.0)  # one comb: nothing to choose


@pytest.mark.parametrize("training", [False, True])
def test_comb_frame_rule_keeps_evenly_spaced_frames(training):
  """frame_rule="comb" keeps k frames a constant gap apart (masks and indices agree), and learns
  its priors only when asked for them with the clip's length."""
  model = small_stae(frame_rule="comb", frames=T)
  out = run(model, clip(batch=4), frame_keep=0.5, block_keep=0.5, training=training,
            rng=jax.random.key(1))
  index = np.asarray(out["frame_index"])  # k_f = 4 of T = 8
  assert (np.diff(np.diff(index, axis=1), axis=1) == 0).all()
  np.testing.assert_array_equal(np.asarray(out["frame_mask"]).sum(-1), 4)
  assert model.frame_attention.spacing[...].shape == (T + 1, T)
  with pytest.raises(ValueError, match="frames="):
    small_stae(frame_rule="comb")
  with pytest.raises(ValueError, match="build STAE with frames=8"):
    run(small_stae(frame_rule="comb", frames=6), clip(batch=1), frame_keep=0.5, block_keep=0.5,
        training=False)


def test_chosen_frame_rule_keeps_the_rows_of_its_table():
  """frame_rule="chosen" keeps row k of `chosen_frames` for every clip, evenly spaced until frames
  are chosen, the same through the static and the traced (one compile for every point) paths, and
  takes no gradient; it asks for the clip's length and refuses another."""
  model = small_stae(frame_rule="chosen", frames=T, keep_ratios=((0.25, 0.5), (0.5, 0.5)))
  assert model.frame_attention is None and int(model.chosen_on[...]) == 0
  out = run(model, clip(batch=2), frame_keep=0.5, block_keep=0.5, training=False)
  np.testing.assert_array_equal(out["frame_index"], [[0, 2, 5, 7]] * 2)  # evenly spaced
  table = np.asarray(model.chosen_frames[...]).copy()
  table[2], table[4] = 0.0, 0.0
  table[2, [3, 5]] = 1.0
  table[4, [1, 3, 4, 6]] = 1.0
  model.chosen_frames[...] = jnp.asarray(table)
  for keep, frames in ((0.25, [3, 5]), (0.5, [1, 3, 4, 6])):
    out = run(model, clip(batch=2), frame_keep=keep, block_keep=0.5, training=False)
    np.testing.assert_array_equal(out["frame_index"], [frames] * 2)
  graphdef, state = nnx.split(model)
  traces = []

  def dense(state, video, point_index):
    traces.append(1)
    return nnx.merge(graphdef, state)(video, point_index=point_index, training=True,
                                      rng=jax.random.key(1))["frame_mask"]

  step = jax.jit(dense)
  for index in ((0, 1), (1, 0)):
    mask = np.asarray(step(state, clip(batch=2), jnp.asarray(index, jnp.int32)))
    np.testing.assert_array_equal(mask, table[[(2, 4)[i] for i in index]] > 0.5)
  assert len(traces) == 1  # one compile for every point
  grad = jax.grad(lambda t: (model.frame_mask(jnp.zeros((1, T)), 2, training=True) * t).sum())(
      jnp.ones((1, T)))
  np.testing.assert_array_equal(np.asarray(grad), table[2][None])
  with pytest.raises(ValueError, match="frames="):
    small_stae(frame_rule="chosen")
  with pytest.raises(ValueError, match="choice_clips"):
    small_stae(frame_rule="chosen", frames=T, choice_clips=0)
  with pytest.raises(ValueError, match="build STAE with frames=8"):
    run(small_stae(frame_rule="chosen", frames=6), clip(batch=1), frame_keep=0.5, block_keep=0.5,
        training=False)
  # The baselines and the ablation without frame attention keep their own rules: nothing chosen.
  assert small_stae(frame_rule="chosen", frames=T, selection="random").chosen_frames is None
  assert small_stae(frame_rule="chosen", frames=T, frame_attention=False).chosen_frames is None


def test_spread_selection_sends_other_blocks_in_later_frames():
  # Every frame prefers the same blocks; a large spread makes later frames send the rest.
  scores = jnp.tile(jnp.arange(8.0)[None, None], (2, 4, 1))
  mask, index = spread_top_k_mask(scores, 4, spread=100.0, training=True)
  np.testing.assert_array_equal(index[0], [[4, 5, 6, 7], [0, 1, 2, 3]] * 2)
  assert set(np.unique(np.asarray(mask))) == {0.0, 1.0} and np.all(np.asarray(mask).sum(-1) == 4)
  # A spread smaller than the preference keeps the favourites: at 0 it is plain top-k.
  _, index = spread_top_k_mask(scores, 4, spread=0.0, training=False)
  np.testing.assert_array_equal(index[0], [[4, 5, 6, 7]] * 4)


def test_spread_selection_is_the_same_in_training_and_inference():
  model = small_stae(block_spread=100.0)
  video = clip()
  a = run(model, video, frame_keep=0.5, block_keep=0.5, training=False)
  b = run(model, video, frame_keep=0.5, block_keep=0.5, training=True, rng=jax.random.key(3))
  for key in ("frame_mask", "block_mask", "frame_index", "block_index", "pixel_mask"):
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  # With half the blocks per frame and a large spread, every two kept frames send every block once.
  kept = np.asarray(a["block_mask"])[np.arange(2)[:, None], np.asarray(a["frame_index"])]
  assert kept.shape[1] == 4
  np.testing.assert_array_equal(kept[:, 0::2] ^ kept[:, 1::2], True)
  plain = run(small_stae(), video, frame_keep=0.5, block_keep=0.5, training=False)
  assert not np.array_equal(plain["block_index"], a["block_index"])


def test_gradients_reach_both_attention_modules_through_the_selection():
  model = small_stae()
  video = clip()
  target = video.astype(jnp.float32)
  graphdef, params = nnx.split(model, nnx.Param)

  def loss(params):
    m = nnx.merge(graphdef, params)
    out = m(video, frame_keep=0.5, block_keep=0.25, training=True, rng=jax.random.key(2))
    distortion = jnp.mean((out["received"] - target) ** 2)
    rate = jnp.sum(out["rate_weight"][..., None, None, None] * out["rate_latents"] ** 2)
    return distortion + 1e-3 * rate

  grads = nnx.to_flat_state(jax.jit(jax.grad(loss))(params))
  for module in ("frame_attention", "spatial_attention", "analysis", "synthesis"):
    leaves = [v[...] for path, v in grads if path[0] == module]
    assert leaves, module
    assert all(bool(jnp.isfinite(g).all()) for g in leaves), module
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0, module


@pytest.mark.parametrize("frame_attention,spatial_attention", [(False, True), (True, False),
                                                                (False, False)])
def test_switching_attention_off_keeps_everything(frame_attention, spatial_attention):
  model = small_stae(frame_attention=frame_attention, spatial_attention=spatial_attention)
  assert (model.frame_attention is None) == (not frame_attention)
  assert (model.spatial_attention is None) == (not spatial_attention)
  out = run(model, clip(), frame_keep=0.25, block_keep=0.25, training=False)
  k_f = keep_count(0.25, T) if frame_attention else T
  k_s = keep_count(0.25, N) if spatial_attention else N
  assert out["block_index"].shape == (2, k_f, k_s)
  assert int(out["frame_mask"].sum()) == 2 * k_f
  assert int(out["block_mask"].sum()) == 2 * k_f * k_s
  if not frame_attention and not spatial_attention:
    assert bool(out["block_mask"].all())


def test_random_selection_keeps_the_ratios_and_needs_a_key():
  model = small_stae(selection="random")
  assert model.frame_attention is None and model.spatial_attention is None
  a = run(model, clip(), frame_keep=0.5, block_keep=0.25, training=False, rng=jax.random.key(0))
  b = run(model, clip(), frame_keep=0.5, block_keep=0.25, training=False, rng=jax.random.key(1))
  assert a["block_index"].shape == (2, keep_count(0.5, T), keep_count(0.25, N))
  assert not np.array_equal(a["block_mask"], b["block_mask"])
  with pytest.raises(ValueError, match="rng"):
    model(clip(), frame_keep=0.5, block_keep=0.25, training=False)


@pytest.mark.parametrize("training", [False, True])
def test_uniform_selection_keeps_evenly_spaced_frames_and_blocks(training):
  """The fixed baseline: first and last frame included, the same choice for every clip."""
  model = small_stae(selection="uniform")
  assert model.frame_attention is None and model.spatial_attention is None
  out = run(model, clip(), frame_keep=0.25, block_keep=0.25, training=training,
            rng=jax.random.key(0))
  np.testing.assert_array_equal(out["frame_index"], [[0, 7], [0, 7]])  # T = 8, k_f = 2
  np.testing.assert_array_equal(out["block_index"], np.broadcast_to([0, 5, 10, 15], (2, 2, 4)))


def test_pixel_mode_sends_requantised_pixels():
  bits = 4
  model = small_stae(mode="pixel", pixel_bits=bits)
  video = clip()
  out = run(model, video, frame_keep=0.5, block_keep=0.5, training=False)
  assert out["latents"].shape[-3:] == (P, P, 3)
  latents = np.asarray(out["latents"])
  assert latents.min() >= 0 and latents.max() <= 2 ** bits - 1
  expected = np.round(np.asarray(video, np.float64) * (2 ** bits - 1) / 255) * 255 / (2 ** bits - 1)
  received, mask = np.asarray(out["received"]), np.asarray(out["pixel_mask"])[..., 0] > 0
  np.testing.assert_allclose(received[mask], expected[mask], atol=1e-3)


@pytest.mark.parametrize("latent_stride,channels", [(4, 4), (8, 8), (8, 3)])
def test_fresh_transforms_code_each_cells_mean_colour(latent_stride, channels):
  """Untrained, the block code is the cells' mean colours quantised to init_step levels: the
  round trip returns every pixel of a cell its cell's mean within half a step, and the channels
  after the three colours carry nothing until training gives them a use."""
  step = 8.0
  model = small_stae(latent_stride=latent_stride, latent_channels=channels, init_step=step)
  blocks = stae_lib.blockify(clip(batch=1, frames=2), P)
  latents = model.analyse(blocks)
  g = P // latent_stride
  assert latents.shape == blocks.shape[:-3] + (g, g, channels)
  np.testing.assert_array_equal(np.asarray(latents[..., 3:]), 0.0)
  decoded = np.asarray(model.synthesise(jnp.round(latents)))
  cells = np.asarray(blocks, np.float64).reshape(*blocks.shape[:-3], g, latent_stride, g,
                                                 latent_stride, 3)
  means = cells.mean(axis=(-4, -2), keepdims=True)
  error = np.abs(decoded.reshape(cells.shape) - means)
  assert error.max() <= step / 2 + 1e-3
  assert error.max() > 0.5  # and rounding did quantise the means


@pytest.mark.parametrize("latent_stride", [4, 8])
def test_fresh_dct_transforms_code_each_cells_low_frequencies(latent_stride):
  """With init_code="dct" the channels after the colours start as the cell's lowest luminance DCT
  coefficients: a cell made of a mean colour plus those frequencies comes back within the
  quantisation error, where the colour code returns only its mean."""
  step, detail, channels = 8.0, 16.0, 8
  g, s = P // latent_stride, latent_stride
  k = np.arange(s)
  rows = np.sqrt(2.0 / s) * np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * s))
  rows[0] /= np.sqrt(2.0)
  rng = np.random.default_rng(0)
  # One frame of 2x2 blocks: each cell a colour plus the 5 lowest frequencies of a luminance.
  frame = np.zeros((2 * P, 2 * P, 3))
  for y in range(0, 2 * P, s):
    for x in range(0, 2 * P, s):
      luma = sum(rng.choice([-1, 1]) * rng.uniform(30, 50) * np.outer(rows[u], rows[v])
                 for u, v in [(0, 1), (1, 0), (0, 2), (1, 1), (2, 0)])
      frame[y:y + s, x:x + s] = rng.uniform(90, 165, 3) + luma[..., None]
  video = jnp.asarray(np.clip(np.round(frame), 0, 255)[None, None], jnp.uint8)
  blocks = stae_lib.blockify(video, P)
  errors = {}
  for code in ("colour", "dct"):
    model = small_stae(latent_stride=latent_stride, latent_channels=channels, init_step=step,
                       init_code=code, detail_step=detail)
    latents = model.analyse(blocks)
    assert latents.shape == blocks.shape[:-3] + (g, g, channels)
    decoded = np.asarray(model.synthesise(jnp.round(latents)))
    errors[code] = np.abs(decoded - np.asarray(blocks, np.float64)).mean()
  # Rounding 3 colours (step 8) and 5 frequencies (16 levels each, spread over the cell's pixels).
  assert errors["dct"] < 0.5 * step, errors
  assert errors["colour"] > 2 * errors["dct"], errors


def test_top_k_mask_forward_is_exactly_hard():
  scores = jax.random.normal(jax.random.key(0), (3, 10))
  mask, index = top_k_mask(scores, 4, training=True)
  assert set(np.unique(np.asarray(mask))) == {0.0, 1.0}
  np.testing.assert_array_equal(np.sort(np.argsort(-np.asarray(scores))[:, :4]), index)
  weights = jnp.arange(1.0, 11.0)
  grad = jax.grad(lambda s: (top_k_mask(s, 4, training=True)[0] * weights).sum())(scores)
  assert bool(jnp.isfinite(grad).all()) and float(jnp.abs(grad).min()) > 0
  with pytest.raises(ValueError, match="1 <= k <= n"):
    top_k_mask(scores, 11, training=False)


def test_bfloat16_agrees_with_float32():
  f32 = small_stae()
  bf16 = small_stae(dtype=jnp.bfloat16)
  nnx.update(bf16, nnx.state(f32, nnx.Param))
  video = clip()
  latents_32 = f32.analyse(stae_lib.blockify(video, P)[:, :2])

  def pieces(model, video, latents):
    """Each learned piece on the same inputs (a near-tie could flip a selection, so the full
    forward is not compared)."""
    frames = stae_lib.normalize_video(video, model.dtype)
    features = model.spatial_attention.features(frames)
    return dict(frame_scores=model.frame_attention(frames),
                block_scores=model.spatial_attention(features),
                latents=model.analyse(stae_lib.blockify(video, P)[:, :2]).astype(jnp.float32),
                pixels=model.synthesise(latents))

  outputs = {}
  for name, model in (("f32", f32), ("bf16", bf16)):
    graphdef, state = nnx.split(model)
    outputs[name] = jax.jit(lambda s, v, y: pieces(nnx.merge(graphdef, s), v, y))(
        state, video, latents_32)
  a, b = outputs["f32"], outputs["bf16"]
  assert b["frame_scores"].dtype == jnp.float32 and b["pixels"].dtype == jnp.float32
  for key, tolerance in (("frame_scores", 0.05), ("block_scores", 0.05), ("latents", 0.03)):
    np.testing.assert_allclose(b[key], a[key], atol=tolerance * float(jnp.abs(a[key]).max()),
                               err_msg=key)
  np.testing.assert_allclose(b["pixels"], a["pixels"], atol=0.02 * 255)


def test_bad_input_is_explained():
  model = small_stae()
  with pytest.raises(ValueError, match=r"\[B,T,H,W,3\]"):
    model(jnp.zeros((T, SIZE, SIZE, 3), jnp.uint8), frame_keep=0.5, block_keep=0.5,
          training=False)
  with pytest.raises(ValueError, match="not divisible by block_size"):
    model(jnp.zeros((1, T, 36, 36, 3), jnp.uint8), frame_keep=0.5, block_keep=0.5, training=False)
  with pytest.raises(ValueError, match="needs rng"):
    model(clip(), frame_keep=0.5, block_keep=0.5, training=True)
  with pytest.raises(ValueError, match="selection"):
    small_stae(selection="best")
  with pytest.raises(ValueError, match="selection_gradient 'pixels' is not one of"):
    small_stae(selection_gradient="pixels")
  with pytest.raises(ValueError, match="block_spread"):
    small_stae(block_spread=-1.0)
  with pytest.raises(ValueError, match="latent_stride must divide"):
    small_stae(latent_stride=3)
  with pytest.raises(ValueError, match="init_step"):
    small_stae(init_step=0.0)
  with pytest.raises(ValueError, match="init_code 'jpeg' is not one of"):
    small_stae(init_code="jpeg")
  with pytest.raises(ValueError, match="detail_step"):
    small_stae(init_code="dct", detail_step=0.0)


def test_config_sizes():
  """Output shapes at every config's clip size and operating point (abstractly: nnx.eval_shape
  and jax.eval_shape trace without computing, so 16x224x224 costs nothing)."""
  for module in (synthetic, hmdb51):
    config = module.get_config(None)
    t, size = config.data.frames, config.data.resolution
    section = config.systems.stae.model.stae
    p = section.block_size
    n = (size // p) ** 2
    video = jax.ShapeDtypeStruct((1, t, size, size, 3), jnp.uint8)
    model = nnx.eval_shape(lambda: STAE(**section, rngs=rngs(0)))
    graphdef, state = nnx.split(model)
    for rho_f, rho_s in section.keep_ratios:
      k_f, k_s = keep_count(rho_f, t), keep_count(rho_s, n)

      def forward(state, video):
        return nnx.merge(graphdef, state)(video, frame_keep=rho_f, block_keep=rho_s,
                                          training=False)

      out = jax.eval_shape(forward, state, video)
      c, g = section.latent_channels, p // section.latent_stride
      assert out["latents"].shape == (1, k_f, k_s, g, g, c)
      assert out["received"].shape == (1, t, size, size, 3)
      assert out["block_mask"].shape == (1, t, n)


@pytest.mark.parametrize("selection,spread,frame_rule", [("attention", 100.0, "top_k"),
                                                       ("attention", 0.0, "segments"),
                                                       ("attention", 2.0, "comb"),
                                                       ("uniform", 0.0, "segments")])
def test_traced_points_select_and_receive_what_static_points_do(selection, spread, frame_rule):
  """One compile for every point: `point_index` (traced, one per clip) keeps per clip exactly
  the frames and blocks, and receives exactly the pixels, that each static keep-ratio pair does
  (random selection draws its scores over other shapes there: the same counts, other items)."""
  ratios = ((0.25, 0.5), (0.5, 0.25), (1.0, 1.0))
  model = small_stae(keep_ratios=ratios, selection=selection, block_spread=spread,
                     frame_rule=frame_rule, frames=T)
  video = clip(batch=3)
  traced = run(model, video, point_index=jnp.array([2, 0, 1]), training=False,
               rng=jax.random.key(5))
  drawn = run(model, video, training=True, rng=jax.random.key(5))
  k_f, k_s = (np.asarray(k) for k in drawn["keep"])
  np.testing.assert_array_equal(np.asarray(drawn["frame_mask"]).sum(-1), k_f)
  np.testing.assert_array_equal(np.asarray(drawn["block_mask"]).sum((1, 2)), k_f * k_s)
  for clip_index, point in enumerate((2, 0, 1)):
    static = run(model, video, frame_keep=ratios[point][0], block_keep=ratios[point][1],
                 training=False, rng=jax.random.key(5))
    for key in ("frame_mask", "block_mask", "pixel_mask"):
      np.testing.assert_array_equal(traced[key][clip_index], static[key][clip_index],
                                    err_msg=f"{key} at {ratios[point]}")
    np.testing.assert_allclose(traced["received"][clip_index], static["received"][clip_index],
                               atol=1e-3)
