"""Hostile H.264 streams for the server half's tests: small streams whose sequence header declares
huge pictures (a decompression bomb), made without encoding a huge picture.

libx264 writes its sequence and picture parameter sets when the encoder opens (as extradata, with
a global header), so the parameter sets of a 8192x8192 stream cost milliseconds; the slices come
from a real small clip coded with the same settings. A decoder that trusts the sequence header
allocates, conceals and outputs every picture at the declared size: before the server half read
the sequence header, the 250-byte 4096x4096 bomb below (16 frames of 16x16 behind it) took
`decode_h264` 6.2 s and a 2.2 GB peak on a 2-core CPU, and was answered OK.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from stae_jax.systems import h264


def parameter_sets(side: int, frames: int) -> bytes:
  """The SPS and PPS (Annex B) libx264 writes for frames x side x side (`encode_h264`'s
  settings)."""
  context = av.CodecContext.create(h264.ENCODER_NAME, "w")
  context.width = context.height = side
  context.pix_fmt = "yuv420p"
  context.time_base = Fraction(1, 30)
  context.framerate = Fraction(30)
  context.gop_size = frames
  context.max_b_frames = 0
  context.flags |= av.codec.context.Flags.global_header
  context.options = {"crf": "51", "preset": "veryfast", "tune": "zerolatency", "threads": "1",
                     "x264-params": f"keyint={frames}:min-keyint={frames}:scenecut=0:bframes=0"}
  context.open()
  return bytes(context.extradata)


def slices(stream: bytes) -> bytes:
  """The coded slices of an Annex B stream, each behind a 4-byte start code."""
  return b"".join(b"\0\0\0\1" + unit for unit in h264.nal_units(stream)
                  if unit and unit[0] & 0x1F in (1, 5))


def bomb(declared_side: int, frames: int = 16, side: int = 16) -> bytes:
  """`frames` pictures of side x side (black, CRF 51) behind parameter sets declaring
  declared_side x declared_side."""
  small = h264.encode_h264(np.zeros((frames, side, side, 3), np.uint8), 51).data
  return parameter_sets(declared_side, frames) + slices(small)
