"""Do two evaluations of the same workdir agree on the channel cells? (issue 29, item 4)

  python benchmarks/channel_profile.py --runs=/tmp/a/results.json,/tmp/b/results.json \
      [--base=runs/synthetic/results.json] [--snr=0] [--deadline=0.05]

Prints, per run, its device profile's load average and the adaptive policy's test cell of every
method at (--snr, --deadline) with its 95% interval, and whether each run's cell lies inside every
other run's interval. With --base (a results.json of the same workdir, e.g. a full evaluation),
also its channel cells recomputed with each run's device profile in place of its own
(`stae_jax.evaluation.deadlines.recompute`): the same per-clip results, only the step times
differ; and the same with each run's wall medians of the same runs in place of the processor
seconds (what the channel study read before the profile). Nothing is measured here; it reads results.json files.
"""

import copy
import json
import pathlib

from absl import app
from absl import flags

from stae_jax.evaluation import deadlines
from stae_jax.evaluation import device_profile
from stae_jax.evaluation import evaluate

_RUNS = flags.DEFINE_list("runs", None, "results.json files of evaluations to compare.",
                          required=True)
_BASE = flags.DEFINE_string("base", None, "A results.json whose channel cells are recomputed with "
                            "each run's device profile.")
_SNR = flags.DEFINE_float("snr", 0.0, "Mean SNR (dB) of the cells shown.")
_DEADLINE = flags.DEFINE_float("deadline", 0.05, "Deadline (s) of the cells shown.")


def _cells(channel: dict, snr: float, deadline: float) -> dict:
  return {r["method"]: r for r in channel["rows"]
          if r["policy"] == "adaptive" and r["mean_snr_db"] == snr
          and r["deadline_seconds"] == deadline}


def _agree(named: dict) -> str:
  """Over every adaptive test cell (method, SNR, deadline) of {name: channel section}: how many lie
  within every other run's interval, and the largest difference of accuracy between runs."""
  keys = [(r["method"], r["mean_snr_db"], r["deadline_seconds"])
          for r in next(iter(named.values()))["rows"]
          if r["policy"] == "adaptive" and r["split"] == "test"]
  rows = {name: {(r["method"], r["mean_snr_db"], r["deadline_seconds"]): r for r in c["rows"]
                 if r["policy"] == "adaptive" and r["split"] == "test"}
          for name, c in named.items()}
  inside, largest = 0, 0.0
  for key in keys:
    cells = [rows[name][key] for name in named]
    inside += all(b["accuracy_interval"][0] <= a["accuracy"] <= b["accuracy_interval"][1]
                  for a in cells for b in cells)
    largest = max(largest, max(c["accuracy"] for c in cells) - min(c["accuracy"] for c in cells))
  return (f"every adaptive cell: {inside} of {len(keys)} within each other's intervals, largest "
          f"difference {100 * largest:.1f} points")


def _compare(named: dict, snr: float, deadline: float) -> None:
  """Prints {name: channel section}'s cells and whether each lies in the others' intervals."""
  cells = {name: _cells(channel, snr, deadline) for name, channel in named.items()}
  methods = list(next(iter(cells.values())))
  for method in methods:
    shown = []
    for name, by_method in cells.items():
      r = by_method[method]
      lo, hi = r["accuracy_interval"]
      shown.append(f"{name} {100 * r['accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]")
    inside = all(lo <= cells[a][method]["accuracy"] <= hi
                 for a in cells for b in cells if a != b
                 for lo, hi in [cells[b][method]["accuracy_interval"]])
    print(f"  {method:8s} " + " | ".join(shown) + f" | within each other's intervals: {inside}")
  print("  " + _agree(named))


def main(argv):
  del argv
  runs = {pathlib.Path(p).parent.name: json.loads(pathlib.Path(p).read_text()) for p in _RUNS.value}
  snr, deadline = _SNR.value, _DEADLINE.value
  for name, results in runs.items():
    profile = device_profile.of_results(results)
    load = profile.get("load_average") or {}
    print(f"{name}: {results['channel']['num_clips']} clips sent, profile {profile['source']}, load average "
          f"before {load.get('before')}, after {load.get('after')}, evaluate "
          f"{results['evaluate_seconds']:.0f} s")
  print(f"adaptive policy, {snr:g} dB, {1000 * deadline:g} ms, each run's own clips:")
  _compare({name: r["channel"] for name, r in runs.items()}, snr, deadline)
  if _BASE.value:
    base = json.loads(pathlib.Path(_BASE.value).read_text())
    for what in ("methods", "wall_seconds"):
      recomputed = {}
      for name, results in runs.items():
        again = copy.deepcopy(base)
        again["device_profile"] = None
        profile = results["device_profile"]
        evaluate.declare_profile(again, dict(profile, methods=profile[what], source="declared",
                                             path=f"{name}'s"))
        recomputed[name] = deadlines.recompute(again)
      print(f"{_BASE.value} ({base['channel']['num_clips']} clips sent) with each run's profile"
            + (" (processor seconds):" if what == "methods" else
               ", its wall medians instead (the step times the channel read before the profile):"))
      _compare(recomputed, snr, deadline)
    own = _cells(base["channel"], snr, deadline)
    print("  as stored (its own step times): " + ", ".join(
        f"{m} {100 * r['accuracy']:.1f}% [{100 * r['accuracy_interval'][0]:.1f}, "
        f"{100 * r['accuracy_interval'][1]:.1f}]" for m, r in own.items()))


if __name__ == "__main__":
  app.run(main)
