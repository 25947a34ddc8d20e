"""The H.264 baseline: low-delay libx264 round trips, byte counting, odd sizes, a missing codec."""

import re

import av
import numpy as np
import pytest

from stae_jax.evaluation import metrics
from stae_jax.systems import h264 as x264


def _moving_gradient(num_frames=8, height=64, width=96):
  """A smooth clip with motion: easy to code well, so quality checks are meaningful."""
  y, x = np.mgrid[0:height, 0:width]
  frames = []
  for t in range(num_frames):
    red = 128 + 100 * np.sin((x + 2 * t) / 9.0)
    green = 128 + 100 * np.cos((y - t) / 7.0)
    blue = (x + y + 3 * t) % 256
    frames.append(np.stack([red, green, blue], -1))
  return np.clip(frames, 0, 255).astype(np.uint8)


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return 10 * np.log10(255.0 ** 2 / mse)


def _nal_types(stream: bytes):
  return [stream[m.end()] & 0x1F for m in re.finditer(b"\x00\x00\x01", stream)]


def test_roundtrip_keeps_shape_and_quality_and_crf_trades_bytes():
  clip = _moving_gradient()
  results = {crf: x264.h264_roundtrip(clip, crf) for crf in (10, 23, 35, 51)}
  for result in results.values():
    assert result.decoded.shape == clip.shape and result.decoded.dtype == np.uint8
    assert result.encode_seconds > 0 and result.decode_seconds > 0
  # (On a clip this small and smooth, CRF 51 is not always smaller than 35: headers dominate.)
  sizes = [results[crf].num_bytes for crf in (10, 23, 35)]
  assert sizes[0] > sizes[1] > sizes[2] and results[51].num_bytes < sizes[1]
  assert _psnr(results[10].decoded, clip) > 35
  assert _psnr(results[10].decoded, clip) > _psnr(results[51].decoded, clip) + 5


def test_one_closed_gop_without_b_frames():
  stream = x264.encode_h264(_moving_gradient(num_frames=12), 23)
  types = _nal_types(stream.data)
  assert types.count(7) == 1 and types.count(8) == 1  # One SPS, one PPS: one GOP.
  assert 6 not in types  # The SEI banner was dropped.
  slices = [t for t in types if t in (1, 5)]
  first_p = slices.index(1)
  assert set(slices[:first_p]) == {5} and set(slices[first_p:]) == {1}  # IDR, then P only.
  decoder = av.CodecContext.create("h264", "r")
  frames = [f for p in decoder.parse(stream.data) + decoder.parse(None) for f in decoder.decode(p)]
  frames += decoder.decode(None)
  picture_types = [av.video.frame.PictureType(f.pict_type).name for f in frames]
  assert picture_types == ["I"] + ["P"] * 11
  # One slice per frame whatever the machine's cores (x264's default threads slice large frames).
  large = np.tile(_moving_gradient(num_frames=3), (1, 4, 3, 1))  # 3 x 256 x 288
  assert sum(t in (1, 5) for t in _nal_types(x264.encode_h264(large, 35).data)) == 3


def test_dropping_the_sei_banner_changes_bytes_not_pictures():
  clip = _moving_gradient()
  without = x264.encode_h264(clip, 30)
  full = x264.encode_h264(clip, 30, drop_sei=False)
  assert 6 in _nal_types(full.data) and full.sei_bytes == 0
  assert without.sei_bytes > 100 and without.num_bytes + without.sei_bytes == full.num_bytes
  np.testing.assert_array_equal(x264.decode_h264(without), x264.decode_h264(full))


@pytest.mark.parametrize("shape", [(3, 33, 47, 3), (1, 16, 17, 3), (2, 2, 2, 3)])
def test_odd_and_tiny_frame_sizes_round_trip(shape):
  clip = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
  result = x264.h264_roundtrip(clip, 0)
  assert result.decoded.shape == shape


def test_bad_input_is_refused_with_the_fix():
  clip = _moving_gradient(num_frames=2)
  with pytest.raises(ValueError, match="uint8"):
    x264.encode_h264(clip.astype(np.float32) / 255, 23)
  with pytest.raises(ValueError, match=r"\[0, 51\]"):
    x264.encode_h264(clip, 60)
  with pytest.raises(ValueError, match="preset"):
    x264.encode_h264(clip, 23, preset="quick")


def test_missing_libx264_raises_a_typed_error(monkeypatch):
  assert x264.x264_available()
  monkeypatch.setattr(x264, "ENCODER_NAME", "libx264_not_in_this_build")
  assert not x264.x264_available()
  with pytest.raises(x264.X264Unavailable, match="skip the H.264 baseline"):
    x264.h264_roundtrip(_moving_gradient(num_frames=2), 23)


def _sample_real_clip(path, num_frames, size):
  """Uniformly sampled frames, short side resized to `size`, centre crop: the DESIGN.md table's set-up."""
  with av.open(str(path), metadata_errors="ignore") as container:
    frames = list(container.decode(video=0))
  picked = [frames[i] for i in np.linspace(0, len(frames) - 1, num_frames).round().astype(int)]
  scale = size / min(picked[0].height, picked[0].width)
  height, width = round(picked[0].height * scale), round(picked[0].width * scale)
  clip = np.stack([f.reformat(width=width, height=height, format="rgb24",
                              interpolation="BILINEAR").to_ndarray() for f in picked])
  top, left = (height - size) // 2, (width - size) // 2
  return clip[:, top:top + size, left:left + size]


@pytest.mark.real_data
def test_real_hmdb51_compression_ratios_match_the_design_table(real_data):
  # DESIGN.md measured (SEI included) ~64x at CRF 23 for 16x112x112 and ~91x for 16x224x224.
  paths = sorted((real_data / "hmdb51").glob("*/*.avi"))
  paths += sorted((real_data / "hmdb51_reencoded").glob("*/*.mp4"))[:2]
  assert len(paths) == 4
  for size, low, high in [(112, 35, 130), (224, 50, 200)]:
    clips = [_sample_real_clip(path, 16, size) for path in paths]
    assert clips[0].shape == (16, size, size, 3)
    ratios = [metrics.compression_ratio(clip.shape, x264.encode_h264(clip, 23).num_bytes)
              for clip in clips]
    assert low < np.median(ratios) < high, ratios
    coarse = [metrics.compression_ratio(clip.shape, x264.encode_h264(clip, 45).num_bytes)
              for clip in clips]
    assert np.median(coarse) > 3 * np.median(ratios)


# --- the grid codec: kept frames x resolution x CRF ---------------------------------------------

def _grid_codec(clip_shape=(8, 32, 32, 3), **options):
  from stae_jax.systems import base  # pylint: disable=g-import-not-at-top
  return x264.H264Codec(base.BaselineContext(clip_shape=clip_shape, classify=None,
                                             options=dict(h264=options)))


def test_kept_frames_are_evenly_spaced_with_both_ends():
  assert x264.kept_frame_index(16, 16) == tuple(range(16))
  assert x264.kept_frame_index(16, 4) == (0, 5, 10, 15)
  assert x264.kept_frame_index(16, 2) == (0, 15)
  assert x264.kept_frame_index(16, 1) == (7,)
  assert x264.default_frames(16) == (16, 8, 4, 2, 1) and x264.default_frames(6) == (6, 3, 1)
  with pytest.raises(ValueError, match="between 1 and 16"):
    x264.kept_frame_index(16, 17)


def test_area_downscale_averages_squares():
  frames = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
  small = x264.area_downscale(frames, 2)
  assert small.shape == (2, 2, 2, 3) and small.dtype == np.uint8
  expected = frames.astype(np.float64).reshape(2, 2, 2, 2, 2, 3).mean(axis=(2, 4))
  np.testing.assert_array_equal(small, np.floor(expected + 0.5))
  assert x264.area_downscale(frames, 1) is frames


def test_server_fill_is_the_receivers_rule_then_bilinear_upsampling():
  """`receive` is STAE's temporal fill (models.decoder.temporal_fill) and jax.image.resize,
  composed: the same numbers, so the two methods' receivers cannot drift apart."""
  import jax  # pylint: disable=g-import-not-at-top
  from stae_jax.models.decoder import temporal_fill  # pylint: disable=g-import-not-at-top
  kept = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8, 3), dtype=np.uint8)
  index = x264.kept_frame_index(8, 3)
  out = np.asarray(x264.receive(kept, index, (8, 32, 32, 3)))
  values = np.zeros((2, 8, 8, 8, 3), np.float32)
  values[:, list(index)] = kept
  mask = np.zeros((2, 8, 8, 8, 1), np.float32)
  mask[:, list(index)] = 1
  expected = np.asarray(jax.jit(lambda v, m: jax.image.resize(
      temporal_fill(v, m)[0], (2, 8, 32, 32, 3), "bilinear"))(values, mask))
  assert out.dtype == np.uint8
  np.testing.assert_allclose(out, np.round(expected), atol=1)  # rounded to 8 bits
  # Held before the first and after the last kept frame, linear in between.
  weights = x264.time_weights(8, (2, 5))
  np.testing.assert_allclose(weights[:3], [[1, 0]] * 3)
  np.testing.assert_allclose(weights[3:6], [[2 / 3, 1 / 3], [1 / 3, 2 / 3], [0, 1]], atol=1e-6)
  np.testing.assert_allclose(weights[6:], [[0, 1]] * 2)


@pytest.mark.parametrize("frames,side", [(8, 32), (2, 16), (1, 8)])
def test_grid_cells_round_trip_with_real_bytes_and_no_sei(frames, side):
  codec = _grid_codec(frames=(frames,), scales=(32 // side,), crfs=(0, 40))
  clip = _moving_gradient(num_frames=8, height=32, width=32)
  lossless, coarse = codec.points
  assert lossless.name == f"frames={frames},side={side},crf=0"
  coded = codec.device(clip[None], lossless)
  stream = coded.streams[0]
  types = _nal_types(stream)
  assert 6 not in types  # x264's SEI banner is dropped before counting
  assert sum(t in (1, 5) for t in types) == frames  # one slice per kept frame, nothing else sent
  assert len(codec.device(clip[None], coarse).streams[0]) < len(stream)
  rebuilt = np.asarray(codec.server(coded.streams, lossless))
  assert rebuilt.shape == (1, 8, 32, 32, 3) and rebuilt.dtype == np.uint8
  # The kept frames come back as the device saw them: downscaled, coded, upsampled.
  index = list(x264.kept_frame_index(8, frames))
  small = x264.area_downscale(clip[index], 32 // side)
  decoded = x264.decode_h264(x264.H264Stream(stream, frames, side, side, 0, 0, 0.0))
  np.testing.assert_array_equal(decoded, x264.h264_roundtrip(small, 0).decoded)
  assert _psnr(decoded, small) > 25  # CRF 0: lossless in YUV; 4:2:0 chroma of an 8 px frame
  np.testing.assert_array_equal(rebuilt[0], np.asarray(x264.receive(
      decoded[None], tuple(index), (8, 32, 32, 3)))[0])
  if frames == 8 and side == 32:  # the whole clip at full size: exactly the decoded frames
    np.testing.assert_array_equal(rebuilt[0], decoded)
  # The server refuses a stream of another cell by name.
  from stae_jax.systems import base  # pylint: disable=g-import-not-at-top
  other = x264.point(frames + 1 if frames < 8 else 4, side, 0)
  with pytest.raises(base.DecodeError, match="does not decode"):
    codec.decode([stream], other)


def test_grid_options_and_their_errors():
  codec = _grid_codec()
  assert len(codec.points) == 4 * 3 * len(x264.DEFAULT_CRFS)  # frames 8, 4, 2, 1 x sides 32, 16, 8
  assert codec.summary()["frames"] == [8, 4, 2, 1] and codec.summary()["sides"] == [32, 16, 8]
  assert x264.parse_grid("full", 16) == {}
  assert x264.parse_grid("single", 16) == dict(frames=(16,), scales=(1,))
  assert x264.parse_grid("frames=16+2,scales=1+2", 16) == dict(frames=(16, 2), scales=(1, 2))
  with pytest.raises(ValueError, match="'full', 'single' or axes"):
    x264.parse_grid("frames", 16)
  with pytest.raises(ValueError, match="integers"):
    x264.parse_grid("frames=a", 16)
  with pytest.raises(ValueError, match="does not divide"):
    _grid_codec(scales=(3,))
  with pytest.raises(ValueError, match="kept frames"):
    _grid_codec(frames=(9,))
  with pytest.raises(ValueError, match="not known"):
    _grid_codec(crf=51)


# --- what a stream declares, checked before decoding --------------------------------------------

def test_server_half_refuses_what_the_sequence_header_declares_before_decoding():
  """Pictures of another size (a 4096x4096 or 8192x8192 decompression bomb of 250 bytes), more or
  fewer pictures, NAL units the device never sends: refused from the headers, in milliseconds."""
  import time  # pylint: disable=g-import-not-at-top
  import h264_bombs  # pylint: disable=g-import-not-at-top
  from stae_jax.systems import base  # pylint: disable=g-import-not-at-top
  codec = _grid_codec((16, 64, 64, 3), frames=(16,), scales=(4,), crfs=(51,))
  (point,) = codec.points
  assert point.name == "frames=16,side=16,crf=51"
  clip = _moving_gradient(num_frames=16, height=64, width=64)
  honest = codec.device(clip[None], point).streams[0]
  assert codec.entropy_decode([honest], point) == [honest]
  for side in (4096, 8192):
    started = time.perf_counter()
    with pytest.raises(base.DecodeError, match=f"declares {side}x{side} pictures.*sends 16x16"):
      codec.server([h264_bombs.bomb(side)], point)
    assert time.perf_counter() - started < 0.5
  units = x264.nal_units(honest)
  sps = next(u for u in units if u[0] & 0x1F == 7)
  body = h264_bombs.slices(honest)
  cropped = h264_bombs.parameter_sets(32, 16)  # 32x32 coded, declared 16x16 only by cropping
  bad = {
      "more than the point's 16 pictures": honest + b"\0\0\1" + units[-1],  # a 17th picture
      "declares 15 pictures": honest[:honest.rindex(b"\0\0\0\1")],
      "NAL unit type 15": honest + b"\0\0\1" + bytes([0x6F]) + sps[1:],  # a subset SPS
      "NAL unit type 20": b"\0\0\1\x74\x80" + honest,
      "start code": b"\x17" + honest,
      "no sequence header": b"\0\0\1" + next(u for u in units if u[0] & 0x1F == 8),
      "ends inside a field": b"\0\0\1" + sps[:6] + honest,
      "declares 32x32": cropped + body,
      "before any sequence header": body[:40] + honest,
      "more than 48 NAL units": honest + b"\0\0\1\x09\xf0" * 40,  # access unit delimiters
  }
  for needle, stream in bad.items():
    with pytest.raises(base.DecodeError, match=needle):
      codec.entropy_decode([stream], point)
  # Decoding alone (no header check) stops at the first picture of the wrong size.
  with pytest.raises(ValueError, match="decoded to a 4096x4096 picture, expected 16x16"):
    x264.decode_h264(x264.H264Stream(h264_bombs.bomb(4096), 16, 16, 16, 51, 0, 0.0))
