"""The integer context rule of STAE's conditional entropy model: what the decoder already has.

A kept block's latent is coded after everything the decoder holds before it: the kept frames in
order; within a frame two passes over a checkerboard of the block grid (blocks with row + column
even, the "anchors", then the rest); within a pass the channels in order. The decoder keeps a
canvas: every block's values as last sent (by an earlier frame, or by this frame's first pass).
Each latent value y (channel c of one position inside block n) is coded as the residual
r = y - pred under the table of (c, spatial context s, channel context x):

  neighbours  the canvas at block n and at its up, down, left and right blocks (same position
              and channel), each where it was ever sent
  pred        their mean, rounded half up (0 with no neighbour)
  s           0 with no neighbour, 1 with one, else 2 + #{thresholds <= max - min of them}
  x           for c > 0: the residual of channel c - 1 at the same position, clipped to
              [-X, X] and shifted to 0..2X (channels are correlated); 0 for c = 0

so a channel has S = 3 + len(thresholds) spatial contexts times 2X + 1 channel contexts. All of
it is integer arithmetic on values both sides hold exactly, so the decoder on any machine selects
the table the encoder used; no network runs inside the coder (the learned part is the table
family, trained through `stae_jax.models.entropy.ContextPrior`, frozen into
`stae_jax.coding.tables`). Measured against the factorized prior on the same latents:
BENCHMARKS.md "Entropy coding: the conditional model". The stream (format version 3) adds one
thing this rule and the training rate leave out: a flag per block sent before, saying whether it
repeats its values as last sent exactly (then no residuals; `stae_jax.coding.bitstream`). Where
blocks repeat, real streams are shorter than the learned rate; the rate stays the rule's.

Two implementations of the one rule: `Canvas` and `channel_context` in NumPy integers, pass by
pass over a batch of clips in lockstep, for the range coder (the encoder and the decoder run the
same code), and `dense_context` in JAX over whole clips [B, T, N, L] for the training rate (float
arithmetic on integer values, exact for |y| < 2^20). The tests check that they agree.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["RULE_VERSION", "num_spatial_contexts", "num_contexts", "check_rule", "anchors",
           "Canvas", "channel_context", "dense_context"]

#: Version of the rule above; stored in the coding tables' context spec (a change means new tables).
RULE_VERSION = 2


def num_spatial_contexts(thresholds: Sequence[int]) -> int:
  return 3 + len(tuple(thresholds))


def num_contexts(thresholds: Sequence[int], channel_clip: int) -> int:
  """K: tables per channel, S spatial contexts times 2X + 1 channel contexts."""
  return num_spatial_contexts(thresholds) * (2 * int(channel_clip) + 1)


def check_rule(grid_width: int, thresholds: Sequence[int],
               channel_clip: int) -> tuple[int, tuple[int, ...], int]:
  grid_width, thresholds = int(grid_width), tuple(int(t) for t in thresholds)
  channel_clip = int(channel_clip)
  if grid_width < 1:
    raise ValueError(f"grid_width must be >= 1, got {grid_width}")
  if any(t < 1 for t in thresholds) or list(thresholds) != sorted(set(thresholds)):
    raise ValueError(f"context thresholds must be strictly ascending positive ints, got "
                     f"{thresholds}")
  if not 0 <= channel_clip <= 64:
    raise ValueError(f"channel_clip must be in 0..64, got {channel_clip}")
  return grid_width, thresholds, channel_clip


def anchors(blocks: int, grid_width: int) -> np.ndarray:
  """bool [N]: the first-pass blocks (row + column even) of a grid `grid_width` blocks wide."""
  if blocks % grid_width:
    raise ValueError(f"{blocks} blocks per frame do not fill rows of grid_width={grid_width}")
  index = np.arange(blocks)
  return (index // grid_width + index % grid_width) % 2 == 0


def _neighbours(values, available, grid_width: int, xp):
  """Each block and its up/down/left/right blocks on the grid: values [..., N, L] and their
  availability [..., N] -> ([5, ..., N, L], [5, ..., N])."""
  *lead, n, l = values.shape
  rows = n // grid_width
  grid = values.reshape(*lead, rows, grid_width, l)
  grid_available = available.reshape(*lead, rows, grid_width)
  gv = xp.pad(grid, [(0, 0)] * len(lead) + [(1, 1), (1, 1), (0, 0)])
  ga = xp.pad(grid_available, [(0, 0)] * len(lead) + [(1, 1), (1, 1)])
  out_v, out_a = [], []
  for dr, dc in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
    sl = (Ellipsis, slice(1 + dr, 1 + dr + rows), slice(1 + dc, 1 + dc + grid_width))
    out_v.append(gv[sl + (slice(None),)].reshape(*lead, n, l))
    out_a.append(ga[sl].reshape(*lead, n))
  return xp.stack(out_v), xp.stack(out_a)


def _combine(values, available, thresholds, xp, big):
  """Neighbours [J, ..., L] with availability [J, ..., L] -> (count, sum, spatial context)."""
  count = available.sum(axis=0)
  total = xp.where(available, values, 0).sum(axis=0)
  high = xp.where(available, values, -big).max(axis=0)
  low = xp.where(available, values, big).min(axis=0)
  spread = xp.where(count > 1, high - low, 0)
  bucket = sum((spread >= t).astype(count.dtype) for t in thresholds) if thresholds else 0 * count
  return count, total, xp.where(count == 0, 0, xp.where(count == 1, 1, 2 + bucket))


@functools.lru_cache(maxsize=64)
def _neighbour_index(blocks: int, grid_width: int) -> tuple[np.ndarray, np.ndarray]:
  """Gather indices of each block and its up/down/left/right blocks [5, N] and their validity."""
  index = np.arange(blocks)
  row, col = index // grid_width, index % grid_width
  rows = blocks // grid_width
  out, valid = [], []
  for dr, dc in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
    r, c = row + dr, col + dc
    ok = (r >= 0) & (r < rows) & (c >= 0) & (c < grid_width)
    out.append(np.where(ok, r * grid_width + c, 0))
    valid.append(ok)
  return np.stack(out), np.stack(valid)


class Canvas:
  """What the decoder holds of B clips' block grids, in NumPy: the coder's side of the rule (the
  encoder and the decoder run this same code). `context` gives a coming pass's prediction and
  spatial context, `send` records what the pass sent. Clips are independent lanes, so the streams
  of a batch run their passes as one.

  The canvas is kept three ways (the values, 0 where never sent; and int32's minimum / maximum
  there, which no sent value passes, for the neighbours' spread) plus whether each block was
  sent, each with one more block per clip standing for the places off the grid: a pass reads its
  neighbours with plain gathers. Values are int32 (the latents' type); sums and differences are
  taken in int64.
  """

  def __init__(self, batch: int, blocks: int, width: int, grid_width: int,
               thresholds: Sequence[int]):
    index, valid = _neighbour_index(blocks, grid_width)
    self._neighbours = np.where(valid, index, blocks)  # [5, N]; off the grid: the extra block
    self._stride = blocks + 1
    self._thresholds = np.asarray(thresholds, np.int64)
    shape = (batch * self._stride, width)
    self._values = np.zeros(shape, np.int32)
    self._high = np.full(shape, np.iinfo(np.int32).min, np.int32)
    self._low = np.full(shape, np.iinfo(np.int32).max, np.int32)
    self._sent = np.zeros(batch * self._stride, np.int64)
    self._any_sent = False

  def context(self, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and spatial context of the blocks int [B, m] of a coming pass (each clip's
    own) -> (pred int64 [B, m, L], s int64 [B, m, L]). The same rule as `dense_context`."""
    if not self._any_sent:  # the first pass: no neighbour anywhere
      zeros = np.zeros(blocks.shape + (self._values.shape[1],), np.int64)
      return zeros, zeros
    rows = self._neighbours[:, blocks] + (np.arange(len(blocks)) * self._stride)[:, None]
    count = np.take(self._sent, rows).sum(axis=0)[..., None]
    total = np.take(self._values, rows, axis=0).sum(axis=0, dtype=np.int64)
    # max - min of the sent neighbours: 0 with one, < 0 with none, so no threshold (>= 1) is
    # reached below two and s = min(count, 2) + #{thresholds <= spread}.
    spread = (np.take(self._high, rows, axis=0).max(axis=0).astype(np.int64)
              - np.take(self._low, rows, axis=0).min(axis=0))
    spatial = np.minimum(count, 2) + np.searchsorted(self._thresholds, spread, side="right")
    # The mean rounded half up (0 with none): floor(total / count + 1/2) in float64 is exact here,
    # |total| < 2^35, and a quotient's distance from an integer is 0 or >= 1/10.
    pred = np.floor(total / np.maximum(count, 1) + 0.5).astype(np.int64)
    return pred, spatial

  def held(self, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the canvas holds at the blocks int [B, m] of a coming pass (each clip's own): (sent
    bool [B, m]: the block was sent before, values int32 [B, m, L]: its values as last sent, 0
    where never sent). The coder's repeat flags (`stae_jax.coding.bitstream`, version 3) compare
    a block's new values with these."""
    rows = blocks + (np.arange(len(blocks)) * self._stride)[:, None]
    return np.take(self._sent, rows) > 0, np.take(self._values, rows, axis=0)

  def send(self, lanes: np.ndarray, blocks: np.ndarray, values: np.ndarray):
    """Records that clip lanes[i] sent values[i] (int32-valued [k, L]) at its block blocks[i]."""
    rows = lanes * self._stride + blocks
    self._values[rows] = values
    self._high[rows] = values
    self._low[rows] = values
    self._sent[rows] = 1
    self._any_sent = self._any_sent or bool(len(rows))


def channel_context(residual, channel: int, channel_clip: int):
  """x of channel `channel` at every place of a pass: from the residuals [..., C] of channel - 1
  at the same places (NumPy; only channels before `channel` are read)."""
  if channel == 0:
    return np.zeros(residual.shape[:-1], np.int64)
  previous = residual[..., channel - 1]
  return np.minimum(np.maximum(previous, -channel_clip), channel_clip) + channel_clip


def dense_context(values, kept, channels: int, grid_width: int, thresholds: Sequence[int],
                  channel_clip: int):
  """The rule over whole clips in JAX (the training rate's side).

  values float [B, T, N, L] (integer-valued, channels last within L = positions x channels;
  anything where not kept), kept bool [B, T, N]: the blocks sent (frames not sent have no kept
  block). Returns (pred float32 [B,T,N,L], context int32 [B,T,N,L] = s * (2X + 1) + x),
  meaningful where kept.
  """
  values = jnp.asarray(values, jnp.float32)
  b, t, n, l = values.shape
  steps = jnp.arange(t, dtype=jnp.int32)[None, :, None]
  latest = jax.lax.cummax(jnp.where(kept, steps, -1), axis=1)
  previous = jnp.concatenate([jnp.full((b, 1, n), -1, jnp.int32), latest[:, :-1]], axis=1)
  last = jnp.take_along_axis(values, jnp.maximum(previous, 0)[..., None], axis=1)
  has_last = previous >= 0
  anchor = jnp.asarray(anchors(n, grid_width))
  # The canvas a second-pass block sees also holds this frame's anchors.
  fresh = kept & anchor
  second_values = jnp.where(fresh[..., None], values, last)
  second_has = fresh | has_last
  v1, a1 = _neighbours(last, has_last, grid_width, jnp)
  v2, a2 = _neighbours(second_values, second_has, grid_width, jnp)
  first = anchor[None, None, :]
  neighbour_values = jnp.where(first[..., None], v1, v2)
  available = jnp.broadcast_to(jnp.where(first, a1, a2)[..., None], neighbour_values.shape)
  count, total, spatial = _combine(neighbour_values, available, tuple(thresholds), jnp,
                                   jnp.float32(3e38))
  count = count.astype(jnp.float32)
  pred = jnp.where(count > 0, jnp.floor((2 * total + count) / (2 * jnp.maximum(count, 1))), 0.0)
  residual = values - pred
  previous_channel = jnp.concatenate([jnp.zeros_like(residual[..., :1]), residual[..., :-1]], -1)
  first_channel = (jnp.arange(l) % channels == 0)
  x = jnp.where(first_channel, 0,
                jnp.clip(previous_channel, -channel_clip, channel_clip) + channel_clip)
  context = spatial.astype(jnp.int32) * (2 * channel_clip + 1) + x.astype(jnp.int32)
  return pred, context
