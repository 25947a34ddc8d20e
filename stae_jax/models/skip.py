"""Skipped blocks: a block the receiver copies from the previous kept frame's reconstruction, moved
by a vector, instead of receiving its code (H.264's P-block skip, on STAE's block grid).

Two halves that must agree bit for bit:

  choose_skips        the device's closed loop: from the second kept frame on, in time order,
                      each block takes the window of the previous kept frame's reconstruction
                      (edge-padded, moved by up to `search` px) of least
                      SSE + lam * bits(vector), and is skipped where that is no more than its
                      code's SSE + lam * (its bits + 1); what the receiver then holds is the
                      reference for the next kept frame (skips included)
  rebuild_with_skips  the receiver: the same copies, from the decisions alone

A vector is an index into `shifted`'s windows: (2*search+1)^2 of them, in raster order of the move
(dy, dx), dy and dx in [-search, search]; `no_move(search)` is (0, 0). Measured on a trained STAE
before being built into the bitstream: BENCHMARKS.md "A skip mode, measured before it is built"
(`benchmarks/skip_blocks.py`). In the codec (`stae_jax.systems.stae`), a skipped block sends the
latents last sent at its place (a repeat flag of bitstream version 3) and its vector after the
payload (`stae_jax.coding.bitstream`, "Skip vectors"); `Settings` says at which points.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from stae_jax.models.stae import blockify, unblockify


@dataclasses.dataclass(frozen=True)
class Settings:
  """Where and how a STAE system skips blocks (its entry's `model.skip`; these are the defaults).

  lam: squared error (0..255 pixels, summed over a block) per bit in the device's decision
    (`choose_skips`); None: no skipping at any point. 1000: on the default's 300 validation clips
    keep 1x1 gained 5.7 points [+1.7, +10.0] at 39% fewer bits, 3000 fewer bits still but less
    accuracy (BENCHMARKS.md "A skip mode, measured before it is built").
  search: the copies' moves, +-search px in each direction ((2 search + 1)^2 vectors); +-1 and +-2
    sent 4-5% fewer bits with worse pictures.
  min_frame_keep: skip only at points keeping at least this share of the frames (and every block
    of each): with 2 of 16 frames, 3 apart, the nearest window erased the motion between them
    (-4.7 to -5.3 points, significant); 4 or more frames gained.
  Skipping needs the conditional entropy model (a skipped block is a repeat flag of version 3).
  """
  lam: float | None = 1000.0
  search: int = 4
  min_frame_keep: float = 0.25

  def __post_init__(self):
    if self.lam is not None and not (math.isfinite(self.lam) and self.lam >= 0):
      raise ValueError(f"skip lam must be a finite number >= 0 (or None: off), got {self.lam}")
    vector_count(self.search)

  def lam_at(self, frame_keep: float, block_keep: float, conditional: bool) -> float | None:
    """The point's lambda, or None where it does not skip."""
    if self.lam is None or not conditional or float(block_keep) != 1.0 or (
        float(frame_keep) < self.min_frame_keep):
      return None
    return float(self.lam)


def flag_bits(flags, ones):
  """Exact code length (bits) of `ones` 1s among `flags` bits under the adaptive
  (ones + 1) / (seen + 2) estimator (the repeat flags'), elementwise in jax."""
  flags, ones = jnp.asarray(flags, jnp.float32), jnp.asarray(ones, jnp.float32)
  ln = jax.scipy.special.gammaln
  return (jnp.log2(flags + 1.0) + (ln(flags + 1.0) - ln(ones + 1.0) - ln(flags - ones + 1.0))
          / math.log(2.0))


def symbol_bits(counts):
  """Exact code length (bits) of symbols with counts [..., A] under add-one adaptive counts (the
  skip vectors' code, up to the coder's rounding), in jax."""
  counts = jnp.asarray(counts, jnp.float32)
  a = counts.shape[-1]
  ln = jax.scipy.special.gammaln
  return (ln(counts.sum(axis=-1) + a) - ln(jnp.float32(a)) - ln(counts + 1.0).sum(axis=-1)) / (
      math.log(2.0))


def vector_count(search: int) -> int:
  """How many vectors a search of +-search px has."""
  if search < 0:
    raise ValueError(f"search must be >= 0 pixels, got {search}")
  return (2 * search + 1) ** 2


def no_move(search: int) -> int:
  """The index of the vector (0, 0)."""
  return vector_count(search) // 2


def move_of(vector: int, search: int) -> tuple[int, int]:
  """(dy, dx) of a vector index: the window at row y + dy, column x + dx of the frame before."""
  side = 2 * search + 1
  if not 0 <= vector < side * side:
    raise ValueError(f"vector {vector} is not one of the {side * side} of a +-{search} px search")
  return vector // side - search, vector % side - search


def nominal_vector_bits(search: int) -> np.ndarray:
  """What the decision charges a skip with each vector, float32 [M]: its flag (1 bit), and for a
  move log2 of the other vectors' count more (no move being the likely one)."""
  m = vector_count(search)
  bits = np.full(m, 1.0 + (math.log2(m - 1) if m > 1 else 0.0), np.float32)
  bits[no_move(search)] = 1.0
  return bits


def shifted(frames, search: int):
  """Every window of `frames` [B,H,W,C] moved by up to +-search px (edge-padded): [M,B,H,W,C]."""
  h, w = frames.shape[1:3]
  padded = jnp.pad(frames, ((0, 0), (search, search), (search, search), (0, 0)), mode="edge")
  return jnp.stack([padded[:, search + dy:search + dy + h, search + dx:search + dx + w]
                    for dy in range(-search, search + 1) for dx in range(-search, search + 1)])


def _frame_blocks(frame, p: int):
  """[B,H,W,C] -> [B,N,p,p,C]."""
  return blockify(frame[:, None], p)[:, 0]


def _check(intra, block_size: int):
  if intra.ndim != 5:
    raise ValueError(f"expected kept frames [B,K,H,W,C], got shape {tuple(intra.shape)}")
  if intra.shape[2] % block_size or intra.shape[3] % block_size:
    raise ValueError(f"frames {intra.shape[2]}x{intra.shape[3]} are not whole blocks of "
                     f"{block_size}")


def _with_first(first, rest):
  """[B,...] the first kept frame's value and [K-1,B,...] the scan's -> [B,K,...]."""
  return jnp.concatenate([first[:, None], jnp.moveaxis(rest, 0, 1)], axis=1)


def choose_skips(intra, original, intra_bits, lam, *, block_size: int, search: int,
                 prefer_previous: bool = False):
  """The device's closed loop (module docstring).

  intra float32 [B,K,H,W,C]: each kept frame as its block code rebuilds it (every block);
  original [B,K,H,W,C]: the kept frames themselves; intra_bits [B,K,N]: each block's bits;
  lam: squared error per bit (a scalar, may be traced); 0 skips only where the copy is no worse
  than the code. prefer_previous: the decision charges a block's vector of the previous kept frame
  (where it was skipped there) as little as no move (1 bit), for vectors a code predicting each
  from that one would send cheaply.
  Returns (reconstruction float32 [B,K,H,W,C], skip bool [B,K,N], vector int32 [B,K,N]); the
  first kept frame is never skipped (its vectors are `no_move`).
  """
  _check(intra, block_size)
  blocks = (intra.shape[2] // block_size) * (intra.shape[3] // block_size)
  if original.shape != intra.shape or intra_bits.shape != intra.shape[:2] + (blocks,):
    raise ValueError(f"original {tuple(original.shape)} must match intra {tuple(intra.shape)}, "
                     f"and intra_bits {tuple(intra_bits.shape)} be [B,K,N] with N = {blocks}")
  intra = jnp.asarray(intra, jnp.float32)
  original = jnp.asarray(original, jnp.float32)
  b, _, h, w, _ = intra.shape
  n = intra_bits.shape[-1]
  charged = jnp.asarray(nominal_vector_bits(search))[:, None, None]  # [M,1,1]

  def step(carry, xs):
    previous, last = carry                                     # [B,H,W,C], [B,N] (-1: none)
    current, target, bits = xs                                 # [B,H,W,C] x2, [B,N]
    windows = blockify(shifted(previous, search), block_size)  # [M,B,N,p,p,C]
    target_blocks = _frame_blocks(target, block_size)
    current_blocks = _frame_blocks(current, block_size)
    copy_error = jnp.square(windows - target_blocks[None]).sum(axis=(-3, -2, -1))  # [M,B,N]
    rate = charged
    if prefer_previous:
      rate = jnp.where(jnp.arange(charged.shape[0])[:, None, None] == last[None], 1.0, charged)
    cost = copy_error + lam * rate
    vector = jnp.argmin(cost, axis=0).astype(jnp.int32)
    code_error = jnp.square(current_blocks - target_blocks).sum(axis=(-3, -2, -1))
    skip = jnp.min(cost, axis=0) <= code_error + lam * (bits + 1.0)
    vector = jnp.where(skip, vector, no_move(search))
    out = _place(windows, current_blocks, skip, vector, h, w)
    return (out, jnp.where(skip, vector, -1)), (out, skip, vector)

  xs = tuple(jnp.moveaxis(x[:, 1:], 1, 0) for x in (intra, original, intra_bits))
  start = (intra[:, 0], jnp.full((b, n), -1, jnp.int32))
  _, (rest, skip, vector) = jax.lax.scan(step, start, xs)
  return (_with_first(intra[:, 0], rest), _with_first(jnp.zeros((b, n), bool), skip),
          _with_first(jnp.full((b, n), no_move(search), jnp.int32), vector))


def _place(windows, current_blocks, skip, vector, h: int, w: int):
  """The frame of `current_blocks` [B,N,p,p,C] with each skipped block's window [M,B,N,...]."""
  copied = jnp.take_along_axis(windows, vector[None, :, :, None, None, None], axis=0)[0]
  blocks = jnp.where(skip[..., None, None, None], copied, current_blocks)
  return unblockify(blocks[:, None], h, w)[:, 0]


def rebuild_with_skips(intra, skip, vector, *, block_size: int, search: int):
  """The receiver: intra float32 [B,K,H,W,C] (the block code's pixels of the blocks sent; any
  value where skipped), skip bool [B,K,N], vector int32 [B,K,N] -> the kept frames
  [B,K,H,W,C], each skipped block the window `vector` of the frame before as rebuilt.
  Vectors must lie in [0, vector_count(search)) (the bitstream's decoder checks them)."""
  _check(intra, block_size)
  intra = jnp.asarray(intra, jnp.float32)
  h, w = intra.shape[2:4]

  def step(previous, xs):
    current, skipped, moved = xs
    windows = blockify(shifted(previous, search), block_size)
    out = _place(windows, _frame_blocks(current, block_size), skipped, moved, h, w)
    return out, out

  xs = (jnp.moveaxis(intra[:, 1:], 1, 0), jnp.moveaxis(skip[:, 1:], 1, 0),
        jnp.moveaxis(vector[:, 1:], 1, 0))
  _, rest = jax.lax.scan(step, intra[:, 0], xs)
  return _with_first(intra[:, 0], rest)
