r"""Where STAE's frame attention puts its frames, and what the best frames would have scored.

  python benchmarks/frame_choice.py --workdir=/tmp/mjD [--clips=256] [--subsets=120]

Why (issue 31, item 1): on the motion default the learned frame attention lost to random frames
where it keeps few of them. Before changing it, this measures what it does. Clips: the first
`--clips` clips of the synthetic test split, generated here with the generator's record of each
clip's action window (`stae_jax.data.synthetic.generate_clip`, the builder's own function; the
clips are the stored ones, in index order). For each number of kept frames k in `--frames`:

  where     per selection rule, the mean span of the kept frames ((last - first) / (T - 1)), the
            share of kept frames inside the action window, and the mean first / last kept index
  accuracy  the frozen reference classifier (the stage-1 ViT, evaluate.py's column) on the kept
            frames' exact pixels, every block, the missing frames filled by the receiver's rule
            (`stae_jax.systems.stae.kept_frames_view`): frame choice alone, no coding loss.
            Rules: STAE's learned frame attention; evenly spaced (first and last included,
            `uniform_scores`); random (a fresh subset per clip, `--random_draws` draws); the best
            fixed subset, chosen on the first half of the clips and scored on the second (all
            C(T, k) subsets, or `--subsets` drawn at random where there are more, plus the evenly
            spaced one); and a per-clip oracle (a clip counts as right if any scored subset gets it
            right: an upper bound, not a rule)

Accuracies are on the second half of the clips (the half the fixed subset was not chosen on), with
95% bootstrap intervals; learned minus each rule is paired over the same clips.
"""

import argparse
import itertools
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from flax import nnx  # pylint: disable=wrong-import-position
from stae_jax.data import synthetic  # pylint: disable=wrong-import-position
from stae_jax.models.stae import STAE, uniform_scores  # pylint: disable=wrong-import-position
from stae_jax.systems import loading  # pylint: disable=wrong-import-position
from stae_jax.systems.stae import kept_frames_view  # pylint: disable=wrong-import-position


def generated_clips(data, count: int):
  """The first `count` test clips with their labels and action windows (first, last)."""
  kwargs = dict(data.builder_kwargs)
  videos, labels, windows = [], [], []
  for index in range(count):
    video, label, info = synthetic.generate_clip(index, "test", frames=kwargs["frames"],
                                                 size=kwargs["size"], seed=kwargs["seed"])
    videos.append(video)
    labels.append(label)
    windows.append(info["window"])
  return np.stack(videos), np.asarray(labels), np.asarray(windows)


def evenly_spaced(t: int, k: int) -> tuple[int, ...]:
  """The k of t frames STAE's uniform selection keeps (`uniform_scores`: first and last included)."""
  return tuple(int(i) for i in np.flatnonzero(np.asarray(uniform_scores(t, k, (t,)))))


def candidate_subsets(t: int, k: int, limit: int, rng: np.random.Generator) -> list[tuple]:
  """Every k-subset of t frames, or `limit` drawn at random (without repeats) plus the evenly
  spaced one where there are more."""
  if math.comb(t, k) <= limit:
    return list(itertools.combinations(range(t), k))
  chosen = {evenly_spaced(t, k)}
  while len(chosen) < limit + 1:
    chosen.add(tuple(sorted(rng.choice(t, k, replace=False).tolist())))
  return sorted(chosen)


def where(indices: np.ndarray, windows: np.ndarray, t: int) -> str:
  """Mean span, share inside the action window, mean first and last index of [clips, k] indices."""
  span = (indices.max(1) - indices.min(1)) / (t - 1)
  inside = (indices >= windows[:, :1]) & (indices <= windows[:, 1:])
  return (f"{span.mean():.2f} | {inside.mean():.0%} | {indices.min(1).mean():.1f} | "
          f"{indices.max(1).mean():.1f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--system", default="stae", help="tag of a trained STAE system")
  parser.add_argument("--frames", default="2,4,8", help="kept frames k to measure")
  parser.add_argument("--clips", type=int, default=256)
  parser.add_argument("--subsets", type=int, default=120,
                      help="subsets scored per k where C(T, k) is larger")
  parser.add_argument("--random_draws", type=int, default=4)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  workdir = pathlib.Path(args.workdir).absolute()
  loaded = loading.load_system(workdir, args.system)
  models = nnx.merge(loaded.graphdef, loaded.params, loaded.rest)
  if not isinstance(models.get("stae"), STAE):
    raise SystemExit(f"{args.system} is a {loaded.entry.method} system; this is for STAE")
  stae = models["stae"]
  reference = loading.load_classifier(loading.read_record(
      loading.classifier_dir(workdir)), workdir)
  videos, labels, windows = generated_clips(loaded.data, args.clips)
  n, t = videos.shape[:2]
  half = n // 2
  rng = np.random.default_rng(args.seed)

  def learned_frames(k: int) -> np.ndarray:
    """The frames STAE's device half keeps at k of T (`STAE.encode`, every block), [n, k]."""
    encode = jax.jit(lambda video: stae.encode(video, frame_keep=k / t, block_keep=1.0)[
        "frame_index"])
    return np.concatenate([np.asarray(encode(jnp.asarray(videos[s:s + args.batch])))
                           for s in range(0, n, args.batch)])

  filled = jax.jit(kept_frames_view)

  def correct(keep: np.ndarray) -> np.ndarray:
    """Right or wrong per clip with frames `keep` [n, T] (0/1) kept, every block, exact pixels."""
    out = []
    for start in range(0, n, args.batch):
      video = jnp.asarray(videos[start:start + args.batch])
      logits = reference(filled(video, jnp.asarray(keep[start:start + args.batch], jnp.float32)))
      out.append(np.argmax(logits, -1) == labels[start:start + args.batch])
    return np.concatenate(out)

  def keep_of(indices: np.ndarray) -> np.ndarray:
    keep = np.zeros((len(indices), t), np.float32)
    np.put_along_axis(keep, indices, 1.0, axis=1)
    return keep

  print(f"{args.system} of {workdir}: first {n} test clips of {t} frames (windows of "
        f"{(windows[:, 1] - windows[:, 0] + 1).min()}-{(windows[:, 1] - windows[:, 0] + 1).max()} "
        f"frames); accuracies on the {n - half} clips after the first {half}\n")
  clean = correct(np.ones((n, t), np.float32))
  print(f"every frame: {clean[half:].mean():.1%}\n")
  for k in (int(x) for x in args.frames.split(",")):
    learned = np.sort(learned_frames(k), axis=1)
    draws = [np.sort(np.stack([rng.choice(t, k, replace=False) for _ in range(n)]), axis=1)
             for _ in range(args.random_draws)]
    subsets = candidate_subsets(t, k, args.subsets, rng)
    by_subset = {s: correct(keep_of(np.broadcast_to(np.asarray(s), (n, k)))) for s in subsets}
    best = max(subsets, key=lambda s: (by_subset[s][:half].mean(), s == evenly_spaced(t, k)))
    rules = {
        "learned": correct(keep_of(learned)),
        "evenly spaced": by_subset[evenly_spaced(t, k)],  # always a candidate
        "random": np.mean([correct(keep_of(d)) for d in draws], axis=0),
        f"best fixed {list(best)}": by_subset[best],
        "per-clip oracle": np.any(np.stack(list(by_subset.values())), axis=0).astype(float),
    }
    print(f"k = {k} of {t} frames ({len(subsets)} subsets scored)\n")
    print("| rule | span | inside the window | first | last |\n|---|---|---|---|---|")
    print(f"| learned | {where(learned, windows, t)} |")
    print(f"| evenly spaced | "
          f"{where(np.broadcast_to(np.asarray(evenly_spaced(t, k)), (n, k)), windows, t)} |")
    print(f"| random | {where(np.concatenate(draws), np.tile(windows, (len(draws), 1)), t)} |")
    print(f"| best fixed {list(best)} | "
          f"{where(np.broadcast_to(np.asarray(best), (n, k)), windows, t)} |\n")
    test = slice(half, n)
    index = np.random.default_rng(0).integers(0, n - half, (1000, n - half))  # paired resamples
    print("| rule | top-1 [95%] | learned minus it [95%] |\n|---|---|---|")
    mine = rules["learned"][test].astype(float)
    for name, right in rules.items():
      right = np.asarray(right, float)[test]
      low, high = np.percentile(right[index].mean(1), [2.5, 97.5])
      diff = (mine[index] - right[index]).mean(1)
      d_low, d_high = np.percentile(diff, [2.5, 97.5])
      delta = "-" if name == "learned" else (
          f"{100 * (mine.mean() - right.mean()):+.1f} [{100 * d_low:+.1f}, {100 * d_high:+.1f}]")
      print(f"| {name} | {right.mean():.1%} [{100 * low:.1f}, {100 * high:.1f}] | {delta} |")
    print()


if __name__ == "__main__":
  main()
