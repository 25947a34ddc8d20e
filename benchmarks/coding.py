r"""Entropy coding speed and size: per-clip encode/decode latency, throughput, header bytes.

  python benchmarks/coding.py [--repeats=30] [--batch=32]

For the synthetic (16x64x64, 8x8 blocks -> 1x1x4 latents) and HMDB51 (16x224x224, 16x16 blocks ->
4x4x8 latents) shapes at several keep ratios, latents are sampled from a FactorizedPrior's frozen
tables (a random prior at init_scale=2: ~3 bits/latent, the order of a trained one; the coder's
speed hardly depends on the distribution). Reported: median per-clip encode and decode time (one
clip at a time, as the device does), encode_batch throughput, latent symbols/s, bytes per clip,
header bytes, and the gap to the ideal rate under the frozen tables. Then the STAE encoder's
forward pass (jitted, batch 1, CPU) at the same shapes, so the two can be compared on the same
machine in the same run.
"""

import statistics
import sys
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

import stae_jax

sys.path.insert(0, str(stae_jax.REPO_ROOT))  # configs/ lives at the repository root, not in the package

from configs import hmdb51 as hmdb51_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import synthetic as synthetic_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from stae_jax.coding import bitstream  # pylint: disable=g-import-not-at-top,wrong-import-position
from stae_jax.coding import tables as tables_lib  # pylint: disable=wrong-import-position
from stae_jax.models.entropy import FactorizedPrior, mask_bits  # pylint: disable=wrong-import-position
from stae_jax.models.stae import STAE  # pylint: disable=wrong-import-position

_REPEATS = flags.DEFINE_integer("repeats", 30, "timed repetitions per measurement (median reported)")
_BATCH = flags.DEFINE_integer("batch", 32, "clips per encode_batch call")

KEEP_RATIOS = ((0.25, 0.25), (0.5, 0.5), (1.0, 0.5))


def sample_clip(rng, tables, frames, blocks, k_f, k_s, latent_shape):
  frame_mask = np.zeros(frames, bool)
  frame_mask[rng.choice(frames, k_f, replace=False)] = True
  block_masks = np.zeros((k_f, blocks), bool)
  for row in block_masks:
    row[rng.choice(blocks, k_s, replace=False)] = True
  shape = (k_f, k_s) + tuple(latent_shape[:2])
  latents = np.empty(shape + (tables.channels,), np.int32)
  for c in range(tables.channels):
    p = tables.probabilities[c, :tables.sizes[c]]
    latents[..., c] = rng.choice(np.arange(tables.lower[c], tables.upper[c] + 1), size=shape,
                                 p=p / p.sum())
  return bitstream.ClipPayload(latents, frame_mask, block_masks)


def median_seconds(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def stae_section(config):
  """The keyword arguments of STAE in the config's STAE system (`config.systems.stae`)."""
  return config.systems.stae.model.stae


def bench_coding(name, config, repeats, batch):
  stae = stae_section(config)
  size, frames, p = config.data.resolution, config.data.frames, stae.block_size
  blocks = (size // p) ** 2
  # The latent shape as the model defines it (the constructor holds the defaults); shapes only.
  latent_shape = nnx.eval_shape(lambda: STAE(**stae, rngs=nnx.Rngs(0))).latent_shape()
  prior = FactorizedPrior(latent_shape[-1], rngs=nnx.Rngs(0), init_scale=2.0)
  tables = tables_lib.freeze(prior)
  rng = np.random.default_rng(0)
  print(f"\n== {name}: clip {frames}x{size}x{size}, {blocks} blocks of {p}x{p}, latent "
        f"{latent_shape} per block ==")
  print(f"{'keep (f, s)':>12} {'latents':>8} {'bytes':>7} {'hdr':>4} {'gap':>6} {'enc ms':>7} "
        f"{'dec ms':>7} {'enc Msym/s':>10} {'dec Msym/s':>10} {'batch enc clips/s':>17}")
  results = {}
  for frame_keep, block_keep in KEEP_RATIOS:
    k_f, k_s = round(frame_keep * frames), round(block_keep * blocks)
    clips = [sample_clip(rng, tables, frames, blocks, k_f, k_s, latent_shape) for _ in range(batch)]
    data, stats = bitstream.encode_with_stats(clips[0], tables)
    # The ideal rate under the frozen tables: latents' information content plus log2 C(n, k) per
    # mask, the same figure training minimises.
    estimated = (float(tables.information_content(clips[0].latents).sum())
                 + mask_bits(frames, k_f) + k_f * mask_bits(blocks, k_s))
    gap = 8 * len(data) / estimated - 1
    encode_s = median_seconds(lambda: bitstream.encode(clips[0], tables), repeats)
    decode_s = median_seconds(lambda: bitstream.decode(data, tables), repeats)
    latents = np.stack([c.latents for c in clips])
    frame_masks = np.stack([c.frame_mask for c in clips])
    block_masks = np.stack([c.block_masks for c in clips])
    batch_s = median_seconds(lambda: bitstream.encode_batch(
        latents, tables, frame_masks=frame_masks, block_masks=block_masks), max(3, repeats // 5))
    symbols = stats.latent_symbols
    print(f"{f'({frame_keep}, {block_keep})':>12} {symbols:>8} {len(data):>7} "
          f"{stats.header_bytes:>4} {100 * gap:>5.2f}% {1e3 * encode_s:>7.3f} "
          f"{1e3 * decode_s:>7.3f} {symbols / encode_s / 1e6:>10.2f} {symbols / decode_s / 1e6:>10.2f} "
          f"{batch / batch_s:>17.0f}")
    results[(frame_keep, block_keep)] = (encode_s, decode_s)
  return results


def bench_stae_encoder(name, config, repeats, coding):
  """The device's work: attention scores, top-k, gather, analysis transform, rounding."""
  try:
    from stae_jax.models import stae as stae_lib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    print(f"\n{name}: stae_jax/models/stae.py not importable ({e}); STAE encoder not timed")
    return
  model = stae_lib.STAE(**stae_section(config), rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  size, frames, p = config.data.resolution, config.data.frames, model.block_size
  video = np.random.default_rng(1).integers(0, 256, (1, frames, size, size, 3), np.uint8)
  print(f"\n== {name}: STAE encoder forward (jit, batch 1, {model.dtype}) vs coding ==")
  for frame_keep, block_keep in KEEP_RATIOS:
    k_f, k_s = model.keep_counts(frames, (size // p) ** 2, frame_keep, block_keep)

    @jax.jit
    def encoder(state, video, k_f=k_f, k_s=k_s):
      m = nnx.merge(graphdef, state)
      x = stae_lib.normalize_video(video, m.dtype)
      _, frame_index = stae_lib.top_k_mask(m.frame_scores(x, None, k_f), k_f, training=False)
      scores = m.block_scores(x, frame_index, None, (size // p) ** 2, k_s)
      _, block_index = stae_lib.top_k_mask(scores, k_s, training=False)
      blocks = stae_lib.blockify(video, p)
      kept = blocks[jnp.arange(1)[:, None, None], frame_index[:, :, None], block_index]
      return jnp.round(m.analyse(kept)).astype(jnp.int32)

    @jax.jit
    def full_forward(state, video, frame_keep=frame_keep, block_keep=block_keep):
      out = nnx.merge(graphdef, state)(video, frame_keep=frame_keep, block_keep=block_keep,
                                       training=False)
      return out["latents"]

    jax.block_until_ready(encoder(state, video))
    jax.block_until_ready(full_forward(state, video))
    encoder_s = median_seconds(lambda: jax.block_until_ready(encoder(state, video)), repeats)
    forward_s = median_seconds(lambda: jax.block_until_ready(full_forward(state, video)), repeats)
    encode_s, decode_s = coding[(frame_keep, block_keep)]
    print(f"keep ({frame_keep}, {block_keep}): STAE encoder {1e3 * encoder_s:.2f} ms, full STAE "
          f"forward (incl. synthesis) {1e3 * forward_s:.2f} ms; entropy encode {1e3 * encode_s:.3f} "
          f"ms = {100 * encode_s / encoder_s:.1f}% of the encoder, decode {1e3 * decode_s:.3f} ms")


def main(argv):
  del argv
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, constriction range coder")
  for name, module in (("synthetic", synthetic_config), ("hmdb51", hmdb51_config)):
    config = module.get_config()
    coding = bench_coding(name, config, _REPEATS.value, _BATCH.value)
    bench_stae_encoder(name, config, _REPEATS.value, coding)


if __name__ == "__main__":
  app.run(main)
