"""A small codec that is not part of the project: per-frame JPEG through Pillow, for the test that
adding a method is one module and one registry line (tests/test_evaluate.py)."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

from stae_jax import systems

LABEL = "JPEG per frame (Pillow)"
LEARNED = False


class JpegCodec(systems.Codec):
  kind = tag = "jpeg"
  label = LABEL

  def __init__(self, context: systems.BaselineContext):
    self.clip_shape = tuple(context.clip_shape)
    self._classify = context.classify
    qualities = context.options.get("jpeg", {}).get("qualities", (10, 50))
    self.points = tuple(systems.Point.of(f"q={q}", quality=int(q)) for q in qualities)

  def encode(self, clips, point):
    return np.asarray(clips)

  def entropy_encode(self, encoded, point) -> systems.Coded:
    streams = []
    for clip in encoded:
      parts = []
      for frame in clip:
        out = io.BytesIO()
        Image.fromarray(frame).save(out, format="JPEG", quality=point["quality"])
        parts.append(struct.pack("<I", out.tell()) + out.getvalue())
      streams.append(b"".join(parts))
    return systems.Coded(streams=streams)

  def entropy_decode(self, streams, point):
    clips = []
    for data in streams:
      frames, offset = [], 0
      for _ in range(self.clip_shape[0]):
        (size,) = struct.unpack_from("<I", data, offset)
        frames.append(np.asarray(Image.open(io.BytesIO(data[offset + 4:offset + 4 + size]))))
        offset += 4 + size
      clips.append(np.stack(frames))
    return np.stack(clips)

  def decode(self, received, point):
    return received

  def classify(self, clips):
    return self._classify(clips)


def codecs(context):
  return [JpegCodec(context)]
