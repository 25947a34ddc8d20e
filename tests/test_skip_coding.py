"""Skip vectors in the bitstream (version 3, header bit 5): the golden stream, round trips through
every coder and decoder, their code, and the payloads and streams that must be refused."""

import pathlib
import struct
import sys
import zlib

import numpy as np
import pytest

from stae_jax.coding import bitstream
from stae_jax.coding.bitstream import ClipPayload, DecodeError, decode, encode

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import golden_stream  # pylint: disable=wrong-import-position
from test_context_coding import (  # pylint: disable=wrong-import-position,unused-import
    BLOCKS, _decode_exactly, batch_of, prior, random_clip, repeating_clip, tables)


def skipping(clip: ClipPayload, rng, count: int, share: float) -> ClipPayload:
  """`clip` with a `share` of its repeats (blocks whose latents are those last sent there)
  skipped, each with a random vector of `count`; the other repeats stay "not skipped"."""
  latents, masks = clip.latents, clip.block_masks
  vectors = np.full(latents.shape[:2], -1, np.int32)
  last = {}
  for f in range(latents.shape[0]):
    for j, block in enumerate(np.flatnonzero(masks[f]).tolist()):
      if block in last and np.array_equal(latents[f, j], last[block]) and rng.random() < share:
        vectors[f, j] = rng.integers(count)
      last[block] = latents[f, j]
  return ClipPayload(latents, clip.frame_mask, masks, vectors, count)


def test_golden_skip_stream_decodes_and_re_encodes_byte_for_byte():
  """The committed stream with skip vectors (tests/golden_stream.py skip) decodes to its clip,
  and today's encoder writes it again; the version-3 fixture, the same clip without vectors,
  differs only where the header's bit 5, its vector count and the vectors' code say."""
  golden = golden_stream.load(golden_stream.SKIP_PATH)
  assert golden.version == bitstream.CONTEXT_VERSION
  assert golden.stream[1] & 32 and golden.payload.vectors is not None
  assert golden.payload.vectors.tolist() == [[-1, -1], [6, -1], [-1, -1]]
  assert decode(golden.stream, golden.tables) == golden.payload
  assert _decode_exactly(golden.stream, golden.tables) == golden.payload
  data, stats = bitstream.encode_with_stats(golden.payload, golden.tables)
  assert data == golden.stream and stats.skips == stats.repeats == 1
  plain = golden_stream.load(golden_stream.CONTEXT_PATH)
  assert not plain.stream[1] & 32 and plain.payload.vectors is None
  assert np.array_equal(plain.payload.latents, golden.payload.latents)
  assert bitstream.read_header(golden.stream, golden.tables).vector_count == 9
  assert bitstream.read_header(plain.stream, plain.tables).vector_count == 0


def test_skip_vectors_round_trip_through_every_coder_and_decoder(tables):
  """Clips whose repeats are partly skipped (vectors of 1, 9 and 81), with blocks never sent
  before and blocks one unit off: the batch writes each clip's own bytes, and the compiled batch
  decoder, `decode` and the exact decoder read them back; a batch mixing streams with and
  without vectors decodes each as alone."""
  rng = np.random.default_rng(11)
  shapes = [dict(frames=8, kept_frames=5, kept_blocks=9), dict(inner=(), kept_blocks=12),
            dict(kept_blocks=BLOCKS), dict(kept_blocks=1)]
  skipped = 0
  for count in (1, 9, 81):
    for shape in shapes:
      clips = [skipping(repeating_clip(rng, 0.7, 0.2, **shape), rng, count, 0.7)
               for _ in range(4)]
      streams, stats = bitstream.encode_batch(tables=tables, vectors=np.stack(
          [c.vectors for c in clips]), vector_count=count, **batch_of(clips))
      alone = [bitstream.encode_with_stats(clip, tables) for clip in clips]
      assert streams == [data for data, _ in alone]
      assert stats["skips"].tolist() == [int((c.vectors >= 0).sum()) for c in clips]
      skipped += int(stats["skips"].sum())
      assert bitstream.decode_batch(streams, tables) == clips
      assert [decode(s, tables) for s in streams] == clips
      assert [_decode_exactly(s, tables) for s in streams] == clips
      plain = [random_clip(rng, **shape) for _ in range(2)]
      mixed = [streams[0], encode(plain[0], tables), streams[1], encode(plain[1], tables)]
      assert bitstream.decode_batch(mixed, tables) == [clips[0], plain[0], clips[1], plain[1]]
  assert skipped > 100


def test_vector_code_is_the_adaptive_counts_exactly():
  """The encoder's intervals (`_vector_intervals`), the exact decoder's models
  (`_vector_masses`, as constriction quantises them) and the counts' closed form agree: symbol s
  after counts n_s of n symbols has an interval of about 2^24 (n_s + 1) / (n + A)."""
  rng = np.random.default_rng(12)
  for alphabet in (2, 10, 82):
    symbols = rng.integers(alphabet, size=300) * (rng.random(300) < 0.5)  # many zeros
    left, right = bitstream._vector_intervals(symbols, alphabet)  # pylint: disable=protected-access
    seen = np.zeros(alphabet, np.int64)
    for i, s in enumerate(symbols.tolist()):
      masses = bitstream._vector_masses(seen, i + alphabet)  # pylint: disable=protected-access
      cdf = bitstream._quantize_rows(masses)[0]  # pylint: disable=protected-access
      assert (cdf[s], cdf[s + 1]) == (left[i], right[i])
      share = (right[i] - left[i]) / 2**24
      assert share == pytest.approx((seen[s] + 1) / (i + alphabet), rel=1e-4, abs=2e-7)
      seen[s] += 1


def test_bad_skip_payloads_are_refused_naming_the_fix(tables):
  rng = np.random.default_rng(13)
  clip = repeating_clip(rng, 1.0, 0.0, kept_blocks=6)
  good = skipping(clip, rng, 9, 1.0)
  assert (good.vectors >= 0).any()
  with_vectors = lambda vectors, count=9: ClipPayload(clip.latents, clip.frame_mask,
                                                      clip.block_masks, vectors, count)
  first = good.vectors.copy()
  first[0, 0] = 3  # the first kept frame sends every block for the first time
  with pytest.raises(ValueError, match="must carry them"):
    encode(with_vectors(first), tables)
  nudged = ClipPayload(clip.latents.copy(), clip.frame_mask, clip.block_masks, good.vectors, 9)
  f, j = (int(x[0]) for x in np.nonzero(good.vectors >= 0))
  nudged.latents[f, j].flat[0] += 1  # skipped, but not the values last sent
  with pytest.raises(ValueError, match="not the values last sent"):
    encode(nudged, tables)
  with pytest.raises(ValueError, match=r"lie in \[-1, 9\)"):
    encode(with_vectors(np.where(good.vectors >= 0, 9, -1)), tables)
  with pytest.raises(ValueError, match="vector_count"):
    encode(with_vectors(good.vectors, 0), tables)
  with pytest.raises(ValueError, match=r"\[k_f, k_s\]"):
    encode(with_vectors(good.vectors[:, :-1]), tables)
  factorized = golden_stream.make_tables(conditional=False)
  payload = golden_stream.make_payload(factorized)
  with pytest.raises(ValueError, match="conditional coding tables"):
    encode(ClipPayload(payload.latents, payload.frame_mask, payload.block_masks,
                       np.full(payload.latents.shape[:2], -1, np.int32), 9), factorized)


def test_hostile_skip_streams_raise_decode_error(tables):
  """Headers declaring vectors where they cannot be, or a count out of range, and streams with
  a byte changed, cut or words appended (the CRC recomputed each time): DecodeError, or (a
  changed byte can make another valid stream) a clip whose encoding is those very bytes."""
  rng = np.random.default_rng(14)
  clip = skipping(repeating_clip(rng, 0.8, 0.1, kept_blocks=9), rng, 81, 0.8)
  data = encode(clip, tables)
  seed = bitstream._crc_seed(tables)  # pylint: disable=protected-access
  with_crc = lambda body: body + struct.pack("<I", zlib.crc32(body, seed))
  body = data[:-4]
  with pytest.raises(DecodeError, match="reserved bits"):
    decode(with_crc(body[:1] + bytes([body[1] | 128]) + body[2:]), tables)
  count_at = len(bitstream._check_payload(clip, tables)[1]) - 1  # the header's last field: V  # pylint: disable=protected-access
  assert body[count_at] == 81
  for count, message in ((0, "skip vectors, not in"), (bitstream.MAX_VECTORS + 1, "not in")):
    hostile = body[:count_at] + bitstream._varint(count) + body[count_at + 1:]  # pylint: disable=protected-access
    with pytest.raises(DecodeError, match=message):
      decode(with_crc(hostile), tables)
  golden = golden_stream.load(golden_stream.PATH)  # version 1: no vectors there
  version_1 = golden.stream[:1] + bytes([golden.stream[1] | 32]) + golden.stream[2:-4]
  version_1 += struct.pack("<I", zlib.crc32(version_1, bitstream._crc_seed(golden.tables)))  # pylint: disable=protected-access
  with pytest.raises(DecodeError, match="declare skip vectors"):
    decode(version_1, golden.tables)
  with pytest.raises(DecodeError, match="after its last coded word|not the encoding"):
    decode(with_crc(body + bytes(4)), tables)
  changed = 0
  for _ in range(60):
    mutated = bytearray(body)
    mutated[rng.integers(len(body) - 4, len(body))] ^= 1 << int(rng.integers(8))
    for stream in (with_crc(bytes(mutated)), with_crc(body[:-4])):
      try:
        payload = decode(stream, tables)
      except DecodeError:
        changed += 1
        continue
      assert encode(payload, tables) == stream
  assert changed > 30
