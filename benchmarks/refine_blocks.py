r"""A quality dimension measured before it is built: each sent block's code refined by a quantised
DCT of what it misses, on top of the skip mode (issue 28, items 1 and 3).

  python benchmarks/refine_blocks.py --workdir=/tmp/mj [--tag=stae] [--clips=300]
      [--steps=0,32,16,8] [--frames=first,all] [--lam=1000[,250,...]]
      [--points=keep=0.5x1,keep=1x1]

Why: with skipping, the top point's copies start from the block code's picture, an 8x8 mosaic of
8 numbers a block (22 dB), and a finer block code (2x2 latents a block) bought no accuracy at 30%
more bits (BENCHMARKS.md "A skip mode, measured before it is built"). H.264 spends its bits the
other way round: a sharp I-frame, cheap P-blocks copied from it. This simulates that on a trained
STAE, with no retraining, on validation clips, at the points that send whole frames:

- every block of the kept frames is coded as today (the block code's pixels, "intra");
- `--frames=first`: the first kept frame's blocks, `all`: every kept frame's blocks, get the
  codec's refinement (`stae_jax.models.refine`): the residual (original - intra) in an
  orthonormal luma/chroma basis, each 8x8 block and channel through the orthonormal 2D DCT-II,
  quantised to integers at step `q * (1 + (u+v)/4)` (luma; chroma at twice the step; u, v the
  frequencies), added back (clipped to 0..255);
- then the device's closed loop of `stae_jax.models.skip.choose_skips` at each `--lam`, deciding
  between each block's refined code (its latent bits + an estimate of its residual bits) and a
  copy of the previous kept frame's reconstruction (refinements included), as the codec does;
- the receiver's clip rebuilt as evaluate.py does and scored by the frozen reference classifier.

Bits per clip, estimated: the latents, flags and vectors as `skip_blocks.py` counts them (the
codec's exact adaptive code lengths), plus the residuals of the blocks sent and refined, coded per
clip as the bitstream codes them (`refine.bits`: the exact length of its adaptive sections'
codes; bitstream.py "Refined blocks"). Intervals: 95% bootstrap of the top-1, and of each row's
top-1 minus the unrefined skip mode's over the same clips (paired). Nothing here is trained.
"""

import argparse
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import skip_blocks  # pylint: disable=wrong-import-position
from stae_jax.evaluation import curves  # pylint: disable=wrong-import-position
from stae_jax.models import refine as refine_lib  # pylint: disable=wrong-import-position
from stae_jax.models import skip as skip_lib  # pylint: disable=wrong-import-position
from stae_jax.systems import stae as stae_system  # pylint: disable=wrong-import-position

P = refine_lib.SIZE


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--tag", default="stae")
  parser.add_argument("--clips", type=int, default=300)
  parser.add_argument("--steps", default="0,32,16,8", help="refinement steps; 0: none")
  parser.add_argument("--frames", default="first,all")
  parser.add_argument("--lam", default="1000",
                      help="skip lambdas (comma-separated): each refined row at each")
  parser.add_argument("--search", type=int, default=4)
  parser.add_argument("--points", default="keep=0.5x1,keep=1x1")
  parser.add_argument("--batch", type=int, default=32)
  args = parser.parse_args()
  start = time.time()
  workdir = pathlib.Path(args.workdir).absolute()
  codec, stae, prior, decoder, classify, videos, labels = skip_blocks.set_up(
      workdir, args.tag, args.clips)
  t, height, width, _ = codec.clip_shape
  n = (height // P) * (width // P)
  windows = skip_lib.vector_count(args.search)
  key = jax.random.fold_in(jax.random.PRNGKey(stae_system.SELECTION_KEY), 0)

  def run(video, lam, frame_keep, block_keep, q, which):
    sent, received, pixel_mask, intra, original = skip_blocks.kept_frames(
        stae, video, frame_keep, block_keep, key, t)
    frame_index, block_index, latents = sent["frame_index"], sent["block_index"], sent["latents"]
    b, k = frame_index.shape
    batch = jnp.arange(b)[:, None]
    every = skip_blocks.latent_bits(prior, latents, block_index, n, jnp.ones((b, k, n), bool))
    frames = jnp.broadcast_to(jnp.arange(k)[None, :, None] < (1 if which == "first" else k),
                              (b, k, n))
    levels = jnp.zeros((b, k, n, 3, P * P), jnp.int32)
    if q > 0:  # the codec's refinement (stae_jax.systems.stae.code_blocks)
      levels = jnp.where(frames[..., None, None], refine_lib.analyse(intra, original, q), 0)
      intra = refine_lib.apply(intra, levels, q)
      every = every + jnp.where(frames, refine_lib.decision_bits(levels), 0.0)
    reconstruction, skip, vector = skip_lib.choose_skips(
        intra, original, every, lam, block_size=P, search=args.search)
    levels = jnp.where(skip[..., None, None], 0, levels)
    residual = refine_lib.bits(levels, frames & ~skip) if q > 0 else jnp.zeros((b,))
    counts = jnp.zeros((b, windows), jnp.int32).at[
        batch[:, :, None], vector].add(skip.astype(jnp.int32))
    bits = skip_blocks.latent_bits(prior, latents, block_index, n, ~skip).sum(axis=(1, 2))
    received = jnp.zeros(video.shape, jnp.float32).at[batch, frame_index].set(reconstruction)
    clip = stae_system.rebuild(decoder, received, pixel_mask, complete=k == t)
    error = jnp.square(reconstruction - original).mean(axis=(1, 2, 3, 4))
    return clip, bits, skip.sum(axis=(1, 2)), counts, error, residual

  run = jax.jit(run, static_argnums=(2, 3, 4, 5))
  reference = np.concatenate([np.argmax(classify(videos[i:i + args.batch]), -1)
                              for i in range(0, len(videos), args.batch)]) == labels
  low, high = curves.top1_interval(reference)
  print(f"{args.tag} of {workdir}: {len(videos)} validation clips (reference "
        f"{100 * reference.mean():.1f}% [{100 * low:.1f}, {100 * high:.1f}]), skip lambda "
        f"{args.lam}, search +-{args.search} px; estimated bits (module docstring)", flush=True)
  print("| point | refined | step | lambda | top-1 | vs unrefined (paired) | bits per clip "
        "(latents + "
        "flags + vectors + residuals) | skipped | PSNR kept frames dB |")
  print("|---|---|---|---|---|---|---|---|---|")
  wanted = args.points.split(",")
  steps = [float(s) for s in args.steps.split(",")]
  for point in [pt for pt in codec.points if pt.name in wanted]:
    k = codec._keep[point][0]  # pylint: disable=protected-access
    base = None
    lams = [float(x) for x in args.lam.split(",")]
    rows = [(0.0, "-", lams[0])] + [(q, which, lam) for q in steps if q > 0
                                    for which in args.frames.split(",") for lam in lams]
    for q, which, lam in rows:
      correct, bits, errors, skipped = [], [], [], []
      for i in range(0, len(videos), args.batch):
        clip, latent, ones, counts, error, residual = jax.device_get(run(
            jnp.asarray(videos[i:i + args.batch]), jnp.float32(lam),
            float(point["frame_keep"]), float(point["block_keep"]), q, which))
        correct.append(np.argmax(classify(np.asarray(clip)), -1) == labels[i:i + args.batch])
        flags = np.full(len(latent), (k - 1) * n)
        bits.append(np.stack([
            latent, skip_blocks.adaptive_flag_bits(flags, ones),
            skip_blocks.adaptive_symbol_bits(counts.astype(np.float64))
            + math.log2(math.comb(t, k)),
            residual], axis=1))
        errors.append(error)
        skipped.append(ones / (k * n))
      correct = np.concatenate(correct).astype(np.float64)
      bits = np.concatenate(bits)
      low, high = curves.top1_interval(correct)
      if base is None:
        base, paired = correct, "-"
      else:
        paired = skip_blocks.paired_difference(correct, base)
      psnr = 10 * np.log10(255.0 ** 2 / np.concatenate(errors).mean())
      print(f"| {point.name} | {which} | {q:g} | {lam:g} | {100 * correct.mean():.1f}% "
            f"[{100 * low:.1f}, {100 * high:.1f}] | {paired} | {bits.sum(axis=1).mean():,.0f} "
            f"({' + '.join(f'{x:,.0f}' for x in bits.mean(axis=0))}) | "
            f"{100 * np.concatenate(skipped).mean():.1f}% | {psnr:.2f} |", flush=True)
  print(f"wall {time.time() - start:.0f} s")


if __name__ == "__main__":
  main()
