"""The classical baseline: H.264 (libx264 through PyAV) in the low-delay setting a live link would use.

Settings, each chosen for a real-time edge link rather than for the best possible rate:
  * `tune=zerolatency`: no lookahead and no frame reordering, so a frame leaves the encoder as soon
    as it is coded (what a device streaming to a server would run).
  * no B-frames and one GOP per clip (keyint = min-keyint = T, scenecut off): each clip is
    decodable on its own, one I-frame then P-frames, like the STAE codec's one bitstream per clip.
  * yuv420p, 8 bits: what every H.264 decoder accepts. libx264 needs even frame sizes in 4:2:0, so
    odd heights or widths are padded by repeating the last row or column, and cropped after decoding.

What is counted: the bytes of the H.264 elementary stream (Annex B: start codes, SPS, PPS and
slices), with no container around it. By default the one SEI NAL unit that x264 writes into the
first frame is dropped before counting and before decoding: it is x264's banner (its version and
every option, ~600 bytes) that decoders ignore, and at high CRF it would be a third of a
16x112x112 clip's bytes, charging the baseline for text rather than video. `drop_sei=False`
keeps it (the stream exactly as x264 emits it); `H264Stream.sei_bytes` says how much was dropped.

Where the installed PyAV has no libx264 (a build without GPL codecs) every entry point raises
`X264Unavailable` with a message, so an evaluation can report the baseline as skipped instead of
crashing.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
import re
import time
from typing import NamedTuple

import av
import numpy as np

from stae_jax.systems import base

#: FFmpeg's names for the encoder and decoder (module attributes so tests can simulate their absence).
ENCODER_NAME = "libx264"
DECODER_NAME = "h264"

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
           "veryslow", "placebo")
#: 8-bit libx264's CRF range; 0 is lossless in YUV (not in RGB: 4:2:0 chroma is still subsampled).
MAX_CRF = 51

_NAL_SEI = 6
# A start code, taking a leading zero byte along where the 4-byte form is used.
_START_CODE = re.compile(b"\x00?\x00\x00\x01")


class X264Unavailable(RuntimeError):
  """The installed PyAV/FFmpeg cannot encode or decode H.264, so the baseline cannot run."""


def check_x264() -> None:
  """Raises `X264Unavailable` (with what to do) unless libx264 encoding and H.264 decoding work."""
  for name, mode, role in ((ENCODER_NAME, "w", "encoder"), (DECODER_NAME, "r", "decoder")):
    try:
      av.codec.Codec(name, mode)
    except (av.codec.codec.UnknownCodecError, av.FFmpegError, ValueError) as error:
      raise X264Unavailable(
          f"the H.264 baseline needs FFmpeg's {name!r} {role}, which this PyAV build "
          f"(av {av.__version__}) lacks ({error}). Install the PyPI wheel of av (it bundles "
          "libx264), or skip the H.264 baseline.") from None


def x264_available() -> bool:
  """Whether `check_x264()` passes; for reports that skip the baseline with a message."""
  try:
    check_x264()
  except X264Unavailable:
    return False
  return True


@dataclasses.dataclass(frozen=True)
class H264Stream:
  """One clip's H.264 elementary stream and what the decoder needs to restore its exact shape."""
  data: bytes
  num_frames: int
  height: int
  width: int
  crf: float
  sei_bytes: int  # Bytes of SEI NAL units dropped from `data` (0 with drop_sei=False).
  encode_seconds: float

  @property
  def num_bytes(self) -> int:
    return len(self.data)


class H264Result(NamedTuple):
  """`h264_roundtrip`'s answer: bytes sent, the clip the server sees, and the two codec times."""
  num_bytes: int
  decoded: np.ndarray | None
  encode_seconds: float
  decode_seconds: float


def _check_clip(clip: np.ndarray) -> np.ndarray:
  clip = np.asarray(clip)
  if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[-1] != 3 or 0 in clip.shape:
    raise ValueError(
        f"H.264 needs an RGB clip uint8[T,H,W,3] with T, H, W > 0; got {clip.dtype}{list(clip.shape)}. "
        "Convert normalised floats back with np.clip(x * 255, 0, 255).astype(np.uint8).")
  return clip


def _check_settings(crf: float, preset: str) -> None:
  if not 0 <= crf <= MAX_CRF:
    raise ValueError(f"crf={crf}: libx264 (8-bit) takes a CRF in [0, {MAX_CRF}]; higher is smaller.")
  if preset not in PRESETS:
    raise ValueError(f"preset={preset!r} is not an x264 preset; use one of {', '.join(PRESETS)}.")


def drop_sei_units(stream: bytes) -> tuple[bytes, int]:
  """Removes every SEI NAL unit from an Annex B stream; returns (stream, bytes removed)."""
  starts = [match.start() for match in _START_CODE.finditer(stream)]
  kept = []
  removed = 0
  for i, start in enumerate(starts):
    end = starts[i + 1] if i + 1 < len(starts) else len(stream)
    unit = stream[start:end]
    header = unit[3] if unit[2] == 1 else unit[4]  # After a 3- or 4-byte start code.
    if header & 0x1F == _NAL_SEI:
      removed += len(unit)
    else:
      kept.append(unit)
  if starts and starts[0] != 0:
    kept.insert(0, stream[:starts[0]])
  return b"".join(kept), removed


def encode_h264(clip: np.ndarray, crf: float, *, preset: str = "veryfast", fps: int = 30,
                drop_sei: bool = True) -> H264Stream:
  """Encodes a uint8[T,H,W,3] RGB clip as one closed GOP of low-delay H.264.

  `encode_seconds` covers what the device does: RGB -> YUV 4:2:0 conversion, padding of odd sizes
  and x264 itself (the encoder's one-off set-up included, since every clip is encoded on its own).
  """
  check_x264()
  clip = _check_clip(clip)
  _check_settings(crf, preset)
  num_frames, height, width, _ = clip.shape
  started = time.perf_counter()
  pad_rows, pad_cols = height % 2, width % 2
  if pad_rows or pad_cols:
    clip = np.pad(clip, ((0, 0), (0, pad_rows), (0, pad_cols), (0, 0)), mode="edge")
  context = av.CodecContext.create(ENCODER_NAME, "w")
  context.width = width + pad_cols
  context.height = height + pad_rows
  context.pix_fmt = "yuv420p"
  context.time_base = Fraction(1, fps)
  context.framerate = Fraction(fps)
  context.gop_size = num_frames
  context.max_b_frames = 0
  context.options = {
      "crf": f"{crf:g}",
      "preset": preset,
      "tune": "zerolatency",
      "x264-params": f"keyint={num_frames}:min-keyint={num_frames}:scenecut=0:bframes=0",
  }
  packets = []
  for index, rgb in enumerate(clip):
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    frame.pts = index
    packets.extend(context.encode(frame))
  packets.extend(context.encode(None))
  data = b"".join(bytes(packet) for packet in packets)
  sei_bytes = 0
  if drop_sei:
    data, sei_bytes = drop_sei_units(data)
  encode_seconds = time.perf_counter() - started
  return H264Stream(data=data, num_frames=num_frames, height=height, width=width, crf=crf,
                    sei_bytes=sei_bytes, encode_seconds=encode_seconds)


def decode_h264(stream: H264Stream) -> np.ndarray:
  """Decodes an `H264Stream` back to uint8[T,H,W,3] RGB, cropping any padding added for 4:2:0."""
  check_x264()
  context = av.CodecContext.create(DECODER_NAME, "r")
  frames = []
  for packet in context.parse(stream.data) + context.parse(None):
    frames.extend(context.decode(packet))
  frames.extend(context.decode(None))
  if len(frames) != stream.num_frames:
    raise ValueError(
        f"the H.264 stream decoded to {len(frames)} frames, expected {stream.num_frames}; the stream "
        "is truncated or not one produced by encode_h264.")
  clip = np.stack([frame.to_ndarray(format="rgb24") for frame in frames])
  return clip[:, :stream.height, :stream.width]


def h264_roundtrip(clip: np.ndarray, crf: float, *, preset: str = "veryfast", fps: int = 30,
                   drop_sei: bool = True, keep_decoded: bool = True) -> H264Result:
  """Encodes and decodes one clip; returns (num_bytes, decoded clip, encode s, decode s)."""
  stream = encode_h264(clip, crf, preset=preset, fps=fps, drop_sei=drop_sei)
  started = time.perf_counter()
  decoded = decode_h264(stream)
  decode_seconds = time.perf_counter() - started
  return H264Result(num_bytes=stream.num_bytes, decoded=decoded if keep_decoded else None,
                    encode_seconds=stream.encode_seconds, decode_seconds=decode_seconds)


# ------------------------------------------------------------------------------------------------
# The codec (what evaluation and the single-clip tools call)
# ------------------------------------------------------------------------------------------------

LABEL = "H.264 (libx264, low delay)"
LEARNED = False
DEFAULT_CRFS = (23, 29, 35, 41, 47, 51)
DEFAULT_PRESET = "veryfast"


def point(crf: float, preset: str = DEFAULT_PRESET) -> base.Point:
  return base.Point.of(f"crf={float(crf):g}", crf=float(crf), preset=preset)


class H264Codec(base.Codec):
  """libx264 on the device, PyAV's H.264 decoder on the server, the reference ViT to classify.

  Each point is a CRF (`options["h264"]["crfs"]`) at one preset. A clip's stream is the elementary
  stream of `encode_h264` (SEI dropped); the server knows the clip shape, as it knows a learned
  model's, so nothing else travels."""
  kind = tag = "h264"
  label = LABEL

  def __init__(self, context: base.BaselineContext):
    options = dict(context.options.get("h264", {}))
    preset = options.get("preset", DEFAULT_PRESET)
    self.points = tuple(point(crf, preset) for crf in options.get("crfs", DEFAULT_CRFS))
    for p in self.points:
      _check_settings(p["crf"], p["preset"])
    self.clip_shape = tuple(context.clip_shape)
    self._classify = context.classify
    self._preset = preset
    try:
      check_x264()
    except X264Unavailable as error:
      self.skipped = str(error)

  def summary(self) -> dict:
    return dict(preset=self._preset, tune="zerolatency", bframes=0, gop="one per clip")

  def encode(self, clips, point):
    clips = base.check_clips(clips, self.clip_shape)
    return [encode_h264(clip, point["crf"], preset=point["preset"]) for clip in clips]

  def entropy_encode(self, encoded, point) -> base.Coded:
    del point  # x264 codes its own symbols: the streams are ready
    return base.Coded(streams=[stream.data for stream in encoded])

  def entropy_decode(self, streams, point):
    return base.check_streams(streams, self.max_stream_bytes(point))

  def decode(self, received, point) -> np.ndarray:
    frames, height, width, _ = self.clip_shape
    clips = []
    for i, data in enumerate(received):
      try:
        clip = decode_h264(H264Stream(data=data, num_frames=frames, height=height, width=width,
                                      crf=point["crf"], sei_bytes=0, encode_seconds=0.0))
        if clip.shape != (frames, height, width, 3):
          raise ValueError(f"it decoded to {list(clip.shape)}")
        clips.append(clip)
      except (ValueError, av.FFmpegError) as error:
        raise base.DecodeError(f"H.264 stream {i} does not decode to a {frames}x{height}x{width} "
                               f"clip ({error})") from None
    return np.stack(clips)

  def classify(self, clips) -> np.ndarray:
    return self._classify(clips)


def codecs(context: base.BaselineContext) -> list[base.Codec]:
  return [H264Codec(context)]
