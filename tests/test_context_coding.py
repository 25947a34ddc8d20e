"""The conditional entropy model: its integer context rule, version-2 streams, and their
independence from the machine that codes them (stae_jax.models.context, ContextPrior, bitstream)."""

import os
import pathlib
import subprocess
import sys
import textwrap

from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest

from stae_jax.coding import bitstream
from stae_jax.coding import tables as tables_lib
from stae_jax.coding.bitstream import ClipPayload, DecodeError, decode, encode
from stae_jax.models import context as context_lib
from stae_jax.models.entropy import ContextPrior, FactorizedPrior, mask_bits

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import golden_stream  # pylint: disable=wrong-import-position

REPO = pathlib.Path(__file__).resolve().parent.parent
GRID, BLOCKS, THRESHOLDS = 4, 16, (1, 2, 4, 8)


@pytest.fixture(scope="module")
def prior():
  return ContextPrior(3, grid_width=GRID, thresholds=THRESHOLDS, init_scale=3.0, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def tables(prior):
  return tables_lib.freeze(prior)


def random_clip(rng, frames=6, kept_frames=3, blocks=BLOCKS, kept_blocks=5, inner=(1, 2),
                channels=3, spread=4, smooth=True):
  """A STAE payload whose latents are correlated across frames and neighbours when `smooth`."""
  frame_mask = np.zeros(frames, bool)
  frame_mask[rng.choice(frames, kept_frames, replace=False)] = True
  block_masks = np.zeros((kept_frames, blocks), bool)
  for row in block_masks:
    row[rng.choice(blocks, kept_blocks, replace=False)] = True
  base = rng.integers(-spread, spread + 1, (blocks,) + inner + (channels,))
  latents = np.zeros((kept_frames, kept_blocks) + inner + (channels,), np.int64)
  for f, row in enumerate(block_masks):
    latents[f] = ((base[np.flatnonzero(row)] if smooth else 0)
                  + rng.integers(-1, 2, (kept_blocks,) + inner + (channels,)))
  return ClipPayload(latents.astype(np.int32), frame_mask, block_masks)


def test_dense_rule_in_jax_equals_the_coders_pass_by_pass_rule():
  rng = np.random.default_rng(0)
  anchor = context_lib.anchors(BLOCKS, GRID)
  assert anchor.sum() == BLOCKS // 2 and anchor[0] and not anchor[1] and not anchor[GRID]
  channels, clip = 2, 3
  x_levels = 2 * clip + 1
  seen = set()
  for trial in range(20):
    t, positions = 6, 3
    l = positions * channels
    spread = 40 if trial % 2 else 2
    values = rng.integers(-spread, spread, (2, t, BLOCKS, l))
    kept = rng.random((2, t, BLOCKS)) < rng.uniform(0.2, 0.9)
    kept[:, rng.integers(t)] = False  # a frame that is not sent
    pred, ctx = (np.asarray(a) for a in context_lib.dense_context(
        values.astype(np.float32), kept, channels, GRID, THRESHOLDS, clip))
    seen |= set((np.unique(ctx[kept]) // x_levels).tolist())
    assert (pred[ctx < x_levels] == 0).all()  # no neighbour: coded as itself
    for b in range(2):
      canvas = context_lib.Canvas(1, BLOCKS, l, GRID, THRESHOLDS)
      for f in range(t):
        for first in (True, False):
          selected = kept[b, f] & (anchor == first)
          p, s = (a[0] for a in canvas.context(np.arange(BLOCKS)[None]))
          np.testing.assert_array_equal(p[selected], pred[b, f][selected])
          residual = (values[b, f] - p)[selected].reshape(-1, positions, channels)
          for c in range(channels):
            x = context_lib.channel_context(residual, c, clip)
            expected = s[selected].reshape(residual.shape)[..., c] * x_levels + x
            np.testing.assert_array_equal(
                expected, ctx[b, f][selected].reshape(residual.shape)[..., c])
          canvas.send(np.zeros(selected.sum(), int), np.flatnonzero(selected),
                      values[b, f][selected])
  assert seen == set(range(context_lib.num_spatial_contexts(THRESHOLDS)))  # every context occurs


def test_round_trip_is_exact_with_conditional_tables(tables):
  rng = np.random.default_rng(1)
  cases = [random_clip(rng) for _ in range(20)]
  cases += [random_clip(rng, kept_blocks=BLOCKS), random_clip(rng, kept_blocks=1),
            random_clip(rng, kept_blocks=0), random_clip(rng, kept_frames=0, kept_blocks=0),
            random_clip(rng, inner=(), smooth=False, spread=100)]
  extremes = random_clip(rng, kept_blocks=8)
  extremes.latents[0, 0, 0, 0, 0] = 2**31 - 1
  extremes.latents[1, 0, 0, 0, 0] = -2**31
  extremes.latents[2, 3, 0, 1, 2] = -77777
  cases.append(extremes)
  for payload in cases:
    data, stats = bitstream.encode_with_stats(payload, tables)
    assert data[0] == bitstream.MAGIC | bitstream.CONTEXT_VERSION
    assert decode(data, tables) == payload
  assert stats.escapes >= 3
  # Batches code each clip exactly as alone.
  batch = [random_clip(rng) for _ in range(3)]
  streams, stats = bitstream.encode_batch(np.stack([p.latents for p in batch]), tables,
                                          frame_masks=np.stack([p.frame_mask for p in batch]),
                                          block_masks=np.stack([p.block_masks for p in batch]))
  assert streams == [encode(p, tables) for p in batch]
  assert bitstream.decode_batch(streams, tables) == batch


def reference_encode(payload: ClipPayload, tables) -> bytes:
  """Version 3 as the format describes it, one clip, sub-pass by sub-pass (one coder call each,
  the contexts of one clip's canvas), each repeat flag a call under its own Bernoulli (the
  blocks' last values kept here in a dict, not read from the canvas): the oracle the batched
  encoder must equal."""
  import constriction  # pylint: disable=g-import-not-at-top
  k_f, k_s = payload.latents.shape[:2]
  channels = tables.channels
  positions = int(np.prod(payload.latents.shape[2:-1]))
  values = payload.latents.reshape(k_f, k_s, positions, channels).astype(np.int64)
  blocks = payload.block_masks.shape[1]
  canvas = context_lib.Canvas(1, blocks, positions * channels, GRID, THRESHOLDS)
  encoder = constriction.stream.queue.RangeEncoder()
  for masks in (payload.frame_mask[None], payload.block_masks):
    bits, p, undetermined = bitstream._mask_probabilities(masks)  # pylint: disable=protected-access
    if undetermined.any():
      encoder.encode(bits[undetermined], bitstream._BERNOULLI, p[undetermined])  # pylint: disable=protected-access
  anchor = context_lib.anchors(blocks, GRID)
  last, repeats, flags = {}, 0, 0  # block -> its values as last sent; the flags' counts
  for f in range(k_f):
    kept = np.flatnonzero(payload.block_masks[f])
    for first in (True, False):
      selected = np.flatnonzero(payload.block_masks[f] & (anchor == first))
      unflagged = []
      for block in selected.tolist():
        block_values = values[f, np.searchsorted(kept, block)]
        if block in last:
          repeat = bool(np.array_equal(block_values, last[block]))
          model = constriction.stream.model.Bernoulli((repeats + 1) / (flags + 2), perfect=False)
          encoder.encode(int(repeat), model)
          repeats, flags = repeats + repeat, flags + 1
          if repeat:
            continue
        unflagged.append(block)
        last[block] = block_values
      selected = np.array(unflagged, np.int64)
      if not selected.size:
        continue
      pred, spatial = (a[0].reshape(-1, positions, channels)
                       for a in canvas.context(selected[None]))
      sent = values[f, np.searchsorted(kept, selected)]
      residual = sent - pred
      for c in range(channels):
        x = context_lib.channel_context(residual, c, tables.channel_clip)
        row = (c * tables.num_contexts + spatial[..., c] * (2 * tables.channel_clip + 1)
               + x).reshape(-1)
        r = residual[..., c].reshape(-1)
        lower, sizes = tables.lower[row].astype(np.int64), tables.sizes[row]
        escaped = (r - lower < 0) | (r - lower >= sizes)
        if r.size:
          encoder.encode(np.where(escaped, sizes, r - lower).astype(np.int32),
                         bitstream._CATEGORICAL, tables.probabilities[row])  # pylint: disable=protected-access
        if escaped.any():
          head, head_sizes, chunks, chunk_sizes = bitstream._escape_fields(  # pylint: disable=protected-access
              r[escaped], lower[escaped], tables.upper[row][escaped].astype(np.int64))
          encoder.encode(head, bitstream._UNIFORM, head_sizes)  # pylint: disable=protected-access
          if chunks.size:
            encoder.encode(chunks, bitstream._UNIFORM, chunk_sizes)  # pylint: disable=protected-access
      canvas.send(np.zeros(selected.size, int), selected, sent.reshape(selected.size, -1))
  header = bitstream._check_payload(payload, tables)[1]  # pylint: disable=protected-access
  return bitstream._finish(encoder, header, tables)  # pylint: disable=protected-access


def batch_of(clips):
  return dict(latents=np.stack([p.latents for p in clips]),
              frame_masks=np.stack([p.frame_mask for p in clips]),
              block_masks=np.stack([p.block_masks for p in clips]))


def test_batched_coder_equals_clip_by_clip_coding(tables):
  """Clips of one shape whose masks differ (blocks per pass differ from clip to clip, a pass that
  some clips do not have), empty clips, escapes to the int32 limits, large masks: the batch codes
  each clip's bytes as the format's clip-by-clip oracle does, and decodes them back in lockstep."""
  rng = np.random.default_rng(6)
  shapes = [dict(kept_blocks=5), dict(kept_blocks=1), dict(kept_blocks=BLOCKS),
            dict(kept_blocks=0), dict(kept_frames=0, kept_blocks=0),
            dict(inner=(), smooth=False, spread=100), dict(kept_frames=6, kept_blocks=2),
            dict(blocks=300, kept_blocks=7)]  # masks too large for a table of bit models
  for shape in shapes:
    clips = [random_clip(rng, **shape) for _ in range(9)]
    if shape.get("kept_blocks") == 1:  # its one block an anchor in some clips, not in others
      for clip, block in zip(clips, (0, 1, 4, 5)):
        clip.block_masks[0] = np.arange(BLOCKS) == block
    if shape.get("spread") == 100:
      clips[2].latents[0, 0, 0] = 2**31 - 1
      clips[2].latents[1, 1, 2] = -2**31
      clips[5].latents[2, 0, 1] = -77777
    streams, stats = bitstream.encode_batch(tables=tables, **batch_of(clips))
    if shape.get("spread") == 100:
      assert stats["escapes"][[2, 5]].min() >= 1
    expected = [reference_encode(clip, tables) for clip in clips]
    assert streams == expected, shape
    assert streams == [encode(clip, tables) for clip in clips]
    assert stats["num_bytes"].tolist() == [len(s) for s in expected]
    assert bitstream.decode_batch(streams, tables) == clips
    assert [decode(s, tables) for s in streams] == clips
  # Streams of several shapes in one batch: each group in lockstep, in their order.
  mixed = [random_clip(rng, **shape) for shape in shapes for _ in range(2)]
  assert bitstream.decode_batch([encode(c, tables) for c in mixed], tables) == mixed


@pytest.mark.parametrize("init_scale, tail_mass", [(3.0, 1e-9), (0.3, 1e-2), (0.1, 0.1)])
def test_encoders_interval_models_code_the_bytes_of_the_full_rows(init_scale, tail_mass):
  """The encoder hands constriction each symbol's interval as a 3-mass model
  (`bitstream._interval_table`) instead of its row's W masses: every (row, symbol) of tables 132,
  7 and 4 symbols wide, in a random order, codes to the words the full rows code to, and the decoder
  (full rows) reads them back."""
  import constriction  # pylint: disable=g-import-not-at-top
  prior = ContextPrior(3, grid_width=GRID, thresholds=THRESHOLDS, init_scale=init_scale,
                       rngs=nnx.Rngs(1))
  tables = tables_lib.freeze(prior, tail_mass=tail_mass)
  rows, width = tables.probabilities.shape
  rng = np.random.default_rng(width)
  order = rng.permutation(np.concatenate([np.arange(rows * width),
                                          rng.integers(0, rows * width, rows * width)]))
  row, symbol = order // width, (order % width).astype(np.int32)
  full = constriction.stream.queue.RangeEncoder()
  full.encode(symbol, bitstream._CATEGORICAL, tables.probabilities[row])  # pylint: disable=protected-access
  masses, index = bitstream._interval_table(tables)  # pylint: disable=protected-access
  assert masses.shape == (rows * width, 3) and width >= 3
  fast = constriction.stream.queue.RangeEncoder()
  fast.encode(index[order], bitstream._CATEGORICAL, masses[order])  # pylint: disable=protected-access
  words = fast.get_compressed()
  assert np.array_equal(words, full.get_compressed())
  decoder = constriction.stream.queue.RangeDecoder(words)
  assert np.array_equal(decoder.decode(bitstream._CATEGORICAL, tables.probabilities[row]), symbol)  # pylint: disable=protected-access


def test_a_bad_stream_in_a_batch_fails_as_alone_and_disturbs_no_other(tables):
  """Corrupted streams (behind a valid CRC, so the range decoder reads them) among good ones:
  decode_batch raises what decoding them one by one raises first, or returns what it returns.
  At least 60 trials, more (up to 240) until three kinds of outcome were met: which kinds 60
  trials meet is chance (the rarer ones, a clip decoded or the range decoder's invalid data,
  come a few times in a hundred batches), and changes with every change of the streams' bits."""
  import struct, zlib  # pylint: disable=g-import-not-at-top,multiple-imports
  rng = np.random.default_rng(7)
  clips = [random_clip(rng, kept_blocks=int(k)) for k in rng.integers(1, BLOCKS, 8)]
  good = [encode(c, tables) for c in clips]
  outcomes = set()
  for trial in range(240):
    if trial >= 60 and len(outcomes) >= 3:
      break
    streams = list(good)
    for i in rng.choice(len(streams), int(rng.integers(1, 4)), replace=False):
      body = bytearray(streams[i][:-4])
      if trial % 3:  # a bit flipped, else a word appended (the range decoder alone took it)
        body[rng.integers(8, len(body))] ^= 1 << rng.integers(8)
      else:
        body += struct.pack("<I", int(rng.integers(2**32)))
      streams[i] = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body),
                                                               bitstream._crc_seed(tables)))  # pylint: disable=protected-access
    alone = []
    for s in streams:
      try:
        alone.append(decode(s, tables))
      except DecodeError as e:
        alone.append(e)
    first_error = next((a for a in alone if isinstance(a, DecodeError)), None)
    if first_error is None:
      assert bitstream.decode_batch(streams, tables) == alone
      outcomes.add("decoded")
    else:
      with pytest.raises(DecodeError) as raised:
        bitstream.decode_batch(streams, tables)
      assert str(raised.value) == str(first_error), trial
      outcomes.add(str(first_error).split(" (")[0])
  assert len(outcomes) >= 3, outcomes  # several kinds of failure were met


def test_stream_length_matches_the_conditional_estimate(prior, tables):
  """The ContextPrior's rate of the integer latents, plus the masks' log2 C(n, k), is the stream's
  length up to its header: training minimises what the coder spends. (These random latents
  rarely repeat a block exactly; where blocks do, version 3's repeat flags make the stream
  shorter than the rate, which does not model them.)"""
  rng = np.random.default_rng(2)
  for payload in [random_clip(rng, frames=8, kept_frames=4, kept_blocks=k) for k in (3, 10, 16)]:
    k_f, k_s = payload.latents.shape[:2]
    dense = np.zeros((1, k_f, BLOCKS) + payload.latents.shape[2:], np.float32)
    kept = payload.block_masks[None]
    dense[0][np.nonzero(payload.block_masks)] = payload.latents.reshape(
        (k_f * k_s,) + payload.latents.shape[2:])
    estimate = float(np.asarray(prior.bits(jnp.asarray(dense), rounded=jnp.asarray(dense),
                                           kept=jnp.asarray(kept)))[0][kept[0]].sum())
    estimate += mask_bits(8, k_f) + k_f * mask_bits(BLOCKS, k_s)
    data, stats = bitstream.encode_with_stats(payload, tables)
    assert abs(8 * (len(data) - stats.header_bytes) - estimate) <= 0.01 * estimate + 40, (
        len(data), estimate)


def test_golden_version_3_stream_decodes_and_re_encodes_byte_for_byte():
  """As the version-1 golden test (tests/test_coding.py), for conditional tables: the clip's
  repeat flags (one block repeats, two do not) are pinned with the rest."""
  golden = golden_stream.load(golden_stream.CONTEXT_PATH)
  assert golden.version == bitstream.CONTEXT_VERSION, (
      f"bitstream.CONTEXT_VERSION is {bitstream.CONTEXT_VERSION}, the golden stream was written by "
      f"version {golden.version}: after an intentional format change, write a fixture for the new "
      "version (tests/golden_stream.py)")
  assert golden.tables.conditional and golden.stream[0] == bitstream.MAGIC | golden.version
  assert decode(golden.stream, golden.tables) == golden.payload
  assert bitstream.decode_batch([golden.stream], golden.tables) == [golden.payload]
  assert _decode_exactly(golden.stream, golden.tables) == golden.payload
  data, stats = bitstream.encode_with_stats(golden.payload, golden.tables)
  assert data == golden.stream
  assert stats.escapes >= 3
  assert (stats.flags, stats.repeats) == (3, 1)
  assert golden_stream.make_tables(conditional=True).table_hash == golden.tables.table_hash
  # The two versions do not read each other's streams.
  v1 = golden_stream.load()
  with pytest.raises(DecodeError, match="other tables"):
    decode(golden.stream, v1.tables)
  # A stream claiming the other version with these tables' hash: refused by its version.
  with pytest.raises(DecodeError, match="does not match these tables"):
    decode(bytes([bitstream.MAGIC | bitstream.VERSION]) + golden.stream[1:], golden.tables)


def test_tables_spec_is_stored_hashed_and_checked(prior, tables):
  loaded = tables_lib.CodingTables.from_pytree(tables.to_pytree())
  assert loaded.table_hash == tables.table_hash and loaded.conditional
  assert (loaded.channels, loaded.num_contexts, loaded.grid_width, loaded.thresholds,
          loaded.channel_clip) == (3, 7 * 7, GRID, THRESHOLDS, 3)
  loaded.check_model(prior)
  other = ContextPrior(3, grid_width=GRID + 1, thresholds=THRESHOLDS, init_scale=3.0,
                       rngs=nnx.Rngs(0))  # same parameters, another grid: another model
  with pytest.raises(tables_lib.TablesError, match="another entropy model"):
    loaded.check_model(other)
  tree = tables.to_pytree()
  tree["context"] = tree["context"].copy()
  tree["context"][1] += 1
  with pytest.raises(tables_lib.TablesError, match="corrupt"):
    tables_lib.CodingTables.from_pytree(tree)
  tree["context"][3] = 5  # contexts that do not match the rows
  with pytest.raises(tables_lib.TablesError, match="does not match"):
    tables_lib.CodingTables.from_pytree(tree)
  # Factorized tables saved before the spec existed still load, and hash as they did.
  factorized = tables_lib.freeze(FactorizedPrior(3, init_scale=3.0, rngs=nnx.Rngs(0)))
  old = factorized.to_pytree()
  assert "context" not in old
  loaded = tables_lib.CodingTables.from_pytree(old)
  assert not loaded.conditional and loaded.table_hash == factorized.table_hash


def test_bad_payloads_and_hostile_headers(tables):
  rng = np.random.default_rng(3)
  with pytest.raises(ValueError, match="frame mask and block masks"):
    encode(ClipPayload(np.zeros((2, 3), np.int32)), tables)
  with pytest.raises(ValueError, match="grid width"):
    encode(random_clip(rng, blocks=10), tables)
  data = encode(random_clip(rng), tables)

  def with_crc(body):
    import struct, zlib  # pylint: disable=g-import-not-at-top,multiple-imports
    return body + struct.pack("<I", zlib.crc32(body, bitstream._crc_seed(tables)))  # pylint: disable=protected-access

  header = data[:4]
  varint = bitstream._varint  # pylint: disable=protected-access
  # Too many kept frames, a frame grid too large, blocks not filling the grid.
  for fields, message in (([2000, 1500, 16, 1, 1, 1], "kept frames"),
                          ([4, 2, 1 << 16, 1, 1 << 10, 1], "per frame grid"),
                          ([4, 2, 10, 3, 1, 2], "grid width")):
    flags = bytes([header[0], 3 | (2 << 2)])
    body = flags + header[2:4] + b"".join(varint(v) for v in fields) + bytes(8)
    with pytest.raises(DecodeError, match=message):
      decode(with_crc(body), tables)


def test_fuzzed_version_2_streams_raise_decode_error_quickly(tables):
  import time  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(4)
  streams = [encode(random_clip(rng, kept_blocks=k), tables) for k in (3, 8, 16)]
  slowest, decoded_anyway = 0.0, 0
  for i in range(3000):
    source = bytearray(streams[i % len(streams)])
    for _ in range(rng.integers(1, 4)):
      source[rng.integers(len(source))] ^= 1 << rng.integers(8)
    bad = bytes(source)
    if bad == streams[i % len(streams)]:  # two flips of one bit
      continue
    start = time.perf_counter()
    with pytest.raises(DecodeError):
      decode(bad, tables)
    if i % 2:  # behind a recomputed CRC the parser and range decoder are exercised too
      body = bad[:-4]
      import struct, zlib  # pylint: disable=g-import-not-at-top,multiple-imports
      fixed = body + struct.pack("<I", zlib.crc32(body, bitstream._crc_seed(tables)))  # pylint: disable=protected-access
      try:
        clip = decode(fixed, tables)
        decoded_anyway += 1
        assert clip.latents.dtype == np.int32
      except DecodeError:
        pass
    slowest = max(slowest, time.perf_counter() - start)
  assert slowest < 1.0, slowest
  assert decoded_anyway < 1500


def test_bits_are_identical_across_device_configurations(tmp_path):
  """Tables frozen and clips coded in a process with 8 fake CPU devices and bfloat16 latents in
  the rate are the bytes a 1-device float32 process freezes, decodes and re-encodes."""
  rng = np.random.default_rng(5)
  clips = [random_clip(rng, frames=8, kept_frames=4, kept_blocks=k) for k in (2, 9, 16)]
  np.savez(tmp_path / "clips.npz", **{f"{name}{i}": getattr(p, name) for i, p in enumerate(clips)
                                      for name in ("latents", "frame_mask", "block_masks")})
  script = textwrap.dedent(f"""
      import numpy as np, jax, jax.numpy as jnp
      from flax import nnx
      from stae_jax.coding import bitstream, tables as tables_lib
      from stae_jax.models.entropy import ContextPrior
      assert jax.device_count() == 8
      prior = ContextPrior(3, grid_width={GRID}, thresholds={THRESHOLDS}, init_scale=3.0,
                           rngs=nnx.Rngs(0))
      tables = tables_lib.freeze(prior)
      with np.load({str(tmp_path / 'clips.npz')!r}) as archive:
        data = dict(archive)
      out = {{}}
      for i in range(3):
        payload = bitstream.ClipPayload(data[f"latents{{i}}"], data[f"frame_mask{{i}}"],
                                        data[f"block_masks{{i}}"])
        out[f"stream{{i}}"] = np.frombuffer(bitstream.encode(payload, tables), np.uint8)
      # The training rate under bfloat16 latents, sharded over the 8 devices, picks the same rows.
      lat = data["latents0"].astype(np.float32)
      dense = np.zeros((8, 4, {BLOCKS}) + lat.shape[2:], np.float32)
      dense[:, np.nonzero(data["block_masks0"])[0], np.nonzero(data["block_masks0"])[1]] = \\
          lat.reshape((-1,) + lat.shape[2:])
      kept = np.broadcast_to(data["block_masks0"], (8, 4, {BLOCKS}))
      from stae_jax.training import mesh as mesh_lib
      sharding = mesh_lib.batch_sharding(mesh_lib.make_mesh(1))  # the trainer's data sharding
      bits = jax.jit(lambda y, k: prior.bits(y.astype(jnp.bfloat16), rounded=y, kept=k))(
          jax.device_put(dense, sharding), jax.device_put(kept, sharding))
      out["rate"] = np.asarray(bits)
      out["table_hash"] = np.frombuffer(bytes.fromhex(tables.table_hash), np.uint8)
      np.savez({str(tmp_path / 'out.npz')!r}, **out)
  """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  subprocess.run([sys.executable, "-c", script], check=True, timeout=300, env=env)
  prior = ContextPrior(3, grid_width=GRID, thresholds=THRESHOLDS, init_scale=3.0, rngs=nnx.Rngs(0))
  tables = tables_lib.freeze(prior)
  with np.load(tmp_path / "out.npz") as archive:
    out = dict(archive)
  assert bytes(out["table_hash"]).hex() == tables.table_hash
  for i, payload in enumerate(clips):
    stream = out[f"stream{i}"].tobytes()
    assert decode(stream, tables) == payload
    assert encode(payload, tables) == stream
  lat = clips[0].latents.astype(np.float32)
  dense = np.zeros((1, 4, BLOCKS) + lat.shape[2:], np.float32)
  dense[0][np.nonzero(clips[0].block_masks)] = lat.reshape((-1,) + lat.shape[2:])
  here = np.asarray(prior.bits(jnp.asarray(dense), rounded=jnp.asarray(dense),
                               kept=jnp.asarray(clips[0].block_masks[None])))
  kept = clips[0].block_masks
  np.testing.assert_allclose(out["rate"][3][kept], here[0][kept], rtol=1e-5)


# ----------------------------------------------------------------------------- repeat flags


def _decode_exactly(data: bytes, tables) -> ClipPayload:
  """`decode` with `_ExactDecoder` only (the Python reader of the flags), not the compiled one."""
  results, errors, _ = bitstream._decode_round([(0, data)], tables, bitstream.MAX_LATENT_SYMBOLS,  # pylint: disable=protected-access
                                               exact=True)
  if errors:
    raise errors[0]
  return results[0]


def repeating_clip(rng, repeat: float, nudge: float, **shape) -> ClipPayload:
  """`random_clip` whose kept blocks, where sent before, take their last values with probability
  `repeat` (a repeat flag of 1), a `nudge` share of those then one unit off in one value (not a
  repeat: flag 0, and residuals close to the canvas)."""
  clip = random_clip(rng, **shape)
  latents, masks = clip.latents, clip.block_masks
  for f in range(1, latents.shape[0]):
    for j, block in enumerate(np.flatnonzero(masks[f]).tolist()):
      earlier = [g for g in range(f) if masks[g, block]]
      if earlier and rng.random() < repeat:
        g = earlier[-1]
        latents[f, j] = latents[g, int(np.searchsorted(np.flatnonzero(masks[g]), block))]
        if rng.random() < nudge:
          latents[f, j].flat[rng.integers(latents[f, j].size)] += int(rng.choice([-1, 1]))
  return clip


def test_repeat_flags_round_trip_through_every_coder_and_decoder(tables, monkeypatch):
  """Blocks that repeat their last values exactly (flagged, no residuals) among blocks one unit
  off (flag 0) and blocks sent for the first time (no flag): the batched encoder writes the
  format oracle's bytes (`reference_encode`), one clip or a batch, with the flags as intervals
  among the residuals or in calls of their own, and the compiled batch decoder, `decode` and the
  exact decoder read the clips back."""
  rng = np.random.default_rng(8)
  shapes = [dict(frames=8, kept_frames=5, kept_blocks=9), dict(inner=(), kept_blocks=12),
            dict(kept_blocks=BLOCKS), dict(kept_blocks=1)]
  seen = np.zeros(2, np.int64)
  for shape in shapes:
    clips = [repeating_clip(rng, 0.6, 0.3, **shape) for _ in range(5)]
    clips.append(repeating_clip(rng, 1.0, 0.0, **shape))  # every block sent before repeats
    streams, stats = bitstream.encode_batch(tables=tables, **batch_of(clips))
    assert streams == [reference_encode(clip, tables) for clip in clips], shape
    with monkeypatch.context() as patch:  # the flags in calls of their own (wide clips' way)
      patch.setattr(bitstream, "_MAX_INLINE_FLAGS", 0)
      assert bitstream.encode_batch(tables=tables, **batch_of(clips))[0] == streams
    alone = [bitstream.encode_with_stats(clip, tables) for clip in clips]
    assert streams == [data for data, _ in alone]
    assert stats["flags"].tolist() == [s.flags for _, s in alone]
    assert stats["repeats"].tolist() == [s.repeats for _, s in alone]
    seen += [stats["repeats"].sum(), (stats["flags"] - stats["repeats"]).sum()]
    assert bitstream.decode_batch(streams, tables) == clips
    assert [decode(s, tables) for s in streams] == clips
    assert [_decode_exactly(s, tables) for s in streams] == clips
  assert seen.min() >= 20, seen  # both flag values coded, many times


def test_repeats_cost_their_flags_and_nothing_else(tables):
  """A clip whose later kept frames send the first frame's blocks again, unchanged: its stream
  spends on them what their flags' information content says (`CodingStats.flag_bits`), plus the
  masks of the frames and the coder's rounding to whole words; one value of each repeated block
  one or two units off its last value (not a repeat) costs far more."""
  rng = np.random.default_rng(9)
  first = random_clip(rng, frames=8, kept_frames=1, kept_blocks=10, inner=(2, 2), spread=20)
  k_f = 6
  frame_mask = np.zeros(8, bool)
  frame_mask[:k_f] = True
  block_masks = np.repeat(first.block_masks, k_f, axis=0)
  repeated = ClipPayload(np.repeat(first.latents, k_f, axis=0), frame_mask, block_masks)
  one = ClipPayload(first.latents, np.arange(8) == 0, first.block_masks)
  data_one, stats_one = bitstream.encode_with_stats(one, tables)
  data, stats = bitstream.encode_with_stats(repeated, tables)
  assert decode(data, tables) == repeated
  assert stats.flags == stats.repeats == (k_f - 1) * 10
  masks_more = mask_bits(8, k_f) - mask_bits(8, 1) + (k_f - 1) * mask_bits(BLOCKS, 10)
  payload_bits = lambda d, s: 8 * (len(d) - s.header_bytes)
  assert payload_bits(data, stats) <= payload_bits(data_one, stats_one) + stats.flag_bits + \
      masks_more + 64, (payload_bits(data, stats), payload_bits(data_one, stats_one),
                        stats.flag_bits, masks_more)
  assert stats.flag_bits < 2 * np.log2(stats.flags + 1)  # all-repeat flags are nearly free
  nudged = ClipPayload(repeated.latents.copy(), frame_mask, block_masks)
  nudged.latents[1:, :, 0, 0, 0] += 1 + (np.arange(k_f - 1) % 2)[:, None]  # each off its last
  data_nudged, stats_nudged = bitstream.encode_with_stats(nudged, tables)
  assert stats_nudged.repeats == 0 and decode(data_nudged, tables) == nudged
  assert len(data_nudged) > len(data) + 40


def test_version_2_streams_are_refused_by_their_version():
  """The retired version-2 fixture's stream (conditional tables without repeat flags), with its
  own tables: refused, the message naming the version."""
  retired = golden_stream.load(golden_stream.RETIRED_CONTEXT_PATH)
  assert retired.version == 2 and retired.stream[0] == bitstream.MAGIC | 2
  for decoder in (decode, lambda data, tables: bitstream.decode_batch([data], tables)[0]):
    with pytest.raises(DecodeError, match="format version 2 .*no longer read"):
      decoder(retired.stream, retired.tables)
  with pytest.raises(DecodeError, match="format version 2"):
    bitstream.read_header(retired.stream, retired.tables)
