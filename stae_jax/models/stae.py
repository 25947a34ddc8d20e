"""The STAE encoder: frame attention, spatial attention, block selection and the block transforms.

This is the part that runs on the edge device, so every piece is sized to be cheap next to the
classifier it serves (at 16x224x224 with p=16 it costs 0.06-0.37% of a ViT-B/16's FLOPs, by keep
ratio; see BENCHMARKS.md "Models"):

- `FrameAttention` scores each frame from a small strided CNN on an area-downscaled copy of the
  frame and its difference to the previous frame (motion is what separates actions), then a 1D
  convolution over time so a frame's score depends on its neighbours (a frame that repeats its
  neighbour is worth less than one where something changes).
- `SpatialAttention` scores each p x p block of a frame from a small CNN over the frame downscaled
  so that a block is 4x4 cells, again with the temporal difference as input.
- Selection keeps the top k_f = round(rho_f*T) frames and, in each kept frame, the top
  k_s = round(rho_s*N) blocks, the kept frames choosing in time order with a penalty
  (`block_spread`) on blocks that earlier kept frames sent (`spread_top_k_mask`): otherwise the
  attention drops the same region in every frame and the decoder has nothing to rebuild it from.
  At inference k values are static Python ints (the gathers have fixed sizes); in training (and
  in the trainer's evaluation) the selection is dense and k may be a traced value, one per clip
  (`rank_top_k_mask`), so one compile trains and evaluates every operating point: training draws
  a point per clip from `keep_ratios`, evaluation passes `point_index`.
- `BlockAnalysis` / `BlockSynthesis` (per-block MLPs over a linear code that starts as the cells'
  mean colours) map each kept p x p block to a [p/s, p/s, C] latent (s = `latent_stride`) and back.
  In "pixel" mode the kept pixels themselves are sent, requantised to `pixel_bits` bits (C = 3).

Training versus inference. At inference only the kept frames and blocks are gathered and transformed
(fixed-size gathers): `STAE.encode` is the device side (selection, analysis, rounding) and
`STAE.receive` the server side (synthesis, blocks put in place). In training everything is
computed densely and multiplied by straight-through masks (see `top_k_mask`), so the losses reach
the scores of dropped items too.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from stae_jax.models.entropy import quantize

__all__ = [
    "keep_count", "top_k_mask", "rank_top_k_mask", "segment_top_mask", "comb_mask",
    "spread_top_k_mask",
    "uniform_scores", "uniform_table",
    "FrameChoice", "FrameAttention", "SpatialAttention", "BlockAnalysis", "BlockSynthesis", "STAE",
    "blockify", "unblockify", "normalize_video",
]

SELECTIONS = ("attention", "random", "uniform")
#: How the learned frame attention turns its scores into kept frames: "segments" (the best frame of
#: each of k equal stretches of the clip, `segment_top_mask`), "top_k" (the k best frames) or
#: "comb" (k evenly spaced frames, where they start and how far apart learned: `comb_mask`), or
#: "chosen" (for each k, the k frames the frozen classifier reads best, chosen on validation clips
#: before the compressor trains and the same for every clip: `STAE.chosen_frames`,
#: `stae_jax.systems.stae.choose_frames`).
FRAME_RULES = ("segments", "top_k", "comb", "chosen")
#: Which training losses reach the attention modules through the straight-through masks: "all"
#: (task, pixel reconstruction and rate), or "task" (task and rate only: the pixel loss is taken on
#: a second decoder pass whose masks are constants; see `systems.stae_forward`).
SELECTION_GRADIENTS = ("all", "task")
MODES = ("latent", "pixel")


def keep_count(ratio: float, n: int) -> int:
  """k = round(ratio * n) (halves round up), at least 1: a static Python int for top-k shapes."""
  ratio = float(ratio)
  if not 0.0 < ratio <= 1.0:
    raise ValueError(f"keep ratio must be in (0, 1], got {ratio}; 1.0 keeps everything")
  return max(1, min(int(n), int(math.floor(ratio * n + 0.5))))


def normalize_video(video, dtype) -> jax.Array:
  """uint8 or float 0..255 -> dtype in [-1, 1] (clips travel as uint8, are normalised on device)."""
  return (jnp.asarray(video).astype(jnp.float32) / 127.5 - 1.0).astype(dtype)


def area_pool(frames, factor: int):
  """Mean over non-overlapping factor x factor cells of [..., H, W, C] (exact area downscaling)."""
  if factor == 1:
    return frames
  *lead, h, w, c = frames.shape
  if h % factor or w % factor:
    raise ValueError(f"frame size {h}x{w} is not divisible by the pooling factor {factor}; pick a "
                     "resolution that is a multiple of it (or change the config's frame_pool)")
  pooled = frames.reshape(*lead, h // factor, factor, w // factor, factor, c)
  return pooled.mean(axis=(-4, -2), dtype=jnp.float32).astype(frames.dtype)


def with_temporal_difference(frames):
  """[B,T,h,w,C] -> [B,T,h,w,2C]: each frame and its difference to the previous one (0 for t=0)."""
  previous = jnp.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
  return jnp.concatenate([frames, frames - previous], axis=-1)


def blockify(video, p: int):
  """[B,T,H,W,C] -> [B,T,N,p,p,C], blocks in raster order (N = (H/p)*(W/p))."""
  b, t, h, w, c = video.shape
  if h % p or w % p:
    raise ValueError(f"frame size {h}x{w} is not divisible by the block size p={p}; use a "
                     "resolution that is a multiple of p")
  x = video.reshape(b, t, h // p, p, w // p, p, c).transpose(0, 1, 2, 4, 3, 5, 6)
  return x.reshape(b, t, (h // p) * (w // p), p, p, c)


def unblockify(blocks, height: int, width: int):
  """Inverse of `blockify`: [B,T,N,p,p,C] -> [B,T,H,W,C]."""
  b, t, n, p, _, c = blocks.shape
  x = blocks.reshape(b, t, height // p, width // p, p, p, c).transpose(0, 1, 2, 4, 3, 5, 6)
  return x.reshape(b, t, height, width, c)


def top_k_mask(scores, k: int, *, training: bool, temperature: float = 1.0):
  """Hard top-k over the last axis -> (mask float32 [..., n], indices int32 [..., k] ascending).

  Why straight-through and not a soft top-k: the forward pass of training is then exactly what
  inference does (the same k items, the same rate, a decoder that never sees dropped content), so
  the rate and distortion it optimises are the real ones. The backward pass uses
  sigmoid((s - threshold) / temperature) with the threshold halfway between the k-th and (k+1)-th
  scores: items near the boundary get the largest gradient, each in proportion to how much the loss
  would change if the item's mask moved (`STAE` computes dropped items densely in training so that
  this derivative exists). The temperature is in the scores' own units, so the slope is at most
  1 / (4 temperature): dividing by the scores' spread instead (an earlier version) let the slope
  grow without bound as a fresh head's near-equal scores drew together (measured: frame-attention
  gradients of ~1e6 within 10 steps, which global-norm clipping turned into no step at all for
  every other parameter). Soft top-k relaxations (Sinkhorn, perturbed optimisers) cost more
  and would show the decoder a blend of dropped blocks it never receives at test time.

  The mask is `hard + (soft - stop_gradient(soft))`: the bracket is exactly 0.0 in floating point,
  so the forward mask is exactly 0 or 1 and received pixels pass through the decoder bit-exactly.
  Indices are sorted ascending: the order in which the coder sends items and a decoder rebuilds them
  from the mask. Ties go to the lower index (`lax.top_k`).
  """
  n = scores.shape[-1]
  if not 1 <= k <= n:
    raise ValueError(f"top-k needs 1 <= k <= n, got k={k}, n={n}")
  scores = scores.astype(jnp.float32)
  values, indices = jax.lax.top_k(scores, min(k + 1, n))
  indices = jnp.sort(indices[..., :k], axis=-1).astype(jnp.int32)
  hard = jax.nn.one_hot(indices, n, dtype=jnp.float32).sum(axis=-2)
  if not training or k == n:
    return jax.lax.stop_gradient(hard), indices
  threshold = jax.lax.stop_gradient((values[..., k - 1] + values[..., k]) / 2)[..., None]
  soft = jax.nn.sigmoid((scores - threshold) / temperature)
  return hard + (soft - jax.lax.stop_gradient(soft)), indices


def rank_top_k_mask(scores, k, *, training: bool, temperature: float = 1.0):
  """`top_k_mask`'s mask for a k that may be traced: an int, or an int array broadcastable to
  scores[..., 0] (one k per clip). No indices (their number would not be static).

  The same items as `top_k_mask` (ranks by `lax.top_k`, ties to the lower index) and the same
  straight-through surrogate (threshold halfway between the k-th and (k+1)-th scores; none where
  k == n), so a traced k trains exactly what a static one does."""
  n = scores.shape[-1]
  scores = scores.astype(jnp.float32)
  values, order = jax.lax.top_k(scores, n)
  ranks = jnp.argsort(order, axis=-1)
  k = jnp.broadcast_to(jnp.asarray(k, jnp.int32), scores.shape[:-1])[..., None]
  hard = (ranks < k).astype(jnp.float32)
  if not training:
    return jax.lax.stop_gradient(hard)
  upper = jnp.take_along_axis(values, jnp.clip(k - 1, 0, n - 1), axis=-1)
  lower = jnp.take_along_axis(values, jnp.clip(k, 0, n - 1), axis=-1)
  threshold = jax.lax.stop_gradient((upper + lower) / 2)
  soft = jax.nn.sigmoid((scores - threshold) / temperature)
  return hard + jnp.where(k < n, soft - jax.lax.stop_gradient(soft), 0.0)


def spread_rank_mask(scores, k, frame_mask, *, spread: float, training: bool,
                     temperature: float = 1.0):
  """`spread_top_k_mask` over every frame's blocks [B,T,N] in time order, for a k that may be
  traced (an int, or int32 [B]): only frames whose hard `frame_mask` [B,T] is 1 add to what was
  sent, so the rows of kept frames select exactly what `spread_top_k_mask` selects over the kept
  frames alone."""
  rows = []
  sent = jnp.zeros(scores.shape[:1] + scores.shape[2:], jnp.float32)
  kept = jax.lax.stop_gradient(frame_mask).astype(jnp.float32)
  for j in range(scores.shape[1]):  # T is static and small
    row = rank_top_k_mask(scores[:, j] - spread * sent, k, training=training,
                          temperature=temperature)
    rows.append(row)
    sent = sent + jax.lax.stop_gradient(row) * kept[:, j, None]
  return jnp.stack(rows, axis=1)


def segment_top_mask(scores, k, *, training: bool, temperature: float = 1.0):
  """One item per segment: the n items [..., n] cut into k contiguous segments (item j in segment
  floor(j * k / n), so k <= n segments of floor(n/k) or ceil(n/k) items), and the highest-scored
  item of each kept (ties to the lower index). k is an int or an int array broadcastable to
  scores[..., 0] (one k per clip, may be traced) -> mask float32 [..., n] with exactly k ones.

  Why, for frames (issue 31): top-k over frames scored one at a time keeps neighbours of the best
  frame, and the kept frames bunch where the score is high and lose the span of the motion
  (measured on the motion default: span 0.41 of the clip at 4 of 16 frames against 0.68 for random
  frames, and 16 points below evenly spaced and random frames; BENCHMARKS.md "Frame attention:
  where the learned frames go"). One frame per segment keeps the coverage of evenly spaced
  frames and learns which frame of each stretch to send; the best fixed subsets found offline
  ([7, 10] of 16 at k=2, [2, 7, 9, 13] at k=4) are each one frame per segment.

  The straight-through surrogate is `top_k_mask`'s, segment by segment: sigmoid((s - t) /
  temperature) with t halfway between the segment's best and second-best scores, none in a segment
  of one item (k == n keeps everything)."""
  n = scores.shape[-1]
  scores = scores.astype(jnp.float32)
  k = jnp.broadcast_to(jnp.asarray(k, jnp.int32), scores.shape[:-1])[..., None, None]
  j = jnp.arange(n, dtype=jnp.int32)
  segment = (j * k) // n  # [..., 1, n] broadcast against [..., n, 1]
  same = segment[..., 0, :, None] == segment[..., 0, None, :]  # [..., i, j]
  s_i, s_j = scores[..., :, None], scores[..., None, :]
  better = (s_i > s_j) | ((s_i == s_j) & (j[:, None] < j[None, :]))  # i beats j
  hard = (~jnp.any(same & better, axis=-2)).astype(jnp.float32)
  if not training:
    return jax.lax.stop_gradient(hard)
  top = jnp.max(jnp.where(same, s_i, -jnp.inf), axis=-2)
  second = jnp.max(jnp.where(same & (hard[..., :, None] < 0.5), s_i, -jnp.inf), axis=-2)
  alone = ~jnp.isfinite(second)  # a segment of one item: nothing to choose
  threshold = jax.lax.stop_gradient(jnp.where(alone, top, (top + second) / 2))
  soft = jax.nn.sigmoid((scores - threshold) / temperature)
  return hard + jnp.where(alone, 0.0, soft - jax.lax.stop_gradient(soft))


@functools.lru_cache(maxsize=16)
def comb_table(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The combs of n items: (masks float32 [n + 1, M, n], valid bool [n + 1, M], gap int32
  [n + 1, M]). Row k lists every set of k evenly spaced items {s, s + d, ..., s + (k - 1) d} inside
  0..n-1 (gap d >= 1; for k = 1 every single item, gap 1), padded to M (the most of any k: n(n-1)/2
  at k = 2) with invalid entries; row 0 has none."""
  rows = [[]]
  for k in range(1, n + 1):
    if k == 1:
      rows.append([([s], 1) for s in range(n)])
      continue
    rows.append([([s + j * d for j in range(k)], d)
                 for d in range(1, (n - 1) // (k - 1) + 1) for s in range(n - (k - 1) * d)])
  m = max(len(row) for row in rows)
  masks = np.zeros((n + 1, m, n), np.float32)
  valid = np.zeros((n + 1, m), bool)
  gap = np.zeros((n + 1, m), np.int32)
  for k, row in enumerate(rows):
    for c, (items, d) in enumerate(row):
      masks[k, c, items] = 1.0
      valid[k, c] = True
      gap[k, c] = d
  return masks, valid, gap


def comb_mask(scores, k, spacing, *, training: bool, temperature: float = 1.0):
  """k evenly spaced items: of every comb {s, s + d, ..., s + (k - 1) d} of the n items [..., n]
  (`comb_table`), the one whose mean score plus `spacing[k, d]` (float32 [n + 1, n]: a learned
  preference for each gap at each k) is highest, ties to the first in the table (smaller gap,
  then earlier start). k is an int or an int array broadcastable to scores[..., 0] (one k per
  clip, may be traced), 1 <= k <= n -> mask float32 [..., n] with exactly k ones.

  Why, for frames (issue 31): the classifier reads motion, so what it needs of k frames is a
  span it can read the motion over, placed where the action is: on exact pixels the best fixed
  pair of 16 frames is [7, 10] (69.5% against 44.9% for random pairs), and neither the k
  best-scored frames (bunched) nor one per stretch (spread over the whole clip) can be that
  pair for every clip (BENCHMARKS.md "Frame attention: where the learned frames go"). A comb's
  start comes from the frame scores (plus the frame attention's learned position prior) and its
  gap from `spacing`, so the rule can learn "3 frames apart, where the action is".

  The straight-through surrogate is a softmax over the combs' scores (divided by `temperature`)
  spread back onto their items: an item's soft mask is the probability of the combs that hold it.
  With one comb (k == n) there is nothing to choose and no gradient."""
  n = scores.shape[-1]
  table, valid, gap = (jnp.asarray(a) for a in comb_table(int(n)))
  scores = scores.astype(jnp.float32)
  k = jnp.clip(jnp.broadcast_to(jnp.asarray(k, jnp.int32), scores.shape[:-1]), 1, n)
  masks = table[k]  # [..., M, n]
  comb = (jnp.einsum("...mn,...n->...m", masks, scores) / k[..., None].astype(jnp.float32)
          + spacing.astype(jnp.float32)[k[..., None], gap[k]])
  comb = jnp.where(valid[k], comb, -jnp.inf)
  best = jnp.argmax(comb, axis=-1)  # the first maximum: ties to the lower table index
  hard = jnp.take_along_axis(masks, best[..., None, None], axis=-2)[..., 0, :]
  if not training:
    return jax.lax.stop_gradient(hard)
  soft = jnp.einsum("...m,...mn->...n", jax.nn.softmax(comb / temperature, axis=-1), masks)
  return hard + (soft - jax.lax.stop_gradient(soft))


def kept_indices(mask, k: int):
  """Hard 0/1 masks [..., n] keeping k each -> their indices int32 [..., k], ascending."""
  _, index = jax.lax.top_k(jax.lax.stop_gradient(mask), k)
  return jnp.sort(index, axis=-1).astype(jnp.int32)


def uniform_table(n: int) -> np.ndarray:
  """float32 [n + 1, n]: row k marks the k evenly spaced items of n that `uniform_scores` keeps
  (first and last included; row 0: none). A copy, free to change."""
  return _uniform_table(int(n)).copy()


@functools.lru_cache(maxsize=16)
def _uniform_table(n: int) -> np.ndarray:
  """float32 [n + 1, n]: row k marks the items `np.round(np.linspace(0, n - 1, k))` (row 0:
  none)."""
  table = np.zeros((n + 1, n), np.float32)
  for k in range(1, n + 1):
    table[k, np.round(np.linspace(0, n - 1, k)).astype(int)] = 1.0
  return table


def uniform_scores(n: int, k, shape):
  """1 at k evenly spaced items of n (the first and last included), 0 elsewhere; k an int or a
  traced int array broadcastable to `shape[:-1]`. A lookup in a static table, so a traced k picks
  what a static one does: top-k of these is the classic uniform sampling (for frames, what video
  classifiers sample by default)."""
  k = jnp.broadcast_to(jnp.asarray(k, jnp.int32), tuple(shape[:-1]))
  return jnp.asarray(_uniform_table(int(n)))[jnp.clip(k, 0, n)]


def spread_top_k_mask(scores, k: int, *, spread: float, training: bool, temperature: float = 1.0):
  """`top_k_mask` over the blocks of each kept frame [B,F,N], frame by frame in time order, each
  block's score lowered by `spread` for every earlier kept frame that sent it.

  Why: a spatial attention that scores every frame alike drops the same region in every kept frame,
  and the decoder then has nothing to rebuild it from (it paints it grey; measured in BENCHMARKS.md,
  "Task-only selection gradient"). With a spread of a few score units a block the attention likes
  less is sent in some frames rather than none. The penalty uses the hard masks of earlier frames
  (no gradient through it), so training and inference select the same blocks.
  """
  masks, indices = [], []
  sent = jnp.zeros(scores.shape[:1] + scores.shape[2:], jnp.float32)
  for j in range(scores.shape[1]):  # F is static and small (the kept frames)
    mask, index = top_k_mask(scores[:, j].astype(jnp.float32) - spread * sent, k,
                             training=training, temperature=temperature)
    masks.append(mask)
    indices.append(index)
    sent = sent + jax.lax.stop_gradient(mask)
  return jnp.stack(masks, axis=1), jnp.stack(indices, axis=1)


class FrameChoice(nnx.Variable):
  """Frames chosen once, before training, and then fixed (not a parameter: no gradient, no
  optimizer state; saved in checkpoints with the rest of the model): `STAE.chosen_frames`."""


class FrameAttention(nnx.Module):
  """One score per frame: strided CNN per (downscaled) frame, then a 1D convolution over time.

  With `frames` > 0 (the comb rule, `comb_mask`) it also learns, for clips of that many frames, a
  prior over positions (`position` [T], added to every clip's scores: where actions tend to be)
  and over gaps (`spacing` [T + 1, T]: how far apart k kept frames should be), both starting at
  zero."""

  def __init__(self, *, pool: int, widths=(16, 32, 32), temporal_kernel: int = 3,
               frames: int = 0, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    self.pool = int(pool)
    self.dtype = dtype
    self.frames = int(frames)
    if self.frames:
      self.position = nnx.Param(jnp.zeros((self.frames,), jnp.float32))
      self.spacing = nnx.Param(jnp.zeros((self.frames + 1, self.frames), jnp.float32))
    channels = (6,) + tuple(int(w) for w in widths)
    self.convs = nnx.List([
        nnx.Conv(channels[i], channels[i + 1], (3, 3), strides=2, dtype=dtype, rngs=rngs)
        for i in range(len(widths))])
    self.temporal = nnx.Conv(channels[-1], channels[-1], (int(temporal_kernel),), dtype=dtype,
                             rngs=rngs)
    self.head = nnx.Linear(channels[-1], 1, dtype=dtype, rngs=rngs)

  def __call__(self, frames):
    """frames: normalised [B,T,H,W,3] -> scores float32 [B,T]."""
    b, t = frames.shape[:2]
    x = with_temporal_difference(area_pool(frames, self.pool))
    x = x.reshape(b * t, *x.shape[2:])
    for conv in self.convs:
      x = jax.nn.gelu(conv(x))
    x = x.mean(axis=(1, 2)).reshape(b, t, -1)
    x = x + jax.nn.gelu(self.temporal(x))
    scores = self.head(x)[..., 0].astype(jnp.float32)
    if self.frames:
      if t != self.frames:
        raise ValueError(f"this frame attention's position prior is for clips of {self.frames} "
                         f"frames, got {t}: build STAE with frames={t}")
      scores = scores + self.position[...]
    return scores


class SpatialAttention(nnx.Module):
  """One score per p x p block: a CNN over the frame downscaled so that a block is 4x4 cells."""

  def __init__(self, *, block_size: int, widths=(16, 32), dtype: Any = jnp.float32,
               rngs: nnx.Rngs):
    if block_size % 4:
      raise ValueError(f"block_size must be a multiple of 4 (got {block_size})")
    self.pool = block_size // 4
    self.dtype = dtype
    w1, w2 = (int(w) for w in widths)
    self.conv_in = nnx.Conv(6, w1, (3, 3), dtype=dtype, rngs=rngs)
    self.down_1 = nnx.Conv(w1, w2, (3, 3), strides=2, dtype=dtype, rngs=rngs)
    self.down_2 = nnx.Conv(w2, w2, (3, 3), strides=2, dtype=dtype, rngs=rngs)
    self.head = nnx.Conv(w2, 1, (1, 1), dtype=dtype, rngs=rngs)

  def features(self, frames):
    """Normalised [B,T,H,W,3] -> pooled frames with temporal differences [B,T,H/q,W/q,6].

    Split from `__call__` so that inference can pool and difference all frames (the difference
    needs the original neighbour) and then run the CNN on the kept frames only.
    """
    return with_temporal_difference(area_pool(frames, self.pool))

  def __call__(self, features):
    """features from `features` (any number of frames F) [B,F,h,w,6] -> scores float32 [B,F,N]."""
    b, f = features.shape[:2]
    x = features.reshape(b * f, *features.shape[2:])
    x = jax.nn.gelu(self.conv_in(x))
    x = jax.nn.gelu(self.down_1(x))
    x = jax.nn.gelu(self.down_2(x))
    return self.head(x).reshape(b, f, -1).astype(jnp.float32)


INIT_CODES = ("colour", "dct")


def _detail_frequencies(count: int, cell: int) -> list[tuple[int, int]]:
  """The first `count` 2D DCT frequencies (u, v) != (0, 0) of an s x s cell, lowest u + v first."""
  found = sorted(((u, v) for u in range(cell) for v in range(cell) if (u, v) != (0, 0)),
                 key=lambda f: (f[0] + f[1], f[0]))
  return found[:count]


def _dct_rows(cell: int) -> np.ndarray:
  """Orthonormal 1D DCT-II basis [frequency, position] of length `cell`."""
  k = np.arange(cell)
  basis = np.sqrt(2.0 / cell) * np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * cell))
  basis[0] /= np.sqrt(2.0)
  return basis


def initial_block_code(block_size: int, latent_stride: int, latent_channels: int, step: float,
                       init_code: str = "colour", detail_step: float = 16.0):
  """The linear block code the transforms start from: (analysis [p*p*3, (p/s)^2*C], synthesis
  [(p/s)^2*C, p*p*3]), the synthesis the analysis' pseudo-inverse.

  Latent position (i, j), channel c < 3, is the mean of colour c over the s x s cell (i, j) of the
  block, in units of `step` pixel levels, so that rounding the latent quantises the mean to `step`
  levels. Channels 3.. start at zero (`init_code="colour"`: left to the MLP) or
  (`init_code="dct"`) as the cell's lowest-frequency luminance DCT coefficients ((0, 1), (1, 0),
  (0, 2), (1, 1), (2, 0), ...; orthonormal, luminance the mean of the three colours) in units of
  `detail_step` levels: a JPEG-like low-pass code, so that the extra channels carry the block's
  shape from the first step instead of starting empty.
  """
  if init_code not in INIT_CODES:
    raise ValueError(f"init_code {init_code!r} is not one of {INIT_CODES}")
  p, s, c = int(block_size), int(latent_stride), int(latent_channels)
  g = p // s
  # Constants of the config, built with numpy (also built under `nnx.eval_shape`).
  # Normalised pixels are (v / 127.5 - 1): one latent unit is `step` levels, i.e. step / 127.5.
  analysis = np.zeros((p, p, 3, g, g, c), np.float32)
  synthesis = np.zeros((p, p, 3, g, g, c), np.float32)
  # The DCT channels' s x s bases [channel, y, x, 1] (every colour alike), the same in every cell.
  rows = _dct_rows(s)
  details = ([np.outer(rows[u], rows[v])[..., None] for u, v in _detail_frequencies(c - 3, s)]
             if init_code == "dct" and c > 3 else [])
  for i in range(g):
    for j in range(g):
      cell = (slice(i * s, (i + 1) * s), slice(j * s, (j + 1) * s))
      for colour in range(min(3, c)):
        analysis[cell + (colour, i, j, colour)] = (127.5 / float(step)) / (s * s)
        synthesis[cell + (colour, i, j, colour)] = float(step) / 127.5
      for channel, basis in enumerate(details, start=3):
        analysis[cell + (slice(None), i, j, channel)] = basis * (127.5 / float(detail_step)) / 3.0
        synthesis[cell + (slice(None), i, j, channel)] = basis * (float(detail_step) / 127.5)
  return analysis.reshape(p * p * 3, g * g * c), synthesis.reshape(p * p * 3, g * g * c).T


class BlockAnalysis(nnx.Module):
  """p x p x 3 block (normalised) -> [p/s, p/s, C] latent: a linear code plus a two-layer MLP.

  Why an MLP and not strided convolutions: a block is coded on its own, so the transform may mix
  every pixel of the block with every other (a learned nonlinear block transform, as a KLT/DCT is
  a linear one), and as one matmul over all blocks it is far faster on a CPU than convolutions over
  thousands of 8x8 images (STAE's training step: 15 instead of 132 ms per clip; BENCHMARKS.md).

  Why the linear path, started as the colour means of s x s cells (`initial_block_code`), with the
  MLP's output layer at zero: a fresh transform is then already a usable codec (quantised cell
  colours, which the frozen classifier recognises nearly as well as the clean clip; BENCHMARKS.md
  "Main job"), and training refines it. Started from random MLPs the block codec reached 19 dB
  after the main job's 110 steps and cost 8 points of accuracy on its own.
  """

  def __init__(self, *, block_size: int, latent_channels: int, width: int, latent_stride: int = 4,
               init_step: float = 8.0, init_code: str = "colour", detail_step: float = 16.0,
               dtype: Any = jnp.float32, rngs: nnx.Rngs):
    g = block_size // latent_stride
    self.latent_shape = (g, g, int(latent_channels))
    code, _ = initial_block_code(block_size, latent_stride, latent_channels, init_step, init_code,
                                 detail_step)
    self.linear = nnx.Linear(block_size * block_size * 3, math.prod(self.latent_shape),
                             use_bias=False, kernel_init=lambda *_: jnp.asarray(code),
                             dtype=dtype, rngs=rngs)
    self.hidden = nnx.Linear(block_size * block_size * 3, width, dtype=dtype, rngs=rngs)
    self.out = nnx.Linear(width, math.prod(self.latent_shape), dtype=dtype, rngs=rngs,
                          kernel_init=nnx.initializers.zeros_init())

  def __call__(self, blocks):
    lead = blocks.shape[:-3]
    x = blocks.reshape(*lead, -1)
    y = self.linear(x) + self.out(jax.nn.gelu(self.hidden(x)))
    return y.reshape(*lead, *self.latent_shape)


class BlockSynthesis(nnx.Module):
  """[p/s, p/s, C] latent -> p x p x 3 block in about [-1, 1]: the mirror of `BlockAnalysis`
  (its linear path starts as nearest upsampling of the cell colours, its MLP output at zero)."""

  def __init__(self, *, block_size: int, latent_channels: int, width: int, latent_stride: int = 4,
               init_step: float = 8.0, init_code: str = "colour", detail_step: float = 16.0,
               dtype: Any = jnp.float32, rngs: nnx.Rngs):
    self.block_shape = (block_size, block_size, 3)
    latent_size = (block_size // latent_stride) ** 2 * int(latent_channels)
    # Pseudo-inverse of the initial code: each cell's pixels take the cell's mean back (and, with
    # the DCT code, its low frequencies).
    _, upsample = initial_block_code(block_size, latent_stride, latent_channels, init_step,
                                     init_code, detail_step)
    self.linear = nnx.Linear(latent_size, math.prod(self.block_shape), use_bias=False,
                             kernel_init=lambda *_: jnp.asarray(upsample), dtype=dtype, rngs=rngs)
    self.hidden = nnx.Linear(latent_size, width, dtype=dtype, rngs=rngs)
    self.out = nnx.Linear(width, math.prod(self.block_shape), dtype=dtype, rngs=rngs,
                          kernel_init=nnx.initializers.zeros_init())

  def __call__(self, latents):
    lead = latents.shape[:-3]
    y = latents.reshape(*lead, -1)
    x = self.linear(y) + self.out(jax.nn.gelu(self.hidden(y)))
    return x.reshape(*lead, *self.block_shape)


class STAE(nnx.Module):
  """The device-side encoder (and its synthesis transform, which the server runs).

  Built as `STAE(**entry.model.stae)` (the constructor holds every default). Call with a clip and the keep ratios; the
  result holds what the coder sends (masks, indices, integer latents), what the rate is measured on,
  and the received clip the decoder starts from.
  """

  def __init__(self, *, block_size: int, latent_channels: int = 8, transform_width: int = 64,
               latent_stride: int = 4, init_step: float = 8.0, init_code: str = "colour",
               detail_step: float = 16.0, mode: str = "latent",
               pixel_bits: int = 6, frame_attention: bool = True,
               spatial_attention: bool = True, selection: str = "attention", frame_pool: int = 2,
               frame_widths=(16, 32, 32), spatial_widths=(16, 32), temporal_kernel: int = 3,
               temperature: float = 1.0, selection_gradient: str = "all",
               frame_rule: str = "top_k", frames: int = 0, choice_clips: int = 160,
               block_spread: float = 0.0, keep_ratios=((0.5, 0.5),), dtype: Any = jnp.float32,
               rngs: nnx.Rngs):
    if mode not in MODES:
      raise ValueError(f"stae mode {mode!r} is not one of {MODES}")
    if selection not in SELECTIONS:
      raise ValueError(f"stae selection {selection!r} is not one of {SELECTIONS}")
    if frame_rule not in FRAME_RULES:
      raise ValueError(f"stae frame_rule {frame_rule!r} is not one of {FRAME_RULES}")
    comb = frame_rule == "comb" and frame_attention and selection == "attention"
    chosen = frame_rule == "chosen" and frame_attention and selection == "attention"
    if comb and int(frames) < 2:
      raise ValueError(f"frame_rule='comb' learns priors over the clip's frames: give STAE "
                       f"frames=<frames per clip> (>= 2), got frames={frames}")
    if chosen and int(frames) < 2:
      raise ValueError(f"frame_rule='chosen' holds one choice of frames per k for clips of a "
                       f"fixed length: give STAE frames=<frames per clip> (>= 2), got "
                       f"frames={frames}")
    if selection_gradient not in SELECTION_GRADIENTS:
      raise ValueError(f"stae selection_gradient {selection_gradient!r} is not one of "
                       f"{SELECTION_GRADIENTS}")
    if block_spread < 0:
      raise ValueError(f"block_spread (score units per earlier frame that sent a block) must be "
                       f">= 0, got {block_spread}")
    if block_size < 4 or block_size % 4:
      raise ValueError(f"block_size must be a positive multiple of 4 (8 or 16), got {block_size}")
    if latent_stride < 1 or block_size % latent_stride:
      raise ValueError(f"latent_stride must divide block_size={block_size} (4: a [p/4, p/4, C] "
                       f"latent per block; p: one C-vector per block), got {latent_stride}")
    if init_step <= 0:
      raise ValueError(f"init_step (pixel levels per latent unit at initialisation) must be > 0, "
                       f"got {init_step}")
    if init_code not in INIT_CODES:
      raise ValueError(f"stae init_code {init_code!r} is not one of {INIT_CODES}")
    if detail_step <= 0:
      raise ValueError(f"detail_step (pixel levels per unit of the DCT channels at "
                       f"initialisation) must be > 0, got {detail_step}")
    if mode == "pixel" and not 1 <= pixel_bits <= 8:
      raise ValueError(f"pixel_bits must be in 1..8, got {pixel_bits}")
    # The operating points (rho_f, rho_s) this model is trained for and serves.
    self.keep_ratios = tuple((float(f), float(b)) for f, b in keep_ratios)
    for pair in self.keep_ratios:
      keep_count(pair[0], 1), keep_count(pair[1], 1)  # each ratio in (0, 1], or a clear error
    if not self.keep_ratios:
      raise ValueError("keep_ratios needs at least one (frame_keep, block_keep) pair")
    dtype = jnp.dtype(dtype)
    self.block_size = int(block_size)
    self.latent_stride = int(latent_stride)
    self.mode = mode
    self.pixel_bits = int(pixel_bits)
    self.use_frame_attention = bool(frame_attention)
    self.use_spatial_attention = bool(spatial_attention)
    self.selection = selection
    self.temperature = float(temperature)
    self.selection_gradient = selection_gradient
    self.frame_rule = frame_rule
    self.block_spread = float(block_spread)
    self.dtype = dtype
    self.latent_channels = 3 if mode == "pixel" else int(latent_channels)
    self.frame_attention = (FrameAttention(pool=frame_pool, widths=frame_widths,
                                           temporal_kernel=temporal_kernel,
                                           frames=int(frames) if comb else 0, dtype=dtype,
                                           rngs=rngs)
                            if frame_attention and selection == "attention" and not chosen
                            else None)
    # frame_rule="chosen": row k of `chosen_frames` [T + 1, T] marks the k frames kept (evenly
    # spaced until `choose_frames` has run; `chosen_on` counts the clips it chose on, 0 before).
    self.chosen_frames = (FrameChoice(jnp.asarray(uniform_table(int(frames)))) if chosen
                          else None)
    self.chosen_on = FrameChoice(jnp.zeros((), jnp.int32)) if chosen else None
    if chosen and int(choice_clips) < 1:
      raise ValueError(f"choice_clips (validation clips the frames are chosen on) must be >= 1, "
                       f"got {choice_clips}")
    self.choice_clips = int(choice_clips)
    self.spatial_attention = (SpatialAttention(block_size=block_size, widths=spatial_widths,
                                               dtype=dtype, rngs=rngs)
                              if spatial_attention and selection == "attention" else None)
    if mode == "latent":
      transform = dict(block_size=block_size, latent_channels=latent_channels,
                       width=transform_width, latent_stride=latent_stride, init_step=init_step,
                       init_code=init_code, detail_step=detail_step, dtype=dtype, rngs=rngs)
      self.analysis = BlockAnalysis(**transform)
      self.synthesis = BlockSynthesis(**transform)
    else:
      self.analysis = None
      self.synthesis = None

  # --- shapes -----------------------------------------------------------------------------------

  def latent_shape(self) -> tuple[int, int, int]:
    """(h, w, C) of one block's latent."""
    if self.mode == "pixel":
      return (self.block_size, self.block_size, 3)
    g = self.block_size // self.latent_stride
    return (g, g, self.latent_channels)

  def keep_counts(self, frames: int, blocks: int, frame_keep: float, block_keep: float):
    """(k_f, k_s) for a clip of `frames` frames and `blocks` blocks per frame; a switched-off
    attention keeps everything (unless selection is "random" or "uniform", which drop at the same
    ratios)."""
    fixed = self.selection != "attention"
    k_f = keep_count(frame_keep, frames) if (self.use_frame_attention or fixed) else frames
    k_s = keep_count(block_keep, blocks) if (self.use_spatial_attention or fixed) else blocks
    return k_f, k_s

  # --- transforms --------------------------------------------------------------------------------

  def analyse(self, blocks):
    """Blocks uint8/float 0..255 [..., p, p, 3] -> continuous latents [..., h, w, C]."""
    if self.mode == "pixel":
      levels = 2 ** self.pixel_bits - 1
      return blocks.astype(jnp.float32) * (levels / 255.0)
    return self.analysis(normalize_video(blocks, self.dtype))

  def synthesise(self, latents):
    """Latents [..., h, w, C] -> block pixels float32 0..255 [..., p, p, 3]."""
    if self.mode == "pixel":
      levels = 2 ** self.pixel_bits - 1
      return latents.astype(jnp.float32) * (255.0 / levels)
    x = self.synthesis(latents.astype(self.dtype)).astype(jnp.float32)
    return jnp.clip((x + 1.0) * 127.5, 0.0, 255.0)

  # --- selection ---------------------------------------------------------------------------------

  def _spreads(self, k_s, n: int) -> bool:
    """Whether the learned block selection is spread over the kept frames (`block_spread`); a
    traced k_s (below n for some clips) spreads where it is below n and is plain top-k at n."""
    static_all = isinstance(k_s, int) and k_s >= n
    return self.block_spread > 0 and self.spatial_attention is not None and not static_all

  def _random_scores(self, rng, shape):
    if rng is None:
      raise ValueError("selection='random' needs rng=<jax PRNG key> in the forward pass")
    return jax.random.uniform(rng, shape)

  def frame_mask(self, scores, k, *, training: bool):
    """Hard (straight-through in training) mask [B,T] of the k kept frames (k an int or int32
    [B]). The learned attention keeps by `frame_rule`; the random and uniform baselines keep the
    top k of their scores (any k frames at random; evenly spaced, first and last included)."""
    if self.frame_rule == "segments" and self.selection == "attention":
      return segment_top_mask(scores, k, training=training, temperature=self.temperature)
    if self.frame_rule == "comb" and self.frame_attention is not None:
      return comb_mask(scores, k, self.frame_attention.spacing[...], training=training,
                       temperature=self.temperature)
    if self.chosen_frames is not None:
      table = self.chosen_frames[...]
      if table.shape[1] != scores.shape[-1]:
        raise ValueError(f"these chosen frames are for clips of {table.shape[1]} frames, got "
                         f"{scores.shape[-1]}: build STAE with frames={scores.shape[-1]}")
      k = jnp.clip(jnp.broadcast_to(jnp.asarray(k, jnp.int32), scores.shape[:-1]), 0,
                   table.shape[1])
      return jax.lax.stop_gradient(table.astype(jnp.float32)[k])  # a constant: nothing to learn
    return rank_top_k_mask(scores, k, training=training, temperature=self.temperature)

  def frame_scores(self, frames, rng, keep):
    """Scores [B,T]; `keep` (k_f, an int or a traced int per clip) places the uniform frames."""
    b, t = frames.shape[:2]
    if self.selection == "uniform":
      return uniform_scores(t, keep, (b, t))
    if self.selection == "random":
      return self._random_scores(jax.random.fold_in(rng, 1) if rng is not None else None, (b, t))
    if self.frame_attention is None:
      return jnp.zeros((b, t), jnp.float32)
    return self.frame_attention(frames)

  def block_scores(self, frames, frame_index, rng, blocks_per_frame: int, keep):
    """Scores [B,F,N] for the frames `frame_index` [B,F] (None: all frames)."""
    b, t = frames.shape[:2]
    f = t if frame_index is None else frame_index.shape[1]
    if self.selection == "uniform":
      keep = keep if isinstance(keep, int) else jnp.asarray(keep)[:, None]
      return uniform_scores(blocks_per_frame, keep, (b, f, blocks_per_frame))
    if self.selection == "random":
      return self._random_scores(jax.random.fold_in(rng, 2) if rng is not None else None,
                                 (b, f, blocks_per_frame))
    if self.spatial_attention is None:
      return jnp.zeros((b, f, blocks_per_frame), jnp.float32)
    features = self.spatial_attention.features(frames)
    if frame_index is not None:
      features = jnp.take_along_axis(features, frame_index[:, :, None, None, None], axis=1)
    return self.spatial_attention(features)

  def keep_table(self, frames: int, blocks: int) -> np.ndarray:
    """int32 [P, 2]: (k_f, k_s) of each of `keep_ratios` for a clip of this size (exact, static)."""
    return np.array([self.keep_counts(frames, blocks, f, b) for f, b in self.keep_ratios],
                    np.int32)

  # --- forward -----------------------------------------------------------------------------------

  def _check_clip(self, video):
    video = jnp.asarray(video)
    if video.ndim != 5 or video.shape[-1] != 3:
      raise ValueError(f"STAE expects a clip [B,T,H,W,3], got shape {tuple(video.shape)}")
    height, width = video.shape[2:4]
    if height % self.block_size or width % self.block_size:
      raise ValueError(f"clip size {height}x{width} is not divisible by "
                       f"block_size={self.block_size}")
    return video

  def encode(self, video, *, frame_keep: float, block_keep: float, rng=None) -> dict:
    """The device side at inference: select and analyse; nothing is synthesised or scattered.

    Returns frame_index int32 [B,k_f], block_index int32 [B,k_f,k_s] (ascending: the coding order),
    latents float32 [B,k_f,k_s,h,w,C] (integer-valued: what the coder sends), frame_scores [B,T],
    kept_block_scores [B,k_f,N]. Spatial attention runs on the kept frames only.
    """
    video = self._check_clip(video)
    b, t, height, width, _ = video.shape
    p = self.block_size
    n = (height // p) * (width // p)
    k_f, k_s = self.keep_counts(t, n, frame_keep, block_keep)
    frames = normalize_video(video, self.dtype)
    frame_scores = self.frame_scores(frames, rng, k_f)
    frame_index = kept_indices(self.frame_mask(frame_scores, k_f, training=False), k_f)
    kept_block_scores = self.block_scores(frames, frame_index, rng, n, k_s)
    if self._spreads(k_s, n):
      _, block_index = spread_top_k_mask(kept_block_scores, k_s, spread=self.block_spread,
                                         training=False)
    else:
      _, block_index = top_k_mask(kept_block_scores, k_s, training=False)
    batch = jnp.arange(b)[:, None, None]
    kept_blocks = blockify(video, p)[batch, frame_index[:, :, None], block_index]
    _, latents = quantize(self.analyse(kept_blocks), training=False)
    return dict(frame_index=frame_index, block_index=block_index,
                latents=latents.astype(jnp.float32), frame_scores=frame_scores,
                kept_block_scores=kept_block_scores)

  def receive(self, frame_index, block_index, latents, *, frames: int, height: int, width: int):
    """The server side before the decoder: synthesise the received latents and put each block in
    place. Returns (received float32 [B,T,H,W,3], pixel_mask float32 [B,T,H,W,1],
    block_mask float32 [B,T,N])."""
    b, k_f, k_s = block_index.shape
    p = self.block_size
    n = (height // p) * (width // p)
    batch = jnp.arange(b)[:, None, None]
    place = (batch, frame_index[:, :, None], block_index)
    decoded = self.synthesise(latents)
    received = jnp.zeros((b, frames, n, p, p, 3), jnp.float32).at[place].set(decoded)
    block_mask = jnp.zeros((b, frames, n), jnp.float32).at[place].set(1.0)
    pixel_mask = jnp.broadcast_to(block_mask[..., None, None, None], (b, frames, n, p, p, 1))
    return (unblockify(received, height, width), unblockify(pixel_mask, height, width),
            block_mask)

  def _dense_keep(self, b: int, t: int, n: int, frame_keep, block_keep, point_index, training,
                  rng):
    """(k_f, k_s) of the dense path: Python ints from static ratios, else int32 [B] looked up
    in `keep_table` at `point_index` (a traced scalar or [B]) or drawn per clip (training)."""
    if frame_keep is not None or block_keep is not None:
      if point_index is not None:
        raise ValueError("pass the keep ratios or point_index, not both")
      if frame_keep is None or block_keep is None:
        raise ValueError("STAE needs both frame_keep and block_keep (or point_index)")
      return self.keep_counts(t, n, frame_keep, block_keep)
    table = jnp.asarray(self.keep_table(t, n))
    if point_index is None:  # training (__call__ refuses inference without a point)
      point_index = jax.random.randint(jax.random.fold_in(rng, 4), (b,), 0, table.shape[0])
    index = jnp.broadcast_to(jnp.asarray(point_index, jnp.int32), (b,))
    return table[index, 0], table[index, 1]

  def __call__(self, video, *, frame_keep: float | None = None, block_keep: float | None = None,
               point_index=None, training: bool, rng=None):
    """Encodes a clip uint8/float 0..255 [B,T,H,W,3] at an operating point: keep ratios
    (frame_keep, block_keep) as Python floats, or `point_index` into `keep_ratios` (an int32
    scalar or one per clip [B], may be traced), or in training nothing (a point drawn per clip).

    Returns a dict:
      frame_mask bool [B,T]; block_mask bool [B,T,N] (False in dropped frames);
      keep: (k_f, k_s), Python ints or int32 [B] (traced points);
      frame_index int32 [B,k_f]; block_index int32 [B,k_f,k_s] (ascending: the coding order);
      latents float32 [B,k_f,k_s,h,w,C], integer-valued: what the coder sends (these three only
        for static keep ratios: their shapes depend on k);
      rate_latents float32 [B,M...,h,w,C] and rate_weight [B,M...]: bits are
        sum(rate_weight * prior.bits(rate_latents)); in the dense path (training, or a traced
        point) M... = (T, N), noisy latents in training with straight-through masks (the rate's
        gradient reaches both attention modules); at inference with static ratios M... = (k_f, k_s)
        with the integer latents and weight 1;
      rate_rounded float32 [B,M...,h,w,C]: the integers the coder would send at those places
        (without gradient), what a conditional entropy model takes its context from;
      received float32 [B,T,H,W,3]: decoded kept blocks in place, 0 elsewhere;
      synthesised float32 [B,T,H,W,3] (training only): every block through analysis, noisy
        quantisation and synthesis, kept or not (what the block transforms learn from);
      pixel_mask float32 [B,T,H,W,1]: 1 where received (straight-through in training);
      frame_scores [B,T], block_scores [B,T,N] (inference: rows of dropped frames are -inf).
    `rng` is needed when training (quantisation noise, the drawn points) and for
    selection="random"; selection "uniform" keeps evenly spaced frames and blocks (a fixed,
    non-learned baseline). Inference at static ratios is exactly `encode` followed by `receive`;
    the dense path selects and receives the same (tests/test_stae.py).
    """
    video = self._check_clip(video)
    b, t, height, width, _ = video.shape
    if training and rng is None:
      raise ValueError("STAE(training=True) needs rng=<jax PRNG key> for quantisation noise")
    select_rng = None if rng is None else jax.random.fold_in(rng, 0)
    if not training and point_index is None:
      if frame_keep is None or block_keep is None:
        raise ValueError("STAE at inference needs an operating point: frame_keep and block_keep, "
                         "or point_index")
      sent = self.encode(video, frame_keep=frame_keep, block_keep=block_keep, rng=select_rng)
      frame_index, block_index, latents = sent["frame_index"], sent["block_index"], sent["latents"]
      received, pixel_mask, weight = self.receive(frame_index, block_index, latents, frames=t,
                                                  height=height, width=width)
      frame_mask = jnp.zeros((b, t), bool).at[jnp.arange(b)[:, None], frame_index].set(True)
      block_scores = jnp.full(weight.shape, -jnp.inf, jnp.float32).at[
          jnp.arange(b)[:, None], frame_index].set(sent["kept_block_scores"])
      return dict(frame_mask=frame_mask, block_mask=weight > 0.5, keep=tuple(block_index.shape[1:]),
                  frame_index=frame_index, block_index=block_index, latents=latents,
                  rate_latents=latents, rate_rounded=latents,
                  rate_weight=jnp.ones(block_index.shape, jnp.float32), received=received,
                  pixel_mask=pixel_mask, frame_scores=sent["frame_scores"],
                  block_scores=block_scores)

    # Dense: every block of every frame, weighted by (straight-through, in training) masks.
    p = self.block_size
    n = (height // p) * (width // p)
    k_f, k_s = self._dense_keep(b, t, n, frame_keep, block_keep, point_index, training, rng)
    static = isinstance(k_f, int) and isinstance(k_s, int)
    frames = normalize_video(video, self.dtype)
    frame_scores = self.frame_scores(frames, select_rng, k_f)
    frame_weight = self.frame_mask(frame_scores, k_f, training=training)
    block_scores = self.block_scores(frames, None, select_rng, n, k_s)
    if self._spreads(k_s, n):
      # In time order, each kept frame penalising what earlier kept frames sent, as inference
      # does; dropped frames' rows only carry the frame scores' straight-through gradient.
      block_weight = spread_rank_mask(block_scores, k_s, frame_weight > 0.5,
                                      spread=self.block_spread, training=training,
                                      temperature=self.temperature)
    else:
      row_keep = k_s if isinstance(k_s, int) else jnp.asarray(k_s)[:, None]  # per frame row
      block_weight = rank_top_k_mask(block_scores, row_keep, training=training,
                                     temperature=self.temperature)
    weight = frame_weight[:, :, None] * block_weight  # [B,T,N]
    y_rate, y_decoder = quantize(self.analyse(blockify(video, p)), training=training,
                                 rng=jax.random.fold_in(rng, 3) if training else None)
    w = weight[..., None, None, None]
    synthesised = self.synthesise(y_decoder)
    received = unblockify(synthesised * w, height, width)
    pixel_mask = unblockify(jnp.broadcast_to(w, (b, t, n, p, p, 1)), height, width)
    out = dict(
        frame_mask=frame_weight > 0.5,
        block_mask=weight > 0.5,
        keep=(k_f, k_s),
        rate_latents=y_rate,
        rate_rounded=jax.lax.stop_gradient(y_decoder).astype(jnp.float32),
        rate_weight=weight,
        received=received,
        pixel_mask=pixel_mask,
        frame_scores=frame_scores,
        block_scores=block_scores,
    )
    if training:
      out["synthesised"] = unblockify(synthesised, height, width)
    if static:
      frame_index = kept_indices(frame_weight, k_f)
      block_index = kept_indices(jnp.take_along_axis(block_weight, frame_index[:, :, None],
                                                     axis=1), k_s)
      latents = y_decoder[jnp.arange(b)[:, None, None], frame_index[:, :, None], block_index]
      out.update(frame_index=frame_index, block_index=block_index,
                 latents=jax.lax.stop_gradient(latents).astype(jnp.float32))
    return out
