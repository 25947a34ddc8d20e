"""Refined blocks in the bitstream (version 3, header bit 6): round trips through every coder and
decoder, the code's length, and the payloads and streams that must be refused."""

import pathlib
import struct
import sys
import zlib

import jax.numpy as jnp
import numpy as np
import pytest

from stae_jax.coding import bitstream
from stae_jax.coding.bitstream import ClipPayload, DecodeError, decode, encode
from stae_jax.models import refine

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_context_coding import (  # pylint: disable=wrong-import-position,unused-import
    BLOCKS, _decode_exactly, batch_of, prior, random_clip, repeating_clip, tables)
from test_skip_coding import skipping  # pylint: disable=wrong-import-position
import golden_stream  # pylint: disable=wrong-import-position


def refined(clip: ClipPayload, rng, frames: int, step: int = 40, scale: float = 2.0,
            large: float = 0.02) -> ClipPayload:
  """`clip` with levels at its refined blocks (the first `frames` kept frames', not skipped):
  mostly small and falling with the scan position, some zero blocks and channels, a `large`
  share far beyond the direct range (escapes, up to the largest level)."""
  k_f, k_s = clip.latents.shape[:2]
  levels = np.round(rng.laplace(0, scale, (k_f, k_s, 3, 64))
                    * np.exp(-np.arange(64) / 12)).astype(np.int32)
  levels[..., 1:, 20:] = 0
  levels[rng.random((k_f, k_s, 3)) < 0.2] = 0
  big = rng.random(levels.shape) < large
  levels[big] = rng.integers(-bitstream.MAX_REFINE_LEVEL, bitstream.MAX_REFINE_LEVEL + 1,
                             int(big.sum()))
  levels[~bitstream.refined_blocks(k_f, k_s, frames, clip.vectors)] = 0
  return ClipPayload(clip.latents, clip.frame_mask, clip.block_masks, clip.vectors,
                     clip.vector_count, levels, step, frames)


def _batch(clips):
  first = clips[0]
  extra = dict(refinement=np.stack([c.refinement for c in clips]), refine_step=first.refine_step,
               refine_frames=first.refine_frames)
  if first.vectors is not None:
    extra.update(vectors=np.stack([c.vectors for c in clips]), vector_count=first.vector_count)
  return dict(**batch_of(clips), **extra)


def test_golden_refined_stream_decodes_and_re_encodes_byte_for_byte():
  """The committed stream with refined blocks (tests/golden_stream.py refine) decodes to its clip
  through the compiled and the exact decoder, and today's encoder writes it again; the skip
  fixture, the same clip unrefined, keeps bit 6 clear."""
  golden = golden_stream.load(golden_stream.REFINE_PATH)
  assert golden.version == bitstream.CONTEXT_VERSION
  assert golden.stream[1] & 64 and golden.payload.refinement is not None
  assert decode(golden.stream, golden.tables) == golden.payload
  assert _decode_exactly(golden.stream, golden.tables) == golden.payload
  assert encode(golden.payload, golden.tables) == golden.stream
  header = bitstream.read_header(golden.stream, golden.tables)
  assert (header.refine_step, header.refine_frames, header.vector_count) == (64, 2, 9)
  assert np.abs(golden.payload.refinement).max() == bitstream.MAX_REFINE_LEVEL
  skip = golden_stream.load(golden_stream.SKIP_PATH)
  assert not skip.stream[1] & 64 and skip.payload.refinement is None
  assert np.array_equal(skip.payload.latents, golden.payload.latents)


def test_refined_blocks_round_trip_through_every_coder_and_decoder(tables):
  """Clips with refined blocks (the first or every kept frame; with and without skip vectors;
  escapes up to the largest level; all-zero blocks): the batch writes each clip's own bytes,
  and the compiled batch decoder, `decode` and the exact decoder read them back; a batch mixing
  refined and plain streams decodes each as alone."""
  rng = np.random.default_rng(5)
  escapes = 0
  for shape in (dict(frames=8, kept_frames=5, kept_blocks=9), dict(kept_blocks=BLOCKS),
                dict(inner=(), kept_blocks=1)):
    for frames in (1, shape.get("kept_frames", 3)):
      for count in (None, 9):
        clips = []
        for _ in range(3):
          clip = repeating_clip(rng, 0.6, 0.2, **shape)
          if count:
            clip = skipping(clip, rng, count, 0.7)
          clips.append(refined(clip, rng, frames))
        escapes += sum(int((np.abs(c.refinement) >= 15).sum()) for c in clips)
        streams, _ = bitstream.encode_batch(tables=tables, **_batch(clips))
        assert streams == [encode(c, tables) for c in clips]
        assert bitstream.decode_batch(streams, tables) == clips
        assert [decode(s, tables) for s in streams] == clips
        assert [_decode_exactly(s, tables) for s in streams] == clips
        header = bitstream.read_header(streams[0], tables)
        assert (header.refine_step, header.refine_frames) == (40, frames)
        plain = random_clip(rng, **shape)
        mixed = [streams[0], encode(plain, tables), streams[1]]
        assert bitstream.decode_batch(mixed, tables) == [clips[0], plain, clips[1]]
  assert escapes > 50


def test_refinement_costs_what_its_adaptive_code_says(tables):
  """The stream grows by the sections' exact adaptive code length (`refine.bits`) up to the
  coder's rounding (a few bytes), and a clip whose refined blocks are all zero pays only their
  ends."""
  rng = np.random.default_rng(2)
  for scale in (0.5, 3.0):
    clip = repeating_clip(rng, 0.5, 0.2, kept_blocks=BLOCKS)
    clip = refined(clip, rng, clip.latents.shape[0], scale=scale, large=0.001)
    plain = ClipPayload(clip.latents, clip.frame_mask, clip.block_masks)
    grown = 8 * (len(encode(clip, tables)) - len(encode(plain, tables)))
    mask = bitstream.refined_blocks(*clip.latents.shape[:2], clip.refine_frames)
    estimate = float(refine.bits(jnp.asarray(clip.refinement)[None], jnp.asarray(mask)[None])[0])
    assert estimate > 200
    # The header's two varints (up to 4 bytes) and the coder's word rounding (up to 32 bits).
    assert estimate - 8 <= grown <= estimate + 8 * 4 + 40, (grown, estimate)


def test_refinement_payloads_that_cannot_be_sent_are_refused(tables):
  """Levels at a block that is not refined, beyond the largest level, of the wrong shape; a step
  or frame count outside its range; factorized tables."""
  rng = np.random.default_rng(1)
  clip = refined(skipping(repeating_clip(rng, 0.8, 0.0, kept_blocks=BLOCKS), rng, 9, 1.0),
                 rng, 2)
  skipped = np.argwhere(clip.vectors >= 0)
  assert len(skipped)
  change = lambda **kw: ClipPayload(**{**dict(
      latents=clip.latents, frame_mask=clip.frame_mask, block_masks=clip.block_masks,
      vectors=clip.vectors, vector_count=clip.vector_count, refinement=clip.refinement,
      refine_step=clip.refine_step, refine_frames=clip.refine_frames), **kw})
  levels = clip.refinement.copy()
  levels[tuple(skipped[0])][0, 0] = 1
  with pytest.raises(ValueError, match="not refined"):
    encode(change(refinement=levels), tables)
  levels = clip.refinement.copy()
  levels[2, 0, 0, 0] = 3  # kept frame 2 >= refine_frames 2
  with pytest.raises(ValueError, match="not refined"):
    encode(change(refinement=levels), tables)
  levels = clip.refinement.copy()
  levels[0, 0, 0, 0] = bitstream.MAX_REFINE_LEVEL + 1
  with pytest.raises(ValueError, match="within"):
    encode(change(refinement=levels), tables)
  with pytest.raises(ValueError, match="integers"):
    encode(change(refinement=clip.refinement[..., :63]), tables)
  for step in (0, bitstream.MAX_REFINE_STEP + 1):
    with pytest.raises(ValueError, match="refine_step"):
      encode(change(refine_step=step), tables)
  for frames in (0, clip.latents.shape[0] + 1):
    with pytest.raises(ValueError, match="refine_frames"):
      encode(change(refine_frames=frames), tables)


def _with_header(clip: ClipPayload, tables, step: int, frames: int) -> bytes:
  """`clip`'s stream with its header's refinement varints (the header's last two) replaced, CRC
  recomputed."""
  stream = encode(clip, tables)
  header = bitstream._check_payload(clip, tables)[1]  # pylint: disable=protected-access
  old = bitstream._varint(clip.refine_step) + bitstream._varint(clip.refine_frames)  # pylint: disable=protected-access
  new = bitstream._varint(step) + bitstream._varint(frames)  # pylint: disable=protected-access
  assert header.endswith(old) and len(new) == len(old)
  body = header[:-len(old)] + new + stream[len(header):-4]
  return body + struct.pack("<I", zlib.crc32(body, bitstream._crc_seed(tables)))  # pylint: disable=protected-access


def test_hostile_refined_streams_raise_decode_error(tables):
  """Headers declaring a step or refined-frame count out of range, bit 7 set, and streams mutated
  byte by byte: each decodes to its clip or raises DecodeError, never anything else."""
  rng = np.random.default_rng(8)
  clip = refined(skipping(repeating_clip(rng, 0.6, 0.1, kept_blocks=BLOCKS), rng, 9, 0.7),
                 rng, 3)
  stream = encode(clip, tables)
  bad_frames = _with_header(clip, tables, clip.refine_step, clip.latents.shape[0] + 1)
  with pytest.raises(DecodeError, match="refined frames"):
    bitstream.read_header(bad_frames, tables)
  with pytest.raises(DecodeError, match="refined frames"):
    decode(bad_frames, tables)
  with pytest.raises(DecodeError, match="step code"):
    decode(_with_header(clip, tables, 0, 1), tables)
  body = bytearray(stream[:-4])
  body[1] |= 128
  body = bytes(body)
  with pytest.raises(DecodeError, match="reserved"):
    decode(body + struct.pack("<I", zlib.crc32(body, bitstream._crc_seed(tables))), tables)  # pylint: disable=protected-access
  outcomes = {"refused": 0, "decoded": 0}
  for i in range(60):
    body = bytearray(stream[:-4])
    at = int(rng.integers(8, len(body)))
    body[at] ^= 1 << int(rng.integers(8))
    body = bytes(body)
    data = body + struct.pack("<I", zlib.crc32(body, bitstream._crc_seed(tables)))  # pylint: disable=protected-access
    try:
      payload = bitstream.decode_batch([data], tables)[0]
    except DecodeError:
      outcomes["refused"] += 1
      continue
    outcomes["decoded"] += 1
    assert encode(payload, tables) == data  # what decodes is exactly an encoder's stream
  assert outcomes["refused"] > 30, outcomes
