"""A compiled reader of constriction's queue range coder, for version-3 streams (numba).

`constriction.stream.queue.RangeEncoder` (constriction 0.5: 32-bit words, a 64-bit state, models
of 24-bit precision) writes every stream; `bitstream` reads the version-3 ones here, bit for bit as
constriction's `RangeDecoder` reads them, so that a batch's streams are read by one compiled call
per pass (`read_pass`: its repeat flags, then its residuals) instead of one constriction call per
stream and channel sub-pass, and their skip vectors by one more (`read_vectors`). What is reproduced
(from constriction's source, src/stream/queue.rs and src/stream/model/):

* The decoder's state: `lower` (0), `range` (2^64 - 1) and `point`, the first two words
  (w0 << 32 | w1; fewer words: shifted up, zeros for the missing ones). A symbol: scale = range
  >> 24, quantile = (point - lower) / scale (wrapping subtraction), invalid data if quantile >=
  2^24; the model gives the symbol whose interval [left, left + prob) of 2^24 holds the
  quantile; lower += scale * left, range = scale * prob; if range < 2^32, lower, range and point
  shift up a word and point takes the next word, if there is one (past the end nothing is read
  and point's low word stays 0). `maybe_exhausted`: every word read, and range = 2^64 - 1 or
  point - lower < 2^33 - 1.
* The models' intervals: a version-3 symbol's row as `bitstream._quantized_cdf` gives it (the
  lazy `Categorical(perfect=False)` of the row); a mask bit's `Bernoulli(p, perfect=False)`, the
  categorical over [1 - p, p]: symbol 1 from trunc((1 - p) * (2^24 - 2) / ((1 - p) + p)) + 1,
  all in float64 as constriction computes it, with p = picks left / places left (a repeat
  flag's: p = (repeats + 1) / (flags + 2), the same function of two integers); an escape
  field's `Uniform(size)`: 2^24 // size per symbol, the last symbol up to 2^24.

tests/test_range_decoder.py checks each against constriction (every mask model up to 256
places, every uniform size the format uses, random streams of every model kind, their ends).

Bounds: a stream's words are read only below its length, table rows only below the tables' row
count (a row outside is a failure, not a read), so a corrupted stream fails with a status and never
reads outside its arrays. The functions are compiled on first use and cached beside this file
(`cache=True`); nothing here raises: failures are status codes that `bitstream` turns into
DecodeError.

A stream's state is uint64 [4]: lower, range, point and the number of words read.
"""

from __future__ import annotations

import numba
import numpy as np

PRECISION = 24
#: Status codes of a stream (0: reading).
OK, INVALID_DATA, PADDING_SYMBOL, ESCAPE_OUTSIDE, ROW_OUTSIDE, FAILED = 0, 1, 2, 3, 4, 5
#: Escaped residuals must lie in [-ESCAPE_LIMIT, ESCAPE_LIMIT) (`bitstream._decode_residuals`).
ESCAPE_LIMIT = 1 << 33

_WORD = np.uint64(32)
_PRECISION = np.uint64(PRECISION)
_RENORMALIZE = np.uint64(1 << 32)
_FULL = np.uint64(1 << PRECISION)
_STATE_MAX = np.uint64(0xFFFFFFFFFFFFFFFF)

_jit = numba.njit(cache=True, nogil=True, boundscheck=False)


def start(words: np.ndarray) -> np.ndarray:
  """The state of a decoder over `words` (uint32) before its first symbol."""
  state = np.zeros(4, np.uint64)
  state[1] = _STATE_MAX
  read = min(2, len(words))
  point = 0
  for i in range(read):
    point = (point << 32) | int(words[i])
  state[2] = np.uint64(point << (32 * (2 - read)))
  state[3] = np.uint64(read)
  return state


def maybe_exhausted(state: np.ndarray, num_words: int) -> bool:
  """constriction's `RangeDecoder.maybe_exhausted` of a decoder in `state` over num_words words."""
  lower, range_, point, read = (int(v) for v in state)
  return read >= num_words and (range_ == (1 << 64) - 1
                                or (point - lower) % (1 << 64) < (1 << 33) - 1)


@_jit
def _quantile(lower, range_, point):
  """(scale, quantile) of the next symbol; quantile >= 2^24 is invalid data."""
  scale = range_ >> _PRECISION
  return scale, (point - lower) // scale


@_jit
def _advance(lower, range_, point, read, scale, left, probability, words, begin, count):
  """The state after a symbol with interval [left, left + probability) of scale."""
  lower = lower + scale * np.uint64(left)
  range_ = scale * np.uint64(probability)
  if range_ < _RENORMALIZE:
    lower = lower << _WORD
    range_ = range_ << _WORD
    point = point << _WORD
    if read < count:
      point = point | np.uint64(words[begin + read])
      read += 1
  return lower, range_, point, read


@_jit
def bernoulli_edge(picks: int, places: int) -> int:
  """Left edge of symbol 1 (a kept place) under `Bernoulli(picks / places, perfect=False)`."""
  p = np.float64(picks) / np.float64(places)
  q = 1.0 - p
  scale = np.float64((1 << PRECISION) - 2) / (q + p)
  return np.int64(q * scale) + 1


@_jit
def uniform_interval(quantile: int, size: int):
  """(symbol, left, probability) of `Uniform(size)` at quantile (< 2^24)."""
  per_bin = (1 << PRECISION) // size
  last = size - 1
  guess = quantile // per_bin
  if guess < last:
    return guess, guess * per_bin, per_bin
  left = last * per_bin
  return last, left, (1 << PRECISION) - left


@_jit
def cdf_interval(quantile: int, cdf_row):
  """(symbol, left, probability) of the categorical with edges cdf_row (int [W + 1], from 0 to
  2^24, every symbol at least one unit) at quantile: the last edge <= quantile (binary search)."""
  low, high = 0, len(cdf_row) - 1
  while high - low > 1:
    middle = (low + high) >> 1
    if cdf_row[middle] <= quantile:
      low = middle
    else:
      high = middle
  return low, np.int64(cdf_row[low]), np.int64(cdf_row[low + 1]) - np.int64(cdf_row[low])


@_jit
def read_masks(words, state, frames, frame_keep, blocks, block_keep, rows, frame_mask,
               block_masks):
  """Reads a frame mask (frames places keeping frame_keep; none if frames is 0) then rows block
  masks (blocks places keeping block_keep) into frame_mask bool [frames] and block_masks bool
  [rows, blocks], zeroed by the caller: the exact adaptive Bernoulli code of `bitstream`'s masks
  (a place is coded only while its bit is undetermined). Returns (status, bits read)."""
  lower, range_, point, read = state[0], state[1], state[2], np.int64(state[3])
  count = len(words)
  coded = 0
  status = OK
  for mask in range(rows + (1 if frames > 0 else 0)):
    if frames > 0 and mask == 0:
      n, picks, out = frames, frame_keep, frame_mask
    else:
      n, picks, out = blocks, block_keep, block_masks[mask - (1 if frames > 0 else 0)]
    for i in range(n):
      places = n - i
      if picks == 0:
        break
      if picks == places:
        out[i:] = True
        break
      scale, quantile = _quantile(lower, range_, point)
      if quantile >= _FULL:
        status = INVALID_DATA
        break
      edge = bernoulli_edge(picks, places)
      if np.int64(quantile) >= edge:
        bit, left, probability = 1, edge, (1 << PRECISION) - edge
      else:
        bit, left, probability = 0, 0, edge
      lower, range_, point, read = _advance(lower, range_, point, read, scale, left, probability,
                                            words, 0, count)
      coded += 1
      if bit:
        out[i] = True
        picks -= 1
    if status != OK:
      break
  state[0], state[1], state[2], state[3] = lower, range_, point, np.uint64(read)
  return status, coded


@_jit
def read_pass(words, begins, counts, states, status, base_rows, places, held, positions, tallies,
              repeat, cdf, sizes, lower_bounds, upper_bounds, channel_clip, residual):
  """One pass of version 3 for a batch of streams: for each stream b still reading (status 0),
  first the pass's repeat flags: at each block i of held[b] (bool [B, m]: the pass's blocks sent
  before), in order, one bit under `Bernoulli((repeats + 1) / (flags + 2), perfect=False)`
  (`bernoulli_edge`) of the stream's counts tallies[b] = (repeats, flags) so far (updated), into
  repeat[b, i] (bool [B, m], zeroed by the caller). Then channel by channel, its places[b]
  residuals but those of flagged blocks (place i is block i // positions) under their rows
  (base_rows int64 [B, M, C]: the row of (channel, spatial context, x = 0); x = the previous
  channel's residual clipped to +-channel_clip, plus channel_clip; 0 for channel 0), then that
  channel's escaped residuals (side, nb, chunks as `bitstream._escape_fields` writes them).
  words: every stream's words one after another, stream b's at begins[b], counts[b] of them;
  states uint64 [B, 4]. cdf int [R, W + 1] (`bitstream._quantized_cdf`), sizes / lower_bounds /
  upper_bounds [R]. Writes residual int64 [B, M, C] (flagged blocks' places and places past
  places[b]: untouched) and a failing stream's status."""
  batch, _, channels = base_rows.shape
  num_rows = cdf.shape[0]
  escaped = np.empty((base_rows.shape[1], 2), np.int64)  # place, row
  heads = np.empty((base_rows.shape[1], 2), np.int64)
  for b in range(batch):
    if status[b] != OK:
      continue
    lower, range_, point, read = states[b, 0], states[b, 1], states[b, 2], np.int64(states[b, 3])
    begin, count, n = begins[b], counts[b], places[b]
    failure = OK
    # The flags.
    repeats, flags = tallies[b, 0], tallies[b, 1]
    for i in range(held.shape[1]):
      if not held[b, i]:
        continue
      scale, quantile = _quantile(lower, range_, point)
      if quantile >= _FULL:
        failure = INVALID_DATA
        break
      edge = bernoulli_edge(repeats + 1, flags + 2)
      if np.int64(quantile) >= edge:
        bit, left, probability = 1, edge, (1 << PRECISION) - edge
      else:
        bit, left, probability = 0, 0, edge
      lower, range_, point, read = _advance(lower, range_, point, read, scale, left, probability,
                                            words, begin, count)
      repeat[b, i] = bit == 1
      repeats += bit
      flags += 1
    tallies[b, 0], tallies[b, 1] = repeats, flags
    if failure != OK:
      channels_left = 0
    else:
      channels_left = channels
    for c in range(channels_left):
      # The channel's symbols.
      escapes = 0
      for i in range(n):
        if repeat[b, i // positions]:
          continue
        row = base_rows[b, i, c]
        if c > 0:
          x = residual[b, i, c - 1]
          row += min(max(x, -channel_clip), channel_clip) + channel_clip
        if row < 0 or row >= num_rows:
          failure = ROW_OUTSIDE
          break
        scale, quantile = _quantile(lower, range_, point)
        if quantile >= _FULL:
          failure = INVALID_DATA
          break
        symbol, left, probability = cdf_interval(np.int64(quantile), cdf[row])
        lower, range_, point, read = _advance(lower, range_, point, read, scale, left,
                                              probability, words, begin, count)
        size = sizes[row]
        if symbol >= size:
          if symbol > size:  # a padding entry of the row: never written by the encoder
            failure = PADDING_SYMBOL
          escaped[escapes, 0] = i
          escaped[escapes, 1] = row
          escapes += 1
        residual[b, i, c] = symbol + np.int64(lower_bounds[row])
      if failure != OK:  # (a padding symbol fails once all the channel's symbols are read)
        break
      if escapes == 0:
        continue
      # Its escapes: (side, nb) of each, then the chunks of each.
      for e in range(2 * escapes):
        scale, quantile = _quantile(lower, range_, point)
        if quantile >= _FULL:
          failure = INVALID_DATA
          break
        symbol, left, probability = uniform_interval(np.int64(quantile), 2 if e % 2 == 0 else 33)
        lower, range_, point, read = _advance(lower, range_, point, read, scale, left,
                                              probability, words, begin, count)
        heads[e >> 1, e & 1] = symbol
      for e in range(escapes):
        if failure != OK:
          break
        nb = heads[e, 1]
        low_bits = min(nb, 16)
        chunks = 0
        for part in range(2):
          bits = low_bits if part == 0 else nb - low_bits
          if bits == 0:
            continue
          scale, quantile = _quantile(lower, range_, point)
          if quantile >= _FULL:
            failure = INVALID_DATA
            break
          symbol, left, probability = uniform_interval(np.int64(quantile), 1 << bits)
          lower, range_, point, read = _advance(lower, range_, point, read, scale, left,
                                                probability, words, begin, count)
          chunks += symbol << (16 * part)
        distance_plus_one = (np.int64(1) << nb) + chunks
        i, row = escaped[e, 0], escaped[e, 1]
        if heads[e, 0]:
          value = np.int64(upper_bounds[row]) + distance_plus_one
        else:
          value = np.int64(lower_bounds[row]) - distance_plus_one
        residual[b, i, c] = value
        if value < -ESCAPE_LIMIT or value >= ESCAPE_LIMIT:
          failure = ESCAPE_OUTSIDE
      if failure != OK:
        break
    states[b, 0], states[b, 1], states[b, 2], states[b, 3] = lower, range_, point, np.uint64(read)
    status[b] = failure


@_jit
def read_vectors(words, begins, counts, states, status, wanted, alphabet, out):
  """The skip-vector symbols after a version-3 stream's last pass, for a batch of streams: for
  each stream b still reading, wanted[b] symbols of the `alphabet` into out[b] (int64 [B, >=
  max wanted]), each under the stream's adaptive counts (`bitstream`'s "Skip vectors": symbol s
  has weight (times it came before) + 1; with W the weights' sum and c(s) the weight below s, its
  interval starts at c(s) * (2^24 - alphabet) // W + s; integers only). A failing stream's
  status is written."""
  cumulative = np.empty(alphabet + 1, np.int64)  # c(s): the weight below s
  spare = np.int64(1 << PRECISION) - alphabet
  for b in range(len(wanted)):
    if status[b] != OK or wanted[b] == 0:
      continue
    lower, range_, point, read = states[b, 0], states[b, 1], states[b, 2], np.int64(states[b, 3])
    begin, count = begins[b], counts[b]
    for s in range(alphabet + 1):
      cumulative[s] = s
    total = np.int64(alphabet)
    failure = OK
    for i in range(wanted[b]):
      scale, quantile = _quantile(lower, range_, point)
      if quantile >= _FULL:
        failure = INVALID_DATA
        break
      q = np.int64(quantile)
      low, high = 0, alphabet  # the last symbol whose left edge is <= q
      while high - low > 1:
        middle = (low + high) >> 1
        if cumulative[middle] * spare // total + middle <= q:
          low = middle
        else:
          high = middle
      left = cumulative[low] * spare // total + low
      right = cumulative[low + 1] * spare // total + low + 1
      lower, range_, point, read = _advance(lower, range_, point, read, scale, left, right - left,
                                            words, begin, count)
      out[b, i] = low
      for s in range(low + 1, alphabet + 1):
        cumulative[s] += 1
      total += 1
    states[b, 0], states[b, 1], states[b, 2], states[b, 3] = lower, range_, point, np.uint64(read)
    status[b] = failure
