"""A fuzz corpus for the server halves, made from honest streams: headers declaring other shapes,
trailing bytes, bit flips (behind a recomputed CRC where the format has one) and truncations.

Each mutant comes as (kind, bytes, must_refuse): must_refuse marks the ones no server half may
accept, the honest stream with something appended above all ("no accepted extension"). The others
may decode to some clip (a bit flip behind a valid CRC can be a valid stream) but must never raise
anything but a DecodeError.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

import h264_bombs
from stae_jax.coding import bitstream
from stae_jax.systems import h264


def _with_crc(body: bytes, tables) -> bytes:
  return body + struct.pack("<I", zlib.crc32(body, bitstream._crc_seed(tables)))  # pylint: disable=protected-access


def _flip(rng, data: bytes, start: int = 0) -> bytes:
  data = bytearray(data)
  for _ in range(int(rng.integers(1, 4))):
    data[int(rng.integers(start, len(data)))] ^= 1 << int(rng.integers(8))
  return bytes(data)


def _header(version_byte: int, prefix: bytes, fields: dict) -> bytes:
  """A version 1 or 3 header with the given mask sizes (None: mask absent) and explicit dims."""
  flags, values = 0, []
  if fields["frames"] is not None:
    flags |= 1
    values += [fields["frames"], fields["frame_keep"]]
  if fields["blocks"] is not None:
    flags |= 2
    values += [fields["blocks"], fields["block_keep"]] + (
        [fields["rows"]] if fields["frames"] is None else [])
  flags |= len(fields["dims"]) << 2
  return bytes([version_byte, flags]) + prefix + b"".join(
      bitstream._varint(v) for v in values + list(fields["dims"]))  # pylint: disable=protected-access


def bitstream_mutants(rng, stream: bytes, tables, count: int = 60) -> list:
  """Mutants of one clip bitstream (module doc), `count` of each kind."""
  header = bitstream.read_header(stream, tables)
  implied = (header.frames is not None) + (header.blocks is not None)
  rows_explicit = header.blocks is not None and header.frames is None
  fields = dict(frames=header.frames, frame_keep=header.frame_keep, blocks=header.blocks,
                block_keep=header.block_keep, rows=header.lead[0] if rows_explicit else None,
                dims=tuple(header.lead[implied:]))
  head_length = len(_header(stream[0], stream[2:4], fields))
  assert stream[:head_length] == _header(stream[0], stream[2:4], fields)
  payload, body = stream[head_length:-4], stream[:-4]
  out = []
  for _ in range(count):
    # Header shapes: the honest payload behind other sizes (a huge clip, an empty one, one off).
    changed = dict(fields)
    for key in rng.permutation(["frames", "frame_keep", "blocks", "block_keep", "dims"])[:2]:
      if key == "dims":
        changed["dims"] = tuple(int(rng.choice([0, 1, d + 1, 1 << 16, (1 << 32) - 1]))
                                for d in fields["dims"] + (1,) * int(rng.integers(2)))[:7]
      elif fields[key] is not None:
        v = fields[key]
        changed[key] = int(rng.choice([0, 1, v - 1 if v else 0, v + 1, 2 * v, 1 << 16,
                                       (1 << 32) - 1]))
    if changed != fields:
      out.append(("header", _with_crc(_header(stream[0], stream[2:4], changed) + payload, tables),
                  False))
    extra = rng.bytes(int(rng.integers(1, 9)))
    out.append(("trailing", _with_crc(body + extra, tables), True))
    out.append(("trailing_no_crc", stream + extra, True))
    out.append(("flip", _with_crc(_flip(rng, body, 4), tables), False))
    out.append(("truncate", _with_crc(body[:int(rng.integers(4, len(body)))], tables), False))
  return out


def h264_mutants(rng, stream: bytes, frames: int, side: int, count: int = 30) -> list:
  """Mutants of one H.264 stream of `frames` pictures of side x side (module doc)."""
  units = h264.nal_units(stream)
  slices = [u for u in units if u[0] & 0x1F in (1, 5)]
  body = h264_bombs.slices(stream)
  out = [("header", h264_bombs.parameter_sets(s, frames) + body, True)
         for s in (side // 2, side + 16, 2 * side, 4096)]
  out += [("header", h264_bombs.parameter_sets(side, n) + body, False) for n in (1, 2 * frames)]
  out.append(("pictures", stream + b"\0\0\0\1" + slices[-1], True))
  out.append(("pictures", stream[:stream.rindex(b"\0\0\0\1")], True))
  for kind in (2, 3, 4, 13, 14, 15, 20, 21, 31):
    out.append(("trailing", stream + b"\0\0\1" + bytes([0x60 | kind]) + rng.bytes(8), True))
  out.append(("trailing", stream + h264_bombs.parameter_sets(2 * side, frames), True))
  for _ in range(count):
    out.append(("trailing_bytes", stream + rng.bytes(int(rng.integers(1, 9))), False))
    out.append(("flip", _flip(rng, stream, 4), False))
    out.append(("truncate", stream[:int(rng.integers(1, len(stream)))], False))
  return out


def raw_mutants(rng, stream: bytes, count: int = 10) -> list:
  out = []
  for _ in range(count):
    out.append(("trailing", stream + rng.bytes(int(rng.integers(1, 9))), True))
    out.append(("truncate", stream[:int(rng.integers(0, len(stream)))], True))
    out.append(("flip", _flip(rng, stream), False))
  return out


def run(server_half, mutants, check_accepted) -> dict:
  """Feeds every mutant to `server_half(stream)`; returns {kind: [accepted, refused]}. Anything
  but a DecodeError propagates (with its traceback: the test fails); an accepted must_refuse
  mutant fails the test by name."""
  tally = {}
  for kind, data, must_refuse in mutants:
    counts = tally.setdefault(kind, [0, 0])
    try:
      out = server_half(data)
    except bitstream.DecodeError:
      counts[1] += 1
      continue
    assert not must_refuse, f"a {kind} mutant was accepted: {data.hex()}"
    check_accepted(out)
    counts[0] += 1
  return tally
