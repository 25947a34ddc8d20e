"""The classical baseline: H.264 (libx264 through PyAV) in the low-delay setting a live link would use.

Settings, each chosen for a real-time edge link rather than for the best possible rate:
  * `tune=zerolatency`: no lookahead and no frame reordering, so a frame leaves the encoder as soon
    as it is coded (what a device streaming to a server would run).
  * no B-frames and one GOP per clip (keyint = min-keyint = T, scenecut off): each clip is
    decodable on its own, one I-frame then P-frames, like the STAE codec's one bitstream per clip.
  * one thread (`threads=1`), so one slice per frame: with x264's default thread count, which
    follows the machine's cores, zerolatency's sliced threads cut larger frames into 2-4 slices
    (measured on 256x256 frames: 10,237 bytes in one slice, 10,599 in two, 11,319 in four), so the
    bytes counted would depend on the machine. One thread also costs 30-40% less CPU per clip;
    a batch's clips are coded in parallel instead (`CODING_THREADS`).
  * yuv420p, 8 bits: what every H.264 decoder accepts. libx264 needs even frame sizes in 4:2:0, so
    odd heights or widths are padded by repeating the last row or column, and cropped after decoding.

What is counted: the bytes of the H.264 elementary stream (Annex B: start codes, SPS, PPS and
slices), with no container around it. By default the one SEI NAL unit that x264 writes into the
first frame is dropped before counting and before decoding: it is x264's banner (its version and
every option, ~600 bytes) that decoders ignore, and at high CRF it would be a third of a
16x112x112 clip's bytes, charging the baseline for text rather than video. `drop_sei=False`
keeps it (the stream exactly as x264 emits it); `H264Stream.sei_bytes` says how much was dropped.

The codec (`H264Codec`) is H.264 as a practitioner would run it at a few kbit per clip: over a grid
of operating points, kept frames x resolution x CRF (AWStream profiles exactly these knobs and finds
no single one of them optimal). Each cell is a `Point` (`frames=2,side=32,crf=51`): the device keeps
`frames` evenly spaced frames (`kept_frame_index`), area-downscales them to `side` pixels
(`area_downscale`) and codes them as one closed GOP; the server decodes them, fills the dropped
frames by STAE's receiver rule (held at the ends, linear in between:
`stae_jax.models.decoder.temporal_fill`) and upsamples bilinearly (`receive`), to uint8 clips. The report compares
STAE with the upper envelope of the cells (`stae_jax.evaluation.curves`).

Where the installed PyAV has no libx264 (a build without GPL codecs) every entry point raises
`X264Unavailable` with a message, so an evaluation can report the baseline as skipped instead of
crashing.
"""

from __future__ import annotations

from concurrent import futures
import dataclasses
from fractions import Fraction
import functools
import os
import re
import time
from typing import NamedTuple

import av
import jax
import jax.numpy as jnp
import numpy as np

from stae_jax.models.decoder import temporal_fill
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


# ------------------------------------------------------------------------------------------------
# What a stream declares, read before anything is decoded
# ------------------------------------------------------------------------------------------------

#: NAL unit types a stream of this codec may hold: coded slices (1, IDR 5), SEI (6), the sequence
#: and picture parameter sets (7, 8) and access unit delimiters (9). Data partitions, subset
#: sequence parameter sets (other layers' picture sizes) and extensions are refused unread.
_NAL_SLICE, _NAL_IDR, _NAL_SPS = 1, 5, 7
_ALLOWED_NAL_TYPES = frozenset((1, 5, 6, 7, 8, 9))
#: profile_idc values whose sequence parameter set carries the chroma format and bit depths.
_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))
_EMULATION_PREVENTION = re.compile(b"\x00\x00\x03")
_SPS_READ_BYTES = 4096


class _Bits:
  """An RBSP read most significant bit first: u(n), ue(v) and se(v) of the H.264 syntax. Reading
  past the end, or an Exp-Golomb code longer than 32 bits, is a ValueError."""

  def __init__(self, data: bytes):
    self._value, self._size, self._at = int.from_bytes(data, "big"), 8 * len(data), 0

  def u(self, n: int) -> int:
    if self._at + n > self._size:
      raise ValueError("the sequence parameter set ends inside a field")
    self._at += n
    return (self._value >> (self._size - self._at)) & ((1 << n) - 1)

  def ue(self) -> int:
    zeros = 0
    while not self.u(1):
      zeros += 1
      if zeros > 31:
        raise ValueError("an Exp-Golomb field is longer than 32 bits")
    return (1 << zeros) - 1 + self.u(zeros)

  def se(self) -> int:
    k = self.ue()
    return (k + 1) // 2 if k % 2 else -(k // 2)


@dataclasses.dataclass(frozen=True)
class SequenceHeader:
  """What one sequence parameter set declares about the pictures that follow it."""
  width: int             # after cropping, in pixels
  height: int
  width_mbs: int         # coded size in 16x16 macroblocks (what a decoder allocates)
  height_mbs: int
  chroma_format: int     # 1: 4:2:0
  bit_depth: int         # luma; chroma must be the same
  progressive: bool      # frame_mbs_only_flag


def _skip_scaling_list(bits: _Bits, size: int) -> None:
  last = following = 8
  for _ in range(size):
    if following:
      following = (last + bits.se() + 256) % 256
    last = following or last


def parse_sps(unit: bytes) -> SequenceHeader:
  """A sequence parameter set NAL unit (header byte first, emulation prevention still in) ->
  its picture size, chroma format and bit depth (H.264 7.3.2.1.1). ValueError if malformed."""
  # The fields up to the cropping window take at most ~1.1 kB (two sets of scaling lists); an
  # oversized unit is read no further than that.
  bits = _Bits(_EMULATION_PREVENTION.sub(b"\x00\x00", unit[1:_SPS_READ_BYTES]))
  profile = bits.u(8)
  bits.u(16)  # constraint flags, reserved bits, level_idc
  bits.ue()   # seq_parameter_set_id
  chroma_format, depth_luma, depth_chroma = 1, 8, 8
  if profile in _HIGH_PROFILES:
    chroma_format = bits.ue()
    if chroma_format > 3:
      raise ValueError(f"chroma_format_idc {chroma_format} is not 0..3")
    if chroma_format == 3:
      bits.u(1)  # separate_colour_plane_flag
    depth_luma, depth_chroma = 8 + bits.ue(), 8 + bits.ue()
    bits.u(1)  # qpprime_y_zero_transform_bypass_flag
    if bits.u(1):  # seq_scaling_matrix_present_flag
      for i in range(8 if chroma_format != 3 else 12):
        if bits.u(1):
          _skip_scaling_list(bits, 16 if i < 6 else 64)
  bits.ue()  # log2_max_frame_num_minus4
  order = bits.ue()
  if order == 0:
    bits.ue()
  elif order == 1:
    bits.u(1)
    bits.se()
    bits.se()
    cycle = bits.ue()
    if cycle > 255:
      raise ValueError(f"num_ref_frames_in_pic_order_cnt_cycle {cycle} is over 255")
    for _ in range(cycle):
      bits.se()
  elif order != 2:
    raise ValueError(f"pic_order_cnt_type {order} is not 0..2")
  bits.ue()  # max_num_ref_frames
  bits.u(1)  # gaps_in_frame_num_value_allowed_flag
  width_mbs, map_units = bits.ue() + 1, bits.ue() + 1
  progressive = bool(bits.u(1))
  if not progressive:
    bits.u(1)  # mb_adaptive_frame_field_flag
  bits.u(1)  # direct_8x8_inference_flag
  height_mbs = map_units * (1 if progressive else 2)
  crop = (bits.ue(), bits.ue(), bits.ue(), bits.ue()) if bits.u(1) else (0, 0, 0, 0)
  unit_x = 1 if chroma_format in (0, 3) else 2
  unit_y = (1 if chroma_format in (0, 3) else 2 if chroma_format == 1 else 1) * (
      1 if progressive else 2)
  return SequenceHeader(width=16 * width_mbs - unit_x * (crop[0] + crop[1]),
                        height=16 * height_mbs - unit_y * (crop[2] + crop[3]),
                        width_mbs=width_mbs, height_mbs=height_mbs, chroma_format=chroma_format,
                        bit_depth=depth_luma if depth_luma == depth_chroma else -1,
                        progressive=progressive)


def _iter_nal_units(stream: bytes):
  """The NAL units of an Annex B stream one at a time (start codes removed); ValueError if bytes
  come before the first start code."""
  starts = _START_CODE.finditer(stream)
  current = next(starts, None)
  if current is None or current.start() != 0:
    raise ValueError("it does not start with an Annex B start code (00 00 01)")
  for following in starts:
    yield stream[current.end():following.start()]
    current = following
  yield stream[current.end():]


def nal_units(stream: bytes) -> list[bytes]:
  """The NAL units of an Annex B stream (start codes removed); ValueError if bytes come before
  the first start code."""
  return list(_iter_nal_units(stream))


def check_declared(stream: bytes, num_frames: int, height: int, width: int) -> None:
  """Refuses (ValueError) a stream that declares anything but `num_frames` pictures of
  height x width (odd sizes padded by one, as `encode_h264` pads them), 4:2:0, 8 bits,
  progressive, read from its sequence parameter sets and slice headers without decoding a
  picture: a decoder allocates what the sequence parameter set declares, so a small stream
  declaring 8192x8192 pictures is a decompression bomb. Each picture starts with a slice whose
  first macroblock is 0 (one slice per frame from `encode_h264`)."""
  padded = (height + height % 2, width + width % 2)
  mbs = (-(-padded[0] // 16), -(-padded[1] // 16))
  pictures = headers = 0
  most_units = 2 * num_frames + 16  # a slice per picture, parameter sets, SEI, delimiters
  for count, unit in enumerate(_iter_nal_units(stream)):
    if count == most_units:
      raise ValueError(f"it has more than {most_units} NAL units for {num_frames} pictures")
    if not unit or unit[0] & 0x80:
      raise ValueError("an empty NAL unit or one with its forbidden bit set")
    kind = unit[0] & 0x1F
    if kind not in _ALLOWED_NAL_TYPES:
      raise ValueError(f"NAL unit type {kind} is not one this codec sends (slices, SEI, "
                       "parameter sets, delimiters)")
    if kind == _NAL_SPS:
      sps = parse_sps(unit)
      headers += 1
      if ((sps.height, sps.width) != padded or (sps.height_mbs, sps.width_mbs) != mbs
          or sps.chroma_format != 1 or sps.bit_depth != 8 or not sps.progressive):
        raise ValueError(
            f"its sequence header declares {sps.width}x{sps.height} pictures ({16 * sps.width_mbs}"
            f"x{16 * sps.height_mbs} coded, chroma format {sps.chroma_format}, "
            f"{sps.bit_depth} bits, {'progressive' if sps.progressive else 'interlaced'}); "
            f"this point sends {padded[1]}x{padded[0]} (4:2:0, 8 bits, progressive)")
    elif kind in (_NAL_SLICE, _NAL_IDR):
      if len(unit) < 2:
        raise ValueError("a slice NAL unit without a slice header")
      if unit[1] & 0x80:  # first_mb_in_slice = ue(v) 0, the code "1": a new picture
        if not headers:
          raise ValueError("a picture comes before any sequence header")
        pictures += 1
        if pictures > num_frames:
          raise ValueError(f"it declares more than the point's {num_frames} pictures")
  if not headers:
    raise ValueError("it has no sequence header (SPS)")
  if pictures != num_frames:
    raise ValueError(f"it declares {pictures} pictures; the point sends {num_frames}")


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
      "threads": "1",
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
  """Decodes an `H264Stream` back to uint8[T,H,W,3] RGB, cropping any padding added for 4:2:0.

  Each picture is checked as it leaves the decoder (its size, and no more than `num_frames` of
  them), so what decoding holds is bounded by the clip the stream should be, whatever it is."""
  check_x264()
  context = av.CodecContext.create(DECODER_NAME, "r")
  context.thread_count = 1  # clips are decoded in parallel instead (and the pixels are the same)
  size = (stream.width + stream.width % 2, stream.height + stream.height % 2)
  # One reformatter for the clip: it keeps its swscale context across frames (a fresh one per
  # frame, as `frame.to_ndarray(format=...)` makes, took 60% of a 16x64x64 decode; same pixels).
  reformatter = av.video.reformatter.VideoReformatter()
  rgb = []

  def take(frames) -> None:
    for frame in frames:
      if (frame.width, frame.height) != size:
        raise ValueError(f"the H.264 stream decoded to a {frame.width}x{frame.height} picture, "
                         f"expected {size[0]}x{size[1]}")
      if len(rgb) == stream.num_frames:
        raise ValueError(f"the H.264 stream decodes to more than {stream.num_frames} frames")
      rgb.append(reformatter.reformat(frame, format="rgb24").to_ndarray())

  for packet in context.parse(stream.data) + context.parse(None):
    take(context.decode(packet))
  take(context.decode(None))
  if len(rgb) != stream.num_frames:
    raise ValueError(
        f"the H.264 stream decoded to {len(rgb)} frames, expected {stream.num_frames}; the stream "
        "is truncated or not one produced by encode_h264.")
  return np.stack(rgb)[:, :stream.height, :stream.width]


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
# The grid: kept frames x resolution x CRF (device side: drop, downscale; server side: the reverse)
# ------------------------------------------------------------------------------------------------

LABEL = "H.264 (libx264, low delay)"
LEARNED = False
#: The grid's CRF axis by default, written here only: `config.eval.crfs` (configs/common.py
#: eval_settings) takes it, evaluate.py's --crfs overrides that, and serving and the client read
#: what an evaluation measured from results.json. It starts at 29: on the motion default H.264
#: reaches the accuracy target (reference - 5 points) only there (CRF 29, all 16 frames: 87.5% at
#: 17.2 kbit per clip; CRF 35 loses 7.3 points), and the headline compares every method at the
#: target. CRF 23 codes ~30 kbit per 16x64x64 clip, twice the paper's 104x, and each CRF adds 15
#: cells, ~110 s of CPU to an evaluation (BENCHMARKS.md). `evaluate.py --crfs=23,29,35,41,47,51`
#: measures the whole sweep.
DEFAULT_CRFS = (29, 35, 41, 47, 51)
#: Divisors of the clip's side: the model's resolution, 1/2 and 1/4 of it.
DEFAULT_SCALES = (1, 2, 4)
DEFAULT_PRESET = "veryfast"
#: The grid's other axes by default (`parse_grid`'s spec, `config.eval.h264_grid`): every cell.
DEFAULT_GRID = "full"
#: The keys of `options["h264"]` (`base.BaselineContext.options`). `cells` (names of grid cells,
#: None: all) keeps only those cells of the grid: serving builds the cells an evaluation measured
#: on its test split (`stae_jax.systems.loading.measured_baselines`).
OPTION_KEYS = ("frames", "scales", "crfs", "preset", "cells")


def default_frames(num_frames: int) -> tuple[int, ...]:
  """Kept-frame counts of the default grid: T, T/2, T/4, ... down to 1 (16, 8, 4, 2, 1 for T=16)."""
  counts, k = [], int(num_frames)
  while k >= 1:
    counts.append(k)
    k //= 2
  if counts[-1] != 1:
    counts.append(1)
  return tuple(counts)


def kept_frame_index(num_frames: int, keep: int) -> tuple[int, ...]:
  """The `keep` frames of `num_frames` the device sends: evenly spaced with the first and the last
  included when keep >= 2 (STAE's "uniform" selection), the middle one when keep == 1."""
  if not 1 <= keep <= num_frames:
    raise ValueError(f"H.264 grid: {keep} kept frames of a {num_frames}-frame clip; keep between 1 "
                     f"and {num_frames} (evaluate.py --h264_grid=frames=...).")
  if keep == 1:
    return ((num_frames - 1) // 2,)
  return tuple(int(i) for i in np.round(np.linspace(0, num_frames - 1, keep)).astype(int))


def area_downscale(frames: np.ndarray, scale: int) -> np.ndarray:
  """uint8 [k,H,W,3] -> [k,H/scale,W/scale,3]: each scale x scale square becomes its mean (area
  resampling, what a device's scaler does before the encoder), rounded half up."""
  if scale == 1:
    return frames
  k, height, width, c = frames.shape
  squares = frames.reshape(k, height // scale, scale, width // scale, scale, c)
  total = squares.sum(axis=(2, 4), dtype=np.uint32)
  return ((total + scale * scale // 2) // (scale * scale)).astype(np.uint8)


@functools.partial(jax.jit, static_argnums=0)
def _impulse_fill(num_frames: int, kept):
  # Column j: a unit impulse at the j-th kept frame (kept: float [T] 0/1, padded columns stay 0),
  # through the receiver's fill; one compile per clip length, whatever the kept frames.
  order = jnp.cumsum(kept) - 1
  impulses = (kept[:, None] * (order[:, None] == jnp.arange(num_frames)[None, :]))
  mask = jnp.broadcast_to(kept[:, None], (num_frames, num_frames))
  fill, _ = temporal_fill(impulses[None, :, :, None, None], mask[None, :, :, None, None])
  return fill[0, :, :, 0, 0]


@functools.lru_cache(maxsize=None)
def time_weights(num_frames: int, frame_index: tuple[int, ...]) -> np.ndarray:
  """float32 [T, k]: how much of each kept frame the server puts in each frame of the clip. Missing
  frames are held (before the first, after the last kept frame) or linearly interpolated between
  the kept ones: STAE's receiver rule, `stae_jax.models.decoder.temporal_fill`, applied here to
  one unit impulse per kept frame (the rule is linear, so these weights are all of it)."""
  kept = np.zeros(num_frames, np.float32)
  kept[list(frame_index)] = 1.0
  return np.asarray(_impulse_fill(int(num_frames), kept))[:, :len(frame_index)]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _bilinear_matrix(side: int, size: int):
  return jax.image.resize(jnp.eye(side, dtype=jnp.float32), (size, side), method="bilinear")


@functools.lru_cache(maxsize=None)
def upsampling_weights(side: int, size: int) -> np.ndarray:
  """float32 [size, side]: bilinear upsampling of one axis (`jax.image.resize`, half-pixel
  centres), as a matrix, so the server's whole inverse is one contraction (`receive`)."""
  return np.asarray(_bilinear_matrix(int(side), int(size)))


@jax.jit
def _receive(kept, time, rows, cols):
  out = jnp.einsum("tk,Hh,Ww,bkhwc->btHWc", time, rows, cols, kept.astype(jnp.float32))
  return jnp.clip(jnp.round(out), 0.0, 255.0).astype(jnp.uint8)


def receive(kept: np.ndarray, frame_index: tuple[int, ...], clip_shape):
  """The server's inverse of dropping and downscaling: decoded kept frames uint8 [B,k,h,w,3] ->
  uint8 [B,T,H,W,3], each missing frame filled in time (`time_weights`), every frame upsampled
  bilinearly (`upsampling_weights`), rounded to 8 bits as a server's scaler would (and a quarter
  of the memory traffic of float32 on the way to the ViT). Both steps are linear and act on
  different axes, so one contraction does both (jitted per shape); a cell that kept every frame
  at full size is the decoded clip itself."""
  num_frames, height, width, _ = clip_shape
  _, k, h, w, _ = kept.shape
  if (k, h, w) == (num_frames, height, width):
    return kept
  return _receive(kept, time_weights(num_frames, tuple(frame_index)),
                  upsampling_weights(h, height), upsampling_weights(w, width))


def point(frames: int, side: int, crf: float, preset: str = DEFAULT_PRESET) -> base.Point:
  """One grid cell: `frames` kept frames at `side` x `side` pixels, coded at `crf`."""
  return base.Point.of(f"frames={int(frames)},side={int(side)},crf={float(crf):g}",
                       frames=int(frames), side=int(side), crf=float(crf), preset=preset)


def grid_points(clip_shape, *, frames=None, scales=DEFAULT_SCALES, crfs=DEFAULT_CRFS,
                preset: str = DEFAULT_PRESET) -> tuple[base.Point, ...]:
  """Every cell of frames x scales x crfs for clips of `clip_shape` (T, H, W, 3), checked: most
  frames, largest side and lowest CRF first. `frames` None: `default_frames(T)`."""
  num_frames, height, width, _ = (int(d) for d in clip_shape)
  frames = default_frames(num_frames) if frames is None else tuple(int(k) for k in frames)
  for k in frames:
    kept_frame_index(num_frames, k)
  sides = []
  for scale in scales:
    scale = int(scale)
    if scale < 1 or height % scale or width % scale:
      raise ValueError(f"H.264 grid: scale 1/{scale} does not divide a {height}x{width} frame; "
                       "pick divisors of the config's resolution (--h264_grid=scales=1+2).")
    sides.append(height // scale)
  if height != width:
    raise ValueError(f"H.264 grid: frames of {height}x{width}; the grid names cells by their side "
                     "and needs square clips (config.data.resolution).")
  if not (frames and sides and crfs):
    raise ValueError("H.264 grid: every axis (frames, scales, crfs) needs at least one value.")
  cells = []
  for k in sorted(set(frames), reverse=True):
    for side in sorted(set(sides), reverse=True):
      for crf in sorted({float(c) for c in crfs}):
        _check_settings(crf, preset)
        cells.append(point(k, side, crf, preset))
  return tuple(cells)


def parse_grid(spec: str, num_frames: int) -> dict:
  """`config.eval.h264_grid` (evaluate.py's --h264_grid) -> `options["h264"]` entries (the CRFs
  are `config.eval.crfs`, --crfs).

  "full": every default cell (kept frames T, T/2, ..., 1 x side 1, 1/2, 1/4); "single": all frames
  at the model's resolution (the CRF sweep alone); or axes, `frames=16+2,scales=1+2` (an axis
  left out keeps its default)."""
  spec = spec.strip()
  if spec == "full":
    return {}
  if spec == "single":
    return dict(frames=(int(num_frames),), scales=(1,))
  out = {}
  for item in spec.split(","):
    key, _, values = item.partition("=")
    key = key.strip()
    if key not in ("frames", "scales") or not values.strip():
      raise ValueError(f"--h264_grid={spec!r}: expected 'full', 'single' or axes like "
                       "'frames=16+2,scales=1+2' (CRFs are --crfs).")
    try:
      out[key] = tuple(int(v) for v in values.split("+") if v.strip())
    except ValueError:
      raise ValueError(f"--h264_grid={spec!r}: {key} takes integers joined by '+'.") from None
  return out


#: Threads that code the clips of a batch (PyAV releases the GIL inside libx264 and the decoder;
#: each encoder and decoder runs one thread of its own).
CODING_THREADS = min(4, os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def _pool() -> futures.ThreadPoolExecutor:
  return futures.ThreadPoolExecutor(max_workers=CODING_THREADS, thread_name_prefix="x264")


def _map(fn, items) -> list:
  """fn over items, in order, on the coding threads (one item: in this thread)."""
  items = list(items)
  if len(items) < 2 or CODING_THREADS < 2:
    return [fn(item) for item in items]
  return list(_pool().map(fn, items))


class H264Codec(base.Codec):
  """libx264 on the device, PyAV's H.264 decoder on the server; one point per grid cell.

  Device: keep the cell's frames (`kept_frame_index`), area-downscale them to its side, encode
  them as one closed GOP (`encode_h264`, SEI dropped). Server: decode, then `_receive` (hold /
  linear interpolation in time, bilinear upsampling) back to the model's clip. The server knows
  the clip shape and the cell, as it knows a learned model's, so nothing else travels.
  Options (`options["h264"]`): frames (kept-frame counts), scales (side divisors), crfs, preset,
  cells (the names of the grid's cells to keep; None: every one)."""
  kind = tag = "h264"
  label = LABEL

  def __init__(self, context: base.BaselineContext):
    options = dict(context.options.get("h264", {}))
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
      raise ValueError(f"H.264 options {unknown} are not known; it takes {', '.join(OPTION_KEYS)}.")
    self._preset = options.get("preset", DEFAULT_PRESET)
    self.clip_shape = tuple(int(d) for d in context.clip_shape)
    self.grid = grid_points(self.clip_shape, frames=options.get("frames"),
                            scales=options.get("scales", DEFAULT_SCALES),
                            crfs=options.get("crfs", DEFAULT_CRFS), preset=self._preset)
    self.points = self.grid
    if options.get("cells") is not None:
      cells = {str(c) for c in options["cells"]}
      unknown = sorted(cells - {p.name for p in self.grid})
      if unknown or not cells:
        raise ValueError(f"H.264 cells {unknown or '(none)'} are not cells of the grid "
                         f"({', '.join(p.name for p in self.grid)}): name cells of the frames x "
                         "scales x crfs given, or leave `cells` out for every one.")
      self.points = tuple(p for p in self.grid if p.name in cells)
    self._classify = context.classify
    try:
      check_x264()
    except X264Unavailable as error:
      self.skipped = str(error)

  def summary(self) -> dict:
    # The grid's axes, also where `cells` keeps only some of its cells.
    axes = {name: sorted({p[name] for p in self.grid}, reverse=name != "crf")
            for name in ("frames", "side", "crf")}
    return dict(preset=self._preset, tune="zerolatency", bframes=0, gop="one per clip", threads=1,
                frames=axes["frames"], sides=axes["side"], crfs=axes["crf"],
                downscaling="area", upsampling="bilinear",
                missing_frames="held at the ends, linear in between (temporal_fill)")

  def _cell(self, point):
    frames = self.clip_shape[0]
    return kept_frame_index(frames, point["frames"]), self.clip_shape[1] // point["side"]

  def encode(self, clips, point):
    clips = base.check_clips(clips, self.clip_shape)
    index, scale = self._cell(point)
    return _map(lambda clip: encode_h264(area_downscale(clip[list(index)], scale), point["crf"],
                                         preset=point["preset"]), clips)

  def entropy_encode(self, encoded, point) -> base.Coded:
    del point  # x264 codes its own symbols: the streams are ready
    return base.Coded(streams=[stream.data for stream in encoded])

  def entropy_decode(self, streams, point):
    """The streams, each checked against the point by what it declares (`check_declared`)
    before any picture is decoded."""
    streams = base.check_streams(streams, self.max_stream_bytes(point))
    keep, side = point["frames"], point["side"]
    for i, data in enumerate(streams):
      try:
        check_declared(data, keep, side, side)
      except ValueError as error:
        raise base.DecodeError(f"H.264 stream {i} is not {keep} frames of {side}x{side} "
                               f"({point.name}): {error}") from None
    return streams

  def decode(self, received, point):
    index, _ = self._cell(point)
    keep, side = point["frames"], point["side"]

    def one(item):
      i, data = item
      try:
        clip = decode_h264(H264Stream(data=data, num_frames=keep, height=side, width=side,
                                      crf=point["crf"], sei_bytes=0, encode_seconds=0.0))
        if clip.shape != (keep, side, side, 3):
          raise ValueError(f"it decoded to {list(clip.shape)}")
        return clip
      except (ValueError, av.FFmpegError) as error:
        raise base.DecodeError(f"H.264 stream {i} does not decode to {keep} frames of {side}x"
                               f"{side} ({point.name}): {error}") from None

    kept = _map(one, enumerate(received))
    return np.asarray(jax.block_until_ready(receive(np.stack(kept), index, self.clip_shape)))

  def classify(self, clips) -> np.ndarray:
    return self._classify(clips)

  def server_programs(self, point):
    """The CRF is x264's alone: the cells of one kept-frames x side pair share the server half's
    programs (the same shapes and kept-frame index)."""
    return (point["frames"], point["side"])


def codecs(context: base.BaselineContext) -> list[base.Codec]:
  return [H264Codec(context)]
