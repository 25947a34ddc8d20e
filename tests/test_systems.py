"""The methods of stae_jax.systems: registry, model containers, forwards (names, shapes, bits,
gradients) and each learned codec's device and server halves, including what the server refuses."""

import math
import re

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import hmdb51, synthetic
from stae_jax import systems
from stae_jax.coding import bitstream
from stae_jax.coding import tables as tables_lib
from stae_jax.models.stae import keep_count, uniform_table
from stae_jax.systems import deepisc as deepisc_method
from stae_jax.systems import stae as stae_method
from stae_jax.systems import loading

T, SIZE = 8, 32


def rngs(seed=0):
  """Parameter keys with the "rbg" PRNG: its kernels compile ~5x faster than threefry's on a CPU,
  and eager initialisation compiles one kernel per parameter shape (seconds per model)."""
  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def tiny_config(switches: str = "", skip: bool = False, refine: bool = False):
  """The synthetic config shrunk to a 8x32x32 clip and models of a few thousand parameters
  (`switches`: more config switches, e.g. ",frame_rule=comb", whose STAE entry is shrunk too).
  STAE skips no block unless `skip` (its default settings then) and has no refined point unless
  `refine` (the defaults that its keep ratios allow): these tests compare the codec with the
  forward, which sends every kept block's code; tests/test_skip_codec.py tests skipping,
  tests/test_refine_codec.py refining."""
  config = synthetic.get_config(f"frames={T},size={SIZE}{switches}")
  # Frames in: the systems do not depend on the classifier's front end, whose motion inputs
  # (tests/test_vit.py, tests/test_motion.py) would be most of each compile here.
  config.model.vit.update(dict(num_classes=5, width=32, depth=1, num_heads=2, tubelet=4, patch=8,
                               inputs="frames", pool=1, stem_channels=0))
  # Unless `switches` say otherwise: both attentions and per-clip learned frames, not the default's
  # chosen frames without spatial attention, so that every mask of the format is exercised.
  given = {item.partition("=")[0] for item in switches.split(",")}
  pinned = {key: value for key, value in (("spatial_attention", True), ("frame_rule", "segments"))
            if key not in given}
  for tag, entry in config.systems.items():
    if entry.method == "stae":
      entry.model.stae.update(dict(transform_width=8, frame_widths=(8, 8, 8), spatial_widths=(8, 8),
                                   # the sparsest kind and the all-blocks end
                                   keep_ratios=((0.5, 0.25), (1.0, 1.0)), **pinned))
      if entry.model.stae.frame_rule not in ("comb", "chosen") and "frames" in entry.model.stae:
        del entry.model.stae["frames"]
      entry.model.decoder.update(dict(width=8, temporal_layers=1, spatial_layers=1))
      if not skip:
        entry.model.skip = dict(lam=None)
      if not refine:
        entry.model.refine = dict(points=())
  if "deepisc" in config.systems:
    config.systems.deepisc.model.deepisc.update(dict(patch=8, width=32, encoder_depth=1,
                                                   decoder_depth=1, num_heads=2, max_tokens=4,
                                                     channels=4, token_choices=(2, 4)))
  return config


LEARNED = ("stae", "deepisc")


@pytest.fixture(scope="module")
def built():
  """Models of each learned system, built once: eager initialisation costs seconds on a CPU."""
  config = tiny_config()
  return {tag: (config.systems[tag], loading.build_models(config, config.systems[tag], rngs(0)))
          for tag in LEARNED}


def untrained_codec(built, tag):
  """The codec of a freshly built system (tables frozen from its untrained prior): the device and
  server halves work the same, trained or not."""
  entry, models = built[tag]
  return codec_of(tag, entry, models)


def codec_of(tag, entry, models):
  method = systems.get(entry.method)
  graphdef, params, rest = nnx.split(models, nnx.Param, ...)
  tables = tables_lib.freeze(method.entropy_model(models))
  trained = systems.Trained(tag=tag, entry=entry, data=tiny_config().data, graphdef=graphdef,
                            params=params, rest=rest, tables=tables)
  return method.codec(trained)


def clip(batch=2, seed=0):
  return jax.random.randint(jax.random.key(seed), (batch, T, SIZE, SIZE, 3), 0, 256,
                            jnp.int32).astype(jnp.uint8)


def run_forward(entry, models, video, *, point, training, rng=None):
  graphdef, state = nnx.split(models)
  method = systems.get(entry.method)
  fn = jax.jit(lambda state, video, rng: method.forward(
      nnx.merge(graphdef, state), video, point, training=training, rng=rng))
  return fn(state, video, rng)


def top_level_names(models):
  return {path[0] for path, _ in nnx.to_flat_state(nnx.state(models, nnx.Param))}


def test_build_models_names_what_each_system_needs(built):
  stae_models = built["stae"][1]
  assert top_level_names(stae_models) == {"vit", "stae", "prior", "decoder"}
  deepisc_models = built["deepisc"][1]
  assert top_level_names(deepisc_models) == {"vit", "deepisc"}
  # Freezing is a regex over "/"-joined paths: `^vit/` selects the classifier and nothing else.
  paths = ["/".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(stae_models))]
  frozen = [p for p in paths if re.match("^vit/", p)]
  assert frozen and all(p.split("/")[0] == "vit" for p in frozen)
  assert any(p.startswith("stae/frame_attention/") for p in paths)
  assert any(p.startswith("stae/spatial_attention/") for p in paths)


def test_stae_forward_outputs_and_exact_mask_bits(built):
  config, models = built["stae"]
  out = run_forward(config, models, clip(), point=stae_method.point(0.5, 0.25), training=False)
  n = (SIZE // config.model.stae.block_size) ** 2
  k_f, k_s = keep_count(0.5, T), keep_count(0.25, n)
  assert out["logits"].shape == (2, 5) and out["logits"].dtype == jnp.float32
  assert out["reconstruction"].shape == (2, T, SIZE, SIZE, 3)
  assert out["frame_mask"].shape == (2, T) and out["frame_mask"].dtype == jnp.bool_
  assert out["block_mask"].shape == (2, T, n) and out["block_mask"].dtype == jnp.bool_
  g = config.model.stae.block_size // config.model.stae.latent_stride
  assert out["latents"].shape == (2, k_f, k_s, g, g, config.model.stae.latent_channels)
  bits = {key: np.asarray(value) for key, value in out["bits"].items()}
  np.testing.assert_array_equal(bits["frame_mask"], np.float32(math.log2(math.comb(T, k_f))))
  np.testing.assert_allclose(bits["block_masks"], k_f * math.log2(math.comb(n, k_s)), rtol=1e-6)
  np.testing.assert_allclose(bits["masks"], bits["frame_mask"] + bits["block_masks"], rtol=1e-6)
  np.testing.assert_allclose(bits["total"], bits["payload"] + bits["masks"], rtol=1e-6)
  # The payload is the prior's information content of exactly the latents that are sent (the
  # default prior is conditional: it reads them in place, each block's neighbours as context).
  dense, kept_blocks = stae_method._in_place(out["latents"], out["block_index"], n)  # pylint: disable=protected-access
  every = np.asarray(models["prior"].bits(dense, rounded=dense, kept=kept_blocks))
  expected_payload = (every.sum(axis=(3, 4, 5)) * np.asarray(kept_blocks)).sum(axis=(1, 2))
  np.testing.assert_allclose(bits["payload"], expected_payload, rtol=1e-4)
  assert (bits["payload"] > 0).all()
  # The reconstruction keeps every received pixel bit-exactly.
  kept = np.asarray(out["pixel_mask"][..., 0]) > 0
  np.testing.assert_array_equal(np.asarray(out["reconstruction"])[kept],
                                np.asarray(out["received"])[kept])


def test_gradients_of_the_training_loss_reach_every_stae_part(built):
  models = built["stae"][1]
  video = clip()
  labels = jnp.array([1, 3])
  graphdef, params = nnx.split(models, nnx.Param)

  def loss(params):
    out = stae_method.forward(nnx.merge(graphdef, params), video, stae_method.point(0.5, 0.25),
                              training=True, rng=jax.random.key(4))
    task = -jnp.take_along_axis(jax.nn.log_softmax(out["logits"]), labels[:, None], 1).mean()
    distortion = jnp.mean((out["reconstruction"] - video) ** 2) / 255.0 ** 2
    return task + distortion + 1e-4 * out["bits"]["total"].mean()

  grads = nnx.to_flat_state(jax.jit(jax.grad(loss))(params))
  for prefix in ("stae/frame_attention", "stae/spatial_attention", "stae/analysis",
                 "stae/synthesis", "prior", "decoder", "vit"):
    leaves = [v[...] for path, v in grads if "/".join(map(str, path)).startswith(prefix)]
    assert leaves, prefix
    assert all(bool(jnp.isfinite(g).all()) for g in leaves), prefix
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0, prefix


def test_task_selection_gradient_keeps_pixel_error_away_from_the_attention(built):
  models = built["stae"][1]
  video = clip()
  graphdef, params = nnx.split(models, nnx.Param)

  def pixel_loss(params, selection_gradient):
    merged = nnx.merge(graphdef, params)
    merged["stae"].selection_gradient = selection_gradient
    out = stae_method.forward(merged, video, stae_method.point(0.5, 0.25), training=True,
                              rng=jax.random.key(4))
    pixels = out.get("pixel_reconstruction", out["reconstruction"])
    return jnp.mean((pixels - video) ** 2) / 255.0 ** 2, out

  def grad_sums(selection_gradient):
    grads = jax.jit(jax.grad(lambda p: pixel_loss(p, selection_gradient)[0]))(params)
    sums = {}
    for path, v in nnx.to_flat_state(grads):
      key = "/".join(map(str, path[:2])) if path[0] == "stae" else str(path[0])
      sums[key] = sums.get(key, 0.0) + float(jnp.abs(v[...]).sum())
    return sums

  everything, task_only = grad_sums("all"), grad_sums("task")
  for part in ("stae/frame_attention", "stae/spatial_attention"):
    assert everything[part] > 0, part
    assert task_only[part] == 0.0, part
  for part in ("stae/analysis", "stae/synthesis", "decoder"):
    assert task_only[part] > 0, part
  # The second pass decodes the same pixels: only the gradients differ.
  _, out = jax.jit(lambda p: pixel_loss(p, "task"))(params)
  np.testing.assert_allclose(np.asarray(out["pixel_reconstruction"]),
                             np.asarray(out["reconstruction"]), rtol=1e-5, atol=1e-3)


def test_shared_keys_across_learned_methods(built):
  for tag in LEARNED:
    entry, models = built[tag]
    point = systems.get(entry.method).operating_points(entry)[0]
    out = run_forward(entry, models, clip(), point=point, training=False)
    assert {"logits", "reconstruction", "bits", "latents"} <= set(out), tag
    assert {"payload", "masks", "total"} <= set(out["bits"]), tag
    assert out["reconstruction"].shape == (2, T, SIZE, SIZE, 3), tag
    assert out["bits"]["total"].shape == (2,), tag


def test_registry_names_every_method_and_explains_unknown_ones():
  assert systems.learned() == ["stae", "deepisc"]
  assert systems.baselines() == ["h264", "raw"]
  with pytest.raises(ValueError, match="unknown method 'jpeg'.*stae, deepisc, h264, raw"):
    systems.get("jpeg")
  point = stae_method.point(0.25, 0.5)
  assert point == stae_method.point(0.25, 0.5) and hash(point) == hash(stae_method.point(0.25, 0.5))
  assert point.name == "keep=0.25x0.5" and point["block_keep"] == 0.5
  assert deepisc_method.point(4).as_dict() == {"tokens_per_frame": 4}


def test_bad_entry_and_point_are_explained(built):
  entry = tiny_config().systems.stae
  entry.method = "h264x"
  with pytest.raises(ValueError, match="unknown method 'h264x'"):
    loading.build_models(tiny_config(), entry, rngs(0))
  codec = untrained_codec(built, "stae")
  with pytest.raises(systems.DecodeError, match="not one 'stae' was trained.*keep=0.5x0.25"):
    codec.point(stae_method.point(0.9, 0.9))


@pytest.mark.parametrize("tag", LEARNED)
def test_codec_round_trip_matches_the_forward(built, tag):
  """The codec's device + server halves rebuild what the inference forward does, from streams
  whose lengths are the bits counted; the estimate is the forward's rate."""
  codec = untrained_codec(built, tag)
  entry, models = built[tag]
  video = np.asarray(clip())
  for point in codec.points:
    coded = codec.device(video, point)
    assert len(coded.streams) == 2 and all(isinstance(s, bytes) for s in coded.streams)
    rebuilt = np.asarray(codec.server(coded.streams, point))
    out = run_forward(entry, models, video, point=point, training=False)
    np.testing.assert_allclose(rebuilt, np.asarray(out["reconstruction"]), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(coded.estimated_bits, np.asarray(out["bits"]["total"]), rtol=1e-4)
    assert codec.classify(rebuilt).shape == (2, 5)


def test_comb_frames_round_trip_through_the_bitstream():
  """STAE with learned evenly spaced frames (frame_rule="comb"): its frames are a comb, and what
  the server rebuilds from the streams is what the forward does, at every point."""
  config = tiny_config(",frame_rule=comb")
  tag = "stae_comb-frames"
  entry = config.systems[tag]
  models = loading.build_models(config, entry, rngs(0))
  codec = codec_of(tag, entry, models)
  video = np.asarray(clip())
  for point in codec.points:
    coded = codec.device(video, point)
    out = run_forward(entry, models, video, point=point, training=False)
    index = np.asarray(out["frame_index"])
    assert (np.diff(index, n=2, axis=1) == 0).all()  # evenly spaced
    np.testing.assert_allclose(np.asarray(codec.server(coded.streams, point)),
                               np.asarray(out["reconstruction"]), rtol=1e-5, atol=1e-3)


def test_chosen_frames_round_trip_through_the_bitstream():
  """STAE with frames chosen on validation clips (frame_rule="chosen"): every clip sends the
  table's frames, and what the server rebuilds from the streams is what the forward does."""
  config = tiny_config(",frame_rule=chosen")
  tag = "stae"  # the config's default rule
  entry = config.systems[tag]
  models = loading.build_models(config, entry, rngs(0))
  table = np.zeros((T + 1, T), np.float32)
  for k in range(T + 1):
    table[k, T - k:] = 1.0  # the last k frames: no rule of the others would keep these
  models["stae"].chosen_frames[...] = jnp.asarray(table)
  codec = codec_of(tag, entry, models)
  video = np.asarray(clip())
  for point in codec.points:
    coded = codec.device(video, point)
    out = run_forward(entry, models, video, point=point, training=False)
    k_f = int(np.asarray(out["frame_index"]).shape[1])
    np.testing.assert_array_equal(out["frame_index"], [list(range(T - k_f, T))] * 2)
    np.testing.assert_allclose(np.asarray(codec.server(coded.streams, point)),
                               np.asarray(out["reconstruction"]), rtol=1e-5, atol=1e-3)


def test_the_defaults_frames_only_points_round_trip_through_the_bitstream():
  """The synthetic default as configured (chosen frames, no spatial attention, points that keep
  every block of 1/4 and all of the frames), without skipping (`tiny_config`): every block of
  the kept frames is sent, and what the server rebuilds from the real streams is what the forward
  does."""
  config = tiny_config(",frame_rule=chosen,spatial_attention=False")
  assert list(config.systems) == ["stae"]  # the config's default system
  entry = config.systems.stae
  assert not entry.model.stae.spatial_attention and entry.model.stae.frame_rule == "chosen"
  entry.model.stae.keep_ratios = ((0.25, 1.0), (1.0, 1.0))
  models = loading.build_models(config, entry, rngs(0))
  codec = codec_of("stae", entry, models)
  video = np.asarray(clip())
  blocks = (SIZE // entry.model.stae.block_size) ** 2
  for point in codec.points:
    coded = codec.device(video, point)
    out = run_forward(entry, models, video, point=point, training=False)
    k_f = int(np.asarray(out["frame_index"]).shape[1])
    assert k_f == keep_count(point["frame_keep"], T)
    mask = np.asarray(out["block_mask"]).reshape(2, T, blocks)
    assert mask.sum(axis=(1, 2)).tolist() == [k_f * blocks] * 2  # every block of the kept frames
    np.testing.assert_allclose(np.asarray(codec.server(coded.streams, point)),
                               np.asarray(out["reconstruction"]), rtol=1e-5, atol=1e-3)


def test_choose_frames_finds_the_frames_the_classifier_needs():
  """`choose_frames` keeps, for each k, the frames a classifier needs: here one that is right
  only when frames 2 and 5 arrive exactly (the receiver interpolates the others, which changes
  them); at k = 4 the pair is kept and grown; k = T and the sizes not asked for stay evenly
  spaced."""
  rng = np.random.default_rng(0)
  videos = rng.integers(0, 256, (12, T, 4, 4, 3)).astype(np.uint8)
  labels = np.zeros(12, np.int32)
  reference = jnp.asarray(videos, jnp.float32)

  def classify(filled):  # right (class 0) only where frames 2 and 5 are the clip's own
    error = jnp.abs(filled[:, jnp.array([2, 5])] - reference[:filled.shape[0]]
                    [:, jnp.array([2, 5])]).sum(axis=(1, 2, 3, 4))
    return jnp.stack([-error, jnp.full_like(error, -1e-3)], axis=-1)

  table, report = stae_method.choose_frames(classify, videos, labels, (2, 4, T), batch=12,
                                                   exhaustive=30)
  assert report[2]["frames"] == [2, 5] and report[2]["accuracy"] == 1.0
  assert report[2]["subsets"] == math.comb(T, 2)
  assert {2, 5} <= set(report[4]["frames"]) and len(report[4]["frames"]) == 4
  assert report[4]["subsets"] == (T - 2) + (T - 3)  # grown one frame at a time, beam 1
  np.testing.assert_array_equal(np.flatnonzero(table[2]), [2, 5])
  np.testing.assert_array_equal(table[T], 1.0)
  np.testing.assert_array_equal(table[3], uniform_table(T)[3])
  np.testing.assert_array_equal(table.sum(-1), np.arange(T + 1))
  # Where no subset is better, the evenly spaced one is kept.
  constant = lambda filled: jnp.zeros((filled.shape[0], 2)).at[:, 0].set(1.0)
  table, report = stae_method.choose_frames(constant, videos, labels, (2,), batch=12)
  np.testing.assert_array_equal(table, uniform_table(T))
  with pytest.raises(ValueError, match="one label each"):
    stae_method.choose_frames(classify, videos, labels[:3], (2,))


def test_choose_frames_race_scores_only_the_best_candidates_on_every_clip():
  """With `race`, every candidate is scored on the first batch and only the `race` best of them
  (and the evenly spaced subset) on every clip; the frames the classifier needs still win."""
  rng = np.random.default_rng(1)
  videos = rng.integers(0, 256, (24, T, 4, 4, 3)).astype(np.uint8)
  labels = np.zeros(24, np.int32)
  reference = jnp.asarray(videos, jnp.float32)

  def classify(filled):  # right only where frames 1 and 4 are the clip's own (either batch's)
    error = jnp.min(jnp.stack([
        jnp.abs(filled[:, jnp.array([1, 4])] - reference[s:s + filled.shape[0]][:, jnp.array([1, 4])]
                ).sum(axis=(1, 2, 3, 4)) for s in (0, 12)]), axis=0)
    return jnp.stack([-error, jnp.full_like(error, -1e-3)], axis=-1)

  table, report = stae_method.choose_frames(classify, videos, labels, (2,), batch=12, race=4)
  assert report[2]["frames"] == [1, 4] and report[2]["accuracy"] == 1.0
  assert report[2]["raced"] == math.comb(T, 2)  # every pair on the first batch
  assert report[2]["subsets"] <= 4 + 1          # the finalists and the evenly spaced pair
  np.testing.assert_array_equal(np.flatnonzero(table[2]), [1, 4])
  _, full = stae_method.choose_frames(classify, videos, labels, (2,), batch=12, race=0)
  assert full[2]["frames"] == [1, 4] and full[2]["subsets"] == math.comb(T, 2)


def test_search_frames_asks_each_subset_and_batch_once():
  """The search over any scorer (what benchmarks/frame_race.py replays): every (subset, batch) is
  asked for at most once, every candidate on every batch without a race, fewer with one."""
  def run(race):
    asked = []

    def score_batch(subset, index):  # a fixed, arbitrary score per subset and batch
      asked.append((subset, index))
      return float((7 * sum(subset) + 3 * index + len(subset)) % 11), -float(index)

    _, report = stae_method.search_frames(score_batch, frames=T, batches=3, clips=30, ks=(2, 4),
                                          beam=1, exhaustive=30, race=race)
    assert len(asked) == len(set(asked))
    return asked, report

  full, report = run(0)
  assert report[2]["subsets"] == math.comb(T, 2) and report[2]["clips"] == 30
  assert len(full) == 3 * (math.comb(T, 2) + (T - 2) + (T - 3) + 1)  # + the evenly spaced 4
  raced, _ = run(5)
  assert len(raced) < len(full)


@pytest.mark.parametrize("tag", LEARNED)
def test_server_half_refuses_what_the_model_never_sends(built, tag):
  codec = untrained_codec(built, tag)
  video = np.asarray(clip())
  first, second = codec.points
  streams = codec.device(video, first).streams
  # A stream of another operating point: decoded within that point's bounds, then refused.
  with pytest.raises(systems.DecodeError, match="does not hold|bitstream|latent"):
    codec.entropy_decode(codec.device(video, second).streams, first)
  # Oversized, empty, garbage, not bytes, an unknown point.
  with pytest.raises(systems.DecodeError, match="never needs more"):
    codec.entropy_decode([b"\xb1" + bytes(codec.max_stream_bytes(first))], first)
  with pytest.raises(systems.DecodeError, match="no bitstream"):
    codec.entropy_decode([], first)
  with pytest.raises(systems.DecodeError):
    codec.entropy_decode([bytes(np.random.default_rng(0).integers(0, 256, 200, np.uint8))], first)
  with pytest.raises(systems.DecodeError, match="not bytes"):
    codec.entropy_decode(["text"], first)
  with pytest.raises(systems.DecodeError, match="not one"):
    codec.server(streams, stae_method.point(float("nan"), 0.5))
  # The device half takes only the trained clip shape, as uint8.
  with pytest.raises(ValueError, match="uint8 clips"):
    codec.encode(np.zeros((1, T, 2 * SIZE, 2 * SIZE, 3), np.uint8), first)
  with pytest.raises(ValueError, match="uint8 clips"):
    codec.encode(video.astype(np.float32), first)


def test_a_point_that_sends_everything_is_rebuilt_without_the_decoder():
  """`rebuild` at a complete point returns the received clip, which is what the decoder gives
  there (received pixels pass through untouched), without running it."""
  from stae_jax.models.decoder import Decoder  # pylint: disable=g-import-not-at-top
  decoder = Decoder(width=4, rngs=rngs(0))
  received = jax.random.uniform(jax.random.key(1), (2, T, SIZE, SIZE, 3), jnp.float32, 0, 255)
  mask = jnp.ones((2, T, SIZE, SIZE, 1), jnp.float32)
  np.testing.assert_array_equal(decoder(received, mask), received)
  assert stae_method.rebuild(None, received, mask, complete=True) is received
  np.testing.assert_array_equal(stae_method.rebuild(decoder, received, mask, complete=False),
                                received)


def test_payload_conversion_round_trips():
  rng = np.random.default_rng(0)
  frame_index = np.sort(rng.permutation(8)[:3])[None].astype(np.int32)
  block_index = np.sort(np.stack([rng.permutation(16)[:5] for _ in range(3)]), axis=1)[None]
  latents = rng.integers(-3, 4, (1, 3, 5, 1, 1, 4)).astype(np.float32)
  args = stae_method.to_payloads(frame_index, block_index, latents, frames=8, blocks=16)
  assert args["frame_masks"].sum() == 3 and args["block_masks"].shape == (1, 3, 16)
  from stae_jax.coding import bitstream  # pylint: disable=g-import-not-at-top
  payload = bitstream.ClipPayload(args["latents"][0], args["frame_masks"][0], args["block_masks"][0])
  back = stae_method.from_payloads([payload])
  np.testing.assert_array_equal(back[0], frame_index)
  np.testing.assert_array_equal(back[1], block_index)
  np.testing.assert_array_equal(back[2], latents)
  with pytest.raises(ValueError, match="not integer-valued"):
    stae_method.to_payloads(frame_index, block_index, latents + 0.5, frames=8, blocks=16)


def test_hmdb51_shapes_abstractly():
  """The paper's setting (16x224x224, p=16, ViT-B/16) traced with eval_shape: no compute."""
  config = hmdb51.get_config(None)
  entry = config.systems.stae
  models = nnx.eval_shape(lambda: loading.build_models(config, entry, rngs(0)))
  graphdef, state = nnx.split(models)
  video = jax.ShapeDtypeStruct((2, 16, 224, 224, 3), jnp.uint8)
  rho_f, rho_s = entry.model.stae.keep_ratios[0]
  out = jax.eval_shape(lambda s, v: stae_method.forward(
      nnx.merge(graphdef, s), v, stae_method.point(rho_f, rho_s), training=False), state, video)
  k_f, k_s = keep_count(rho_f, 16), keep_count(rho_s, 196)
  assert out["logits"].shape == (2, 51)
  assert out["reconstruction"].shape == (2, 16, 224, 224, 3)
  assert out["latents"].shape == (2, k_f, k_s, 4, 4, entry.model.stae.latent_channels)
  assert out["block_mask"].shape == (2, 16, 196)
  assert out["bits"]["total"].shape == (2,)


def test_stae_with_the_conditional_prior_codes_what_its_forward_estimates():
  """`model.entropy.context=True`: the prior is a ContextPrior over the clip's block grid, the
  codec's streams are version 3 and rebuild the forward's reconstruction, the codec's estimate is
  the inference forward's rate, and the training rate is differentiable into the prior and the
  attention."""
  config = tiny_config()
  entry = config.systems.stae
  entry.model.entropy.context = True
  models = loading.build_models(config, entry, rngs(0))
  assert isinstance(models["prior"], stae_method.ContextPrior)
  assert models["prior"].grid_width == SIZE // entry.model.stae.block_size
  graphdef, params, rest = nnx.split(models, nnx.Param, ...)
  tables = tables_lib.freeze(stae_method.entropy_model(models))
  assert tables.conditional
  codec = stae_method.codec(systems.Trained(tag="stae", entry=entry, data=config.data,
                                            graphdef=graphdef, params=params, rest=rest,
                                            tables=tables))
  video = np.asarray(clip())
  for point in codec.points[:1]:  # one point: each costs its compiles
    coded = codec.device(video, point)
    assert all(s[0] == bitstream.MAGIC | bitstream.CONTEXT_VERSION for s in coded.streams)
    rebuilt = np.asarray(codec.server(coded.streams, point))
    out = run_forward(entry, models, video, point=point, training=False)
    np.testing.assert_allclose(rebuilt, np.asarray(out["reconstruction"]), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(coded.estimated_bits, np.asarray(out["bits"]["total"]), rtol=1e-4)
    # Header, CRC and the coder's last words, and the untrained prior's escapes (which cost more
    # than the likelihood bound the estimate counts): within 24 bytes here;
    # tests/test_context_coding.py checks the estimate tightly on in-support latents.
    real = 8 * np.array([len(s) for s in coded.streams])
    assert (np.abs(real - coded.estimated_bits) <= 0.02 * coded.estimated_bits + 8 * 24).all()
  # The trainer's evaluation (every point through one compile: a traced index, the dense path)
  # rebuilds and rates what the codec does at each point.
  dense = jax.jit(lambda params, rest, video, point: stae_method.forward(
      nnx.merge(graphdef, params, rest), video, point, training=False))
  for point in codec.points:
    out = run_forward(entry, models, video, point=point, training=False)
    traced = dense(params, rest, video, stae_method.point_inputs(entry, point))
    np.testing.assert_allclose(traced["reconstruction"], out["reconstruction"], rtol=1e-5,
                               atol=1e-3)
    np.testing.assert_allclose(traced["bits"]["total"], out["bits"]["total"], rtol=1e-4)

  def rate(params):
    out = stae_method.forward(nnx.merge(graphdef, params, rest), video,
                              stae_method.point(0.5, 0.25), training=True, rng=jax.random.key(4))
    return out["bits"]["total"].mean()

  grads = nnx.to_flat_state(jax.jit(jax.grad(rate))(params))
  for prefix in ("prior/density", "stae/frame_attention", "stae/analysis"):
    leaves = [v[...] for path, v in grads if "/".join(map(str, path)).startswith(prefix)]
    assert leaves and sum(float(jnp.abs(g).sum()) for g in leaves) > 0, prefix


@pytest.mark.parametrize("tag", LEARNED)
def test_fuzzed_streams_meet_a_decode_error_not_a_traceback(built, tag):
  """The corpus of tests/hostile_corpus.py (headers declaring other shapes, trailing bytes, bit
  flips and truncations behind a recomputed CRC) through the server half's host step, where every
  check of what arrived happens: nothing raises but a DecodeError, nothing extended is accepted,
  and what is accepted has exactly the shapes the jitted decode was compiled for. Honest streams
  are coded from payloads of the point's shape, so no model step compiles here."""
  import hostile_corpus  # pylint: disable=g-import-not-at-top
  from stae_jax.coding import bitstream  # pylint: disable=g-import-not-at-top
  codec = untrained_codec(built, tag)
  rng = np.random.default_rng(31)
  for point in codec.points:
    if tag == "stae":
      k_f, k_s = codec._keep[point]  # pylint: disable=protected-access
      frames, blocks = codec._frames, codec._blocks  # pylint: disable=protected-access
      shape = (1, k_f, k_s) + tuple(codec._latent_shape)  # pylint: disable=protected-access
      args = stae_method.to_payloads(
          np.sort(rng.permutation(frames)[:k_f])[None],
          np.sort(np.stack([rng.permutation(blocks)[:k_s] for _ in range(k_f)]), axis=1)[None],
          rng.integers(-3, 4, shape), frames=frames, blocks=blocks)
      streams, _ = bitstream.encode_batch(args.pop("latents"), codec.tables, **args)
    else:
      shape = (1, T, point["tokens_per_frame"], codec._channels)  # pylint: disable=protected-access
      streams, _ = bitstream.encode_batch(rng.integers(-3, 4, shape).astype(np.int32), codec.tables)
    honest = codec.entropy_decode(streams, point)

    def accepted(received, shape=shape):
      latents = received.latents if tag == "stae" else received
      assert latents.shape == shape and latents.dtype == np.float32
      if tag == "stae":
        assert received.frame_index.shape == shape[:2] and received.block_index.shape == shape[:3]

    accepted(honest)
    tally = hostile_corpus.run(lambda d, p=point: codec.entropy_decode([d], p),
                               hostile_corpus.bitstream_mutants(rng, streams[0], codec.tables),
                               accepted)
    print(f"{tag} at {point.name} [accepted, refused] by kind:", tally)
    assert tally["trailing"] == [0, 60] and tally["trailing_no_crc"] == [0, 60], tally
    assert sum(refused for _, refused in tally.values()) > 200, tally
