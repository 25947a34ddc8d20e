"""STAE's refined points in its codec: which points there are, the device's levels and closed loop
through the real bitstream to the server's clip, what they buy and cost, and the streams a server
refuses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stae_jax.coding import bitstream
from stae_jax.models import refine as refine_lib
from stae_jax.models import skip as skip_lib
from stae_jax.systems import loading
from stae_jax.systems import stae as stae_method
from stae_jax.systems.base import DecodeError
from test_skip_codec import frames_only, panning_clip
from test_systems import SIZE, T, codec_of, rngs


REFINED = ((1.0, 16.0, "first"), (1.0, 4.0, "all"))


@pytest.fixture(scope="module")
def system():
  config, entry = frames_only(refine=dict(points=REFINED))
  return entry, loading.build_models(config, entry, rngs(0))


@pytest.fixture(scope="module")
def codec(system):
  entry, models = system
  return codec_of("stae", entry, models)


def test_refined_points_are_named_typed_and_checked():
  _, entry = frames_only(refine=dict(points=REFINED))
  points = stae_method.refined_points(entry)
  assert [p.name for p in points] == ["keep=1x1,refine=16@first", "keep=1x1,refine=4"]
  assert points[0].as_dict() == dict(frame_keep=1.0, block_keep=1.0, skip=1000.0, refine=16.0,
                                     refine_frames="first")
  # The defaults where the keep ratios allow them; none where they do not, unless asked for.
  _, default = frames_only(refine=None)
  assert [p.as_dict()["refine"] for p in stae_method.refined_points(default)] == [
      s for _, s, _ in refine_lib.Settings().points]
  _, factorized = frames_only(",context=False")
  assert stae_method.refined_points(factorized) == ()
  _, factorized = frames_only(",context=False", refine=dict(points=REFINED))
  with pytest.raises(ValueError, match="conditional entropy model"):
    stae_method.refined_points(factorized)
  _, missing = frames_only(refine=dict(points=((0.25, 8.0, "all"),)))
  with pytest.raises(ValueError, match=r"keep ratio \(0.25, 1.0\)"):
    stae_method.refined_points(missing)
  for bad in ((1.0, 8.1, "all"), (1.0, 0.0, "all"), (1.0, 8.0, "last"), (0.0, 8.0, "all")):
    with pytest.raises(ValueError):
      refine_lib.Settings(points=(bad,))


def test_refined_blocks_reach_the_server_as_the_device_coded_them(system, codec):
  """At each refined point the stream declares the refinement, the server's levels are the
  device's closed loop's (`code_blocks`), zero at skipped blocks and past the refined frames, and
  the server's clip is the device's picture; the picture is closer to the clip than the same
  keep ratio's without refining, and its first kept frame (never skipped) more so at the finer
  step."""
  _, models = system
  video = panning_clip()
  stae, prior, decoder = models["stae"], models["prior"], models["decoder"]
  key = jax.random.fold_in(jax.random.PRNGKey(stae_method.SELECTION_KEY), 0)
  errors, first = {}, {}
  for point in codec.points:
    received = codec.entropy_decode(codec.device(video, point).streams, point)
    clip = np.asarray(codec.decode(received, point))
    error = np.square(clip - video.astype(np.float32))
    errors[point.name] = float(error.mean())
    first[point.name] = float(error[np.arange(2), received.frame_index[:, 0]].mean())
    if "refine" not in point.as_dict():
      assert received.refinement is None
      continue
    step, frames = point["refine"], codec._refine_frames(point)  # pylint: disable=protected-access
    sent = stae.encode(jnp.asarray(video), frame_keep=point["frame_keep"], block_keep=1.0, rng=key)
    latents, vectors, levels, _ = stae_method.code_blocks(
        stae, prior, jnp.asarray(video), sent["frame_index"], sent["block_index"],
        sent["latents"], lam=point["skip"], search=4, refine_step=step, refine_frames=frames)
    assert np.array_equal(received.refinement, np.asarray(levels))
    assert np.array_equal(received.vectors, np.asarray(vectors))
    assert not received.refinement[:, frames:].any()
    assert not received.refinement[received.vectors >= 0].any()
    assert np.abs(received.refinement[:, :frames]).sum() > 0
    for stream in codec.device(video, point).streams:
      header = bitstream.read_header(stream, codec.tables)
      assert (header.refine_step, header.refine_frames) == (refine_lib.step_code(step), frames)
    # The device's picture: refine, then copy, as `code_blocks` decided.
    pictures, pixel_mask, _ = stae.receive(sent["frame_index"], sent["block_index"], latents,
                                           frames=T, height=SIZE, width=SIZE)
    batch = jnp.arange(2)[:, None]
    kept = refine_lib.apply(pictures[batch, sent["frame_index"]], levels, step)
    kept = skip_lib.rebuild_with_skips(kept, vectors >= 0, jnp.maximum(vectors, 0),
                                       block_size=stae.block_size, search=4)
    expected = stae_method.rebuild(decoder, pictures.at[batch, sent["frame_index"]].set(kept),
                                   pixel_mask, complete=sent["frame_index"].shape[1] == T)
    np.testing.assert_allclose(clip, np.asarray(expected), rtol=1e-5, atol=1e-3)
  assert errors["keep=1x1,refine=16@first"] < 0.9 * errors["keep=1x1"]
  assert first["keep=1x1,refine=16@first"] < 0.5 * first["keep=1x1"]
  assert first["keep=1x1,refine=4"] < 0.2 * first["keep=1x1,refine=16@first"]


def test_refining_costs_bits_and_estimates_them(codec):
  """The finer the step, the longer the streams; the device's estimate is within a tenth of the
  payload (header and CRC left out)."""
  video = panning_clip()
  bits = {}
  for point in codec.points:
    coded = codec.device(video, point)
    real = np.array([8 * len(s) for s in coded.streams])
    bits[point.name] = real.mean()
    payloads = codec.entropy_decode(coded.streams, point).payloads
    headers = np.array([len(bitstream._check_payload(p, codec.tables)[1]) + 4  # pylint: disable=protected-access
                        for p in payloads])
    np.testing.assert_allclose(coded.estimated_bits, real - 8 * headers, rtol=0.1)
  assert bits["keep=1x1"] < bits["keep=1x1,refine=16@first"] < bits["keep=1x1,refine=4"]


def test_server_refuses_streams_of_another_point(codec):
  video = panning_clip()
  by_name = {p.name: p for p in codec.points}
  refined = codec.device(video, by_name["keep=1x1,refine=16@first"]).streams
  with pytest.raises(DecodeError, match="refined frames"):
    codec.server(refined, by_name["keep=1x1"])
  with pytest.raises(DecodeError, match="does not hold"):
    codec.server(refined, by_name["keep=1x1,refine=4"])
  with pytest.raises(DecodeError, match="does not hold"):
    codec.server(codec.device(video, by_name["keep=1x1"]).streams, by_name["keep=1x1,refine=4"])
