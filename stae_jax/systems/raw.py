"""Raw offloading: the sampled uint8 clip sent as it is (T*H*W*3 bytes), classified by the
reference ViT. The accuracy of the uncompressed reference at a compression ratio of 1."""

from __future__ import annotations

import math

import numpy as np

from stae_jax.systems import base

LABEL = "raw offloading (uint8)"
LEARNED = False


class RawCodec(base.Codec):
  kind = tag = "raw"
  label = LABEL
  headline = False
  points = (base.Point.of("uint8"),)

  def __init__(self, context: base.BaselineContext):
    self.clip_shape = tuple(context.clip_shape)
    self._classify = context.classify

  def max_stream_bytes(self, point) -> int:
    return math.prod(self.clip_shape)

  def encode(self, clips, point):
    return base.check_clips(clips, self.clip_shape)

  def entropy_encode(self, encoded, point) -> base.Coded:
    return base.Coded(streams=[clip.tobytes() for clip in encoded])

  def entropy_decode(self, streams, point) -> np.ndarray:
    streams = base.check_streams(streams, self.max_stream_bytes(point))
    size = self.max_stream_bytes(point)
    for i, stream in enumerate(streams):
      if len(stream) != size:
        raise base.DecodeError(f"raw stream {i} has {len(stream)} bytes, a "
                               f"{'x'.join(map(str, self.clip_shape))} uint8 clip has {size}")
    return np.stack([np.frombuffer(s, np.uint8).reshape(self.clip_shape) for s in streams])

  def decode(self, received, point) -> np.ndarray:
    return received

  def classify(self, clips) -> np.ndarray:
    return self._classify(clips)


def codecs(context: base.BaselineContext) -> list[base.Codec]:
  return [RawCodec(context)]
