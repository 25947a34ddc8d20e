r"""Paired differences between methods of one results.json, with 95% bootstrap intervals.

  python benchmarks/paired_points.py --results=runs/synthetic/results.json \
      --method=stae --against=stae_factorized-prior --envelope=h264
  python benchmarks/paired_points.py --results=runs/new/results.json --method=stae \
      --against=stae --against_results=runs/old/results.json --split=validation

For each operating point of `--method` (frozen reference ViT column, the test split or, with
`--split=validation`, the validation split):
- against the point of the same name of `--against` (a variant trained on the same classifier;
  with `--against_results`, read from another run's results.json of the same clips, e.g. two
  recipes' main jobs): the bits saved and the top-1 difference, paired over the same clips;
- against the upper envelope of `--envelope` (chosen on the validation split, as the report does),
  read at this point's bits (linear in top-1 against log bits): the top-1 difference.
Intervals: the same 1000 seeded resamples of the test clips for every method
(`stae_jax.evaluation.curves`), so the differences are paired. A "better" needs an interval that
excludes 0. Nothing is trained or measured here: it reads what evaluate.py wrote.
"""

import argparse
import json
import pathlib
import sys

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from stae_jax.evaluation import curves  # pylint: disable=wrong-import-position


def on_split(point: dict, split: str) -> dict:
  """The point's figures on `split` ("test": the point itself; "validation": its validation
  record, with the same keys)."""
  if split == "test":
    return point
  if not point.get("validation"):
    raise SystemExit(f"point {point['name']} has no validation figures (evaluated with "
                     "--validation_clips=0?)")
  return dict(point["validation"], name=point["name"])


def resampled_top1(point: dict, index: np.ndarray) -> np.ndarray:
  correct = np.asarray(point["per_clip"]["correct"], np.float64)
  return correct[index].mean(axis=1)


def envelope_at(points: list[dict], bits: float, index: np.ndarray) -> np.ndarray | None:
  """The envelope's top-1 at `bits`, per resample (the envelope's points fixed, their top-1s
  resampled); None outside its measured range."""
  chosen = curves.frontier(points)
  chosen_bits = np.array([p["bits_per_clip"] for p in chosen])
  if bits < chosen_bits.min() or bits > chosen_bits.max():
    return None
  samples = np.stack([resampled_top1(p, index) for p in chosen], axis=1)  # [R, P]
  order = np.argsort(chosen_bits)
  log_bits = np.log(chosen_bits[order])
  best = np.maximum.accumulate(samples[:, order], axis=1)
  return np.array([np.interp(np.log(bits), log_bits, row) for row in best])


def interval(samples: np.ndarray) -> str:
  lo, hi = np.percentile(samples, [2.5, 97.5])
  return f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--results", required=True)
  parser.add_argument("--method", required=True)
  parser.add_argument("--against", default=None)
  parser.add_argument("--envelope", default=None)
  parser.add_argument("--against_results", default=None,
                      help="read --against from this results.json (another run on the same clips)")
  parser.add_argument("--split", default="test", choices=("test", "validation"))
  parser.add_argument("--resamples", type=int, default=curves.RESAMPLES)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  results = json.loads(pathlib.Path(args.results).read_text())
  methods = results["methods"]
  other_path = args.against_results or args.results
  other = json.loads(pathlib.Path(other_path).read_text()) if args.against_results else results
  for name, path, source in ((args.method, args.results, methods),
                             (args.against, other_path, other["methods"]),
                             (args.envelope, args.results, methods)):
    if name and name not in source:
      raise SystemExit(f"{path} has no method {name!r}; it has {', '.join(source)}")
  if args.envelope and args.split != "test":
    raise SystemExit("--envelope reads the test split (its envelope is chosen on validation); "
                     "drop --split or --envelope")
  mine_points = [on_split(p, args.split) for p in methods[args.method]["points"]]
  clips = len(mine_points[0]["per_clip"]["correct"])
  against = ({p["name"]: on_split(p, args.split) for p in other["methods"][args.against]["points"]}
             if args.against else {})
  for p in against.values():
    if len(p["per_clip"]["correct"]) != clips:
      raise SystemExit(f"{other_path}'s {args.against} has {len(p['per_clip']['correct'])} "
                       f"{args.split} clips, {args.results} {clips}: pairing needs the same clips")
  index = curves._resample_index(clips, args.resamples, args.seed)  # pylint: disable=protected-access
  print(f"{args.results}: {clips} {args.split} clips, frozen reference ViT, "
        f"{args.resamples} paired resamples"
        + (f"; {args.against} from {other_path}" if args.against_results else ""))
  header = "| point | bits | top-1 |"
  rule = "|---|---|---|"
  if args.against:
    header += f" {args.against} bits | saving | top-1 minus {args.against}'s [95%] |"
    rule += "---|---|---|"
  if args.envelope:
    header += f" {args.envelope} envelope at these bits | top-1 minus it [95%] |"
    rule += "---|---|"
  print("\n" + header + "\n" + rule)
  for point in mine_points:
    mine = resampled_top1(point, index)
    row = f"| {point['name']} | {point['bits_per_clip']:,.0f} | {100 * point['top1']:.1f}% |"
    if args.against:
      other = against.get(point["name"])
      if other is None:
        row += " - | - | - |"
      else:
        saving = 1 - point["bits_per_clip"] / other["bits_per_clip"]
        diff = point["top1"] - other["top1"]
        row += (f" {other['bits_per_clip']:,.0f} | {100 * saving:.1f}% | {100 * diff:+.1f} "
                f"{interval(mine - resampled_top1(other, index))} |")
    if args.envelope:
      env = envelope_at(methods[args.envelope]["points"], point["bits_per_clip"], index)
      at = curves.accuracy_at_bits(methods[args.envelope]["points"], point["bits_per_clip"])
      if env is None or at is None:
        row += " outside its range | - |"
      else:
        row += f" {100 * at:.1f}% | {100 * (point['top1'] - at):+.1f} {interval(mine - env)} |"
    print(row)


if __name__ == "__main__":
  main()
