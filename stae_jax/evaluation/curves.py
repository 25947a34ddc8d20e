"""Accuracy-vs-bits curves and their statistics: the one place that defines them.

  top1_interval        95% bootstrap interval of a top-1 over clips (seeded)
  frontier             a method's points on its upper envelope, chosen on the validation split
  envelope             the curve through them on the test split (best top-1 at no more bits)
  bits_at_accuracy     where a curve first reaches a target top-1 (linear in top-1 vs log bits)
  accuracy_at_bits     a curve read at a rate
  bootstrap_bits       bits at the target per bootstrap resample of the test clips, every method
                       on the same resamples (so differences are paired)
  compare              a paired comparison of two methods' bits at the target

Why the envelope is chosen on validation: the upper envelope of many noisy points (H.264 has a
point per cell of its grid) read on the clips it was picked on is biased up, by about the noise of
one point; picked on other clips and read on the test clips it is not. Points are the POINT dicts
of results.json (`stae_jax.evaluation.report`); a point without a `validation` entry (a results
file of a run without a validation split, hand-made results in tests) makes its method's envelope
be chosen on test, and `frontier_split` says so.

Columns: "frozen" is the point's own top-1 (every method scored by the frozen reference ViT);
"tuned" is its `tuned` entry (a ViT tuned for that method's output), where it has one.
"""

from __future__ import annotations

import functools
import math

import numpy as np

COLUMNS = ("frozen", "tuned")
RESAMPLES = 1000


@functools.lru_cache(maxsize=8)
def _resample_index(num_clips: int, resamples: int, seed: int) -> np.ndarray:
  index = np.random.default_rng(seed).integers(0, num_clips, size=(resamples, num_clips))
  index.setflags(write=False)
  return index


def top1_interval(correct, *, resamples: int = RESAMPLES, seed: int = 0) -> list[float]:
  """95% bootstrap interval [lo, hi] of a top-1 over clips (percentiles of `resamples` seeded
  resamples of the per-clip correctness, or of any per-clip score in [0, 1]): the one definition
  every accuracy's interval uses."""
  correct = np.asarray(correct, np.float64)
  if correct.size == 0:
    raise ValueError("a top-1 interval needs at least one clip")
  means = correct[_resample_index(correct.size, resamples, seed)].mean(axis=1)
  return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def column(point: dict, name: str = "frozen") -> dict | None:
  """{top1, correct (per clip)} of `point` in column `name` (None where it has no such column)."""
  if name not in COLUMNS:
    raise ValueError(f"unknown column {name!r}; columns are {', '.join(COLUMNS)}")
  source = point if name == "frozen" else point.get("tuned")
  if not source:
    return None
  return dict(top1=source["top1"], correct=source.get("per_clip", {}).get("correct"))


def frontier_split(points: list[dict]) -> str:
  """"validation" where every point was also measured on the validation split, else "test"."""
  return "validation" if points and all(p.get("validation") for p in points) else "test"


def frontier(points: list[dict], name: str = "frozen") -> list[dict]:
  """The points of a method on its upper envelope, cheapest first: sorted by bits, a point is on it
  when its top-1 beats every cheaper point's. Judged on the validation split's bits and (frozen)
  top-1 where every candidate has them, else on the test split in column `name`. Column "tuned"
  considers only the points that have a tuned result."""
  candidates = [p for p in points if column(p, name) is not None]
  if frontier_split(candidates) == "validation":
    def key(p):
      return p["validation"]["bits_per_clip"], p["validation"]["top1"]
  else:
    def key(p):
      return p["bits_per_clip"], column(p, name)["top1"]
  chosen, best = [], -math.inf
  for p in sorted(candidates, key=lambda p: (key(p)[0], -key(p)[1])):
    if key(p)[1] > best:
      chosen.append(p)
      best = key(p)[1]
  return chosen


def _curve(bits: np.ndarray, top1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  order = np.argsort(bits, kind="stable")
  return bits[order], np.maximum.accumulate(top1[order])


def envelope(points: list[dict], name: str = "frozen") -> tuple[np.ndarray, np.ndarray]:
  """(bits ascending, best top-1 at no more than those bits) on the test split, through the
  method's `frontier` points."""
  chosen = frontier(points, name)
  return _curve(np.array([p["bits_per_clip"] for p in chosen], np.float64),
                np.array([column(p, name)["top1"] for p in chosen], np.float64))


def _bits_at(bits: np.ndarray, top1: np.ndarray, target: float) -> tuple[float | None, str]:
  """On a curve (`_curve`): the bits where it first reaches `target`, and how it was found."""
  reached = np.flatnonzero(top1 >= target - 1e-12)
  if reached.size == 0:
    return None, "not reached"
  i = int(reached[0])
  if i == 0:
    return float(bits[0]), "at most"
  t = (target - top1[i - 1]) / (top1[i] - top1[i - 1])
  return float(math.exp(math.log(bits[i - 1]) + t * (math.log(bits[i]) - math.log(bits[i - 1])))), \
      "interpolated"


def bits_at_accuracy(points: list[dict], target_top1: float,
                     name: str = "frozen") -> tuple[float | None, str]:
  """Bits per clip at which a method's curve (`envelope`) first reaches `target_top1`, and how it
  was found: "interpolated" (linearly in top-1 against log bits), "at most" (the cheapest point
  already reaches the target: the true rate may be lower) or "not reached"."""
  bits, top1 = envelope(points, name)
  if bits.size == 0:
    return None, "not reached"
  return _bits_at(bits, top1, target_top1)


def accuracy_at_bits(points: list[dict], bits_per_clip: float, name: str = "frozen") -> float | None:
  """A method's curve read at `bits_per_clip` (None outside its measured range)."""
  bits, top1 = envelope(points, name)
  if bits.size == 0:
    return None
  if bits_per_clip < bits[0] * (1 - 1e-9) or bits_per_clip > bits[-1] * (1 + 1e-9):
    return None
  return float(np.interp(math.log(bits_per_clip), np.log(bits), top1))


def bootstrap_bits(methods: dict[str, list[dict]], reference_correct, *, target_loss_points: float,
                   name: str = "frozen", resamples: int = RESAMPLES,
                   seed: int = 0) -> dict[str, np.ndarray]:
  """{method: float[resamples]}: its bits at the target (reference top-1 minus
  `target_loss_points`) on each bootstrap resample of the test clips, inf where its curve does not
  reach the target. Every method and the reference are resampled with the same clips (paired);
  the frontier points stay those chosen on validation."""
  reference = np.asarray(reference_correct, np.float64)
  index = _resample_index(reference.size, resamples, seed)
  targets = reference[index].mean(axis=1) - target_loss_points / 100.0
  out = {}
  for method, points in methods.items():
    chosen = frontier(points, name)
    if not chosen:
      out[method] = np.full(resamples, np.inf)
      continue
    correct = np.array([column(p, name)["correct"] for p in chosen], np.float64)
    bits = np.array([p["per_clip"]["bits"] for p in chosen], np.float64)
    if correct.shape[1] != reference.size or bits.shape[1] != reference.size:
      raise ValueError(f"{method}: per-clip results cover {correct.shape[1]} clips, the reference "
                       f"{reference.size}; a paired bootstrap needs the same clips")
    top1 = correct[:, index].mean(axis=2).T  # [resamples, points]
    mean_bits = bits[:, index].mean(axis=2).T
    values = np.empty(resamples)
    for r in range(resamples):
      value, _ = _bits_at(*_curve(mean_bits[r], top1[r]), targets[r])
      values[r] = np.inf if value is None else value
    out[method] = values
  return out


def interval(samples: np.ndarray) -> list[float | None]:
  """The 2.5 and 97.5 percentiles of bootstrap samples (no interpolation, so samples at +-inf,
  where a curve did not reach the target, stay meaningful); None for an infinite end."""
  lo, hi = np.percentile(np.asarray(samples, np.float64), [2.5, 97.5], method="inverted_cdf")
  return [float(v) if math.isfinite(v) else None for v in (lo, hi)]


def compare(bits: np.ndarray, baseline_bits: np.ndarray) -> dict:
  """Paired comparison of two methods' bits at the target over the same resamples: the ratio
  bits / baseline bits and the difference of log2 bits, each with its 95% interval (None for an
  infinite end: one method's curve missed the target in those resamples). `fewer_bits` is
  True where the difference's interval lies below zero (the method needs fewer bits), False where
  it lies above, None where it holds zero (no difference the clips can show)."""
  with np.errstate(invalid="ignore", divide="ignore"):
    difference = np.log2(bits) - np.log2(baseline_bits)
  difference = np.where(np.isnan(difference), 0.0, difference)  # neither reached: no difference
  lo, hi = np.percentile(difference, [2.5, 97.5], method="inverted_cdf")
  fewer = True if hi < 0 else False if lo > 0 else None

  def ratio(log2_value):
    return float(2.0 ** log2_value) if math.isfinite(log2_value) else (
        None if log2_value > 0 else 0.0)

  def finite(value):
    return float(value) if math.isfinite(value) else None

  return dict(log2_difference_interval=[finite(lo), finite(hi)],
              ratio_interval=[ratio(lo), ratio(hi)], fewer_bits=fewer)
