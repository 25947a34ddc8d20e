"""The device profile: seconds per clip of each step, per method and operating point.

The channel study (`stae_jax.evaluation.deadlines`) plans and scores every clip with these times,
not with what each clip happened to take, so that its cells are a function of results.json alone:
the per-clip correctness and bits, and this profile (results.json `device_profile`).

Measured (the default, `evaluate.measure_profile`): after the test pass, `latency_clips` test clips,
each run alone at batch 1 through every step of every measured point, `repeats` times in a row,
after the warm-up (compile) call. A step's profile time is the median over those runs of the
processor time the process spent in it (`time.process_time`: every thread of the process, x264's
included), not its wall time: wall time also counts the time the step waited for a core that
another program held, so on a loaded machine it measures the machine's load; processor time is the
work the step needs, what it takes when it has a core to itself. The wall medians of the same runs
are kept beside it (`wall_seconds`, and each point's `seconds` in results.json's tables), with the
load average (`os.getloadavg()`) before and after the measurement. A step whose threads run in
parallel spends more processor time than wall time: the profile then describes a device that runs
it on one core.

Declared (`evaluate.py --device_profile=<json>`): a JSON file holding a profile of this format (or
a results.json, whose `device_profile` is read), e.g. one measured on another device; it must give
a time for every step of every point the channel study uses.

PROFILE {format, source ("measured" | "declared" | "point_seconds"), path (declared: the file),
         statistic, steps [encode, entropy_encode, entropy_decode, decode, classify],
         clips, repeats, load_average {before [1, 5, 15 min], after [...]} (measured; null
         otherwise), methods {<method>: {<point name>: {<step>: seconds per clip}}},
         wall_seconds null | {<method>: {<point name>: {<step>: seconds}}}}
"point_seconds" is what a results.json written before the profile existed gets: each point's own
`seconds` (its single-clip wall medians), read as they were then.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

PROFILE_FORMAT = "stae_jax.device_profile/1"
STEPS = ("encode", "entropy_encode", "entropy_decode", "decode", "classify")
MEASURED_STATISTIC = ("median over repeated single-clip runs of the process's processor seconds "
                      "(time.process_time) per step, after a warm-up call")


def measured(times: dict, wall: dict, *, clips: int, repeats: int, load_before, load_after) -> dict:
  """A measured profile from {method: {point: {step: [processor seconds...]}}} and the same of
  wall seconds: their medians, with how they were taken."""
  return dict(format=PROFILE_FORMAT, source="measured", path=None, statistic=MEASURED_STATISTIC,
              steps=list(STEPS), clips=int(clips), repeats=int(repeats),
              load_average=dict(before=[float(v) for v in load_before],
                                after=[float(v) for v in load_after]),
              methods=_medians(times), wall_seconds=_medians(wall))


def _medians(samples: dict) -> dict:
  return {method: {point: {step: float(np.median(values[step])) for step in STEPS}
                   for point, values in points.items()}
          for method, points in samples.items()}


def from_points(results: dict) -> dict:
  """The profile of a results.json that has none: each measured point's own `seconds`."""
  methods = {}
  for name, method in results["methods"].items():
    if method.get("skipped") or not method.get("points"):
      continue
    methods[name] = {}
    for p in method["points"]:
      seconds = dict(p["seconds"])
      # encode + entropy_encode are read together (the device's half) as `device_seconds`.
      seconds.setdefault("encode", p["device_seconds"] - seconds.get("entropy_encode", 0.0))
      seconds.setdefault("entropy_encode", 0.0)
      methods[name][p["name"]] = {step: float(seconds[step]) for step in STEPS}
  return dict(format=PROFILE_FORMAT, source="point_seconds", path=None,
              statistic="each point's own single-clip seconds", steps=list(STEPS), clips=None,
              repeats=None, load_average=None, methods=methods, wall_seconds=None)


def of_results(results: dict) -> dict:
  """The profile a results.json's channel study uses: its `device_profile`, or `from_points`."""
  return results.get("device_profile") or from_points(results)


def load(path: str | pathlib.Path) -> dict:
  """A declared profile from a JSON file: a profile, or a results.json with a `device_profile`."""
  path = pathlib.Path(path)
  data = json.loads(path.read_text())
  profile = data.get("device_profile", data) if isinstance(data, dict) else None
  if not isinstance(profile, dict) or profile.get("format") != PROFILE_FORMAT:
    raise ValueError(f"{path}: not a device profile of format {PROFILE_FORMAT!r} (nor a "
                     "results.json with one); see stae_jax/evaluation/device_profile.py.")
  if not isinstance(profile.get("methods"), dict):
    raise ValueError(f"{path}: a device profile needs methods {{method: {{point: {{step: s}}}}}}.")
  return dict(profile, source="declared", path=str(path.absolute()))


def check(profile: dict, results: dict) -> None:
  """Raises ValueError unless `profile` has a non-negative time for every step of every point the
  channel study of `results` uses (every method not skipped, every point measured on test)."""
  missing = []
  for name, method in results["methods"].items():
    if method.get("skipped"):
      continue
    for p in method.get("points") or ():
      times = profile["methods"].get(name, {}).get(p["name"])
      for step in STEPS:
        value = None if times is None else times.get(step)
        if not isinstance(value, (int, float)) or value < 0:
          missing.append(f"{name} {p['name']} {step}")
  if missing:
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    raise ValueError(f"device profile ({profile.get('source')}"
                     f"{' ' + profile['path'] if profile.get('path') else ''}) has no time for: "
                     f"{shown}.")
