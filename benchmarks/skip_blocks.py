r"""A skip mode, measured before it is built: blocks the receiver copies from the previous kept
frame's reconstruction, moved by a vector, instead of being sent (issue 28, item 3).

  python benchmarks/skip_blocks.py --workdir=/tmp/mj [--tag=stae] [--clips=300]
      [--lambdas=0,300,1000,3000] [--search=4] [--results=/tmp/mj/results.json]

Why: "Where the bits go in time" (BENCHMARKS.md) found 72% of the blocks and 60% of the bits of
the top point in content the previous kept frame already holds, static or moved by a few pixels,
and the conditional coder's canvas charges a moved block what a new one costs. H.264 sends such
blocks as P-blocks: a flag and a motion vector. This simulates that on a trained STAE, with no
retraining, on validation clips, for every point that sends whole frames (block_keep 1), with the
device's closed loop of `stae_jax.models.skip.choose_skips`:

- the device codes every block of every kept frame as today (the block code's pixels, "intra");
- from the second kept frame on, in time order, each block searches the previous kept frame's
  reconstruction (what the receiver holds: intra blocks and earlier skips, edge-padded) within
  +-`--search` px for the window nearest to the original block (squared error, SSE), and is
  skipped, the window taking its place, when

      SSE(window) + lambda * bits(vector)  <=  SSE(intra block) + lambda * (bits(intra block) + 1)

  the window the one of least SSE + lambda * bits(vector) (lambda: squared error per bit; 0 skips
  only where the copy is no worse than the block code; in the decision a flag costs 1 bit and a
  vector other than no move log2((2S+1)^2 - 1) more, the real cost counted below);
- the receiver's clip is then rebuilt as evaluate.py does (the trained decoder where frames are
  missing, none at all where every frame is sent) and scored by the frozen reference classifier.

Bits per clip, estimated: the latents of the blocks still sent under the system's own entropy
model, a skipped block leaving the conditional coder's canvas as it was (as bitstream version 3's
repeat flags do, so the contexts of the others are the ones a real stream would have); a flag per
block that was sent before, coded adaptively per clip ((skips + 1) / (flags + 2), the exact code
length of that estimator); each skip's vector, coded adaptively per clip over the (2S+1)^2 vectors
(add-one counts: the exact code length, no table learnt on these clips), or, in the columns
"vectors predicted in time" and "in space", first a flag "the vector of the same block in the
previous kept frame" ("of the block to the left, else above") where that block was skipped too
(adaptive likewise), the rest as before; and the frame mask. The
row "today" estimates the same way what version 3 sends (its exact-repeat flags), and the
real version-3 streams' length is printed beside it to calibrate the estimate. Intervals: 95%
bootstrap of the top-1, and of each row's top-1 minus today's over the same clips (paired).
With `--results`, each row is also compared with H.264's envelope (`--envelope`) on the validation
clips that evaluate.py scored (`against_envelope`). Nothing here is trained; the model never saw a
skipped block.
"""

import argparse
import dataclasses
import json
import math
import pathlib
import sys
import time

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from scipy import special

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from stae_jax.data import pipeline  # pylint: disable=wrong-import-position
from stae_jax.evaluation import curves  # pylint: disable=wrong-import-position
from stae_jax.models.entropy import ContextPrior  # pylint: disable=wrong-import-position
from stae_jax.models import skip as skip_lib  # pylint: disable=wrong-import-position
from stae_jax.systems import loading  # pylint: disable=wrong-import-position
from stae_jax.systems import stae as stae_system  # pylint: disable=wrong-import-position


def latent_bits(prior, latents, block_index, blocks: int, sent):
  """Bits of each block [B,K,N] under the system's entropy model, only blocks where `sent`
  [B,K,N] counting (and, for the conditional model, only they updating the canvas)."""
  place = stae_system._in_place  # pylint: disable=protected-access
  dense, kept = place(latents, block_index, blocks)
  sent = kept & sent
  if isinstance(prior, ContextPrior):
    bits = prior.bits(dense, rounded=dense, kept=sent)
  else:
    bits = prior.bits(dense)
  return bits.sum(axis=(-3, -2, -1)) * sent


def adaptive_flag_bits(flags: np.ndarray, ones: np.ndarray) -> np.ndarray:
  """Exact code length of `ones` 1s among `flags` binary symbols under (ones + 1) / (seen + 2)."""
  flags, ones = np.asarray(flags, np.float64), np.asarray(ones, np.float64)
  return (np.log2(flags + 1)
          + (special.gammaln(flags + 1) - special.gammaln(ones + 1)
             - special.gammaln(flags - ones + 1)) / math.log(2))


def adaptive_symbol_bits(counts: np.ndarray) -> np.ndarray:
  """Exact code length of a clip's symbols [B, M counts] under add-one adaptive counts."""
  m = counts.shape[-1]
  return (special.gammaln(counts.sum(axis=-1) + m) - special.gammaln(m)
          - special.gammaln(counts + 1.0).sum(axis=-1)) / math.log(2)


def predicted_vector_bits(skip: np.ndarray, vector: np.ndarray, windows: int, grid: int,
                          where: str) -> np.ndarray:
  """Per clip [B], the vectors of skip bool [B,K,N] / vector [B,K,N] coded with a prediction: a
  skip whose predictor was skipped too first sends a flag "the predictor's vector" (adaptive per
  clip, as the skip flags); the other vectors (no predictor, or the flag 0) go to the adaptive
  code over every vector. The predictor: "time", the same block in the previous kept frame;
  "space", the block to its left in the same frame (`grid` blocks a row), else the one above."""
  out = np.zeros(len(skip))
  k, n = skip.shape[1:]
  for i in range(len(skip)):
    if where == "time":
      has, guess = np.zeros((k, n), bool), np.zeros((k, n), np.int64)
      has[1:], guess[1:] = skip[i, :-1], vector[i, :-1]
    else:
      column = np.arange(n) % grid
      left, up = np.roll(np.arange(n), 1), np.roll(np.arange(n), grid)
      has_left = (column > 0)[None] & skip[i][:, left]
      has_up = (np.arange(n) >= grid)[None] & skip[i][:, up]
      has = has_left | has_up
      guess = np.where(has_left, vector[i][:, left], vector[i][:, up])
    predicted = skip[i] & has
    same = predicted & (vector[i] == guess)
    counts = np.bincount(vector[i][skip[i] & ~same], minlength=windows).astype(np.float64)
    out[i] = (adaptive_flag_bits(np.array([predicted.sum()]), np.array([same.sum()]))[0]
              + adaptive_symbol_bits(counts[None])[0])
  return out


def set_up(workdir: pathlib.Path, tag: str, clips: int):
  """A trained STAE and its codec at the keep-ratio points without skipping or refining (what the
  simulations here start from: the "today" rows and their real streams), its models, the frozen
  reference classifier and the first `clips` validation clips, in order. Returns (codec, stae,
  prior, decoder, classify, videos, labels)."""
  trained = loading.load_system(workdir, tag)
  entry = ml_collections.ConfigDict(trained.entry.to_dict())
  entry.model.skip = dict(lam=None)
  entry.model.refine = dict(points=())  # the keep-ratio points only
  codec = stae_system.codec(dataclasses.replace(trained, entry=entry))
  models = nnx.merge(trained.graphdef, trained.params, trained.rest)
  videos, labels = stae_system.choice_clips(
      pipeline.make_loader(trained.data, "validation", seed=0, train=False, num_epochs=1), clips)
  return (codec, models["stae"], models["prior"], models["decoder"],
          loading.load_classifier(None, workdir), videos, labels)


def kept_frames(stae, video, frame_keep: float, block_keep: float, key, frames: int):
  """The device's selection and code of clips [B,T,H,W,3] at a point: (STAE.encode's dict, the
  receiver's clip before the decoder [B,T,H,W,3], its pixel mask, the kept frames as the block
  code rebuilds them [B,K,H,W,3], the kept frames themselves [B,K,H,W,3])."""
  height, width = video.shape[2:4]
  sent = stae.encode(video, frame_keep=frame_keep, block_keep=block_keep, rng=key)
  received, pixel_mask, _ = stae.receive(sent["frame_index"], sent["block_index"], sent["latents"],
                                         frames=frames, height=height, width=width)
  batch = jnp.arange(video.shape[0])[:, None]
  return (sent, received, pixel_mask, received[batch, sent["frame_index"]],
          video.astype(jnp.float32)[batch, sent["frame_index"]])


def paired_difference(correct: np.ndarray, base: np.ndarray) -> str:
  """"+d [lo, hi]": the top-1 of `correct` minus that of `base` (per clip, the same clips) in
  points, with its 95% bootstrap interval (1000 resamples, seed 0)."""
  diff = correct - base
  index = np.random.default_rng(0).integers(0, len(diff), size=(1000, len(diff)))
  samples = diff[index].mean(axis=1)
  return (f"{100 * diff.mean():+.1f} [{100 * np.percentile(samples, 2.5):+.1f}, "
          f"{100 * np.percentile(samples, 97.5):+.1f}]")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--tag", default="stae")
  parser.add_argument("--clips", type=int, default=300)
  parser.add_argument("--lambdas", default="0,300,1000,3000")
  parser.add_argument("--search", type=int, default=4)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--results", default="",
                      help="an evaluate.py results.json of this workdir: each row against "
                           "--envelope's envelope on its validation clips (against_envelope)")
  parser.add_argument("--envelope", default="h264")
  parser.add_argument("--prefer_previous", action="store_true",
                      help="the decision charges each block's previous vector 1 bit (choose_skips)")
  args = parser.parse_args()
  start = time.time()
  workdir = pathlib.Path(args.workdir).absolute()
  # The codec as it was before skipping (every kept block's code sent): the "today" rows and the
  # real streams beside them; the skips are simulated here (the built mode is the codec's own
  # at the points `stae_jax.models.skip.Settings` names).
  codec, stae, prior, decoder, classify, videos, labels = set_up(workdir, args.tag, args.clips)
  t, height, width, _ = codec.clip_shape
  p = codec.block_size
  n = (height // p) * (width // p)
  windows = skip_lib.vector_count(args.search)
  lambdas = [float(x) for x in args.lambdas.split(",")]
  key = jax.random.fold_in(jax.random.PRNGKey(stae_system.SELECTION_KEY), 0)

  def run(video, lam, frame_keep, block_keep, mode):
    """mode "today" (v3's exact repeats flagged) or "skip". Per clip: the receiver's clip as the
    classifier gets it, latent bits, flags sent, flags set, vector counts [B,M], the kept frames'
    mean squared error; and skip, vector [B,K,N]."""
    sent, received, pixel_mask, intra, original = kept_frames(stae, video, frame_keep, block_keep,
                                                              key, t)
    frame_index, block_index, latents = sent["frame_index"], sent["block_index"], sent["latents"]
    b, k = frame_index.shape
    batch = jnp.arange(b)[:, None]
    if mode == "today":
      flat = latents.reshape(b, k, n, -1)
      repeat = jnp.concatenate([jnp.zeros((b, 1, n), bool),
                                (flat[:, 1:] == flat[:, :-1]).all(axis=-1)], axis=1)
      reconstruction, skip, vector = intra, repeat, jnp.zeros((b, k, n), jnp.int32)
      counts = jnp.zeros((b, windows), jnp.int32)
    else:
      every = latent_bits(prior, latents, block_index, n, jnp.ones((b, k, n), bool))
      reconstruction, skip, vector = skip_lib.choose_skips(
          intra, original, every, lam, block_size=p, search=args.search,
          prefer_previous=args.prefer_previous)
      counts = jnp.zeros((b, windows), jnp.int32).at[
          batch[:, :, None], vector].add(skip.astype(jnp.int32))
    bits = latent_bits(prior, latents, block_index, n, ~skip).sum(axis=(1, 2))
    received = jnp.zeros(video.shape, jnp.float32).at[batch, frame_index].set(reconstruction)
    complete = k == t
    clip = stae_system.rebuild(decoder, received, pixel_mask, complete=complete)
    error = jnp.square(reconstruction - original).mean(axis=(1, 2, 3, 4))
    flags = jnp.full((b,), (k - 1) * n, jnp.int32)
    return clip, bits, flags, skip.sum(axis=(1, 2)), counts, error, skip, vector

  run = jax.jit(run, static_argnums=(2, 3, 4))
  points = [pt for pt in codec.points if float(pt["block_keep"]) == 1.0]
  reference = np.concatenate([np.argmax(classify(videos[i:i + args.batch]), -1)
                              for i in range(0, len(videos), args.batch)]) == labels
  low, high = curves.top1_interval(reference)
  print(f"{args.tag} of {workdir}: {len(videos)} validation clips (the frozen reference classifier "
        f"scores {100 * reference.mean():.1f}% [{100 * low:.1f}, {100 * high:.1f}] on them), "
        f"search +-{args.search} px ({windows} vectors); estimated bits (module docstring)")
  print("| point | mode | lambda | top-1 | vs today (paired) | bits per clip (latents + flags + "
        "vectors) | vectors predicted in time | in space | skipped blocks | "
        "PSNR kept frames dB |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  measured = {}
  for point in points:
    k = codec._keep[point][0]  # pylint: disable=protected-access
    real = []
    for i in range(0, len(videos), args.batch):
      coded = codec.device(videos[i:i + args.batch], point)
      real.extend(8 * len(s) for s in coded.streams)
    rows = [("today", None)] + [("skip", lam) for lam in lambdas]
    today = None
    for mode, lam in rows:
      if k == 1 and mode == "skip":
        continue
      correct, bits, errors, skipped = [], [], [], []
      for i in range(0, len(videos), args.batch):
        clip, latent, flags, ones, counts, error, skip, vector = jax.device_get(run(
            jnp.asarray(videos[i:i + args.batch]), jnp.float32(lam or 0.0),
            float(point["frame_keep"]), float(point["block_keep"]), mode))
        logits = classify(np.asarray(clip))
        correct.append(np.argmax(logits, -1) == labels[i:i + args.batch])
        none = np.zeros(len(flags))
        flag = adaptive_flag_bits(flags, ones) if k > 1 else none
        moves, in_time, in_space = (none, none, none) if mode == "today" else (
            adaptive_symbol_bits(counts.astype(np.float64)),
            *(predicted_vector_bits(skip, vector, windows, width // p, where)
              for where in ("time", "space")))
        bits.append(np.stack([latent, flag, moves, none + math.log2(math.comb(t, k)),
                              in_time, in_space], axis=1))
        errors.append(error)
        skipped.append(ones / (k * n))
      correct = np.concatenate(correct).astype(np.float64)
      bits = np.concatenate(bits)
      low, high = curves.top1_interval(correct)
      if mode == "today":
        today = correct
        paired = "-"
      else:
        paired = paired_difference(correct, today)
      measured.setdefault(point.name, []).append((mode, lam, correct, bits[:, :4].sum(axis=1)))
      psnr = 10 * np.log10(255.0 ** 2 / np.concatenate(errors).mean())
      label = f"{mode} (real v3 streams: {np.mean(real):,.0f})" if mode == "today" else mode
      print(f"| {point.name} | {label} | {'-' if lam is None else f'{lam:g}'} | "
            f"{100 * correct.mean():.1f}% [{100 * low:.1f}, {100 * high:.1f}] | {paired} | "
            f"{bits[:, :4].sum(axis=1).mean():,.0f} "
            f"({' + '.join(f'{x:,.0f}' for x in bits.mean(axis=0)[:3])}) | "
            f"{(bits[:, [0, 1, 3, 4]].sum(axis=1)).mean():,.0f} | "
            f"{(bits[:, [0, 1, 3, 5]].sum(axis=1)).mean():,.0f} | "
            f"{100 * np.concatenate(skipped).mean():.1f}% | "
            f"{psnr:.2f} |", flush=True)
  if args.results:
    against_envelope(args.results, args.envelope, measured)
  print(f"wall {time.time() - start:.0f} s")


def against_envelope(results_path: str, method: str, measured: dict):
  """Each row against `method`'s envelope in an evaluate.py results.json of the same workdir, on
  its validation clips (the first of the split, in the loader's order: checked by requiring the
  "today" rows' answers to equal that run's STAE validation answers clip for clip). The envelope is
  chosen and read on those clips (biased up by about a point's noise: in the baseline's favour);
  bits are this script's estimates."""
  import paired_points  # pylint: disable=g-import-not-at-top  (benchmarks/, beside this script)
  results = json.loads(pathlib.Path(results_path).read_text())
  stae = {p["name"]: p for p in results["methods"]["stae"]["points"]}
  envelope = [paired_points.on_split(p, "validation") for p in results["methods"][method]["points"]]
  print(f"\nagainst {method}'s envelope on the validation clips of {results_path} (paired, "
        "1000 resamples)")
  print(f"| point | mode | lambda | clips | top-1 | bits per clip | {method} envelope there | "
        "difference |")
  print("|---|---|---|---|---|---|---|---|")
  for name, rows in measured.items():
    theirs = np.asarray(stae[name]["validation"]["per_clip"]["correct"], np.float64)
    count = len(theirs)
    today = next(correct for mode, _, correct, _ in rows if mode == "today")
    if not np.array_equal(today[:count], theirs):
      raise SystemExit(f"{name}: today's answers on the first {count} validation clips differ "
                       f"from {results_path}'s; not the same clips or not the same model")
    index = curves._resample_index(count, curves.RESAMPLES, 0)  # pylint: disable=protected-access
    for mode, lam, correct, total in rows:
      bits = float(total[:count].mean())
      env = paired_points.envelope_at(envelope, bits, index)
      ours = correct[:count][index].mean(axis=1)
      if env is None:
        there, difference = "outside its points", "-"
      else:
        diff = ours - env
        there = f"{100 * env.mean():.1f}%"
        difference = (f"{100 * diff.mean():+.1f} [{100 * np.percentile(diff, 2.5):+.1f}, "
                      f"{100 * np.percentile(diff, 97.5):+.1f}]")
      print(f"| {name} | {mode} | {'-' if lam is None else f'{lam:g}'} | {count} | "
            f"{100 * correct[:count].mean():.1f}% | {bits:,.0f} | {there} | {difference} |")


if __name__ == "__main__":
  main()
