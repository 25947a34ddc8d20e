r"""Where a trained STAE loses accuracy: frame selection, the block code, or the decoder.

  python benchmarks/stae_breakdown.py --workdir=runs/synthetic [--system=stae] [--keep=0.125,1]

Why: "STAE loses 6 points at 500x" does not say what to fix. This feeds the system's own (jointly
trained) classifier clips that differ from the clean clip in one way at a time, on the first
`--clips` test clips at one operating point:

  clean               the clip itself
  stae                the full system (selection, block code, decoder), as evaluate.py runs it
  exact + decoder     the frames and blocks STAE selects, with their exact pixels, through the
                      trained decoder (selection and decoder, no coding loss)
  exact + fill        the same through the plain temporal interpolation (`temporal_fill`) only
  code, all frames    every block of every frame through the block code (coding loss alone)
  code, ends + fill   the block code on frames 0 and T-1 only, interpolated (a fixed selection)

PSNR (dB, 0..255) is against the clean clip. Differences of a few points are noise on 256 clips.
"""

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from flax import nnx  # pylint: disable=wrong-import-position
from stae_jax.data import pipeline  # pylint: disable=wrong-import-position
from stae_jax.models.decoder import temporal_fill  # pylint: disable=wrong-import-position
from stae_jax.models.entropy import quantize  # pylint: disable=wrong-import-position
from stae_jax.models.stae import STAE, blockify, unblockify  # pylint: disable=wrong-import-position
from stae_jax.systems import loading  # pylint: disable=wrong-import-position


VARIANTS = ("clean", "stae", "exact + decoder", "exact + fill", "code, all frames",
            "code, ends + fill")


def variants(models, video, frame_keep: float, block_keep: float) -> dict:
  """Each degraded clip of the module docstring, float32 0..255 [B,T,H,W,3]."""
  stae, decoder = models["stae"], models["decoder"]
  b, t, h, w, _ = video.shape
  sent = stae(video, frame_keep=frame_keep, block_keep=block_keep, training=False)
  mask = sent["pixel_mask"]
  exact = video.astype(jnp.float32) * mask
  _, latents = quantize(stae.analyse(blockify(video, stae.block_size)), training=False)
  coded = unblockify(stae.synthesise(latents), h, w)
  ends = jnp.zeros((1, t, 1, 1, 1), jnp.float32).at[:, jnp.array([0, t - 1])].set(1.0)
  ends = jnp.broadcast_to(ends, mask.shape)
  return {
      "clean": video.astype(jnp.float32),
      "stae": decoder(sent["received"], mask),
      "exact + decoder": decoder(exact, mask),
      "exact + fill": temporal_fill(exact, mask)[0],
      "code, all frames": coded,
      "code, ends + fill": temporal_fill(coded * ends, ends)[0],
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--system", default="stae", help="tag of a trained STAE system")
  parser.add_argument("--keep", default="0.125,1", help="frame_keep,block_keep")
  parser.add_argument("--clips", type=int, default=256)
  args = parser.parse_args()
  frame_keep, block_keep = (float(x) for x in args.keep.split(","))
  loaded = loading.load_system(pathlib.Path(args.workdir).absolute(), args.system)
  models = nnx.merge(loaded.graphdef, loaded.params, loaded.rest)
  if "stae" not in models or not isinstance(models["stae"], STAE):
    raise SystemExit(f"{args.system} is a {loaded.entry.method} system; this breakdown is for STAE")
  vit = models["vit"]

  @jax.jit
  def measure(video):
    out = {}
    for name, clip in variants(models, video, frame_keep, block_keep).items():
      error = jnp.mean(jnp.square(clip - video.astype(jnp.float32)), axis=(1, 2, 3, 4))
      out[name] = (jnp.argmax(vit(clip), -1), error)
    return out

  correct, errors, seen = {}, {}, 0
  for batch in pipeline.make_loader(loaded.data, "test", seed=0, train=False,
                                    num_epochs=1):
    keep = np.asarray(batch["mask"])
    for name, (pred, error) in measure(jnp.asarray(batch["video"])).items():
      correct.setdefault(name, []).append((np.asarray(pred) == batch["label"])[keep])
      errors.setdefault(name, []).append(np.asarray(error)[keep])
    seen += int(keep.sum())
    if seen >= args.clips:
      break
  print(f"{args.system} of {args.workdir} at keep {frame_keep}x{block_keep}, {seen} test clips")
  print("| clip given to the classifier | top-1 | PSNR dB |\n|---|---|---|")
  for name in VARIANTS:  # (jit returns dicts with sorted keys)
    accuracy = np.concatenate(correct[name]).mean()
    mse = np.concatenate(errors[name]).mean()
    psnr = "inf" if mse == 0 else f"{10 * np.log10(255.0 ** 2 / mse):.1f}"
    print(f"| {name} | {accuracy:.3f} | {psnr} |")


if __name__ == "__main__":
  main()
