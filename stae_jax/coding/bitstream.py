"""The clip bitstream: a small header, then the range-coded frame mask, block masks and latents.

Layout (format versions 1 and 3, all integers little-endian):

  magic and version: 0xB0 | version     1 byte (0xB1: factorized tables, 0xB3: conditional ones)
  flags  bit 0: frame mask present      1 byte
         bit 1: block masks present
         bits 2-4: number of explicit extra latent dims (0..7)
         bit 5: skip vectors present (version 3 only)
         bit 6: refined blocks present (version 3 only); bit 7 zero
  table hash prefix                     2 bytes (first bytes of CodingTables.table_hash)
  varints (LEB128, minimal):            frame mask:  T, k_f
                                        block masks: N, k_s, then rows R only without a frame mask
                                        the explicit latent dims (those not implied by the masks)
                                        with bit 5: V, the number of skip vectors (1..MAX_VECTORS)
                                        with bit 6: Q, the refinement's step code (1..65535),
                                        and F, the kept frames refined (1..k_f)
  payload                               constriction range coder words (uint32, 4-byte aligned)
  crc32 of everything above, seeded     4 bytes
  with the CRC of the full table hash

What a clip is (`ClipPayload`): latents int32 [*lead, C] (C = the tables' channels), optionally a
frame mask bool[T] keeping k_f frames (then lead[0] = k_f), optionally block masks bool[R, N] keeping
k_s of N blocks per row (then lead[0] = R, lead[1] = k_s). STAE sends both masks with latents
[k_f, k_s, h, w, C]; DeepISC sends neither, with latents [T, tokens, C].

Payload order (the range coder is a queue, so decoding reads it in the same order):
  1. masks with the exact adaptive Bernoulli code, p = picks left / places left. Places whose bit is
     already determined (no picks left, or as many picks as places) are not coded at all, so a mask
     costs log2 C(n, k) bits up to the coder's fixed-point rounding.
  2. version 1 (factorized tables): latents channel by channel, each channel one Categorical over
     its table (index = value - lower), with index K_c meaning "escape".
  3. each escaped value: side (below/above the support, uniform over 2), then the distance d beyond
     the support as Elias-gamma-like fields: nb = floor(log2(d + 1)) uniform over 0..32, and the nb low
     bits of d + 1 in uniform chunks of at most 16 bits. Nothing is ever clipped.
  Version 3 (conditional tables, STAE layout only: both masks): instead of 2 and 3, kept frame by
  kept frame, two passes over the block grid (checkerboard anchors, then the rest), and in each
  pass:
    a. repeat flags: for each block of the pass, ascending, that the decoder's canvas already
       holds (sent by an earlier kept frame), one bit, 1 = "repeat": every latent value of the
       block (every position and channel) equals the canvas's values there. Blocks never sent
       before carry no flag. Each bit under the masks' Bernoulli code with p(repeat) = (repeats
       so far + 1) / (flags so far + 2), the clip's counts (integers, the same on both sides;
       never 0 or 1).
    b. channel by channel: the residuals y - pred of that channel at the pass's blocks not
       flagged, in place order, each under its table row (c * K + context; the row as stored,
       padding included), then their escaped residuals as in 3.
  Prediction and context are the integer rule of `stae_jax.models.context` over what is already
  decoded. A flagged block sends nothing more in its pass and leaves the canvas as it is (its
  values are the ones it holds), so no other block's prediction or context depends on the flags:
  the residuals of the blocks not flagged are coded as version 2 coded them. Version 2 (the same
  without the flags) is no longer read: its streams are refused by their version.

Skip vectors (version 3, header bit 5; `stae_jax.models.skip`): a skipped block sends the latents
last sent at its place, so its repeat flag is 1. After the last pass, one symbol per repeat flag 1,
in the flags' order: its vector (0..V-1) or V, "not skipped". Every adaptive section of the stream
(these symbols, and each section of the refined blocks below) is coded the same way: symbols of an
alphabet of A under the clip's counts for that section, symbol s weighing (times it came before in
the section) + 1; with W the weights' sum and c(s) the weight below s, the interval of s is
[c(s) * (2^24 - A) // W + s, c(s + 1) * (2^24 - A) // W + s + 1) of 2^24: integers only, the same
on every machine.

Refined blocks (version 3, header bit 6; `stae_jax.models.refine`): levels int [k_f, k_s, 3, 64]
(three channels in scan order) for each block of the first F kept frames that is not skipped
(every block of them without bit 5), zero elsewhere. After the skip vectors, adaptive sections
in this order: for each channel group (channel 0; channels 1 and 2) the ends, one per refined
block and channel of the group (blocks in the latents' order): 0 where every level is zero, else
the last nonzero scan position + 1 (A = 65); then for each group and each band of scan positions
([0, 1), [1, 6), [6, 15), [15, 64)) the levels before their block's end, block by block, channel
by channel, ascending, each clipped to +-15 and offset by 15 (A = 31); then the excess |level| -
15 of each level sent as +-15, in that order, as two digits: every high digit (excess // 64,
A = 64), then every low one (excess % 64, A = 64). A level is at most 15 + 64^2 - 1 in size. Q
is carried for the receiver (the quantiser's step in quarter pixel levels); the coder does not
use it.

A stream is one clip and decodes alone. `encode_batch` and `decode_batch` code a batch's clips
together to spend less Python per clip: version 3's contexts and repeats of a pass are computed
for all clips at once and each clip's flags and residuals go to its coder in one call, each
symbol as its interval (a residual's under its row: a model of 3 masses with exactly the edges
constriction gives the row's symbol, so the words are the row's, with a cheaper model to build
per symbol, `_interval_table`; a flag's under its Bernoulli, `_flag_intervals`). Version 3's
streams are read by compiled code (`stae_jax.coding.range_decoder`, constriction's range decoder
bit for bit): each stream's masks in one call, then the streams of one shape in lockstep, a call
per pass for all of them (its flags, then every channel of the pass, escapes included, each
symbol under its row's integer edges, `_quantized_cdf`). The bytes are those `encode` makes of
each clip alone.

The CRC makes truncated, extended or mutated streams fail loudly instead of decoding into a wrong clip
(a range-coded stream otherwise decodes almost any bytes into *something*). Behind it, the payload
must end where the encoder ends it: the decoder can code what it decoded again (`_ExactDecoder`) and
refuse any word after the encoder's last one, so a stream extended by whole words with its CRC
recomputed is refused as well (the range coder alone decodes it to the same clip); most honest
streams are decided without coding again (`_Decoder`, and for version 3 `_CompiledDecoder`).
Every decoding failure, including constriction's Rust panics (BaseException) and the compiled
decoder's failures, surfaces as `DecodeError`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import struct
import zlib

import constriction
import numpy as np

from stae_jax.coding import range_decoder
from stae_jax.coding.tables import CodingTables, require_tables
from stae_jax.models import context as context_lib

__all__ = ["ClipPayload", "CodingStats", "DecodeError", "Header", "encode", "encode_with_stats",
           "decode", "read_header", "encode_batch", "decode_batch", "MAGIC", "VERSION"]
MAGIC = 0xB0       # high nibble of the first byte; the low nibble is the format version
VERSION = 1              # streams coded with factorized tables
CONTEXT_VERSION = 3      # streams coded with conditional tables (residuals in context, repeat flags)
#: Conditional streams before repeat flags: refused, with a message saying so.
_RETIRED_CONTEXT_VERSION = 2
_HASH_BYTES = 2    # header's table-hash prefix; the CRC, seeded with the full hash, does the rest
_FLAG_FRAME_MASK = 1
_FLAG_BLOCK_MASKS = 2
_FLAG_VECTORS = 32
_FLAG_REFINEMENT = 64
_FIXED_HEADER = 1 + 1 + _HASH_BYTES
_CRC_BYTES = 4
#: Decoding refuses headers claiming more than this many mask places (bounds Python-loop time).
MAX_MASK_PLACES = 1 << 18
#: Default bound on latent symbols per clip a decoder accepts (bounds memory: ~100 bytes/symbol peak).
MAX_LATENT_SYMBOLS = 1 << 20
#: Version 3 decodes a frame's whole block grid at a time: blocks x values per block is bounded too.
MAX_FRAME_VALUES = 1 << 22
#: ... and its kept frames (two passes each, some Python per pass: bounds the time of a stream).
MAX_CONTEXT_FRAMES = 1024
#: Skip vectors a header may declare (a search of up to +-31 px has 63^2 = 3969).
MAX_VECTORS = 1 << 12
#: Refined blocks (module docstring): levels per block and channel, the channel groups, where the
#: bands of scan positions start, the size coded directly, the escape's digit, the largest level.
REFINE_POSITIONS = 64
REFINE_CHANNELS = 3
REFINE_GROUPS = ((0,), (1, 2))
REFINE_BAND_STARTS = (0, 1, 6, 15)
REFINE_CLIP = 15
_REFINE_DIGIT = 64
MAX_REFINE_LEVEL = REFINE_CLIP + _REFINE_DIGIT * _REFINE_DIGIT - 1
MAX_REFINE_STEP = (1 << 16) - 1
_REFINE_BAND = np.searchsorted(np.array(REFINE_BAND_STARTS), np.arange(REFINE_POSITIONS),
                               side="right") - 1
_MAX_DIM = (1 << 32) - 1
_ESCAPE_FIELD_SIZES = (2, 33)  # side, nb
#: Masks of up to this many places decode from a table of their bits' models (built once a size).
_MASK_TABLE_PLACES = 256
#: constriction's fixed-point precision (`constriction.stream.model`'s default: 24-bit masses).
_PRECISION = 24
#: Clips with up to this many repeat flags code them as intervals among the residuals (one coder
#: call, `_flag_intervals`); more (never within the decoders' default limits) a call a pass.
_MAX_INLINE_FLAGS = 1 << 22
#: Version 3's decoders gather the tables of this many symbols' rows (floats) at a time, 256 KB:
#: they stay in the cache until read.
_CACHED_TABLES = 1 << 15

_model = constriction.stream.model
_BERNOULLI = _model.Bernoulli(perfect=False)
_CATEGORICAL = _model.Categorical(perfect=False)  # per-symbol tables, given at each call
_UNIFORM = _model.Uniform()


class DecodeError(ValueError):
  """The bytes are not a valid stae-jax clip bitstream for these tables (malformed, truncated,
  extended, corrupted, foreign, or coded with other tables). The message says which check failed."""


@dataclasses.dataclass(frozen=True, eq=False)
class ClipPayload:
  """What one clip sends: integer latents and the optional masks that say where they belong.

  latents: int32 [*lead, C]. frame_mask: bool [T] or None. block_masks: bool [R, N] or None.
  vectors: int32 [k_f, k_s] or None (version 3 only, with both masks): each kept block's skip
  vector, -1 where the block is not skipped, else in [0, vector_count); a skipped block's latents
  must be the values last sent at its place (module docstring, "Skip vectors").
  refinement: int32 [k_f, k_s, 3, 64] or None (version 3 only): the refined blocks' levels, zero
  at every block that is not refined (those of kept frames >= refine_frames, and skipped ones);
  refine_step the receiver's step code (module docstring, "Refined blocks").
  """
  latents: np.ndarray
  frame_mask: np.ndarray | None = None
  block_masks: np.ndarray | None = None
  vectors: np.ndarray | None = None
  vector_count: int = 0
  refinement: np.ndarray | None = None
  refine_step: int = 0
  refine_frames: int = 0

  def __eq__(self, other):
    if not isinstance(other, ClipPayload):
      return NotImplemented
    def same(a, b):
      if a is None or b is None:
        return a is None and b is None
      return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))
    return (same(self.latents, other.latents) and same(self.frame_mask, other.frame_mask)
            and same(self.block_masks, other.block_masks) and same(self.vectors, other.vectors)
            and self.vector_count == other.vector_count
            and same(self.refinement, other.refinement) and self.refine_step == other.refine_step
            and self.refine_frames == other.refine_frames)

  __hash__ = None


@dataclasses.dataclass(frozen=True)
class CodingStats:
  """What encoding one clip produced: sizes in bytes, the number of escape-coded latents, and
  (version 3) its repeat flags: how many were coded, how many said "repeat", and their
  information content in bits, sum of -log2 p(flag) under the flags' adaptive model (what they
  cost in the stream up to the range coder's fixed-point rounding)."""
  num_bytes: int
  header_bytes: int   # fixed header + varints + CRC trailer
  escapes: int
  latent_symbols: int
  flags: int = 0
  repeats: int = 0
  flag_bits: float = 0.0
  skips: int = 0      # repeats that are skipped blocks (skip vectors other than "not skipped")


# ----------------------------------------------------------------------------- validation helpers


def _hash_prefix(tables: CodingTables) -> bytes:
  return bytes.fromhex(tables.table_hash)[:_HASH_BYTES]


def _version(tables: CodingTables) -> int:
  """The format version of streams coded with `tables` (conditional tables code version 3)."""
  return CONTEXT_VERSION if tables.conditional else VERSION


def _crc_seed(tables: CodingTables) -> int:
  """The CRC starts from the full table hash, so it also rejects other tables sharing the prefix."""
  return zlib.crc32(bytes.fromhex(tables.table_hash))


def _check_mask(name: str, mask, rows: bool) -> np.ndarray:
  mask = np.asarray(mask)
  if mask.dtype != np.bool_ or mask.ndim != (2 if rows else 1):
    raise ValueError(f"{name} must be a bool array of rank {2 if rows else 1}, got {mask.dtype} "
                     f"{mask.shape}; pass e.g. `scores_top_k_mask.astype(bool)`")
  return mask


def _check_payload(payload: ClipPayload, tables: CodingTables):
  """Validates shapes/dtypes/counts; returns (latents int64 [M, C], header bytes, lead shape)."""
  if not isinstance(payload, ClipPayload):
    raise TypeError(f"encode expects a ClipPayload, got {type(payload).__name__}")
  latents = np.asarray(payload.latents)
  if not np.issubdtype(latents.dtype, np.integer):
    raise ValueError(f"latents must be integers (round them first), got dtype {latents.dtype}")
  if latents.ndim < 1 or latents.shape[-1] != tables.channels:
    raise ValueError(f"latents must be [..., C] with C = {tables.channels} (the tables' channels), "
                     f"got shape {latents.shape}")
  if latents.size and (latents.min() < -2**31 or latents.max() >= 2**31):
    raise ValueError("latents must fit in int32")
  lead = latents.shape[:-1]
  fields, implied, flags = [], 0, 0
  if payload.frame_mask is not None:
    mask = _check_mask("frame_mask", payload.frame_mask, rows=False)
    kept = int(mask.sum())
    if not lead or lead[0] != kept:
      raise ValueError(f"frame_mask keeps {kept} frames but latents have shape {latents.shape} "
                       f"(the first axis must be the kept frames)")
    fields += [mask.shape[0], kept]
    implied, flags = 1, flags | _FLAG_FRAME_MASK
  if payload.block_masks is not None:
    masks = _check_mask("block_masks", payload.block_masks, rows=True)
    kept = masks.sum(axis=1)
    rows, blocks = masks.shape
    k_s = int(kept[0]) if rows else (lead[1] if len(lead) > 1 else 0)
    if (kept != k_s).any() or len(lead) < 2 or lead[0] != rows or lead[1] != k_s:
      raise ValueError(f"block_masks {masks.shape} must keep the same number k_s of blocks in every "
                       f"row (kept: {kept.tolist()}), with latents [rows, k_s, ...]; got latents "
                       f"{latents.shape}")
    fields += [blocks, k_s] + ([] if implied else [rows])
    implied, flags = 2, flags | _FLAG_BLOCK_MASKS
  if tables.conditional:
    if implied != 2 or payload.frame_mask is None:
      raise ValueError("conditional coding tables code STAE clips: the payload needs a frame mask "
                       "and block masks (latents [k_f, k_s, ..., C])")
    if masks.shape[1] % tables.grid_width:
      raise ValueError(f"block masks over {masks.shape[1]} blocks do not fill rows of the tables' "
                       f"grid width {tables.grid_width}: these tables were frozen for another "
                       "clip size")
  explicit = list(lead[implied:])
  if len(explicit) > 7:
    raise ValueError(f"latents have too many axes ({latents.ndim}); at most {implied + 8} allowed")
  if any(d > _MAX_DIM for d in fields + explicit):
    raise ValueError("a dimension exceeds 2^32 - 1")
  flags |= len(explicit) << 2
  if payload.vectors is not None:
    _check_vectors(payload, lead, tables)
    flags |= _FLAG_VECTORS
    explicit.append(int(payload.vector_count))
  if payload.refinement is not None:
    _check_refinement(payload, lead, tables)
    flags |= _FLAG_REFINEMENT
    explicit += [int(payload.refine_step), int(payload.refine_frames)]
  header = (bytes([MAGIC | _version(tables), flags]) + _hash_prefix(tables)
            + b"".join(_varint(v) for v in fields + explicit))
  return latents.reshape(-1, tables.channels).astype(np.int64), header


def _check_vectors(payload: ClipPayload, lead: tuple, tables: CodingTables) -> None:
  """A payload's skip vectors: version 3, int [k_f, k_s] in [-1, vector_count)."""
  vectors, count = np.asarray(payload.vectors), payload.vector_count
  if not tables.conditional:
    raise ValueError("skip vectors need conditional coding tables (version 3): a skipped block "
                     "is a repeat of the values last sent at its place")
  if not isinstance(count, (int, np.integer)) or not 1 <= count <= MAX_VECTORS:
    raise ValueError(f"vector_count must be an int in [1, {MAX_VECTORS}], got {count!r}")
  if not np.issubdtype(vectors.dtype, np.integer) or vectors.shape != tuple(lead[:2]):
    raise ValueError(f"vectors must be integers [k_f, k_s] = {list(lead[:2])} (one per kept "
                     f"block), got {vectors.dtype} {list(vectors.shape)}")
  if vectors.size and (vectors.min() < -1 or vectors.max() >= count):
    raise ValueError(f"vectors must lie in [-1, {count}) (-1: not skipped), got "
                     f"{vectors.min()}..{vectors.max()}")


def refined_blocks(k_f: int, k_s: int, refine_frames: int, vectors=None) -> np.ndarray:
  """Which kept blocks carry levels, bool [k_f, k_s] (or [..., k_f, k_s] with vectors [...,
  k_f, k_s]): those of the first `refine_frames` kept frames that are not skipped."""
  frames = np.arange(k_f)[:, None] < refine_frames
  if vectors is None:
    return np.broadcast_to(frames, (k_f, k_s))
  return frames & (np.asarray(vectors) < 0)


def _check_refinement(payload: ClipPayload, lead: tuple, tables: CodingTables) -> None:
  """A payload's refined blocks: version 3, int [k_f, k_s, 3, 64] within +-MAX_REFINE_LEVEL,
  zero outside the refined blocks, a step code and 1..k_f frames."""
  levels = np.asarray(payload.refinement)
  if not tables.conditional:
    raise ValueError("refined blocks need conditional coding tables (version 3)")
  shape = tuple(lead[:2]) + (REFINE_CHANNELS, REFINE_POSITIONS)
  if not np.issubdtype(levels.dtype, np.integer) or levels.shape != shape:
    raise ValueError(f"refinement must be integers {list(shape)} (per kept block, 3 channels of "
                     f"64 levels), got {levels.dtype} {list(levels.shape)}")
  step, frames = payload.refine_step, payload.refine_frames
  if not isinstance(step, (int, np.integer)) or not 1 <= step <= MAX_REFINE_STEP:
    raise ValueError(f"refine_step must be an int in [1, {MAX_REFINE_STEP}], got {step!r}")
  if not isinstance(frames, (int, np.integer)) or not 1 <= frames <= lead[0]:
    raise ValueError(f"refine_frames must be an int in [1, {lead[0]}] (kept frames), got "
                     f"{frames!r}")
  if levels.size and np.abs(levels).max() > MAX_REFINE_LEVEL:
    raise ValueError(f"refinement levels must lie within +-{MAX_REFINE_LEVEL}, got "
                     f"{levels.min()}..{levels.max()}")
  refined = refined_blocks(lead[0], lead[1], frames, payload.vectors)
  if levels[~refined].any():
    raise ValueError("refinement levels are nonzero at a block that is not refined (a kept frame "
                     f">= refine_frames={frames}, or a skipped block)")


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _read_varint(data: bytes, offset: int, end: int) -> tuple[int, int]:
  value, shift = 0, 0
  while True:
    if offset >= end:
      raise DecodeError("header ends inside a size field (truncated or malformed header)")
    byte = data[offset]
    offset += 1
    value |= (byte & 0x7F) << shift
    if not byte & 0x80:
      if byte == 0 and shift:
        raise DecodeError("header has a non-minimal size field (malformed header)")
      if value > _MAX_DIM:
        raise DecodeError(f"header size field {value} exceeds 2^32 - 1")
      return value, offset
    shift += 7
    if shift > 28:
      raise DecodeError("header size field is longer than 5 bytes (malformed header)")


# ----------------------------------------------------------------------------- masks


def _mask_probabilities(masks: np.ndarray):
  """For bool masks [..., n] (rows of places): each place's bit, its p = picks left / places
  left, and whether the bit is still undetermined (only those are coded); vectorised.

  Returns (bits int32 [..., n], p float64 [..., n], undetermined bool [..., n]).
  """
  n = masks.shape[-1]
  bits = masks.astype(np.int32)
  picks_left = bits.sum(axis=-1, keepdims=True) - (np.cumsum(bits, axis=-1) - bits)
  places_left = n - np.arange(n)
  undetermined = (picks_left > 0) & (picks_left < places_left)
  return bits, picks_left / places_left, undetermined


@functools.lru_cache(maxsize=1 << 14)
def _mask_bit_model(picks_left: int, places_left: int):
  """The Bernoulli of a mask bit, built once per (picks left, places left): a mask decodes bit by
  bit, and building the model cost more than decoding with it."""
  return _model.Bernoulli(picks_left / places_left, perfect=False)


@functools.lru_cache(maxsize=8)
def _mask_bit_models(n: int) -> tuple:
  """models[k][p] = `_mask_bit_model(k, p)` for 0 < k < p <= n: a mask of up to
  `_MASK_TABLE_PLACES` places reads its models from a table (one lookup a bit)."""
  return tuple(tuple(_mask_bit_model(k, p) if 0 < k < p else None for p in range(n + 1))
               for k in range(n + 1))


class _PickModels:
  """`_mask_bit_models(n)[k]` for masks too large for a table: each model looked up when asked."""

  def __init__(self, picks_left: int):
    self._picks_left = picks_left

  def __getitem__(self, places_left: int):
    return _mask_bit_model(self._picks_left, places_left)


def _decode_mask(decoder, n: int, k: int) -> np.ndarray:
  """Sequential adaptive Bernoulli decoding of one mask keeping k of n places."""
  mask = np.zeros(n, np.bool_)
  if not 0 < k < n:  # no bit coded
    mask[:] = k > 0
    return mask
  models_of = _mask_bit_models(n).__getitem__ if n <= _MASK_TABLE_PLACES else _PickModels
  read = decoder.bit_reader()
  picks_left = k
  models = models_of(picks_left)
  for i in range(n):
    places_left = n - i
    if picks_left == 0:
      break
    if picks_left == places_left:
      mask[i:] = True
      break
    if read(models[places_left]):
      mask[i] = True
      picks_left -= 1
      models = models_of(picks_left)
  return mask


# ----------------------------------------------------------------------------- latents


def _latent_symbols(flat: np.ndarray, tables: CodingTables):
  """int64 [..., M, C] latents -> (symbols int32 [..., C, M], escaped bool [..., C, M])."""
  index = flat - tables.lower
  escaped = (index < 0) | (index >= tables.sizes)
  symbols = np.where(escaped, tables.sizes, index).astype(np.int32)
  return np.swapaxes(symbols, -1, -2).copy(), np.swapaxes(escaped, -1, -2)


def _escape_fields(values: np.ndarray, lower: np.ndarray, upper: np.ndarray):
  """Escaped values (int64) with their channel's bounds -> (head fields, head sizes, chunks, sizes)."""
  above = values > upper
  distance_plus_one = np.where(above, values - upper, lower - values)  # d + 1 >= 1
  _, exponent = np.frexp(distance_plus_one.astype(np.float64))  # exact: values < 2^53
  nb = (exponent - 1).astype(np.int64)
  remainder = distance_plus_one - (np.int64(1) << nb)
  head = np.stack([above.astype(np.int32), nb.astype(np.int32)], axis=1).reshape(-1)
  head_sizes = np.tile(np.array(_ESCAPE_FIELD_SIZES, np.int32), len(values))
  low_bits = np.minimum(nb, 16)
  high_bits = nb - low_bits
  chunks = np.stack([remainder & 0xFFFF, remainder >> 16], axis=1).reshape(-1)
  chunk_bits = np.stack([low_bits, high_bits], axis=1).reshape(-1)
  coded = chunk_bits > 0
  return (head, head_sizes, chunks[coded].astype(np.int32),
          (np.int64(1) << chunk_bits[coded]).astype(np.int32))


def _context_passes(block_masks: np.ndarray, tables: CodingTables):
  """The coding order of version 3, for a batch of clips in lockstep: yields (frame, the pass's
  blocks int [B, m], which of those are real bool [B, m]), anchors first. Each clip's blocks come
  first, ascending, then padding (blocks it does not send in this pass); a pass no clip has is
  skipped, and a clip with no block in a pass codes nothing there."""
  k_f, n = block_masks.shape[1:]
  anchor = context_lib.anchors(n, tables.grid_width)
  for f in range(k_f):
    for selected in (block_masks[:, f] & anchor, block_masks[:, f] & ~anchor):
      counts = selected.sum(axis=1)
      m = int(counts.max(initial=0))
      if m:
        blocks = np.argsort(~selected, axis=1, kind="stable")[:, :m]
        yield f, blocks, np.arange(m) < counts[:, None]


def _rows_of(spatial: np.ndarray, x: np.ndarray, channel: int, tables: CodingTables) -> np.ndarray:
  return channel * tables.num_contexts + spatial * (2 * tables.channel_clip + 1) + x


def _quantize_rows(probabilities: np.ndarray) -> np.ndarray:
  """`_quantized_cdf` of float64 rows [R, W]: int64 [R, W + 1]."""
  rows, width = probabilities.shape
  cumulative = np.cumsum(probabilities, axis=1)  # in order, as constriction sums
  scale = float((1 << _PRECISION) - width) / cumulative[:, -1:]
  before = np.concatenate([np.zeros((rows, 1)), cumulative[:, :-1]], axis=1)
  cdf = np.empty((rows, width + 1), np.int64)
  cdf[:, :width] = np.floor(before * scale).astype(np.int64) + np.arange(width)
  cdf[:, width] = 1 << _PRECISION
  return cdf


@functools.lru_cache(maxsize=8)
def _quantized_cdf(tables: CodingTables) -> np.ndarray:
  """int64 [R, W + 1]: the cumulative masses (out of 2^24) that constriction gives each symbol of
  every stored row (padding included) under `Categorical(perfect=False)`, the model the decoder
  reads a version-3 symbol with.

  constriction's lazy categorical (`from_floating_point_probabilities_fast`) sums the row in
  order (float64), scales by (2^24 - W) / sum, and gives symbol s the left edge
  trunc(sum of the masses before s * scale) + s (every symbol at least one unit), the last edge
  2^24. `np.cumsum` adds in the same order, so these are the same integers; the range coder
  codes a symbol by its two edges only (tests/test_context_coding.py checks every row and symbol
  against constriction's own coding). The tables are immutable, so this is computed once."""
  cdf = _quantize_rows(tables.probabilities)
  cdf.setflags(write=False)
  return cdf


def _interval_models(left: np.ndarray, right: np.ndarray):
  """Symbols' intervals [left, right) of 2^24 -> (masses float64 [..., 3], symbol int32 [...])
  such that constriction's `Categorical(perfect=False)` over the three masses codes the symbol
  with exactly that interval: the masses are integers summing to 2^24 - 3, so its scale is 1 and
  every edge exact. The encoder codes each latent so instead of under its row's W masses: the
  same words (the range coder sees only the interval), with a model of 3 masses to build per
  symbol instead of W. Needs tables at least 3 symbols wide (an interval touching neither end,
  the general case, is the middle symbol; one at 0 the first; one ending at 2^24 the last)."""
  total = (1 << _PRECISION) - 3
  first, last = left == 0, right == 1 << _PRECISION
  masses = np.empty(left.shape + (3,))
  # middle symbol: masses [left - 1, right - left - 1, rest]; its edges left and right.
  masses[..., 0] = np.where(first, right - 1, np.where(last, 0, left - 1))
  masses[..., 1] = np.where(first | last, np.where(last, left - 2, 0), right - left - 1)
  masses[..., 2] = total - masses[..., 0] - masses[..., 1]
  symbol = np.where(first, 0, np.where(last, 2, 1)).astype(np.int32)
  return masses, symbol


@functools.lru_cache(maxsize=8)
def _interval_table(tables: CodingTables) -> tuple[np.ndarray, np.ndarray]:
  """What the encoder hands the range coder for symbol s of row r, at flat index r * W + s:
  (masses float64 [R * W, k], symbol int32 [R * W]). With k = 3 (`_interval_models`) for tables at
  least 3 symbols wide, else the row itself (k = W <= 2) and s. Built once per tables (kept for
  the last 8): three floats per table entry, three times the tables' own size."""
  rows, width = tables.probabilities.shape
  if width >= 3:
    cdf = _quantized_cdf(tables)
    masses, symbol = _interval_models(cdf[:, :-1].reshape(-1), cdf[:, 1:].reshape(-1))
  else:
    masses = np.repeat(tables.probabilities, width, axis=0)
    symbol = np.tile(np.arange(width, dtype=np.int32), rows)
  masses.setflags(write=False)
  symbol.setflags(write=False)
  return masses, symbol


@functools.lru_cache(maxsize=8)
def _decoder_tables(tables: CodingTables) -> tuple[np.ndarray, ...]:
  """What `range_decoder.read_pass` reads a version-3 symbol with: (cdf int32 [R, W + 1] from
  `_quantized_cdf`, sizes, lower, upper int64 [R]), built once per tables (kept for the last 8)."""
  arrays = (_quantized_cdf(tables).astype(np.int32), np.ascontiguousarray(tables.sizes, np.int64),
            tables.lower.astype(np.int64), tables.upper.astype(np.int64))
  for array in arrays:
    array.setflags(write=False)
  return arrays


def _flag_intervals(repeat: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Repeat flags (bool [n]) with their p(repeat) (float64 [n]: integer counts, one correctly
  rounded division, the same float on every machine) -> their `_interval_models`, the intervals
  `Bernoulli(p, perfect=False)` gives them: symbol 1 from trunc((1 - p) * ((2^24 - 2) / ((1 - p)
  + p))) + 1 (constriction's float64 arithmetic, `range_decoder.bernoulli_edge`), symbol 0 below.
  The edge lies in [2, 2^24 - 2] while p >= 1 / (flags + 2) with fewer than `_MAX_INLINE_FLAGS`
  flags, as `_interval_models` needs."""
  q = 1.0 - p
  edge = (q * (float((1 << _PRECISION) - 2) / (q + p))).astype(np.int64) + 1
  return _interval_models(np.where(repeat, edge, 0), np.where(repeat, 1 << _PRECISION, edge))


def _flag_model(repeats: int, flags: int):
  """The Bernoulli of the next repeat flag after `flags` flags of which `repeats` were 1: the
  masks' quantised `Bernoulli(p, perfect=False)` with p = (repeats + 1) / (flags + 2), which is
  never 0 or 1 (and the coder gives either bit at least one unit of 2^24 besides)."""
  return _mask_bit_model(repeats + 1, flags + 2)


def _encode_clip(encoder, symbols: np.ndarray, masses: np.ndarray, escapes: list, flags: list):
  """One clip's version-3 symbols in stream order: `symbols` with their intervals (`masses`: the
  residuals' from `_interval_table`, the repeat flags' from `_flag_intervals` where they are
  among them), then at their positions in that sequence, each sub-pass's escapes (`escapes`:
  (position, residuals int64 [n], lower, upper int64 [n] of their rows)) and, where the flags
  are not among the symbols, each pass's flags (`flags`: (position, bits int32 [n], p(repeat)
  float64 [n])); at one position, a sub-pass's escapes come before the next pass's flags.
  Symbols between them go in one coder call: the range coder codes symbol by symbol, so the
  bytes do not depend on how the symbols are cut into calls."""
  events = sorted([(e[0], 0, i) for i, e in enumerate(escapes)]
                  + [(f[0], 1, i) for i, f in enumerate(flags)])
  start = 0
  for position, kind, i in events + [(len(symbols), 2, 0)]:
    if position > start:
      encoder.encode(symbols[start:position], _CATEGORICAL, masses[start:position])
      start = position
    if kind == 1:
      _, bits, p = flags[i]
      encoder.encode(bits, _BERNOULLI, p)
    elif kind == 0:
      head, head_sizes, chunks, chunk_sizes = _escape_fields(*escapes[i][1:])
      encoder.encode(head, _UNIFORM, head_sizes)
      if chunks.size:
        encoder.encode(chunks, _UNIFORM, chunk_sizes)


def _no_stats(batch: int) -> dict[str, np.ndarray]:
  """Per-clip coding stats, all 0: escapes, and version 3's flags, repeats, skips (int64 [B])
  and flag_bits (float64 [B])."""
  return dict(escapes=np.zeros(batch, np.int64), flags=np.zeros(batch, np.int64),
              repeats=np.zeros(batch, np.int64), skips=np.zeros(batch, np.int64),
              flag_bits=np.zeros(batch))


def _vector_edge(below, symbol, total, alphabet: int):
  """Left edge (of 2^24) of skip-vector symbol `symbol` whose symbols below weigh `below` of the
  clip's `total` (module docstring, "Skip vectors"; `range_decoder.read_vectors` computes the
  same in compiled code): integer arithmetic, elementwise."""
  return below * ((1 << _PRECISION) - alphabet) // total + symbol


def _vector_intervals(symbols: np.ndarray, alphabet: int) -> tuple[np.ndarray, np.ndarray]:
  """A clip's skip-vector symbols (int [n], in [0, alphabet)) -> their intervals [left, right) of
  2^24 under the adaptive counts of the module docstring ("Skip vectors"), int64 [n] each."""
  n = len(symbols)
  seen = np.zeros((n + 1, alphabet + 1), np.int64)  # seen[i, s]: symbols < s among the first i
  seen[np.arange(1, n + 1), symbols + 1] = 1
  seen = np.cumsum(np.cumsum(seen, axis=0), axis=1)
  before = seen[np.arange(n), symbols] + symbols           # weight below the symbol
  weight = seen[np.arange(n), symbols + 1] - seen[np.arange(n), symbols] + 1
  total = np.arange(n) + alphabet
  return (_vector_edge(before, symbols, total, alphabet),
          _vector_edge(before + weight, symbols + 1, total, alphabet))


def _encode_vectors(encoder, symbols: np.ndarray, alphabet: int) -> None:
  """A clip's symbols of one adaptive section (its skip vectors, or a section of its refined
  blocks), each exactly in its interval."""
  if len(symbols):
    masses, symbol = _interval_models(*_vector_intervals(symbols, alphabet))
    encoder.encode(symbol, _CATEGORICAL, masses)


def _vector_masses(seen: np.ndarray, total: int) -> np.ndarray:
  """The next skip-vector symbol's model as `Categorical(perfect=False)` masses (float64 [1, A])
  whose quantisation is exactly the intervals of `_vector_intervals`: integer masses (each
  interval's width - 1) summing to 2^24 - A, so constriction's scale is 1. seen int64 [A]: each
  symbol's count so far in the clip; total: their sum + A."""
  alphabet = len(seen)
  below = np.concatenate([[0], np.cumsum(seen + 1)])
  left = _vector_edge(below, np.arange(alphabet + 1), total, alphabet)  # the last: 2^24
  return (np.diff(left) - 1).astype(np.float64)[None]


def _refinement_sections(levels: np.ndarray) -> list[tuple[np.ndarray, int]]:
  """A clip's refined blocks' levels int [S, 3, 64] (in the latents' order) -> its adaptive
  sections in stream order, (symbols, alphabet) each (module docstring, "Refined blocks")."""
  levels = np.asarray(levels, np.int64)
  nonzero = levels != 0
  end = np.where(nonzero.any(-1), REFINE_POSITIONS - np.argmax(nonzero[..., ::-1], axis=-1), 0)
  sections = [(end[:, list(g)].reshape(-1), REFINE_POSITIONS + 1) for g in REFINE_GROUPS]
  below = np.arange(REFINE_POSITIONS) < end[..., None]
  excess = []
  for g in REFINE_GROUPS:
    for k in range(len(REFINE_BAND_STARTS)):
      values = levels[:, list(g)][below[:, list(g)] & (_REFINE_BAND == k)]
      sections.append((np.clip(values, -REFINE_CLIP, REFINE_CLIP) + REFINE_CLIP,
                       2 * REFINE_CLIP + 1))
      excess.append(np.abs(values[np.abs(values) >= REFINE_CLIP]) - REFINE_CLIP)
  excess = np.concatenate(excess)
  return sections + [(excess // _REFINE_DIGIT, _REFINE_DIGIT),
                     (excess % _REFINE_DIGIT, _REFINE_DIGIT)]


def _read_refinement(read, refined: np.ndarray, failures: dict) -> np.ndarray:
  """The refined blocks' levels of B streams (the mirror of `_refinement_sections`): read(wanted
  int [B], alphabet) -> int64 [B, >= max wanted], each stream's next symbols of a section (new
  failures into `failures`); refined bool [B, M]: the blocks with levels. Returns int64
  [B, M, 3, 64]; a stream whose levels cannot be an encoder's goes into `failures`."""
  batch, m = refined.shape
  out = np.zeros((batch, m, REFINE_CHANNELS, REFINE_POSITIONS), np.int64)
  count = refined.sum(axis=1)
  live = lambda: [b for b in range(batch) if b not in failures and count[b]]

  def section(wanted: dict, alphabet: int) -> dict:
    sizes = np.zeros(batch, np.int64)
    for b, n in wanted.items():
      if b not in failures:
        sizes[b] = n
    symbols = read(sizes, alphabet)
    return {b: symbols[b, :sizes[b]] for b in wanted if b not in failures}

  levels = {b: np.zeros((int(count[b]), REFINE_CHANNELS, REFINE_POSITIONS), np.int64)
            for b in live()}
  ends = {b: np.zeros((int(count[b]), REFINE_CHANNELS), np.int64) for b in levels}
  for g in REFINE_GROUPS:
    got = section({b: int(count[b]) * len(g) for b in live()}, REFINE_POSITIONS + 1)
    for b, symbols in got.items():
      ends[b][:, list(g)] = symbols.reshape(-1, len(g))
  escaped = {b: [] for b in levels}  # the levels sent as +-15, in stream order
  for g in REFINE_GROUPS:
    for k in range(len(REFINE_BAND_STARTS)):
      where = {b: (np.arange(REFINE_POSITIONS) < ends[b][:, list(g), None])
               & (_REFINE_BAND == k) for b in live()}
      got = section({b: int(w.sum()) for b, w in where.items()}, 2 * REFINE_CLIP + 1)
      for b, symbols in got.items():
        index = np.nonzero(where[b])
        index = (index[0], np.asarray(g)[index[1]], index[2])
        levels[b][index] = symbols - REFINE_CLIP
        sent = np.abs(symbols - REFINE_CLIP) == REFINE_CLIP
        escaped[b].append(tuple(i[sent] for i in index))
  joined = {b: tuple(np.concatenate(parts) for parts in zip(*escaped[b])) for b in live()}
  high = section({b: len(i[0]) for b, i in joined.items()}, _REFINE_DIGIT)
  low = section({b: len(i[0]) for b, i in joined.items()}, _REFINE_DIGIT)
  for b in live():
    index = joined[b]
    if len(index[0]):
      levels[b][index] += np.sign(levels[b][index]) * (high[b] * _REFINE_DIGIT + low[b])
    last = np.take_along_axis(levels[b], np.maximum(ends[b] - 1, 0)[..., None], axis=-1)[..., 0]
    if ((ends[b] > 0) & (last == 0)).any():
      failures[b] = DecodeError("a refined block's last coded level is 0 (corrupted payload)")
      continue
    out[b, refined[b]] = levels[b]
  return out


def _encode_in_context(encoders: list, latents: np.ndarray, block_masks: np.ndarray,
                       tables: CodingTables, vectors: np.ndarray | None = None,
                       vector_count: int = 0, refinement: np.ndarray | None = None,
                       refine_frames: int = 0) -> dict[str, np.ndarray]:
  """Version 3 latents of B clips of one shape, one encoder each (module doc's order).

  The encoder holds every value, so each pass's contexts and repeats are computed for the whole
  batch at once (`context_lib.Canvas`, as the decoder computes them), and each clip's flags and
  residuals then go to its coder in one call (more only around escapes, or where the flags
  cannot be intervals among the residuals: `_flag_intervals`). latents int [B, k_f, k_s, *inner,
  C], block_masks bool [B, k_f, N]; vectors int [B, k_f, k_s] or None: each clip's skip vectors
  (-1: not skipped; a skipped block must be a repeat), coded after its passes; refinement int
  [B, k_f, k_s, 3, 64] or None: the levels of the blocks refined (the first `refine_frames` kept
  frames', not skipped), coded after the vectors. Returns per-clip
  int64 [B] counts of escapes, flags, repeats and skips, and float64 [B] flag_bits (the flags'
  information content).
  """
  batch, k_f, n = block_masks.shape
  stats = _no_stats(batch)
  if not latents.size:
    return stats
  channels = tables.channels
  values = latents.reshape(batch, k_f, latents.shape[2], -1, channels).astype(np.int64)
  positions = values.shape[3]
  l = positions * channels
  canvas = context_lib.Canvas(batch, n, l, tables.grid_width, tables.thresholds)
  rank = np.cumsum(block_masks, axis=2) - 1  # a kept block's place among its frame's latents
  lanes = np.arange(batch)[:, None]
  clip = tables.channel_clip
  first_rows = np.arange(channels) * tables.num_contexts  # row of (channel, context 0)
  residuals, rows, real, held_parts, repeat_parts, residual_counts = [], [], [], [], [], []
  vector_parts = []
  for f, blocks, valid in _context_passes(block_masks, tables):
    place = rank[lanes, f, blocks]  # the pass's blocks' places among their frame's latents
    pass_values = values[lanes, f, place]                                # [B, m, P, C]
    flat_values = pass_values.reshape(valid.shape + (l,))
    held, previous = canvas.held(blocks)
    held &= valid
    repeat = held & (flat_values == previous).all(axis=-1)  # flagged: no residual in this pass
    if vectors is not None:
      moved = vectors[lanes, f, place]
      wrong = valid & (moved >= 0) & ~repeat
      if wrong.any():
        b, i = (int(x[0]) for x in np.nonzero(wrong))
        raise ValueError(
            f"clip {b}: the block at place {int(blocks[b, i])} of kept frame {f} is skipped "
            "(a vector >= 0) but its latents are not the values last sent there: a skipped block "
            "must carry them (stae_jax.models.skip), and the first kept frame none")
      # Each flag 1's symbol: its vector, or vector_count for "not skipped".
      vector_parts.append(np.where(moved >= 0, moved, vector_count))
    coded = valid & ~repeat
    pred, spatial = canvas.context(blocks)
    residual = pass_values - pred.reshape(pass_values.shape)
    # The rows of every channel at once: x from the previous channel's residual (0 for the first).
    x = np.zeros(residual.shape, np.int64)
    np.clip(residual[..., :-1], -clip, clip, out=x[..., 1:])
    x[..., 1:] += clip
    row = spatial.reshape(pass_values.shape) * (2 * clip + 1) + x + first_rows
    # Stream order within the pass: channel, then block, then position.
    residuals.append(np.moveaxis(residual, -1, 1).reshape(batch, -1))
    rows.append(np.moveaxis(row, -1, 1).reshape(batch, -1))
    real.append(np.broadcast_to(coded[:, None, :, None], (batch, channels) + residual.shape[1:3])
                .reshape(batch, -1))
    residual_counts.append(coded.sum(axis=1) * l)
    held_parts.append(held)
    repeat_parts.append(repeat)
    canvas.send(np.nonzero(coded)[0], blocks[coded], flat_values[coded])
  # Every clip's residuals, clip by clip in stream order (its passes', each channel by channel).
  real = np.concatenate(real, axis=1)
  residual = np.concatenate(residuals, axis=1)[real]
  rows = np.concatenate(rows, axis=1)[real]
  index = residual - tables.lower[rows]
  sizes = tables.sizes[rows]
  escaped = (index < 0) | (index >= sizes)
  masses_of, symbol_of = _interval_table(tables)
  flat = rows * tables.probabilities.shape[1] + np.where(escaped, sizes, index)
  # Every clip's flags in stream order, each with its p(repeat) from the clip's counts before it.
  held = np.concatenate(held_parts, axis=1)
  repeat = np.concatenate(repeat_parts, axis=1)
  p = ((np.cumsum(repeat, axis=1) - repeat + 1) / (np.cumsum(held, axis=1) - held + 2))[held]
  bits = repeat[held]
  flag_counts = np.stack([part.sum(axis=1) for part in held_parts], axis=1)  # [B, passes]
  residual_counts = np.stack(residual_counts, axis=1)
  stats["flags"], stats["repeats"] = flag_counts.sum(axis=1), repeat.sum(axis=1)
  if vectors is not None:
    symbols_of = np.concatenate(vector_parts, axis=1)[repeat]  # every clip's, in stream order
    vector_ends = np.cumsum(stats["repeats"])
    stats["skips"] = (vectors >= 0).sum(axis=(1, 2))  # each one a repeat (checked above)
  information = -np.log2(np.where(bits, p, 1 - p))
  stats["flag_bits"] = np.bincount(np.repeat(np.arange(batch), stats["flags"]), information,
                                   minlength=batch)
  # The flags go into the residuals' coder call as their exact intervals (`_flag_intervals`)
  # where the residuals' models are 3 masses wide; else each pass's flags get a call of their
  # own: the same words either way. Each clip's sequence is its passes', each pass its flags
  # (if among them) then its residuals: a group per (clip, pass), placed by counts.
  inline = masses_of.shape[1] == 3 and int(stats["flags"].max(initial=0)) <= _MAX_INLINE_FLAGS
  inlined = (flag_counts * inline).reshape(-1)
  group_sizes = inlined + residual_counts.reshape(-1)
  group_start = np.cumsum(group_sizes) - group_sizes
  residual_start = np.cumsum(residual_counts.reshape(-1)) - residual_counts.reshape(-1)
  flag_start = np.cumsum(flag_counts.reshape(-1)) - flag_counts.reshape(-1)
  residual_at = np.arange(len(residual)) + np.repeat(group_start + inlined - residual_start,
                                                     residual_counts.reshape(-1))
  source = np.zeros(int(group_sizes.sum()), np.int64)  # what each symbol's interval is
  source[residual_at] = flat
  masses, symbols = np.take(masses_of, source, axis=0), np.take(symbol_of, source)
  if inline and len(bits):
    flag_at = np.arange(len(bits)) + np.repeat(group_start - flag_start, inlined)
    masses[flag_at], symbols[flag_at] = _flag_intervals(bits, p)
  passes = flag_counts.shape[1]
  group_start, residual_start, flag_start = (a.reshape(batch, passes) for a in (
      group_start, residual_start, flag_start))
  clip_ends = np.cumsum(group_sizes.reshape(batch, passes).sum(axis=1)).tolist()
  for b, encoder in enumerate(encoders):
    first = int(group_start[b, 0])
    flags, escapes = [], []
    if not inline:
      for q in np.flatnonzero(flag_counts[b]).tolist():
        here = slice(flag_start[b, q], flag_start[b, q] + flag_counts[b, q])
        flags.append((int(group_start[b, q]) - first, bits[here].astype(np.int32), p[here]))
    stop = residual_start[b, -1] + residual_counts[b, -1]
    clip_escaped = escaped[residual_start[b, 0]:stop]
    if clip_escaped.any():  # each sub-pass's escapes, after its last residual
      begin = int(residual_start[b, 0])
      subpass = np.repeat(np.arange(passes * channels),
                          np.repeat(residual_counts[b] // channels, channels))
      for s in np.unique(subpass[clip_escaped]).tolist():
        here = np.flatnonzero((subpass == s) & clip_escaped) + begin
        last = begin + int(np.searchsorted(subpass, s, side="right")) - 1
        escapes.append((int(residual_at[last]) + 1 - first, residual[here],
                        tables.lower[rows[here]].astype(np.int64),
                        tables.upper[rows[here]].astype(np.int64)))
    _encode_clip(encoder, symbols[first:clip_ends[b]], masses[first:clip_ends[b]], escapes,
                 flags)
    if vectors is not None:
      _encode_vectors(encoder, symbols_of[vector_ends[b] - stats["repeats"][b]:vector_ends[b]],
                      vector_count + 1)
    if refinement is not None:
      refined = refined_blocks(k_f, latents.shape[2], refine_frames,
                               None if vectors is None else vectors[b])
      for section, alphabet in _refinement_sections(refinement[b][refined]):
        _encode_vectors(encoder, section, alphabet)
    stats["escapes"][b] = int(clip_escaped.sum())
  return stats


def _mask_encoders(batch: int, frame_masks, block_masks) -> list:
  """One range encoder per clip holding its masks, the first part of every payload (frame_masks
  bool [B, T] or None, block_masks bool [B, R, N] or None): the bits of the whole batch are
  found at once, then each clip's go to its coder in one call (frame mask first)."""
  parts = [[a.reshape(batch, -1) for a in _mask_probabilities(masks)]
           for masks in (frame_masks, block_masks) if masks is not None]
  encoders = [constriction.stream.queue.RangeEncoder() for _ in range(batch)]
  if not parts:
    return encoders
  bits, p, undetermined = (np.concatenate(arrays, axis=1) for arrays in zip(*parts))
  ends = np.cumsum(undetermined.sum(axis=1)).tolist()
  bits, p = bits[undetermined], p[undetermined]
  for encoder, start, end in zip(encoders, [0] + ends, ends):
    if end > start:
      encoder.encode(bits[start:end], _BERNOULLI, p[start:end])
  return encoders


def _encode_factorized(encoder, symbols: np.ndarray, escaped: np.ndarray, values_cm: np.ndarray,
                       tables: CodingTables) -> int:
  """Version 1 latents of one clip, whose symbols [C, M] were prepared; returns its escapes."""
  models = tables.categorical_models()
  for c in range(symbols.shape[0]):
    if symbols.shape[1]:
      encoder.encode(symbols[c], models[c])
  if escaped.any():
    channel, _ = np.nonzero(escaped)
    head, head_sizes, chunks, chunk_sizes = _escape_fields(
        values_cm[escaped], tables.lower[channel].astype(np.int64),
        tables.upper[channel].astype(np.int64))
    encoder.encode(head, _UNIFORM, head_sizes)
    if chunks.size:
      encoder.encode(chunks, _UNIFORM, chunk_sizes)
  return int(escaped.sum())


def _encode_clips(headers: list[bytes], frame_masks, block_masks, latents: np.ndarray,
                  tables: CodingTables, vectors: np.ndarray | None = None,
                  vector_count: int = 0, refinement: np.ndarray | None = None,
                  refine_frames: int = 0) -> tuple[list[bytes], dict[str, np.ndarray]]:
  """Range-codes B validated clips of one latent shape (headers from `_check_payload`; masks
  None or bool arrays [B, ...]; vectors None or int [B, k_f, k_s]; refinement None or int
  [B, k_f, k_s, 3, 64]); returns (the streams,
  per-clip stats: escapes, and version 3's flags, repeats, skips and flag_bits, 0 in version
  1)."""
  batch = len(headers)
  stats = _no_stats(batch)
  if not batch:
    return [], stats
  encoders = _mask_encoders(batch, frame_masks, block_masks)
  if tables.conditional:
    stats = _encode_in_context(encoders, latents, block_masks, tables, vectors, vector_count,
                               refinement, refine_frames)
  else:
    flat = latents.reshape(batch, -1, tables.channels).astype(np.int64)
    symbols, escaped = _latent_symbols(flat, tables)
    values_cm = np.swapaxes(flat, 1, 2)
    stats["escapes"] = np.array([_encode_factorized(encoder, symbols[b], escaped[b],
                                                    values_cm[b], tables)
                                 for b, encoder in enumerate(encoders)], np.int64)
  return [_finish(encoder, header, tables) for encoder, header in zip(encoders, headers)], stats


def _finish(encoder, header: bytes, tables: CodingTables) -> bytes:
  body = header + encoder.get_compressed().astype("<u4").tobytes()
  return body + struct.pack("<I", zlib.crc32(body, _crc_seed(tables)))


def encode_with_stats(payload: ClipPayload, tables: CodingTables | None, *,
                      model=None) -> tuple[bytes, CodingStats]:
  """Encodes one clip; also returns its CodingStats (sizes, number of escaped latents).

  Refuses to run without tables, or with tables not frozen from `model` when a model is given.
  """
  tables = require_tables(tables, model)
  flat, header = _check_payload(payload, tables)
  masks = lambda mask: None if mask is None else np.asarray(mask)[None]
  (data,), clip_stats = _encode_clips([header], masks(payload.frame_mask),
                                      masks(payload.block_masks),
                                      np.asarray(payload.latents)[None], tables,
                                      masks(payload.vectors), int(payload.vector_count),
                                      masks(payload.refinement), int(payload.refine_frames))
  stats = CodingStats(num_bytes=len(data), header_bytes=len(header) + _CRC_BYTES,
                      escapes=int(clip_stats["escapes"][0]), latent_symbols=int(flat.size),
                      flags=int(clip_stats["flags"][0]), repeats=int(clip_stats["repeats"][0]),
                      flag_bits=float(clip_stats["flag_bits"][0]),
                      skips=int(clip_stats["skips"][0]))
  return data, stats


def encode(payload: ClipPayload, tables: CodingTables | None, *, model=None) -> bytes:
  """Encodes one clip into a self-describing bitstream (see the module docstring for the format)."""
  return encode_with_stats(payload, tables, model=model)[0]


# ----------------------------------------------------------------------------- decoding


def _parse_header(data: bytes, tables: CodingTables, max_latent_symbols: int):
  if len(data) < _FIXED_HEADER + _CRC_BYTES:
    raise DecodeError(f"{len(data)} bytes is shorter than the smallest possible clip bitstream "
                      f"({_FIXED_HEADER + _CRC_BYTES} bytes): truncated or not a clip bitstream")
  if data[0] & 0xF0 != MAGIC:
    raise DecodeError(f"bad first byte 0x{data[0]:02x} (expected 0x{MAGIC | VERSION:02x}): not a "
                      "stae-jax clip bitstream")
  if data[0] & 0x0F == _RETIRED_CONTEXT_VERSION:
    raise DecodeError(f"bitstream format version {_RETIRED_CONTEXT_VERSION} (conditional tables "
                      "without repeat flags) is no longer read: this decoder reads versions "
                      f"{VERSION} and {CONTEXT_VERSION}; encode the clip again with this version")
  if data[0] & 0x0F not in (VERSION, CONTEXT_VERSION):
    raise DecodeError(f"bitstream format version {data[0] & 0x0F} is not supported (this decoder "
                      f"reads versions {VERSION} and {CONTEXT_VERSION})")
  prefix = data[2:_FIXED_HEADER]
  if prefix != _hash_prefix(tables):
    raise DecodeError(f"bitstream was coded with other tables (hash prefix {prefix.hex()}, "
                      f"these tables {_hash_prefix(tables).hex()}): decode with the tables of the "
                      "checkpoint that encoded it")
  version = _version(tables)
  if data[0] & 0x0F != version:
    raise DecodeError(f"bitstream format version {data[0] & 0x0F} does not match these tables "
                      f"(version {version}: {'conditional' if tables.conditional else 'factorized'}"
                      " tables)")
  body_end = len(data) - _CRC_BYTES
  (crc,) = struct.unpack("<I", data[body_end:])
  if zlib.crc32(data[:body_end], _crc_seed(tables)) != crc:
    raise DecodeError("checksum mismatch: the bitstream is truncated, extended or corrupted (or "
                      "was coded with other tables whose hash shares this prefix)")
  flags = data[1]
  if flags >> 7:
    raise DecodeError(f"header flags 0x{flags:02x} set reserved bits (malformed header)")
  if flags & (_FLAG_VECTORS | _FLAG_REFINEMENT) and not tables.conditional:
    raise DecodeError(f"header flags 0x{flags:02x} declare skip vectors or refined blocks in a "
                      f"version-{VERSION} stream (malformed header)")
  offset = _FIXED_HEADER
  frames = frame_keep = blocks = block_keep = None
  lead = []
  if flags & _FLAG_FRAME_MASK:
    frames, offset = _read_varint(data, offset, body_end)
    frame_keep, offset = _read_varint(data, offset, body_end)
    if frame_keep > frames:
      raise DecodeError(f"header says {frame_keep} of {frames} frames are kept (malformed header)")
    lead.append(frame_keep)
  rows = None
  if flags & _FLAG_BLOCK_MASKS:
    blocks, offset = _read_varint(data, offset, body_end)
    block_keep, offset = _read_varint(data, offset, body_end)
    if block_keep > blocks:
      raise DecodeError(f"header says {block_keep} of {blocks} blocks are kept (malformed header)")
    if frame_keep is None:
      rows, offset = _read_varint(data, offset, body_end)
      lead.append(rows)
    else:
      rows = frame_keep
    lead.append(block_keep)
  for _ in range(flags >> 2 & 7):
    size, offset = _read_varint(data, offset, body_end)
    lead.append(size)
  vector_count = 0
  if flags & _FLAG_VECTORS:
    vector_count, offset = _read_varint(data, offset, body_end)
    if not 1 <= vector_count <= MAX_VECTORS:
      raise DecodeError(f"header declares {vector_count} skip vectors, not in [1, {MAX_VECTORS}]"
                        " (malformed header)")
  refine_step = refine_frames = 0
  if flags & _FLAG_REFINEMENT:
    refine_step, offset = _read_varint(data, offset, body_end)
    refine_frames, offset = _read_varint(data, offset, body_end)
    if not 1 <= refine_step <= MAX_REFINE_STEP:
      raise DecodeError(f"header declares refinement step code {refine_step}, not in [1, "
                        f"{MAX_REFINE_STEP}] (malformed header)")
    if frame_keep is None or not 1 <= refine_frames <= frame_keep:
      raise DecodeError(f"header declares {refine_frames} refined frames of "
                        f"{frame_keep} kept (malformed header)")
  if tables.conditional:
    if frames is None or blocks is None or blocks % tables.grid_width:
      raise DecodeError(f"a version-{CONTEXT_VERSION} stream needs a frame mask and block masks "
                        "whose block count fills rows of the tables' grid width "
                        f"{tables.grid_width} (malformed header)")
    if frame_keep > MAX_CONTEXT_FRAMES:
      raise DecodeError(f"header claims {frame_keep} kept frames, more than a version-"
                        f"{CONTEXT_VERSION} decoder accepts ({MAX_CONTEXT_FRAMES})")
    frame_values = blocks * math.prod(lead[2:]) * tables.channels
    if frame_values > MAX_FRAME_VALUES and math.prod(lead):
      raise DecodeError(f"header claims {frame_values} latent values per frame grid, more than "
                        f"this decoder accepts ({MAX_FRAME_VALUES})")
  if (body_end - offset) % 4:
    raise DecodeError(f"payload of {body_end - offset} bytes is not whole 32-bit words "
                      "(truncated or extended bitstream)")
  places = (frames or 0) + (rows * blocks if blocks is not None else 0)
  if places > MAX_MASK_PLACES:
    raise DecodeError(f"header claims {places} mask places, more than this decoder accepts "
                      f"({MAX_MASK_PLACES})")
  symbols = math.prod(lead) * tables.channels
  if symbols > max_latent_symbols:
    raise DecodeError(f"header claims {symbols} latent symbols, more than max_latent_symbols="
                      f"{max_latent_symbols}; raise it if such clips are expected")
  return (offset, body_end, (frames, frame_keep, blocks, block_keep, rows), tuple(lead),
          (vector_count, refine_step, refine_frames))


@dataclasses.dataclass(frozen=True)
class Header:
  """What a stream's header declares: the masks' sizes (None where a mask is absent), the
  latents' leading shape `lead` (latents are [*lead, C]), the number of skip vectors (0: the
  stream has none) and the refinement's step code and refined frames (0: none)."""
  frames: int | None
  frame_keep: int | None
  blocks: int | None
  block_keep: int | None
  lead: tuple[int, ...]
  vector_count: int = 0
  refine_step: int = 0
  refine_frames: int = 0


def read_header(data: bytes, tables: CodingTables, *,
                max_latent_symbols: int = MAX_LATENT_SYMBOLS) -> Header:
  """The header of one stream, checked as `decode` checks it (magic, version, tables, CRC,
  fields and limits) but with nothing decoded: a server compares it with the clip it expects
  before any mask or latent is allocated. DecodeError for anything malformed."""
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise DecodeError(f"a bitstream is bytes, got {type(data).__name__}")
  _, _, (frames, frame_keep, blocks, block_keep, _), lead, extra = _parse_header(
      bytes(data), tables, max_latent_symbols)
  return Header(frames, frame_keep, blocks, block_keep, lead, *extra)


def _decode_escapes(decoder, count: int, lower: np.ndarray, upper: np.ndarray,
                    limit: int = 2**31) -> np.ndarray:
  head_sizes = np.tile(np.array(_ESCAPE_FIELD_SIZES, np.int32), count)
  head = np.asarray(decoder.decode(_UNIFORM, head_sizes), np.int64).reshape(count, 2)
  above, nb = head[:, 0].astype(bool), head[:, 1]
  low_bits = np.minimum(nb, 16)
  chunk_bits = np.stack([low_bits, nb - low_bits], axis=1).reshape(-1)
  coded = chunk_bits > 0
  chunks = np.zeros(2 * count, np.int64)
  if coded.any():
    sizes = (np.int64(1) << chunk_bits[coded]).astype(np.int32)
    chunks[coded] = decoder.decode(_UNIFORM, sizes)
  chunks = chunks.reshape(count, 2)
  distance_plus_one = (np.int64(1) << nb) + chunks[:, 0] + (chunks[:, 1] << 16)
  values = np.where(above, upper + distance_plus_one, lower - distance_plus_one)
  if (values < -limit).any() or (values >= limit).any():
    raise DecodeError(f"an escaped value decodes outside [-{limit}, {limit}) (corrupted payload)")
  return values


def _decode_residuals(decoders: list, work: list, real: np.ndarray, rows: np.ndarray,
                      probabilities: np.ndarray, tables: CodingTables,
                      failures: dict) -> np.ndarray:
  """One sub-pass of version 3 for a batch of streams (the mirror of `_encode_clip`'s residuals).

  rows int [B, M]: every stream's rows, padded. work: groups (start, stop, [(lane, its decoder's
  `symbol_reader`, its symbols' tables: a view of `probabilities`), ...]) of a few streams, whose
  rows are start:stop of the flattened rows: a group's tables are gathered into `probabilities`
  (float64, reused by every group, so they are read while still in the cache), then each of its
  decoders reads its symbols in one call, then its escapes. `real` (bool [B * M]) marks the places
  of the streams read. Returns int64 residuals [B, M] (padding: garbage); a stream that fails goes
  into `failures` (lane -> exception).
  """
  flat_rows = rows.reshape(-1)
  parts = []
  for start, stop, lanes in work:
    np.take(tables.probabilities, flat_rows[start:stop], axis=0, mode="clip",
            out=probabilities[:stop - start])
    for lane, read, view in lanes:
      try:
        parts.append(read(_CATEGORICAL, view))
      except BaseException as e:  # pylint: disable=broad-except
        if isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
          raise
        failures[lane] = e
        parts.append(np.zeros(len(view), np.int32))
  if len(parts) == len(rows) and real.all():  # every stream read, none padded
    symbols = np.concatenate(parts).reshape(rows.shape)
  else:
    symbols = np.zeros(rows.size, np.int32)
    if parts:
      symbols[real] = np.concatenate(parts)
    symbols = symbols.reshape(rows.shape)
  sizes = tables.sizes[rows]
  residual = symbols + tables.lower[rows].astype(np.int64)  # escapes reach beyond int32
  for b in np.flatnonzero((symbols >= sizes).any(axis=1)).tolist():  # padding symbols are 0
    if b in failures:
      continue
    if (symbols[b] > sizes[b]).any():  # a padding entry of the row: never written by the encoder
      failures[b] = DecodeError("a latent decodes to a symbol outside its table (corrupted "
                                "payload)")
      continue
    here = symbols[b] == sizes[b]
    try:
      residual[b, here] = _decode_escapes(decoders[b], int(here.sum()),
                                          tables.lower[rows[b, here]].astype(np.int64),
                                          tables.upper[rows[b, here]].astype(np.int64),
                                          limit=2**33)
    except BaseException as e:  # pylint: disable=broad-except
      if isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        raise
      failures[b] = e
  return residual


def _decode_in_context(decoders: list, block_masks: np.ndarray, inner: tuple,
                       tables: CodingTables, vector_count: int = 0,
                       refine_frames: int = 0) -> tuple[np.ndarray, np.ndarray | None,
                                                        np.ndarray | None, dict]:
  """Version 3 latents of B streams in lockstep (the mirror of `_encode_in_context`).

  Each pass's contexts are computed for the whole batch at once, then `_CompiledDecoder`s read
  the pass of every stream in one call (`_CompiledBatch`), other decoders (`_ExactDecoder`) each
  stream's symbols of a channel in one call (`_decode_channels`); the streams stay independent
  (each its own decoder state, canvas and failure). block_masks bool [B, k_f, N], every row
  keeping the same k_s. vector_count > 0: the streams' skip vectors follow their passes;
  refine_frames > 0: then their refined blocks' levels.
  Returns (latents int64 [B, k_f, k_s, *inner, C], vectors int32 [B, k_f, k_s] or None (-1: not
  skipped), refinement int64 [B, k_f, k_s, 3, 64] or None, {lane: the exception that stopped
  it}).
  """
  batch, k_f, n = block_masks.shape
  k_s = int(block_masks[0, 0].sum()) if k_f else 0
  channels, positions = tables.channels, math.prod(inner)
  out = np.zeros((batch, k_f, k_s, positions, channels), np.int64)
  vectors = np.full((batch, k_f * k_s), -1, np.int64) if vector_count else None
  refinement = np.zeros((batch, k_f, k_s, REFINE_CHANNELS, REFINE_POSITIONS), np.int64) if (
      refine_frames) else None
  failures = {}
  if not out.size:
    return (out.reshape((batch, k_f, k_s) + tuple(inner) + (channels,)),
            None if vectors is None else vectors.reshape(batch, k_f, k_s), refinement, failures)
  l = positions * channels
  canvas = context_lib.Canvas(batch, n, l, tables.grid_width, tables.thresholds)
  rank = np.cumsum(block_masks, axis=2) - 1  # a kept block's place among its frame's latents
  width = tables.probabilities.shape[1]
  compiled = all(isinstance(d, _CompiledDecoder) for d in decoders)
  if compiled:
    batch_decoder = _CompiledBatch(decoders)
  else:
    buffer = np.empty(max(_CACHED_TABLES, k_s * positions * width))  # a pass has <= k_s blocks
    tallies = np.zeros((batch, 2), np.int64)  # each stream's repeats and flags so far
  lanes = np.arange(batch)[:, None]
  flagged = []  # each pass's flags 1 as places f * k_s + rank (-1 elsewhere): the vectors' order
  for f, blocks, valid in _context_passes(block_masks, tables):
    held, previous = canvas.held(blocks)  # the pass's blocks with a repeat flag, their values
    held &= valid
    pred, spatial = canvas.context(blocks)
    shape = blocks.shape + (positions, channels)
    pred, spatial = pred.reshape(shape), spatial.reshape(shape)
    spatial_rows = _rows_of(spatial, 0, np.arange(channels), tables)
    if compiled:  # the pass's flags, then every channel of its other blocks, in one call
      places = valid.sum(axis=1) * positions
      residual, repeat = batch_decoder.read_pass(spatial_rows.reshape(batch, -1, channels), places,
                                                 held, positions, tables, failures)
      residual = residual.reshape(shape)
    else:
      repeat = _read_flags(decoders, held, tallies, failures)
      if repeat.any():  # the blocks still to read first in each stream's row, ascending
        coded = valid & ~repeat
        order = np.argsort(~coded, axis=1, kind="stable")
        part = _decode_channels(decoders, np.take_along_axis(spatial_rows, order[..., None, None],
                                                             axis=1),
                                np.arange(blocks.shape[1]) < coded.sum(axis=1)[:, None], buffer,
                                tables, failures)
        residual = np.empty(shape, np.int64)
        residual[np.arange(batch)[:, None], order] = part
      else:
        residual = _decode_channels(decoders, spatial_rows, valid, buffer, tables, failures)
    # A flagged block's values are the canvas's (sent again unchanged: no context changes).
    values = np.where(repeat[..., None, None], previous.reshape(shape), pred + residual)
    if values.min() < -2**31 or values.max() >= 2**31:  # which streams, only when one does
      outside = ((values < -2**31) | (values >= 2**31)).any(axis=(2, 3)) & valid
      for b in np.flatnonzero(outside.any(axis=1)).tolist():
        failures.setdefault(b, DecodeError("a latent decodes outside int32 (corrupted payload)"))
    if valid.all():  # no clip padded this pass
      lane, block = np.arange(batch).repeat(blocks.shape[1]), blocks.reshape(-1)
      values = values.reshape((-1,) + shape[2:])
    else:
      lane, block, values = np.nonzero(valid)[0], blocks[valid], values[valid]
    canvas.send(lane, block, values.reshape(-1, l))
    out[lane, f, rank[lane, f, block]] = values
    if vectors is not None:
      flagged.append(np.where(repeat, f * k_s + rank[lanes, f, blocks], -1))
  if vectors is not None and flagged:
    places = np.concatenate(flagged, axis=1)
    wanted = (places >= 0).sum(axis=1)
    wanted[list(failures)] = 0
    if compiled:
      symbols = batch_decoder.read_vectors(wanted, vector_count + 1, failures)
    else:
      symbols = _read_vectors(decoders, wanted, vector_count + 1, failures)
    for b in np.flatnonzero(wanted).tolist():
      if b not in failures:
        read = symbols[b, :wanted[b]]
        vectors[b, places[b][places[b] >= 0]] = np.where(read == vector_count, -1, read)
  if refinement is not None:
    if compiled:
      read = lambda wanted, alphabet: batch_decoder.read_vectors(wanted, alphabet, failures)
    else:
      read = lambda wanted, alphabet: _read_vectors(decoders, wanted, alphabet, failures)
    refined = refined_blocks(k_f, k_s, refine_frames,
                             None if vectors is None else vectors.reshape(batch, k_f, k_s))
    refined = np.broadcast_to(refined, (batch, k_f, k_s)).reshape(batch, -1)
    refinement[:] = _read_refinement(read, refined, failures).reshape(refinement.shape)
  if compiled:
    batch_decoder.close()
  return (out.reshape((batch, k_f, k_s) + tuple(inner) + (channels,)),
          None if vectors is None else vectors.reshape(batch, k_f, k_s), refinement, failures)


def _read_vectors(decoders: list, wanted: np.ndarray, alphabet: int,
                  failures: dict) -> np.ndarray:
  """Skip-vector symbols read by decoders with `decode` (`_ExactDecoder`), one a call under
  `_vector_masses`: wanted int [B] of each stream -> int64 [B, max wanted]; a stream that fails
  goes into `failures`."""
  out = np.zeros((len(wanted), int(wanted.max(initial=0))), np.int64)
  for b in np.flatnonzero(wanted).tolist():
    seen = np.zeros(alphabet, np.int64)
    try:
      for i in range(int(wanted[b])):
        symbol = int(decoders[b].decode(_CATEGORICAL, _vector_masses(seen, i + alphabet))[0])
        out[b, i] = symbol
        seen[symbol] += 1
    except BaseException as e:  # pylint: disable=broad-except
      if isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        raise
      failures[b] = e
  return out


def _read_flags(decoders: list, held: np.ndarray, tallies: np.ndarray,
                failures: dict) -> np.ndarray:
  """A pass's repeat flags read by decoders with a `bit_reader` (`_ExactDecoder`), one a call,
  each under `_flag_model` of its stream's tallies (int64 [B, 2]: repeats, flags; updated). held
  bool [B, m]: the pass's blocks that carry a flag. Returns repeat bool [B, m]; a stream that
  fails goes into `failures` (lane -> exception)."""
  repeat = np.zeros(held.shape, np.bool_)
  for b in np.flatnonzero(held.any(axis=1)).tolist():
    if b in failures:
      continue
    read = decoders[b].bit_reader()
    repeats, flags = int(tallies[b, 0]), int(tallies[b, 1])
    try:
      for i in np.flatnonzero(held[b]).tolist():
        bit = bool(read(_flag_model(repeats, flags)))
        repeat[b, i] = bit
        repeats, flags = repeats + bit, flags + 1
    except BaseException as e:  # pylint: disable=broad-except
      if isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        raise
      failures[b] = e
    tallies[b] = repeats, flags
  return repeat


def _decode_channels(decoders: list, spatial_rows: np.ndarray, valid: np.ndarray,
                     buffer: np.ndarray, tables: CodingTables, failures: dict) -> np.ndarray:
  """The residuals int64 [B, m, P, C] of a pass read by decoders with a `symbol_reader`
  (`_ExactDecoder`), a call per stream and channel sub-pass; spatial_rows int [B, m, P, C] (the
  rows at x = 0), valid bool [B, m] (the pass's real blocks of each stream)."""
  batch, _, positions, channels = spatial_rows.shape
  width = tables.probabilities.shape[1]
  residual = np.zeros(spatial_rows.shape, np.int64)
  # A few streams' tables at a time, always into the same buffer (in the cache): the views of
  # the streams of a group hold for every channel of the pass.
  places = spatial_rows.shape[1] * positions
  group = max(1, _CACHED_TABLES // (places * width))
  probabilities = buffer[:group * places * width].reshape(group * places, width)
  real = np.repeat(valid, positions, axis=1).reshape(-1)
  counts = (valid.sum(axis=1) * positions).tolist()
  work = []
  for first in range(0, batch, group):
    last = min(first + group, batch)
    lanes = [(b, decoders[b].symbol_reader(),
              probabilities[(b - first) * places:][:counts[b]])
             for b in range(first, last) if counts[b] and b not in failures]
    if lanes:
      work.append((first * places, last * places, lanes))
  for c in range(channels):
    x = context_lib.channel_context(residual, c, tables.channel_clip)
    if failures:  # a stream that failed is not read again
      work = [(start, stop, [w for w in lanes if w[0] not in failures])
              for start, stop, lanes in work]
      real &= ~np.isin(np.arange(batch), list(failures)).repeat(places)
    rows = (spatial_rows[..., c] + x).reshape(batch, -1)
    residual[..., c] = _decode_residuals(decoders, work, real, rows, probabilities, tables,
                                         failures).reshape(residual.shape[:3])
  return residual


class _Undecided(Exception):
  """`_Decoder` cannot tell whether the payload ends where the encoder ended it."""


class _Decoder:
  """constriction's range decoder over the payload and one zero word after it, which answers
  whether anything follows the payload's last word (`check_end`) in the common case (version 1;
  `_CompiledDecoder` reads version 3 so).

  The encoder ends a payload with one seal word, or two (the second 0) when its last interval's
  bounds share their top word; the decoder reads two words ahead, so after the last symbol it has
  read exactly one word past a payload with one seal word: the zero it pads with, here ours (the
  same zero, so the same symbols). Having read that zero, it has read no more words than the
  symbols need, so nothing was appended. Otherwise (a two-word seal, or words appended, or a
  payload without symbols) `check_end` raises `_Undecided` and `decode` decodes again with
  `_ExactDecoder`, which decides exactly; `maybe_exhausted` alone took a stream extended by one
  word for a whole one."""

  def __init__(self, words: np.ndarray):
    self._decoder = constriction.stream.queue.RangeDecoder(np.append(words, np.uint32(0)))
    self._coded = False

  def bit_reader(self):
    """What reads a mask's bits, one a call, each under its Bernoulli (`_mask_bit_model`): the
    range decoder's own `decode`, no Python between. Taken only for a mask that codes a bit."""
    self._coded = True
    return self._decoder.decode

  def decode(self, model, *params):
    """`RangeDecoder.decode(model, count)` or `(model family, parameter arrays...)`."""
    symbols = self._decoder.decode(model, *params)
    self._coded = self._coded or np.size(symbols) > 0
    return symbols

  def check_end(self) -> None:
    if not (self._coded and self._decoder.maybe_exhausted()):
      raise _Undecided()


_FAILURES = {
    range_decoder.INVALID_DATA: "range decoding failed (the range decoder's point lies outside "
                                "its range: invalid data): corrupted payload",
    range_decoder.PADDING_SYMBOL: "a latent decodes to a symbol outside its table (corrupted "
                                  "payload)",
    range_decoder.ESCAPE_OUTSIDE: f"an escaped value decodes outside [-{2**33}, {2**33}) "
                                  "(corrupted payload)",
    range_decoder.ROW_OUTSIDE: "a latent's context row lies outside the tables (corrupted "
                               "payload)",
}


class _CompiledDecoder:
  """`_Decoder` read by compiled code (`range_decoder`): the same words (the payload and one zero
  word), the same symbols, the same `check_end`; version 3 only, whose streams it reads whole:
  `read_masks` the masks, then `_decode_in_context` the latents of a batch's streams, a call per
  pass, and their skip vectors, one call (`_CompiledBatch`)."""

  def __init__(self, words: np.ndarray):
    self.words = np.append(words, np.uint32(0))
    self.state = range_decoder.start(self.words)
    self.coded = False

  def read_masks(self, frames: int, frame_keep: int, blocks: int, block_keep: int,
                 rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The frame mask bool [frames] and rows block masks bool [rows, blocks] (`_decode_mask`'s
    code, in one call)."""
    frame_mask = np.zeros(frames, np.bool_)
    block_masks = np.zeros((rows, blocks), np.bool_)
    status, coded = range_decoder.read_masks(self.words, self.state, frames, frame_keep, blocks,
                                             block_keep, rows, frame_mask, block_masks)
    if status:
      raise DecodeError(_FAILURES[status])
    self.coded = coded > 0
    return frame_mask, block_masks

  def check_end(self) -> None:
    if not (self.coded and range_decoder.maybe_exhausted(self.state, len(self.words))):
      raise _Undecided()


class _CompiledBatch:
  """The `_CompiledDecoder`s of a batch's streams as arrays, for `range_decoder.read_pass`: their
  words one after another, their states and statuses; `close` gives each its state back and
  returns the failures."""

  def __init__(self, decoders: list):
    self.decoders = decoders
    counts = np.array([len(d.words) for d in decoders], np.int64)
    self.counts = counts
    self.begins = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    self.words = np.concatenate([d.words for d in decoders])
    self.states = np.stack([d.state for d in decoders])
    self.status = np.zeros(len(decoders), np.int64)
    self.tallies = np.zeros((len(decoders), 2), np.int64)  # repeats and flags read so far

  def read_pass(self, base_rows: np.ndarray, places: np.ndarray, held: np.ndarray,
                positions: int, tables: CodingTables,
                failures: dict) -> tuple[np.ndarray, np.ndarray]:
    """A pass's repeat flags and residuals (base_rows int64 [B, M, C]: the rows at x = 0; places
    int64 [B]: each stream's places, the first of M; held bool [B, M // positions]: the blocks
    with a flag) -> (residuals int64 [B, M, C], 0 at flagged blocks; repeat bool [B, m]); new
    failures go into `failures`."""
    residual = np.zeros(base_rows.shape, np.int64)
    repeat = np.zeros(held.shape, np.bool_)
    cdf, sizes, lower, upper = _decoder_tables(tables)
    self._call(range_decoder.read_pass, failures, places, base_rows, places, held, positions,
               self.tallies, repeat, cdf, sizes, lower, upper, tables.channel_clip, residual)
    return residual, repeat

  def read_vectors(self, wanted: np.ndarray, alphabet: int, failures: dict) -> np.ndarray:
    """Each stream's skip-vector symbols (wanted int [B] of them) -> int64 [B, max wanted]; new
    failures go into `failures`."""
    out = np.zeros((len(wanted), int(wanted.max(initial=0))), np.int64)
    self._call(range_decoder.read_vectors, failures, wanted, np.asarray(wanted, np.int64),
               alphabet, out)
    return out

  def _call(self, read, failures: dict, reading: np.ndarray, *args) -> None:
    """`read(words, begins, counts, states, status, *args)` for the batch: streams that failed
    before are not read (their status set), those that fail in it go into `failures`, and those
    with anything to read (`reading` [B] nonzero) have coded symbols."""
    for lane in failures:
      self.status[lane] = self.status[lane] or range_decoder.FAILED
    read(self.words, self.begins, self.counts, self.states, self.status, *args)
    for lane in np.flatnonzero(self.status).tolist():
      if lane not in failures:
        failures[lane] = DecodeError(_FAILURES[int(self.status[lane])])
    for lane in np.flatnonzero(reading).tolist():
      self.decoders[lane].coded = True

  def close(self) -> None:
    for decoder, state in zip(self.decoders, self.states):
      decoder.state = state


class _ExactDecoder:
  """A range decoder that also knows where the payload ends.

  constriction's `maybe_exhausted` cannot: the coder's last word leaves room for any word after
  it, so a payload with 4 more bytes (and the CRC recomputed) decoded to the same clip. This one
  codes every symbol again as it decodes it (the same symbols under the same models, in the same
  order, so an honest stream comes out word for word) and `check_end` requires the payload to be
  exactly those words: a stream is accepted only in the form the encoder writes, whichever
  version's loop drives it. Mask bits are coded again one by one, under the models they were
  decoded with (the same quantised Bernoullis the encoder's runs use)."""

  def __init__(self, words: np.ndarray):
    self._words = words
    self._decoder = constriction.stream.queue.RangeDecoder(words)
    self._encoder = constriction.stream.queue.RangeEncoder()

  def symbol_reader(self):
    """`decode`, for version 3's lockstep (`_decode_channels`: a call per stream and channel
    sub-pass, given at least one symbol to read)."""
    return self.decode

  def bit_reader(self):
    """What reads a mask's bits, one a call, each under its Bernoulli, coding each again."""
    def read(model):
      bit = self._decoder.decode(model)
      self._encoder.encode(bit, model)
      return bit
    return read

  def decode(self, model, *params):
    """`RangeDecoder.decode(model, count)` or `(model family, parameter arrays...)`."""
    symbols = self._decoder.decode(model, *params)
    if len(params) == 1 and isinstance(params[0], (int, np.integer)):
      self._encoder.encode(np.asarray(symbols, np.int32), model)
    else:
      self._encoder.encode(np.asarray(symbols, np.int32), model, *params)
    return symbols

  def check_end(self) -> None:
    """DecodeError unless the payload is exactly the encoding of the symbols decoded."""
    expected = self._encoder.get_compressed()
    words = self._words
    if len(words) > len(expected) and np.array_equal(words[:len(expected)], expected):
      raise DecodeError(f"the payload has {4 * (len(words) - len(expected))} bytes after its last "
                        "coded word (extended stream)")
    if not np.array_equal(words, expected):
      raise DecodeError("the payload's words are not the encoding of the symbols they decode to "
                        "(extended, truncated or corrupted payload)")


def _decode_stream(data: bytes, tables: CodingTables, max_latent_symbols: int, exact: bool):
  """`decode`'s work on one stream, as a generator: a version-3 stream yields (its decoder, block
  masks, inner latent shape, vector count, refined frames) once its masks are read and is sent
  back (its latents, its skip vectors or None, its refinement or None), so that
  `_decode_streams` decodes a batch's latents in lockstep. Every other check of a stream is made
  here, one copy for `decode` and `decode_batch`; returns the ClipPayload. `exact`: decode with
  `_ExactDecoder` (else `_Decoder`, which may raise `_Undecided` at the end)."""
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise DecodeError(f"decode expects bytes, got {type(data).__name__}")
  data = bytes(data)
  offset, body_end, mask_dims, lead, (vector_count, refine_step, refine_frames) = _parse_header(
      data, tables, max_latent_symbols)
  frames, frame_keep, blocks, block_keep, rows = mask_dims
  try:
    words = np.frombuffer(data, "<u4", count=(body_end - offset) // 4, offset=offset)
    words = words.astype(np.uint32)
    frame_mask = block_masks = None
    if exact:
      decoder = _ExactDecoder(words)
    elif tables.conditional:  # read whole by compiled code (a version-3 stream has both masks)
      decoder = _CompiledDecoder(words)
      frame_mask, block_masks = decoder.read_masks(frames, frame_keep, blocks, block_keep, rows)
    else:
      decoder = _Decoder(words)
    if frames is not None and frame_mask is None:
      frame_mask = _decode_mask(decoder, frames, frame_keep)
    if blocks is not None and block_masks is None:
      block_masks = np.stack([_decode_mask(decoder, blocks, block_keep) for _ in range(rows)]) \
          if rows else np.zeros((0, blocks), np.bool_)
    count = math.prod(lead)
    channels = tables.channels
    if tables.conditional:
      values, vectors, refinement = yield (decoder, block_masks, lead[2:], vector_count,
                                           refine_frames)  # `_decode_in_context`
      payload = ClipPayload(latents=values.astype(np.int32), frame_mask=frame_mask,
                            block_masks=block_masks,
                            vectors=None if vectors is None else vectors.astype(np.int32),
                            vector_count=vector_count,
                            refinement=None if refinement is None else refinement.astype(np.int32),
                            refine_step=refine_step, refine_frames=refine_frames)
      try:
        decoder.check_end()
      except _Undecided:
        raise _Undecided(payload) from None  # decided by encoding it (`_decode_streams`)
      return payload
    symbols = np.empty((channels, count), np.int64)
    if count:
      for c, model_c in enumerate(tables.categorical_models()):
        symbols[c] = decoder.decode(model_c, count)
    sizes = tables.sizes[:, None]
    escaped = symbols == sizes
    values = symbols + tables.lower[:, None]
    num_escapes = int(escaped.sum())
    if num_escapes:
      channel, _ = np.nonzero(escaped)
      values[escaped] = _decode_escapes(decoder, num_escapes, tables.lower[channel].astype(np.int64),
                                        tables.upper[channel].astype(np.int64))
    decoder.check_end()
  except (DecodeError, _Undecided):
    raise
  except BaseException as e:  # constriction raises AssertionError/ValueError, or panics (BaseException)
    if isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
      raise
    raise DecodeError(f"range decoding failed ({type(e).__name__}: {e}): corrupted payload") from None
  latents = values.T.reshape(lead + (channels,)).astype(np.int32)
  return ClipPayload(latents=latents, frame_mask=frame_mask, block_masks=block_masks)


def _decode_round(indexed: list, tables: CodingTables, max_latent_symbols: int,
                  exact: bool) -> tuple[dict, dict, list]:
  """Decodes (index, stream) pairs, each by `_decode_stream`, the version-3 latents of those of
  one shape in lockstep. Returns ({index: ClipPayload}, {index: DecodeError}, [(index, its
  decoded clip for version 3, else None) of the streams `_Decoder` could not decide the end of]).
  """
  results, errors, undecided, waiting = {}, {}, [], {}

  def resume(i, steps, latents=None, failure=None):
    try:
      request = steps.send(latents) if failure is None else steps.throw(failure)
    except StopIteration as stop:
      results[i] = stop.value
    except DecodeError as error:
      errors[i] = error
    except _Undecided as undecided_end:
      undecided.append((i, undecided_end.args[0] if undecided_end.args else None))
    else:
      _, block_masks, inner, vector_count, refine_frames = request
      k_s = int(block_masks[0].sum()) if len(block_masks) else 0
      waiting.setdefault((block_masks.shape, k_s, inner, vector_count, refine_frames), []).append(
          (i, steps, request))

  for i, data in indexed:
    resume(i, _decode_stream(data, tables, max_latent_symbols, exact))
  for (shape, _, inner, vector_count, refine_frames), group in list(waiting.items()):
    # Lanes at a time such that their canvases hold no more values than one frame grid may.
    lanes = max(1, MAX_FRAME_VALUES // max(1, shape[1] * math.prod(inner) * tables.channels))
    for start in range(0, len(group), lanes):
      chunk = group[start:start + lanes]
      try:
        latents, vectors, refinement, failures = _decode_in_context(
            [request[0] for _, _, request in chunk],
            np.stack([request[1] for _, _, request in chunk]), inner, tables, vector_count,
            refine_frames)
      except BaseException as e:  # pylint: disable=broad-except
        if isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
          raise
        latents, failures = None, {lane: e for lane in range(len(chunk))}
      for lane, (i, steps, _) in enumerate(chunk):
        if lane in failures:
          resume(i, steps, failure=failures[lane])
        else:
          resume(i, steps, latents=(latents[lane], None if vectors is None else vectors[lane],
                                    None if refinement is None else refinement[lane]))
  return results, errors, undecided


def _end_by_encoding(undecided: list, streams: list, tables: CodingTables) -> tuple[dict, dict]:
  """`_ExactDecoder`'s verdict on decoded version-3 clips whose end `_Decoder` could not decide,
  from the encoder: a stream must be the bytes the encoder writes for its clip (the same symbols
  under the same models give the same words; the header follows from the clip). The clips of one
  shape are encoded as a batch. Returns ({index: ClipPayload}, {index: DecodeError})."""
  results, errors, groups = {}, {}, {}
  for i, payload in undecided:
    key = (payload.latents.shape, payload.frame_mask.shape, payload.block_masks.shape,
           payload.vector_count, payload.refine_step, payload.refine_frames)
    groups.setdefault(key, []).append((i, payload))
  for group in groups.values():
    first = group[0][1]
    expected, _ = encode_batch(
        np.stack([p.latents for _, p in group]), tables,
        frame_masks=np.stack([p.frame_mask for _, p in group]),
        block_masks=np.stack([p.block_masks for _, p in group]),
        vectors=None if first.vectors is None else np.stack([p.vectors for _, p in group]),
        vector_count=first.vector_count,
        refinement=None if first.refinement is None else np.stack(
            [p.refinement for _, p in group]),
        refine_step=first.refine_step, refine_frames=first.refine_frames)
    for (i, payload), stream in zip(group, expected):
      body, expected_body = bytes(streams[i])[:-_CRC_BYTES], stream[:-_CRC_BYTES]
      if body == expected_body:
        results[i] = payload
      elif len(body) > len(expected_body) and body.startswith(expected_body):
        errors[i] = DecodeError(f"the payload has {len(body) - len(expected_body)} bytes after "
                                "its last coded word (extended stream)")
      else:
        errors[i] = DecodeError("the payload's words are not the encoding of the symbols they "
                                "decode to (extended, truncated or corrupted payload)")
  return results, errors


def _decode_streams(streams: list, tables: CodingTables, max_latent_symbols: int, *,
                    by_encoding: bool) -> list[ClipPayload]:
  """Decodes streams; those whose end `_Decoder` cannot decide are decoded again with
  `_ExactDecoder`, or with `by_encoding` (a batch), the version-3 ones among them are decided by
  encoding their decoded clips again (`_end_by_encoding`: the few of a batch in one batch, rather
  than a lockstep of a few streams through every pass again). Raises the DecodeError of the first
  stream that fails, as decoding one by one would."""
  results, errors, undecided = _decode_round(list(enumerate(streams)), tables,
                                             max_latent_symbols, exact=False)
  decoded = [(i, payload) for i, payload in undecided if payload is not None and by_encoding]
  if decoded:
    more_results, more_errors = _end_by_encoding(decoded, streams, tables)
    results.update(more_results)
    errors.update(more_errors)
  again = [(i, streams[i]) for i, payload in undecided if payload is None or not by_encoding]
  if again:
    more_results, more_errors, _ = _decode_round(again, tables, max_latent_symbols, exact=True)
    results.update(more_results)
    errors.update(more_errors)
  if errors:
    raise errors[min(errors)]
  return [results[i] for i in range(len(streams))]


def decode(data: bytes, tables: CodingTables | None, *, model=None,
           max_latent_symbols: int = MAX_LATENT_SYMBOLS) -> ClipPayload:
  """Decodes one clip bitstream; raises DecodeError for anything that is not a valid stream.

  Checks: magic, version, CRC, table hash, header fields and limits, whole words, every mask count,
  escaped values in int32, and that nothing follows the payload's last word (`_Decoder`, and
  where it cannot tell, `_ExactDecoder`: the payload must be exactly the words its symbols encode
  to)."""
  tables = require_tables(tables, model)
  return _decode_streams([data], tables, max_latent_symbols, by_encoding=False)[0]


# ----------------------------------------------------------------------------- batches


def _batch_headers(latents: np.ndarray, frame_masks, block_masks, tables: CodingTables,
                   vectors=None, vector_count: int = 0, refinement=None, refine_step: int = 0,
                   refine_frames: int = 0) -> list[bytes]:
  """Every clip's header, after `_check_payload`'s checks. Clips of one shape whose masks keep the
  same counts share one header: the first clip is checked, the rest by batch-wide counts and
  range; a batch that fails those is checked clip by clip, so the error names what is wrong."""
  batch = latents.shape[0]
  same = batch > 0 and np.issubdtype(latents.dtype, np.integer) and (
      not latents.size or (latents.min() >= -2**31 and latents.max() < 2**31))
  for masks, rank in ((frame_masks, 2), (block_masks, 3)):
    if masks is not None:
      same = same and masks.dtype == np.bool_ and masks.ndim == rank and bool(
          (masks.sum(axis=-1) == masks[:1].sum(axis=-1)).all())
  if vectors is not None:
    same = same and np.issubdtype(vectors.dtype, np.integer) and vectors.shape == (
        latents.shape[:3]) and (not vectors.size or (vectors.min() >= -1
                                                     and vectors.max() < vector_count))
  if refinement is not None:  # its values are checked clip by clip (zero where not refined)
    same = False
  clip = lambda b: ClipPayload(latents[b], None if frame_masks is None else frame_masks[b],
                               None if block_masks is None else block_masks[b],
                               None if vectors is None else vectors[b], vector_count,
                               None if refinement is None else refinement[b], refine_step,
                               refine_frames)
  if same:
    return [_check_payload(clip(0), tables)[1]] * batch
  return [_check_payload(clip(b), tables)[1] for b in range(batch)]


def encode_batch(latents, tables: CodingTables | None, *, frame_masks=None, block_masks=None,
                 vectors=None, vector_count: int = 0, refinement=None, refine_step: int = 0,
                 refine_frames: int = 0,
                 model=None) -> tuple[list[bytes], dict[str, np.ndarray]]:
  """Encodes B clips of equal shapes (one stream each); returns (streams, per-clip stats arrays).

  latents int [B, *lead, C]; frame_masks bool [B, T] or None; block_masks bool [B, R, N] or None;
  vectors int [B, k_f, k_s] or None, with vector_count (`ClipPayload.vectors`); refinement int
  [B, k_f, k_s, 3, 64] or None, with refine_step and refine_frames (`ClipPayload.refinement`).
  Symbol mapping, escape detection and version 3's contexts run vectorised over the whole batch;
  only the range coder calls are per clip (one per channel in version 1; one per clip in version
  3, more only around escapes, and a call a pass for the flags where they cannot be intervals
  among the residuals). Stats: num_bytes, bits, escapes, and version 3's flags, repeats and skips
  (int64 [B] each) and flag_bits (float64 [B]), as `CodingStats` has them.
  """
  tables = require_tables(tables, model)
  latents = np.asarray(latents)
  if latents.ndim < 2:
    raise ValueError(f"encode_batch expects latents [B, ..., C], got shape {latents.shape}")
  batch = latents.shape[0]
  for name, masks in (("frame_masks", frame_masks), ("block_masks", block_masks)):
    if masks is not None and np.shape(masks)[0] != batch:
      raise ValueError(f"{name} has {np.shape(masks)[0]} clips, latents {batch}")
  for name, extra in (("vectors", vectors), ("refinement", refinement)):
    if extra is not None and np.shape(extra)[0] != batch:
      raise ValueError(f"{name} has {np.shape(extra)[0]} clips, latents {batch}")
  frame_masks = None if frame_masks is None else np.asarray(frame_masks)
  block_masks = None if block_masks is None else np.asarray(block_masks)
  vectors = None if vectors is None else np.asarray(vectors)
  refinement = None if refinement is None else np.asarray(refinement)
  headers = _batch_headers(latents, frame_masks, block_masks, tables, vectors, vector_count,
                           refinement, refine_step, refine_frames)
  streams, stats = _encode_clips(headers, frame_masks, block_masks, latents, tables,
                                 None if vectors is None else vectors.astype(np.int64),
                                 int(vector_count),
                                 None if refinement is None else refinement.astype(np.int64),
                                 int(refine_frames))
  num_bytes = np.array([len(s) for s in streams], np.int64)
  return streams, dict(num_bytes=num_bytes, bits=8 * num_bytes, **stats)


def decode_batch(streams, tables: CodingTables | None, *, model=None,
                 max_latent_symbols: int = MAX_LATENT_SYMBOLS) -> list[ClipPayload]:
  """Decodes a list of clip streams as `decode` each, those of version 3 with one shape in lockstep
  (contexts computed for all at once, one compiled decoder call per pass for all); the first bad
  one raises its DecodeError."""
  tables = require_tables(tables, model)
  return _decode_streams(list(streams), tables, max_latent_symbols, by_encoding=True)
