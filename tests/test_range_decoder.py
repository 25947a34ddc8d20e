"""The compiled range decoder (stae_jax.coding.range_decoder) against constriction's: the same
intervals for every model the format uses, the same symbols and end of stream on streams that
constriction's encoder writes, the same symbols or the same failure on random words, and no read
outside its arrays on hostile streams."""

import os
import pathlib
import subprocess
import sys
import textwrap

import constriction
import numba
import numpy as np
import pytest

from stae_jax.coding import bitstream
from stae_jax.coding import range_decoder as rd

REPO = pathlib.Path(__file__).resolve().parent.parent
_MODEL = constriction.stream.model
CATEGORICAL, BERNOULLI, UNIFORM = 0, 1, 2
#: Every Uniform size the format codes with: an escape's side and nb, its chunks of 1..16 bits.
FORMAT_UNIFORM_SIZES = (2, 33) + tuple(1 << bits for bits in range(1, 17))


@numba.njit
def _read(words, state, kinds, params, cdfs, out):
  """Reads len(kinds) symbols with the decoder's own steps: kind CATEGORICAL under cdfs[params[j,
  0]], BERNOULLI with (picks, places) = params[j], UNIFORM of size params[j, 0]. Returns how many
  were read before invalid data (len(kinds) if none)."""
  lower, range_, point, read = state[0], state[1], state[2], np.int64(state[3])
  count = len(words)
  for j in range(len(kinds)):
    scale, quantile = rd._quantile(lower, range_, point)  # pylint: disable=protected-access
    if quantile >= np.uint64(1 << 24):
      return j
    q = np.int64(quantile)
    if kinds[j] == 0:
      symbol, left, probability = rd.cdf_interval(q, cdfs[params[j, 0]])
    elif kinds[j] == 1:
      edge = rd.bernoulli_edge(params[j, 0], params[j, 1])
      if q >= edge:
        symbol, left, probability = 1, edge, (1 << 24) - edge
      else:
        symbol, left, probability = 0, 0, edge
    else:
      symbol, left, probability = rd.uniform_interval(q, params[j, 0])
    lower, range_, point, read = rd._advance(lower, range_, point, read, scale, left,  # pylint: disable=protected-access
                                             probability, words, 0, count)
    out[j] = symbol
  state[0], state[1], state[2], state[3] = lower, range_, point, np.uint64(read)
  return len(kinds)


def _model(kind, param, probabilities):
  if kind == CATEGORICAL:
    return _MODEL.Categorical(probabilities[param[0]], lazy=True)  # as the rows are read
  if kind == BERNOULLI:
    return _MODEL.Bernoulli(param[0] / param[1], perfect=False)
  return _MODEL.Uniform(int(param[0]))


def _left_edge(symbol: int, model) -> int:
  """The left edge (of 2^24) constriction codes `symbol` with: a fresh encoder's state after it
  has lower = (2^40 - 1) * left, and its seal word is (lower + 2^32 - 1) >> 32 = 256 * left."""
  encoder = constriction.stream.queue.RangeEncoder()
  encoder.encode(symbol, model)
  word = int(encoder.get_compressed()[0])
  assert word % 256 == 0
  return word // 256


def _random_models(rng, n, rows):
  kinds = rng.integers(0, 3, n)
  params = np.zeros((n, 2), np.int64)
  for j, kind in enumerate(kinds):
    if kind == CATEGORICAL:
      params[j, 0] = rng.integers(rows)
    elif kind == BERNOULLI:
      places = int(rng.integers(2, 1 << int(rng.integers(2, 19))))
      params[j] = rng.integers(1, places), places
    else:
      params[j, 0] = (rng.choice(FORMAT_UNIFORM_SIZES) if rng.integers(2)
                      else rng.integers(2, 1 << 20))
  return kinds, params


def _random_rows(rng, rows):
  width = int(rng.integers(2, 120))
  probabilities = rng.random((rows, width)) ** 4
  probabilities[rng.random((rows, width)) < 0.1] = 0.0  # zero masses get one unit each
  probabilities[:, int(rng.integers(width))] += 1e-6
  return probabilities


def test_every_mask_bit_model_up_to_256_places_has_constrictions_edge():
  """Bernoulli(k / n, perfect=False) for every 0 < k < n <= 256 (the table `bitstream` kept for
  such masks), and a spread of larger masks up to MAX_MASK_PLACES."""
  rng = np.random.default_rng(0)
  pairs = [(k, n) for n in range(2, 257) for k in range(1, n)]
  for _ in range(2000):
    n = int(rng.integers(257, bitstream.MAX_MASK_PLACES + 1))
    pairs.append((int(rng.integers(1, n)), n))
  pairs += [(1, bitstream.MAX_MASK_PLACES), (bitstream.MAX_MASK_PLACES - 1,
                                             bitstream.MAX_MASK_PLACES)]
  for k, n in pairs:
    assert rd.bernoulli_edge(k, n) == _left_edge(1, _MODEL.Bernoulli(k / n, perfect=False)), (k, n)


@pytest.mark.parametrize("size", FORMAT_UNIFORM_SIZES + (3, 1000, (1 << 24) - 1))
def test_uniform_intervals_are_constrictions(size):
  rng = np.random.default_rng(size)
  symbols = sorted({0, 1, size - 2, size - 1} | set(rng.integers(0, size, 50).tolist()))
  model = _MODEL.Uniform(size)
  for symbol in symbols:
    left = _left_edge(symbol, model)
    assert rd.uniform_interval(left, size) == (
        symbol, left, (1 << 24) - left if symbol == size - 1 else (1 << 24) // size)
    if symbol:
      assert rd.uniform_interval(left - 1, size)[0] == symbol - 1


def test_random_streams_decode_as_constriction_decodes_them():
  """Streams of every model kind mixed (categorical rows with zero masses, Bernoulli masks of up
  to 2^18 places, uniform fields) written by constriction's encoder: the same symbols, and the
  same `maybe_exhausted` after every prefix read, with and without a zero word appended (as the
  decoders read a payload)."""
  rng = np.random.default_rng(1)
  for trial in range(250):
    rows = 12
    probabilities = _random_rows(rng, rows)
    cdfs = bitstream._quantize_rows(probabilities)  # pylint: disable=protected-access
    n = int(rng.integers(0, 300)) if trial else 0
    kinds, params = _random_models(rng, n, rows)
    symbols = np.zeros(n, np.int64)
    encoder = constriction.stream.queue.RangeEncoder()
    for j in range(n):
      model = _model(kinds[j], params[j], probabilities)
      size = (probabilities.shape[1] if kinds[j] == CATEGORICAL else
              2 if kinds[j] == BERNOULLI else params[j, 0])
      symbols[j] = rng.integers(size)
      encoder.encode(int(symbols[j]), model)
    words = encoder.get_compressed()
    for padded in (words, np.append(words, np.uint32(0))):
      stop = int(rng.integers(0, n + 1))  # a prefix, then the rest
      state, out = rd.start(padded), np.zeros(n, np.int64)
      decoder = constriction.stream.queue.RangeDecoder(padded)
      for first, last in ((0, stop), (stop, n)):
        assert _read(padded, state, kinds[first:last], params[first:last], cdfs,
                     out[first:last]) == last - first
        for j in range(first, last):
          decoder.decode(_model(kinds[j], params[j], probabilities))
        assert rd.maybe_exhausted(state, len(padded)) == decoder.maybe_exhausted(), trial
      assert np.array_equal(out, symbols), trial


def test_random_words_decode_to_constrictions_symbols_or_fail_where_it_fails():
  """Any words (hostile input): symbol for symbol what constriction's decoder reads, and invalid
  data exactly where constriction raises, reading past the words as it does."""
  rng = np.random.default_rng(2)
  failed = 0
  for trial in range(400):
    rows = 6
    probabilities = _random_rows(rng, rows)
    cdfs = bitstream._quantize_rows(probabilities)  # pylint: disable=protected-access
    words = rng.integers(0, 1 << 32, int(rng.integers(0, 12)), dtype=np.uint64).astype(np.uint32)
    if trial % 4 == 0:  # a point at the top of the range: invalid data at the first symbol (the
      words[:2] = 0xFFFFFFFF  # only one that can be: reading keeps the point inside the range)
    n = int(rng.integers(1, 60))
    kinds, params = _random_models(rng, n, rows)
    out = np.zeros(n, np.int64)
    read = _read(words, rd.start(words), kinds, params, cdfs, out)
    decoder = constriction.stream.queue.RangeDecoder(words)
    for j in range(n):
      try:
        symbol = decoder.decode(_model(kinds[j], params[j], probabilities))
      except BaseException as e:  # pylint: disable=broad-except
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
          raise
        assert read == j, (trial, read, j, e)
        failed += 1
        break
      assert read > j and out[j] == symbol, (trial, j)
    else:
      assert read == n
  assert failed >= 50, failed


def test_hostile_streams_read_nothing_outside_their_arrays(tmp_path):
  """Version-3 streams of random words, truncated or extended by whole words, behind a valid
  header and CRC (the golden stream's, without and with skip vectors): decoded by the compiled
  functions built with bounds checks (in a subprocess, NUMBA_BOUNDSCHECK=1, its own cache), whose
  errors are not caught: every one fails with a DecodeError or decodes, and nothing indexes
  outside an array."""
  script = textwrap.dedent("""
    import struct, sys, zlib
    import numpy as np
    sys.path.insert(0, "tests")
    import golden_stream
    from stae_jax.coding import bitstream, range_decoder
    rng = np.random.default_rng(5)
    bodies = []
    for path in (golden_stream.CONTEXT_PATH, golden_stream.SKIP_PATH):
      golden = golden_stream.load(path)
      tables, stream = golden.tables, golden.stream
      offset, body_end = bitstream._parse_header(stream, tables, bitstream.MAX_LATENT_SYMBOLS)[:2]
      header, payload = stream[:offset], stream[offset:body_end]
      n = len(payload) // 4
      bodies += [header + payload[:4 * k] for k in range(n)]  # truncated
      bodies += [header + payload + rng.bytes(4 * k) for k in range(1, 4)]  # extended
      bodies += [header + rng.bytes(4 * int(rng.integers(0, 2 * n))) for _ in range(300)]
      bodies += [header + bytes(4 * int(rng.integers(0, 2 * n))) for _ in range(20)]
      bodies += [header + b"\\xff" * (4 * int(rng.integers(0, 2 * n))) for _ in range(20)]
    outcomes = dict.fromkeys(["refused", "decoded", "undecided", "public refused",
                              "public decoded", "vectors read"], 0)
    for body in bodies:
      data = body + struct.pack("<I", zlib.crc32(body, bitstream._crc_seed(tables)))
      offset, body_end, (frames, frame_keep, blocks, block_keep, rows), lead, extra = (
          bitstream._parse_header(data, tables, bitstream.MAX_LATENT_SYMBOLS))
      count, _, refine_frames = extra
      words = np.frombuffer(data, "<u4", count=(body_end - offset) // 4, offset=offset)
      decoder = bitstream._CompiledDecoder(words.astype(np.uint32))
      try:
        _, masks = decoder.read_masks(frames, frame_keep, blocks, block_keep, rows)
      except bitstream.DecodeError:
        outcomes["refused"] += 1
        continue
      _, vectors, _, failures = bitstream._decode_in_context([decoder], masks[None], lead[2:],
                                                             tables, count, refine_frames)
      outcomes["vectors read"] += int(vectors is not None and (vectors >= 0).any())
      if failures:
        assert all(isinstance(e, bitstream.DecodeError) for e in failures.values()), failures
        outcomes["refused"] += 1
        continue
      try:
        decoder.check_end()
        outcomes["decoded"] += 1
      except bitstream._Undecided:
        outcomes["undecided"] += 1
      try:  # the public decoder decides the rest: an error or a clip
        bitstream.decode(data, tables)
        outcomes["public decoded"] += 1
      except bitstream.DecodeError:
        outcomes["public refused"] += 1
    print(outcomes)
    assert outcomes["refused"] >= 40 and outcomes["public refused"] >= 500, outcomes
    assert outcomes["vectors read"] >= 20, outcomes
    try:  # the checks are on: an empty row is read outside
      range_decoder.cdf_interval(0, np.zeros(0, np.int32))
      raise AssertionError("NUMBA_BOUNDSCHECK=1 did not check bounds")
    except IndexError:
      pass
  """)
  env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path))
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
