"""Refined blocks: a sent block's code corrected by a quantised DCT of what it misses, STAE's
quality dimension beside the keep ratios (an I-frame's detail, as H.264 sends it).

The block code rebuilds each 8x8 block from 8 numbers, a mosaic the skip mode's copies then inherit
(`stae_jax.models.skip`). At a refined point the device also sends, for each block it codes (not
the skipped ones) of the first `frames` kept frames, the residual original - code:

  colour   an orthonormal basis: luma (R+G+B)/sqrt(3), chroma (R-B)/sqrt(2) and (R-2G+B)/sqrt(6)
  DCT      each channel's 8x8 block through the orthonormal 2D DCT-II
  levels   round(coefficient / step(u, v)), step = s (1 + (u+v)/4) for luma, twice that for chroma
           (s: the point's step, in pixel levels), clipped to +-MAX_LEVEL; in a zigzag scan
           (JPEG's, transposed)
  picture  the code's block + the inverse of those levels, clipped to 0..255: what both sides use

The levels go into the bitstream after the skip vectors (`stae_jax.coding.bitstream`, "Refined
blocks"), each section under adaptive counts, so nothing here is learned or trained. `bits` is the
exact length of those sections' codes (up to the coder's rounding); `decision_bits` a cheap
per-block guess for the skip decision. Measured before it was built on the default's validation
clips: BENCHMARKS.md "Refined blocks" (`benchmarks/refine_blocks.py`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from stae_jax.coding import bitstream
from stae_jax.models import skip as skip_lib
from stae_jax.models.stae import blockify, unblockify

#: The block side the DCT works on (STAE's block_size must be it).
SIZE = 8
#: Orthonormal colour basis, rows: luma and two chroma differences.
COLOUR = np.array([np.array([1, 1, 1]) / np.sqrt(3), np.array([1, 0, -1]) / np.sqrt(2),
                   np.array([1, -2, 1]) / np.sqrt(6)], np.float32)
_K = np.arange(SIZE)
#: Orthonormal DCT-II matrix [u, y].
DCT = (np.sqrt(np.where(_K == 0, 1.0, 2.0) / SIZE)[:, None]
       * np.cos(np.pi * (2 * _K[None] + 1) * _K[:, None] / (2 * SIZE))).astype(np.float32)


def _zigzag() -> np.ndarray:
  """JPEG's zigzag scan: position i -> row-major frequency index u * 8 + v."""
  order = sorted(((u, v) for u in range(SIZE) for v in range(SIZE)),
                 key=lambda uv: (uv[0] + uv[1], uv[1] if (uv[0] + uv[1]) % 2 else uv[0]))
  return np.array([u * SIZE + v for u, v in order], np.int32)


ZIGZAG = _zigzag()
#: The bitstream's format constants (one source: `stae_jax.coding.bitstream`): where its four
#: bands of scan positions start, the levels coded directly (+-CLIP; beyond, an escape) and the
#: largest level.
BAND_STARTS = bitstream.REFINE_BAND_STARTS
CLIP = bitstream.REFINE_CLIP
MAX_LEVEL = bitstream.MAX_REFINE_LEVEL
FRAMES = ("first", "all")


@dataclasses.dataclass(frozen=True)
class Settings:
  """A STAE system's refined points (its entry's `model.refine`; these are the defaults).

  points: (frame_keep, step, frames) triples, each a point beside the keep-ratio points, at that
    keep ratio of frames with every block: step the luma DC step in pixel levels, frames "first"
    (the first kept frame's blocks) or "all" (every kept frame's coded blocks). Chosen on the
    default's 300 validation clips (BENCHMARKS.md "Refined blocks"): at every frame, the first
    kept frame at step 64 (85.7% at ~7.6 kbit, against 85.0% at 6.1 unrefined), every coded block
    at 32 (88.3% at ~11.8 kbit, +3.3 [-0.3, +7.3]) and at 8 (88.3% at ~18 kbit: no more accuracy,
    the rate range's top). () : none.
  """
  points: tuple = ((1.0, 64.0, "first"), (1.0, 32.0, "all"), (1.0, 8.0, "all"))

  def __post_init__(self):
    points = tuple(tuple(p) for p in self.points)
    for p in points:
      if len(p) != 3 or p[2] not in FRAMES:
        raise ValueError(f"a refined point is (frame_keep, step, 'first' or 'all'), got {p!r}")
      frame_keep, step, _ = p
      if not 0 < float(frame_keep) <= 1:
        raise ValueError(f"a refined point's frame_keep must be in (0, 1], got {frame_keep!r}")
      step_code(step)
    object.__setattr__(self, "points", points)


def step_code(step: float) -> int:
  """The header's integer for a step: quarter levels, 1..65535 (steps 0.25..16383.75)."""
  code = round(float(step) * 4)
  if not (math.isfinite(float(step)) and 1 <= code <= 65535 and code == float(step) * 4):
    raise ValueError(f"a refinement step must be a multiple of 0.25 in [0.25, 16383.75], got "
                     f"{step!r}")
  return code


def steps(step: float) -> np.ndarray:
  """Quantiser steps [3, 64] (channel, scan position) for a point's step."""
  u = np.arange(SIZE)
  base = (float(step) * (1.0 + (u[:, None] + u[None]) / 4.0)).reshape(-1)[ZIGZAG]
  return np.stack([base, 2 * base, 2 * base]).astype(np.float32)


def analyse(intra, original, step: float):
  """The levels of `original - intra` (float32 [B,K,H,W,3], 0..255) at `step`: int32
  [B,K,N,3,64], each block's three channels in scan order."""
  residual = blockify(jnp.asarray(original, jnp.float32) - intra, SIZE)  # [B,K,N,8,8,3]
  colour = jnp.einsum("...yxc,dc->...dyx", residual, COLOUR)
  coefficients = jnp.einsum("uy,...yx,vx->...uv", DCT, colour, DCT)
  flat = coefficients.reshape(coefficients.shape[:-2] + (SIZE * SIZE,))[..., ZIGZAG]
  levels = jnp.round(flat / jnp.asarray(steps(step)))
  return jnp.clip(levels, -MAX_LEVEL, MAX_LEVEL).astype(jnp.int32)


def pixels(levels, step: float, height: int, width: int):
  """The residual the levels stand for: int [B,K,N,3,64] -> float32 [B,K,H,W,3]."""
  values = jnp.asarray(levels, jnp.float32) * jnp.asarray(steps(step))
  frequency = jnp.zeros(values.shape, jnp.float32).at[..., ZIGZAG].set(values)
  frequency = frequency.reshape(values.shape[:-1] + (SIZE, SIZE))
  colour = jnp.einsum("uy,...uv,vx->...yx", DCT, frequency, DCT)
  blocks = jnp.einsum("...dyx,dc->...yxc", colour, COLOUR)
  return unblockify(blocks, height, width)


def apply(intra, levels, step: float):
  """The refined picture: intra float32 [B,K,H,W,3] plus the levels' residual, in 0..255."""
  h, w = intra.shape[2:4]
  return jnp.clip(intra + pixels(levels, step, h, w), 0.0, 255.0)


def decision_bits(levels):
  """A per-block guess at the bits of int [..., 3, 64] levels, for the skip decision: per channel
  a bit, 4 more where any level is nonzero, and 3 + 2 log2|level| per nonzero level."""
  size = jnp.abs(levels).astype(jnp.float32)
  nonzero = size > 0
  per_channel = (1.0 + jnp.where(nonzero.any(axis=-1), 4.0, 0.0)
                 + jnp.where(nonzero, 3.0 + 2.0 * jnp.log2(jnp.maximum(size, 1.0)), 0.0).sum(-1))
  return per_channel.sum(axis=-1)


def _band_of() -> np.ndarray:
  return np.searchsorted(np.array(BAND_STARTS), np.arange(SIZE * SIZE), side="right") - 1


def _counts(symbols, weight, alphabet: int):
  """Per clip [B, alphabet]: the summed `weight` [B, ...] of each symbol in `symbols` [B, ...]
  (a scatter-add: no one-hot of the whole array)."""
  b = symbols.shape[0]
  lanes = jnp.broadcast_to(jnp.arange(b).reshape((b,) + (1,) * (symbols.ndim - 1)), symbols.shape)
  return jnp.zeros((b, alphabet), jnp.float32).at[lanes.reshape(-1), symbols.reshape(-1)].add(
      weight.astype(jnp.float32).reshape(-1))


def bits(levels, refined):
  """The exact code length (bits, float32 [B]) of the refinement sections of the bitstream for
  levels int [B,K,N,3,64] of the blocks `refined` bool [B,K,N] (the others' levels must be 0):
  per channel group (luma; the two chroma) the ends (0: all zero, else the last nonzero scan
  position + 1; 65 symbols), then per group and band the levels before the end clipped to
  +-CLIP (31 symbols), then each escape's excess |level| - CLIP as two 64-symbol digits; every
  section under its own add-one adaptive counts."""
  levels = jnp.asarray(levels, jnp.int32)
  b = levels.shape[0]
  levels = levels.reshape(b, -1, 3, SIZE * SIZE)
  refined = jnp.asarray(refined, bool).reshape(b, -1)
  nonzero = levels != 0
  end = jnp.where(nonzero.any(-1), SIZE * SIZE - jnp.argmax(nonzero[..., ::-1], axis=-1), 0)
  sent = refined[:, :, None, None] & (jnp.arange(SIZE * SIZE) < end[..., None])  # [B,S,3,64]
  # One section index per (channel group, band): its symbols are counted in its own row.
  group = jnp.asarray([0, 1, 1])[:, None]
  section = group * len(BAND_STARTS) + jnp.asarray(_band_of())[None]          # [3,64]
  clipped = jnp.clip(levels, -CLIP, CLIP) + CLIP
  total = jnp.zeros((b,), jnp.float32)
  for channels in ((0,), (1, 2)):
    ends = end[:, :, list(channels)]
    weight = jnp.broadcast_to(refined[:, :, None], ends.shape)
    total += skip_lib.symbol_bits(_counts(ends, weight, SIZE * SIZE + 1))
  counts = _counts(section * (2 * CLIP + 1) + clipped, sent,
                   2 * len(BAND_STARTS) * (2 * CLIP + 1))
  total += skip_lib.symbol_bits(counts.reshape(b, 2 * len(BAND_STARTS), 2 * CLIP + 1)).sum(-1)
  excess = jnp.maximum(jnp.abs(levels) - CLIP, 0)
  escaped = sent & (jnp.abs(levels) >= CLIP)
  for digit in (excess // 64, excess % 64):
    total += skip_lib.symbol_bits(_counts(digit, escaped, 64))
  return total
