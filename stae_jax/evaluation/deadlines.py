"""Accuracy under deadlines on a time-varying channel, for every method, from measured results.

Everything here works on the `results.json` dict (`stae_jax.evaluation.evaluate`): per clip and
operating point whether the classifier was right and how many bits the real bitstream had, and the
device profile: each point's seconds per clip of each step (`stae_jax.evaluation.device_profile`;
measured in isolation by evaluate.py, or declared with `--device_profile`), the same for every clip,
so the cells do not depend on how loaded the machine was while the clips were measured. So the
comparison is a function of results.json alone and can be re-run with other channels, deadlines
or a declared profile without touching a model (`python evaluate.py ... --reuse_results`,
`recompute`).

The scenario (ours): a camera cuts its stream into clips of T frames at `fps`, so a clip is ready
every T / fps seconds; clips queue on one link, each with the length of its own measured bitstream
(`stae_jax.channel.simulate_choices`, queue=True: the one scoring path, which the test of
`rate_margin` runs too); the test clips are sent in their stored order. Every method is scored on
the same channel traces (one per seed and mean SNR). A clip later than the deadline counts as wrong.

Policies per method:
  fixed:<point>  always the same operating point;
  adaptive       per clip, the point with the best expected accuracy whose predicted latency at
                 `rate_margin` x the rate known when the clip arrives meets the deadline
                 (`stae_jax.channel.adaptive_choices`); expected accuracy = the point's top-1 on
                 the validation split (the test top-1 only where the results have no validation
                 split). Every point of a method measured on the test split (results.json
                 `points`) is a choice: H.264 picks its grid cell per clip among those.
Only the measured points are choices, of both policies: a point needs its test bits and profile
times to be planned and scored. With evaluate.py's default `test_points="envelope"` H.264 is measured on
test at its validation envelope (and tuned cells) only, so its policies choose among those cells;
a cell off that envelope has an envelope cell with no more validation bits and at least its
validation top-1 (the adaptive policy's expected accuracy), so it would be chosen only where its
own test bits or step times fit a deadline that cell's do not. H.264's channel rows can therefore
differ from a `--test_points=all` run's; `--test_points=all` gives the policies every cell (the
`validation_only` points are never read here).
The report also names, per deadline, the best fixed point: the one with the best accuracy on the
validation clips, sent over their own traces (seeds offset by `VALIDATION_TRACE_SEED`, so neither
the clips nor the channel realisation are the test's), and shows its test accuracy (`best_fixed`).
Each row's accuracy carries a 95% bootstrap interval over its clips (the per-clip score averaged
over the traces).

A link that a method saturates (its queue outgrows the trace, `max_backlog_seconds` past the last
arrival) has every clip counted late; such rows carry `saturated: true`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from stae_jax import channel as channel_lib
from stae_jax.evaluation import curves
from stae_jax.evaluation import device_profile
from stae_jax.systems.loading import operating_points


@dataclasses.dataclass(frozen=True)
class ChannelOptions:
  deadlines_seconds: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
  mean_snrs_db: Sequence[float] = (0.0, 10.0, 20.0)
  seeds: Sequence[int] = (0, 1, 2)
  fps: float = 30.0
  bandwidth_hz: float = 1e6
  rate_margin: float = 0.7
  max_clips: int = 300           # clips sent per trace (the first ones of the test split)
  max_backlog_seconds: float = 600.0


#: Validation clips are sent over traces of seed + this, never over the test clips' traces.
VALIDATION_TRACE_SEED = 1000


def _score(trace, points, choices, arrivals, correct, bits, deadlines):
  """Per deadline and clip, float [2, D, N]: (correct and on time, on time); None where the link
  saturates (every clip late)."""
  try:
    _, latencies = channel_lib.simulate_choices(
        trace, points, choices, arrival_seconds=arrivals, deadlines_seconds=deadlines,
        correct_by_point=correct, bits_by_point=bits, queue=True)
  except channel_lib.TraceEndedError:
    return None
  totals = np.array([latency.total_seconds for latency in latencies], np.float64)
  on_time = np.array([totals <= d for d in deadlines])
  right = correct[np.arange(len(choices)), choices]
  return np.stack([right & on_time, on_time]).astype(np.float64)


def _per_clip(points: list[dict], split: str, num_clips: int):
  """(correct bool [N, P], bits [N, P]) of a method's points on `split`'s first `num_clips`."""
  sources = [p if split == "test" else p["validation"] for p in points]
  correct = np.array([s["per_clip"]["correct"][:num_clips] for s in sources], bool).T
  bits = np.array([s["per_clip"]["bits"][:num_clips] for s in sources], np.float64).T
  return correct, bits


def channel_comparison(results: dict, options: ChannelOptions = ChannelOptions()) -> dict:
  """The `channel` section of results.json: rows of accuracy per method, policy, split, SNR and
  deadline (the adaptive policy on the test clips only)."""
  frames = results["clip_shape"][0]
  interval = frames / options.fps
  methods = {name: m for name, m in results["methods"].items() if not m["skipped"] and m["points"]}
  with_validation = bool(methods) and all(p.get("validation") for m in methods.values()
                                          for p in m["points"])
  counts = {"test": min(options.max_clips, results["num_clips"])}
  if with_validation:
    counts["validation"] = min([options.max_clips] + [p["validation"]["num_clips"]
                                                      for m in methods.values()
                                                      for p in m["points"]])
  deadlines = [float(d) for d in options.deadlines_seconds]
  profile = device_profile.of_results(results)
  device_profile.check(profile, results)
  rows = []
  mean_rates = {}
  for snr in options.mean_snrs_db:
    link = channel_lib.ChannelConfig(bandwidth_hz=options.bandwidth_hz, mean_snr_db=float(snr))
    for split, num_clips in counts.items():
      arrivals = np.arange(num_clips) * interval
      # (method, policy) -> per seed: `_score`'s [2, D, N] (None: saturated); for the adaptive
      # policy, whose choices depend on the deadline, a list of one [2, 1, N] per deadline.
      scores: dict[tuple, list] = {}
      for seed in options.seeds:
        trace_seed = int(seed) + (VALIDATION_TRACE_SEED if split == "validation" else 0)
        trace = channel_lib.ChannelTrace.generate(
            arrivals[-1] + interval + options.max_backlog_seconds, link, seed=trace_seed)
        if split == "test":
          mean_rates.setdefault(f"{float(snr):g}", []).append(float(np.mean(trace.rates_bps)))
        for name, method in methods.items():
          points = operating_points(method, profile["methods"][name])
          correct, bits = _per_clip(method["points"], split, num_clips)
          for i, point in enumerate(points):
            choice = np.full(num_clips, i)
            scores.setdefault((name, f"fixed:{point.name}"), []).append(
                _score(trace, points, choice, arrivals, correct, bits, deadlines))
          if split != "test":
            continue
          per_deadline = []
          for deadline in deadlines:
            choice = channel_lib.adaptive_choices(trace, points, arrival_seconds=arrivals,
                                                  deadline_seconds=deadline,
                                                  rate_margin=options.rate_margin)
            per_deadline.append(_score(trace, points, choice, arrivals, correct, bits, [deadline]))
          scores.setdefault((name, "adaptive"), []).append(per_deadline)
      for (name, policy), per_seed in scores.items():
        for d_index, deadline in enumerate(deadlines):
          if policy == "adaptive":
            seeds = [s[d_index] for s in per_seed]
            seeds = [None if s is None else s[:, 0] for s in seeds]
          else:
            seeds = [None if s is None else s[:, d_index] for s in per_seed]
          saturated = any(s is None for s in seeds)
          # [2, N]: per clip, over the traces: the fraction right and on time, and on time.
          clips = np.mean([np.zeros((2, num_clips)) if s is None else s for s in seeds], axis=0)
          rows.append(dict(method=name, policy=policy, split=split, mean_snr_db=float(snr),
                           deadline_seconds=deadline, accuracy=float(clips[0].mean()),
                           accuracy_interval=curves.top1_interval(clips[0]),
                           on_time_fraction=float(clips[1].mean()), saturated=saturated))
  return dict(options=dataclasses.asdict(options) | dict(
      deadlines_seconds=deadlines, mean_snrs_db=[float(s) for s in options.mean_snrs_db],
      seeds=[int(s) for s in options.seeds]),
              clip_interval_seconds=interval, num_clips=counts["test"],
              device_profile=dict(source=profile["source"], path=profile.get("path")),
              validation_clips=counts.get("validation"),
              mean_rates_bps={snr: float(np.mean(r)) for snr, r in mean_rates.items()}, rows=rows)


def recompute(results: dict) -> dict:
  """results.json's `channel` section computed again from results.json alone, with the options it
  was computed with (its `channel.options`) and its `device_profile`: equal to the stored section
  wherever the per-clip results and the profile are those it was computed from."""
  stored = dict(results["channel"]["options"])
  stored = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()}
  return channel_comparison(results, ChannelOptions(**stored))


def best_fixed(rows: list[dict], method: str, snr: float, deadline: float) -> dict | None:
  """The test row of `method`'s fixed point with the best accuracy at (snr, deadline) on the
  validation clips (in hindsight, on the test rows, where the comparison had no validation split);
  its `chosen_on` says which."""
  def candidates(split):
    return [r for r in rows if r["method"] == method and r["policy"].startswith("fixed:")
            and r.get("split", "test") == split and r["mean_snr_db"] == snr
            and r["deadline_seconds"] == deadline]
  chosen_on = "validation" if candidates("validation") else "test"
  best = max(candidates(chosen_on), key=lambda r: r["accuracy"], default=None)
  if best is None:
    return None
  test = next(r for r in candidates("test") if r["policy"] == best["policy"])
  return dict(test, chosen_on=chosen_on)


def adaptive(rows: list[dict], method: str, snr: float, deadline: float) -> dict | None:
  for r in rows:
    if (r["method"], r["policy"], r["mean_snr_db"], r["deadline_seconds"]) == (
        method, "adaptive", snr, deadline):
      return r
  return None
