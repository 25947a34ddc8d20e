"""STAE's skip mode in its codec: which points skip, the device's decisions through the real
bitstream to the server's clip, what it saves, and the streams a server refuses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stae_jax.coding import bitstream
from stae_jax.models import skip as skip_lib
from stae_jax.systems import loading
from stae_jax.systems import stae as stae_method
from stae_jax.systems.base import DecodeError
from test_systems import SIZE, T, codec_of, rngs, tiny_config


def frames_only(switches: str = "", skip=None, refine="none"):
  """The default's kind of STAE (chosen frames, every block of them) at 1, 4 and 8 of 8 frames;
  `skip`: its model.skip; `refine`: its model.refine ("none": no refined point; None: the
  defaults)."""
  config = tiny_config(",frame_rule=chosen,spatial_attention=False" + switches, skip=True,
                       refine=refine != "none")
  (entry,) = config.systems.values()
  entry.model.stae.keep_ratios = ((0.125, 1.0), (0.5, 1.0), (1.0, 1.0))
  if skip is not None:
    entry.model.skip = skip
  if refine != "none" and refine is not None:
    entry.model.refine = refine
  return config, entry


@pytest.fixture(scope="module")
def system():
  config, entry = frames_only()
  return entry, loading.build_models(config, entry, rngs(0))


@pytest.fixture(scope="module")
def codecs(system):
  """The codec that skips and the same models' codec that does not, built once (each compiles
  its device and server halves per point on first use)."""
  entry, models = system
  _, off = frames_only(skip=dict(lam=None))
  return codec_of("stae", entry, models), codec_of("stae", off, models)


def panning_clip(batch=2, seed=0):
  """A random texture moving 1 px right and 1 px down per frame: each frame is the one before,
  moved (what a skip copies), but for its new edges."""
  texture = np.random.default_rng(seed).integers(0, 256, (batch, SIZE + T, SIZE + T, 3))
  frames = [texture[:, T - t:T - t + SIZE, T - t:T - t + SIZE] for t in range(T)]
  return np.stack(frames, axis=1).astype(np.uint8)


def test_points_skip_where_the_settings_say():
  _, entry = frames_only()
  settings = {p.name: p.as_dict().get("skip") for p in stae_method.operating_points(entry)}
  default = skip_lib.Settings().lam
  assert settings == {"keep=0.125x1": None, "keep=0.5x1": default, "keep=1x1": default}
  _, off = frames_only(skip=dict(lam=None))
  assert all("skip" not in p.as_dict() for p in stae_method.operating_points(off))
  _, factorized = frames_only(",context=False")  # no repeat flags to carry a skip
  assert all("skip" not in p.as_dict() for p in stae_method.operating_points(factorized))
  _, other = frames_only(skip=dict(lam=30.0, min_frame_keep=1.0))
  assert [p.as_dict().get("skip") for p in stae_method.operating_points(other)] == [
      None, None, 30.0]
  with pytest.raises(ValueError, match="finite number >= 0"):
    skip_lib.Settings(lam=-1.0)
  # Where the points' names stay the keep ratios' (what results.json and the server name).
  assert [p.name for p in stae_method.operating_points(other)] == list(settings)


def test_skipped_blocks_reach_the_server_as_the_device_decided(system, codecs):
  """At each skipping point: the stream declares the vectors, the server's vectors are the
  device's decisions (most blocks of a panning clip's later frames, copied with a move), and the
  server's clip is the device's closed-loop picture (through the decoder where frames are
  missing), so device and receiver agree on every copy."""
  _, models = system
  codec = codecs[0]
  video = panning_clip()
  stae, prior, decoder = models["stae"], models["prior"], models["decoder"]
  p = stae.block_size
  n = (SIZE // p) ** 2
  key = jax.random.fold_in(jax.random.PRNGKey(stae_method.SELECTION_KEY), 0)
  for point in codec.points[1:]:
    lam = point["skip"]
    coded = codec.device(video, point)
    for stream in coded.streams:
      assert bitstream.read_header(stream, codec.tables).vector_count == 81
    received = codec.entropy_decode(coded.streams, point)
    sent = stae.encode(jnp.asarray(video), frame_keep=point["frame_keep"], block_keep=1.0, rng=key)
    pictures, pixel_mask, _ = stae.receive(sent["frame_index"], sent["block_index"],
                                           sent["latents"], frames=T, height=SIZE, width=SIZE)
    batch = jnp.arange(2)[:, None]
    dense, kept = stae_method._in_place(sent["latents"], sent["block_index"], n)  # pylint: disable=protected-access
    picture, skip, vector = skip_lib.choose_skips(
        pictures[batch, sent["frame_index"]],
        jnp.asarray(video, jnp.float32)[batch, sent["frame_index"]],
        stae_method._block_bits(prior, dense, kept), lam, block_size=p, search=4)  # pylint: disable=protected-access
    expected_vectors = np.where(np.asarray(skip), np.asarray(vector), -1)
    assert np.array_equal(received.vectors, expected_vectors)
    k_f = received.vectors.shape[1]
    assert (received.vectors[:, 1:] >= 0).mean() > 0.5, point.name
    assert (received.vectors[:, 1:][received.vectors[:, 1:] >= 0]
            != skip_lib.no_move(4)).mean() > 0.5  # moved copies, as the clip moves
    complete = k_f == T
    expected = stae_method.rebuild(decoder, pictures.at[batch, sent["frame_index"]].set(picture),
                                   pixel_mask, complete=complete)
    np.testing.assert_allclose(np.asarray(codec.decode(received, point)), np.asarray(expected),
                               rtol=1e-5, atol=1e-3)


def test_skipping_sends_fewer_bits_and_estimates_them(codecs):
  """On the panning clip the skipping points' real streams are far shorter than the same points
  without skipping, and the device's estimate is within a tenth of their payloads (the estimate
  leaves out the header and the CRC)."""
  skipping, plain = codecs
  video = panning_clip()
  for with_skip, without in zip(skipping.points[1:], plain.points[1:]):
    coded, reference = skipping.device(video, with_skip), plain.device(video, without)
    bits = np.array([8 * len(s) for s in coded.streams])
    assert (bits < 0.7 * np.array([8 * len(s) for s in reference.streams])).all(), with_skip.name
    payloads = skipping.entropy_decode(coded.streams, with_skip).payloads
    headers = np.array([len(bitstream._check_payload(payload, skipping.tables)[1]) + 4  # pylint: disable=protected-access
                        for payload in payloads])
    np.testing.assert_allclose(coded.estimated_bits, bits - 8 * headers, rtol=0.1)


def test_server_refuses_streams_of_the_other_kind(codecs):
  skipping, plain = codecs
  video = panning_clip()
  point = skipping.points[-1]
  with pytest.raises(DecodeError, match="81 skip vectors"):
    skipping.server(plain.device(video, plain.points[-1]).streams, point)
  with pytest.raises(DecodeError, match="does not hold"):
    plain.server(skipping.device(video, point).streams, plain.points[-1])
