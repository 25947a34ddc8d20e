r"""Where STAE's bits go in time: what blocks that repeat, moved or are new cost (issue 28).

  python benchmarks/temporal_bits.py --workdir=/tmp/mj [--tag=stae] [--clips=128]
      [--points=keep=1x1,keep=1x0.5] [--tolerance=6]

Before adding temporal prediction, measure what it could save. A trained STAE system's device half
encodes validation clips; each sent block of a kept frame after the first is compared, in the
original pixels, with the previous kept frame:

  static   the co-located block of the previous kept frame matches it (mean absolute difference
           <= --tolerance grey levels)
  moved    it does not, but the previous kept frame shifted by up to --search pixels does (the
           block's content moved: what motion-compensated prediction would predict)
  new      neither (appearing content, occlusion, changing texture)
  first    blocks of the first kept frame (nothing earlier to predict from)

and, across the classes, "exact repeat": the blocks whose integer latents equal those the block
was last sent with (what a lossless "as last sent" skip flag would replace). Each block is
charged its information content under the system's own frozen entropy model (the learned
rate: for the conditional model, each latent under its context, so a block that repeats the
canvas is already cheap where the context predicts it). Prints per point and class: share of the
blocks, share of the bits, mean bits per block. If moved blocks are many and cost as much as new
ones, motion compensation would pay; if static blocks are cheap already, the conditional coder's
canvas has taken that redundancy.
"""

import argparse
import pathlib
import sys

from flax import nnx
import jax.numpy as jnp
import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from stae_jax.data import pipeline  # pylint: disable=wrong-import-position
from stae_jax.models.entropy import ContextPrior  # pylint: disable=wrong-import-position
from stae_jax.models.stae import blockify  # pylint: disable=wrong-import-position
from stae_jax.systems import stae as stae_system  # pylint: disable=wrong-import-position
from stae_jax.systems import loading  # pylint: disable=wrong-import-position

CLASSES = ("first", "static", "moved", "new")


def clips_of(data_config, split: str, limit: int) -> np.ndarray:
  out, count = [], 0
  for batch in pipeline.make_loader(data_config, split, seed=0, train=False, num_epochs=1):
    out.append(batch["video"][batch["mask"]])
    count += len(out[-1])
    if count >= limit:
      break
  return np.concatenate(out)[:limit]


def block_bits(prior, latents, block_index, blocks: int) -> np.ndarray:
  """Bits of each sent block [B,k_f,k_s] under the system's entropy model (the learned rate)."""
  dense, kept = stae_system._in_place(  # pylint: disable=protected-access
      jnp.asarray(latents), jnp.asarray(block_index), blocks)
  if isinstance(prior, ContextPrior):
    bits = prior.bits(dense, rounded=dense, kept=kept)
  else:
    bits = prior.bits(dense)
  per_block = np.asarray(bits.sum(axis=(-3, -2, -1)))  # [B,k_f,N]
  return np.take_along_axis(per_block, np.asarray(block_index), axis=2)


def classify_blocks(clips, frame_index, block_index, p: int, tolerance: float,
                    search: int) -> np.ndarray:
  """Class index (CLASSES) of each sent block [B,k_f,k_s], from the original pixels."""
  b, k_f, k_s = block_index.shape
  t, h, w = clips.shape[1:4]
  grid = w // p
  out = np.zeros((b, k_f, k_s), np.int32)
  video = clips.astype(np.float32)
  for i in range(b):
    for j in range(1, k_f):
      now, before = video[i, frame_index[i, j]], video[i, frame_index[i, j - 1]]
      padded = np.pad(before, ((search, search), (search, search), (0, 0)), mode="edge")
      for m, n in enumerate(block_index[i, j]):
        y, x = (n // grid) * p, (n % grid) * p
        block = now[y:y + p, x:x + p]
        errors = {}
        for dy in range(-search, search + 1):
          for dx in range(-search, search + 1):
            ref = padded[y + search + dy:y + search + dy + p, x + search + dx:x + search + dx + p]
            errors[(dy, dx)] = float(np.abs(block - ref).mean())
        static = errors.pop((0, 0))
        if static <= tolerance:
          out[i, j, m] = 1
        elif min(errors.values()) <= tolerance:
          out[i, j, m] = 2
        else:
          out[i, j, m] = 3
  return out


def repeated_blocks(latents, block_index, blocks: int) -> np.ndarray:
  """(repeat, sent_before), bool [B,k_f,k_s] each: whether the block's integer latents equal,
  value for value, those it was last sent with (the conditional coder's canvas at that block),
  and whether it was sent before at all (the blocks a lossless "as last sent" flag would be coded
  for; the repeats are what it would replace)."""
  b, k_f, k_s = block_index.shape
  flat = latents.reshape(b, k_f, k_s, -1)
  out, before = np.zeros((b, k_f, k_s), bool), np.zeros((b, k_f, k_s), bool)
  for i in range(b):
    canvas, sent = np.zeros((blocks, flat.shape[-1]), flat.dtype), np.zeros(blocks, bool)
    for j in range(k_f):
      where = block_index[i, j]
      before[i, j] = sent[where]
      out[i, j] = sent[where] & (canvas[where] == flat[i, j]).all(axis=-1)
      canvas[where], sent[where] = flat[i, j], True
  return out, before


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--tag", default="stae")
  parser.add_argument("--clips", type=int, default=128)
  parser.add_argument("--points", default="", help="point names (default: every point)")
  parser.add_argument("--tolerance", type=float, default=6.0)
  parser.add_argument("--search", type=int, default=4)
  args = parser.parse_args()
  trained = loading.load_system(args.workdir, args.tag)
  codec = stae_system.codec(trained)
  prior = stae_system.entropy_model(nnx.merge(trained.graphdef, trained.params, trained.rest))
  clips = clips_of(trained.data, "validation", args.clips)
  wanted = [name for name in args.points.split(",") if name]
  points = [p for p in codec.points if not wanted or p.name in wanted]
  t, height, width, _ = codec.clip_shape
  blocks = (height // codec.block_size) * (width // codec.block_size)
  print(f"{len(clips)} validation clips; tolerance {args.tolerance} grey levels, search "
        f"+-{args.search} px; bits: the system's entropy model (learned rate, masks excluded)")
  summary = []
  print("| point | class | blocks % | bits % | bits per block |")
  print("|---|---|---|---|---|")
  for point in points:
    parts = [codec.encode(clips[i:i + 32], point) for i in range(0, len(clips), 32)]
    sent = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    bits = block_bits(prior, sent["latents"], sent["block_index"], blocks)
    classes = classify_blocks(clips, sent["frame_index"], sent["block_index"], codec.block_size,
                              args.tolerance, args.search)
    for c, name in enumerate(CLASSES):
      chosen = classes == c
      if not chosen.any():
        continue
      print(f"| {point.name} | {name} | {100 * chosen.mean():.1f} | "
            f"{100 * bits[chosen].sum() / bits.sum():.1f} | {bits[chosen].mean():.1f} |",
            flush=True)
    repeats, candidates = repeated_blocks(np.asarray(sent["latents"]),
                                          np.asarray(sent["block_index"]), blocks)
    if repeats.any():
      # A flag per block sent before, at the entropy of the repeat share among them (what an
      # adaptive binary code approaches): what the repeats' latents would be traded for.
      share = repeats.sum() / candidates.sum()
      flag_bits = candidates.sum() * -(share * np.log2(share) + (1 - share) * np.log2(1 - share))
      print(f"| {point.name} | exact repeat (any class: latents as last sent) | "
            f"{100 * repeats.mean():.1f} | {100 * bits[repeats].sum() / bits.sum():.1f} | "
            f"{bits[repeats].mean():.1f} |", flush=True)
      summary.append(f"{point.name}: flags {flag_bits / len(clips):,.0f} bits per clip for "
                     f"{bits[repeats].sum() / len(clips):,.0f} bits of repeated latents, net "
                     f"{100 * (bits[repeats].sum() - flag_bits) / bits.sum():.1f}% of the "
                     f"point's latent bits ({bits.sum() / len(clips):,.0f} per clip)")
  for line in summary:
    print(line)


if __name__ == "__main__":
  main()
