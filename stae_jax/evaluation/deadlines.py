"""Accuracy under deadlines on a time-varying channel, for every method, from measured results.

Everything here works on the `results.json` dict (`stae_jax.evaluation.evaluate`): per clip and
operating point whether the classifier was right and how many bits the real bitstream had, and the
per-clip compute times of each step. So the comparison can be re-run with other channels or
deadlines without touching a model (`python evaluate.py ... --reuse_results`).

The scenario (ours): a camera cuts its stream into clips of T frames at `fps`, so a clip is ready
every T / fps seconds; clips queue on one link, each with the length of its own measured bitstream
(`stae_jax.channel.simulate_choices`, queue=True: the one scoring path, which the test of
`rate_margin` runs too); the test clips are sent in their stored order. Every method is scored on
the same channel traces (one per seed and mean SNR). A clip later than the deadline counts as wrong.

Policies per method:
  fixed:<point>  always the same operating point;
  adaptive       per clip, the point with the best expected accuracy whose predicted latency at
                 `rate_margin` x the rate known when the clip arrives meets the deadline
                 (`stae_jax.channel.adaptive_choices`); expected accuracy = the point's measured top-1.
The report also names, per deadline, the best fixed point in hindsight (an upper bound no device
could pick in advance).

A link that a method saturates (its queue outgrows the trace, `max_backlog_seconds` past the last
arrival) has every clip counted late; such rows carry `saturated: true`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from stae_jax import channel as channel_lib


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


def operating_points(method: dict) -> list[channel_lib.OperatingPoint]:
  """A method's points (`results.json` `methods.<tag>`) as the channel's `OperatingPoint`s: mean
  bits, measured top-1 and single-clip step times (also what the serving client plans with)."""
  return [channel_lib.OperatingPoint(
      name=p["name"], bits=p["bits_per_clip"], expected_accuracy=p["top1"],
      encode_seconds=p["device_seconds"],
      decode_seconds=p["seconds"]["entropy_decode"] + p["seconds"]["decode"],
      classify_seconds=p["seconds"]["classify"]) for p in method["points"]]


def _score(trace, points, choices, arrivals, correct, bits, deadlines):
  """Accuracy and on-time fraction per deadline (None where the link saturates)."""
  try:
    reports, _ = channel_lib.simulate_choices(
        trace, points, choices, arrival_seconds=arrivals, deadlines_seconds=deadlines,
        correct_by_point=correct, bits_by_point=bits, queue=True)
  except channel_lib.TraceEndedError:
    return None
  return reports


def channel_comparison(results: dict, options: ChannelOptions = ChannelOptions()) -> dict:
  """The `channel` section of results.json: rows of accuracy per method, policy, SNR, deadline."""
  frames = results["clip_shape"][0]
  interval = frames / options.fps
  methods = {name: m for name, m in results["methods"].items() if not m["skipped"] and m["points"]}
  num_clips = min(options.max_clips, results["num_clips"])
  arrivals = np.arange(num_clips) * interval
  deadlines = [float(d) for d in options.deadlines_seconds]
  rows = []
  mean_rates = {}
  for snr in options.mean_snrs_db:
    link = channel_lib.ChannelConfig(bandwidth_hz=options.bandwidth_hz, mean_snr_db=float(snr))
    scores: dict[tuple, list] = {}
    for seed in options.seeds:
      trace = channel_lib.ChannelTrace.generate(
          arrivals[-1] + interval + options.max_backlog_seconds, link, seed=int(seed))
      mean_rates.setdefault(f"{float(snr):g}", []).append(float(np.mean(trace.rates_bps)))
      for name, method in methods.items():
        points = operating_points(method)
        correct = np.array([p["per_clip"]["correct"][:num_clips] for p in method["points"]], bool).T
        bits = np.array([p["per_clip"]["bits"][:num_clips] for p in method["points"]], np.float64).T
        for i, point in enumerate(points):
          choice = np.full(num_clips, i)
          reports = _score(trace, points, choice, arrivals, correct, bits, deadlines)
          scores.setdefault((name, f"fixed:{point.name}", None), []).append(reports)
        for d_index, deadline in enumerate(deadlines):
          choice = channel_lib.adaptive_choices(trace, points, arrival_seconds=arrivals,
                                                deadline_seconds=deadline,
                                                rate_margin=options.rate_margin)
          reports = _score(trace, points, choice, arrivals, correct, bits, [deadline])
          scores.setdefault((name, "adaptive", d_index), []).append(reports)
    # Keys: (method, policy, None) for a fixed point, scored at every deadline at once;
    # (method, "adaptive", deadline index) for the adaptive policy, whose choices depend on it.
    for (name, policy, adaptive_index), per_seed in scores.items():
      for d_index, deadline in enumerate(deadlines):
        if adaptive_index is not None and adaptive_index != d_index:
          continue
        index = 0 if adaptive_index is not None else d_index
        accuracy, on_time, saturated = [], [], False
        for reports in per_seed:
          if reports is None:
            saturated = True
            accuracy.append(0.0)
            on_time.append(0.0)
          else:
            accuracy.append(reports[index].accuracy)
            on_time.append(reports[index].on_time_fraction)
        rows.append(dict(method=name, policy=policy, mean_snr_db=float(snr),
                         deadline_seconds=deadline, accuracy=float(np.mean(accuracy)),
                         on_time_fraction=float(np.mean(on_time)), saturated=saturated))
  return dict(options=dataclasses.asdict(options) | dict(
      deadlines_seconds=deadlines, mean_snrs_db=[float(s) for s in options.mean_snrs_db],
      seeds=[int(s) for s in options.seeds]),
              clip_interval_seconds=interval, num_clips=num_clips,
              mean_rates_bps={snr: float(np.mean(r)) for snr, r in mean_rates.items()}, rows=rows)


def best_fixed(rows: list[dict], method: str, snr: float, deadline: float) -> dict | None:
  """The fixed-point row of `method` with the best accuracy at (snr, deadline), in hindsight."""
  candidates = [r for r in rows if r["method"] == method and r["policy"].startswith("fixed:")
                and r["mean_snr_db"] == snr and r["deadline_seconds"] == deadline]
  return max(candidates, key=lambda r: r["accuracy"], default=None)


def adaptive(rows: list[dict], method: str, snr: float, deadline: float) -> dict | None:
  for r in rows:
    if (r["method"], r["policy"], r["mean_snr_db"], r["deadline_seconds"]) == (
        method, "adaptive", snr, deadline):
      return r
  return None
