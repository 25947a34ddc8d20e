"""The report definitions of DESIGN.md, as small functions every table and plot shares.

One definition per quantity, so that the STAE codec, DeepISC and H.264 are never compared through
two slightly different formulas: the compression ratio always divides the bytes of the sampled
uint8 clip at model resolution (T*H*W*3) by the bytes of the whole bitstream, and accuracy loss is
always in percentage points of top-1.
"""

from __future__ import annotations

import math
from typing import Sequence


def raw_clip_bytes(clip_shape: Sequence[int]) -> int:
  """Bytes of a uint8[T,H,W,3] clip: the numerator of every compression ratio."""
  shape = tuple(int(d) for d in clip_shape)
  if len(shape) != 4 or shape[-1] != 3 or min(shape) <= 0:
    raise ValueError(
        f"clip shape {shape}: expected (T, H, W, 3) with positive sizes; pass `clip.shape` of the "
        "sampled uint8 clip at model resolution.")
  return math.prod(shape)


def _positive_bytes(num_bytes) -> float:
  value = float(num_bytes)
  if not value > 0 or not math.isfinite(value):
    raise ValueError(
        f"bitstream size {num_bytes!r} bytes: expected a positive, finite byte count (the length "
        "of the whole bitstream, header and masks included).")
  return value


def compression_ratio(clip_shape: Sequence[int], num_bytes: float) -> float:
  """T*H*W*3 uint8 bytes of the sampled clip / bytes of the whole bitstream."""
  return raw_clip_bytes(clip_shape) / _positive_bytes(num_bytes)


def bits_per_clip(num_bytes: float) -> float:
  """Bits of one clip's bitstream (8 per byte): what the channel has to carry."""
  return 8.0 * _positive_bytes(num_bytes)


def bits_per_pixel(clip_shape: Sequence[int], num_bytes: float) -> float:
  """Bitstream bits per pixel of the sampled clip (T*H*W pixels, colour not counted separately)."""
  num_pixels = raw_clip_bytes(clip_shape) // 3
  return bits_per_clip(num_bytes) / num_pixels


def _check_fraction(name: str, value: float) -> float:
  value = float(value)
  if not 0.0 <= value <= 1.0:
    raise ValueError(
        f"{name}={value}: expected a top-1 accuracy as a fraction in [0, 1] (e.g. 0.72, not 72).")
  return value


def accuracy_loss_points(top1_clean: float, top1_compressed: float) -> float:
  """Top-1 on uncompressed clips minus top-1 on reconstructed clips, in percentage points.

  Both are fractions in [0, 1] measured on the same split and views; a positive result is a loss.
  """
  return 100.0 * (_check_fraction("top1_clean", top1_clean)
                  - _check_fraction("top1_compressed", top1_compressed))
