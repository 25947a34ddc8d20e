"""The golden bitstream: one small clip stream, made once and committed.

Why: round-trip tests only prove that today's encoder and today's decoder agree with each other. A
change of the format (header, varints, mask or escape coding, CRC, table hash) or of constriction's
range coder would pass them and still make every stream already written undecodable. The fixture,
tests/data/golden_stream.json, pins the bytes: `tests/test_coding.py` decodes the committed stream
to the committed payload and re-encodes that payload to the committed bytes.

The tables are small dyadic rationals (counts / 256, exact in float64), built here from literal
integers and stored in the fixture with their hash, so the fixture depends on no random
initialisation and no floating-point library.

A second fixture, tests/data/golden_stream_v3.json, pins version 3 (conditional tables: residuals
under an integer context, and repeat flags) the same way; its clip has one block that repeats its
previous latents exactly (flag 1) and two that do not (flag 0). The version-2 fixture,
tests/data/golden_stream_v2.json, stays as it was written: its stream must now be refused. A third,
tests/data/golden_stream_v3_skip.json, pins version 3's skip vectors (header bit 5, set by no
earlier stream, so the version-3 fixture stays valid byte for byte and older decoders refuse the
new streams by that bit): the same clip with its repeating block skipped. A fourth,
tests/data/golden_stream_v3_refine.json, pins refined blocks (header bit 6, likewise set by no
earlier stream): the skipping clip with its first two kept frames' blocks refined (but the
skipped one), levels with zeros, a block of all zeros, small values and escapes.

Regenerate ONLY after an intentional format change that bumps `stae_jax.coding.bitstream.VERSION`
(or CONTEXT_VERSION for the second fixture: then write it to a new file named for the new version
and keep the old one, whose stream the tests check is refused); a failing golden test without a
version bump is a regression to fix, not a fixture to refresh:

    python tests/golden_stream.py 1     # version 1 (... 3: version 3; ... skip: its skip vectors;
                                        # ... refine: its refined blocks)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: import this checkout, not an installed copy
  sys.path.insert(0, str(REPO))

from stae_jax.coding import bitstream  # pylint: disable=wrong-import-position
from stae_jax.coding import tables as tables_lib  # pylint: disable=wrong-import-position

PATH = pathlib.Path(__file__).resolve().parent / "data" / "golden_stream.json"
#: The version-3 fixture: the clip coded with conditional tables (residuals in context, repeat
#: flags).
CONTEXT_PATH = pathlib.Path(__file__).resolve().parent / "data" / "golden_stream_v3.json"
#: The retired version-2 fixture (conditional tables without repeat flags), never regenerated:
#: today's decoder must refuse its stream by its version.
RETIRED_CONTEXT_PATH = pathlib.Path(__file__).resolve().parent / "data" / "golden_stream_v2.json"
#: Version 3 with skip vectors: `make_payload(tables, skip=True)`.
SKIP_PATH = pathlib.Path(__file__).resolve().parent / "data" / "golden_stream_v3_skip.json"
#: Version 3 with skip vectors and refined blocks: `make_payload(tables, skip=True, refine=True)`.
REFINE_PATH = pathlib.Path(__file__).resolve().parent / "data" / "golden_stream_v3_refine.json"
#: Its refinement: the step code (quarter levels) and the kept frames refined.
_REFINE_STEP = 64
_REFINE_FRAMES = 2
#: Its skip vectors: a +-1 px search (9 vectors); the repeating block moved by (dy, dx) = (1, -1).
_VECTOR_COUNT = 9
_SKIP_VECTOR = 6
#: Its context rule: a 3-block-wide grid (the clip's 6 blocks are 2 rows of 3), thresholds 1, 2,
#: the previous channel's residual clipped to +-1.
_CONTEXT_THRESHOLDS = (1, 2)
_CHANNEL_CLIP = 1
_GRID_WIDTH = 3
FORMAT = "stae_jax.golden_stream/1"

#: Per channel: the support's lower end and the counts (out of 256) of its symbols, then escape.
_COUNTS = (
    (-3, (4, 16, 48, 120, 48, 12, 4, 4)),
    (-2, (20, 60, 100, 56, 16, 4)),
    (0, (128, 64, 32, 16, 8, 8)),
)


@dataclasses.dataclass(frozen=True)
class Golden:
  tables: tables_lib.CodingTables
  payload: bitstream.ClipPayload
  stream: bytes
  version: int


def make_tables(conditional: bool = False) -> tables_lib.CodingTables:
  """Three channels with supports -3..3, -2..2 and 0..4 and an escape mass each; conditional:
  3 x 15 rows (channel c, context k: the counts of channel (c + k) % 3), with a context spec."""
  from stae_jax.models import context as context_lib  # pylint: disable=g-import-not-at-top
  contexts = context_lib.num_contexts(_CONTEXT_THRESHOLDS, _CHANNEL_CLIP) if conditional else 1
  rows = [_COUNTS[(c + k) % len(_COUNTS)] for c in range(len(_COUNTS)) for k in range(contexts)]
  width = max(len(counts) for _, counts in rows)
  lower = np.array([low for low, _ in rows], np.int32)
  upper = np.array([low + len(counts) - 2 for low, counts in rows], np.int32)
  probabilities = np.zeros((len(rows), width), np.float64)
  for r, (_, counts) in enumerate(rows):
    probabilities[r, :len(counts)] = np.array(counts, np.float64) / 256
  model_hash = hashlib.sha256(b"stae-jax golden bitstream tables").hexdigest()
  context = np.array([context_lib.RULE_VERSION, _GRID_WIDTH, len(_COUNTS), contexts,
                      _CHANNEL_CLIP, *_CONTEXT_THRESHOLDS], np.int32) if conditional else None
  # pylint: disable-next=protected-access
  table_hash = tables_lib._table_hash(lower, upper, probabilities, model_hash, context)
  return tables_lib.CodingTables(lower=lower, upper=upper, probabilities=probabilities,
                                 model_hash=model_hash, table_hash=table_hash, context=context)


def make_payload(tables: tables_lib.CodingTables, skip: bool = False,
                 refine: bool = False) -> bitstream.ClipPayload:
  """An STAE-shaped clip: 3 of 8 frames, 2 of 6 blocks per kept frame, 2x1 latents per block.

  Four latents are escaped: just above a support, far below one, and both int32 limits. With
  conditional tables the kept frames keep blocks 0 and 5, 0 and 3, 0 and 5 (version 3's repeat
  flags: block 0 of the second kept frame repeats the first's exactly, its escape included; the
  third kept frame's blocks 0 and 5 each differ from their last values in one latent, an escape).
  skip (conditional tables): that repeating block is skipped with vector `_SKIP_VECTOR` of
  `_VECTOR_COUNT`, the others not. refine (with skip): the blocks of the first `_REFINE_FRAMES`
  kept frames but the skipped one carry levels: block 0 of the first kept frame a few small ones
  and a zero run, its block 5 none at all, block 3 of the second an escape each way (+-40, and
  the largest level) and a last level in the last position.
  """
  rng = np.random.default_rng(2026)
  frame_mask = np.zeros(8, bool)
  frame_mask[[1, 4, 6]] = True
  block_masks = np.zeros((3, 6), bool)
  kept_blocks = ([0, 5], [0, 3], [0, 5]) if tables.conditional else ([0, 5], [2, 3], [1, 4])
  for row, kept in zip(block_masks, kept_blocks):
    row[kept] = True
  latents = np.empty((3, 2, 2, 1, tables.channels), np.int32)
  for c in range(tables.channels):
    r = c * tables.num_contexts
    p = tables.probabilities[r, :tables.sizes[r]]
    latents[..., c] = rng.choice(np.arange(tables.lower[r], tables.upper[r] + 1),
                                 size=latents.shape[:-1], p=p / p.sum())
  latents[0, 0, 0, 0, 0] = tables.upper[0] + 2 + (3 if tables.conditional else 0)
  if tables.conditional:
    latents[1, 0] = latents[0, 0]  # a repeat
    latents[2, 0] = latents[1, 0]  # ... and two blocks that are not (the escapes below)
    latents[2, 1] = latents[0, 1]
  latents[1, 1, 1, 0, 0] = -77777
  latents[2, 0, 0, 0, 1] = 2**31 - 1
  latents[2, 1, 1, 0, 2] = -2**31
  if skip:
    vectors = np.full(latents.shape[:2], -1, np.int32)
    vectors[1, 0] = _SKIP_VECTOR
    if refine:
      levels = np.zeros(latents.shape[:2] + (3, 64), np.int32)
      levels[0, 0, 0, [0, 1, 2, 5, 9]] = [7, -3, 1, 2, -1]
      levels[0, 0, 1, 0] = -2
      levels[0, 0, 2, [0, 3]] = [1, 1]
      levels[1, 1, 0, [0, 4, 63]] = [40, -bitstream.MAX_REFINE_LEVEL, 1]
      levels[1, 1, 2, 1] = -15
      return bitstream.ClipPayload(latents, frame_mask, block_masks, vectors, _VECTOR_COUNT,
                                   levels, _REFINE_STEP, _REFINE_FRAMES)
    return bitstream.ClipPayload(latents, frame_mask, block_masks, vectors, _VECTOR_COUNT)
  return bitstream.ClipPayload(latents, frame_mask, block_masks)


def _tables_json(tables: tables_lib.CodingTables) -> dict:
  return dict(lower=tables.lower.tolist(), upper=tables.upper.tolist(),
              probabilities=tables.probabilities.tolist(), model_hash=tables.model_hash,
              table_hash=tables.table_hash, tail_mass=tables.tail_mass,
              context=tables.context.tolist())


def regenerate(path: pathlib.Path = PATH, conditional: bool = False,
               skip: bool = False, refine: bool = False) -> pathlib.Path:
  """Encodes the fixed clip with today's code and writes the fixture (see the module docstring)."""
  tables = make_tables(conditional)
  payload = make_payload(tables, skip, refine)
  stream = bitstream.encode(payload, tables)
  record = dict(
      format=FORMAT,
      bitstream_version=bitstream.CONTEXT_VERSION if conditional else bitstream.VERSION,
      regenerate=("python tests/golden_stream.py, only after an intentional bump of "
                  "stae_jax.coding.bitstream.VERSION"),
      tables=_tables_json(tables),
      payload=dict(latents_shape=list(payload.latents.shape), latents=payload.latents.tolist(),
                   frame_mask=payload.frame_mask.tolist(),
                   block_masks=payload.block_masks.tolist(),
                   **(dict(vectors=payload.vectors.tolist(), vector_count=payload.vector_count)
                      if skip else {}),
                   **(dict(refinement=payload.refinement.tolist(),
                           refine_step=payload.refine_step, refine_frames=payload.refine_frames)
                      if refine else {})),
      stream_hex=stream.hex())
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(record, indent=1) + "\n")
  return path


def load(path: pathlib.Path = PATH) -> Golden:
  """The committed fixture; the tables' constructor re-checks the committed table hash."""
  record = json.loads(path.read_text())
  if record.get("format") != FORMAT:
    raise ValueError(f"{path}: format {record.get('format')!r}, expected {FORMAT!r}.")
  t = record["tables"]
  tables = tables_lib.CodingTables(
      lower=np.array(t["lower"], np.int32), upper=np.array(t["upper"], np.int32),
      probabilities=np.array(t["probabilities"], np.float64), model_hash=t["model_hash"],
      table_hash=t["table_hash"], tail_mass=float(t["tail_mass"]),
      context=np.array(t.get("context", []), np.int32))
  p = record["payload"]
  latents = np.array(p["latents"], np.int32).reshape(p["latents_shape"])
  vectors = np.array(p["vectors"], np.int32) if "vectors" in p else None
  refinement = np.array(p["refinement"], np.int32) if "refinement" in p else None
  payload = bitstream.ClipPayload(latents, np.array(p["frame_mask"], bool),
                                  np.array(p["block_masks"], bool), vectors,
                                  int(p.get("vector_count", 0)), refinement,
                                  int(p.get("refine_step", 0)), int(p.get("refine_frames", 0)))
  return Golden(tables=tables, payload=payload, stream=bytes.fromhex(record["stream_hex"]),
                version=int(record["bitstream_version"]))


if __name__ == "__main__":
  which = sys.argv[1:] or ["1", "3"]
  if "1" in which:
    print(f"wrote {regenerate()}")
  if "3" in which:
    print(f"wrote {regenerate(CONTEXT_PATH, conditional=True)}")
  if "skip" in which:
    print(f"wrote {regenerate(SKIP_PATH, conditional=True, skip=True)}")
  if "refine" in which:
    print(f"wrote {regenerate(REFINE_PATH, conditional=True, skip=True, refine=True)}")
