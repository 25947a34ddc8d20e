r"""Pools the folds of a cross-validation (e.g. surveillance_fight's 5 source folds) into one table.

  for k in 0 1 2 3 4; do
    python train.py --config=configs/surveillance_fight.py:fold=$k --workdir=runs/fight_$k
    python evaluate.py --config=configs/surveillance_fight.py:fold=$k --workdir=runs/fight_$k \
        --test_points=all
  done
  python benchmarks/pool_folds.py --workdirs=runs/fight_0,runs/fight_1,runs/fight_2,runs/fight_3,runs/fight_4 \
      --out=runs/fight_pooled.json
  python benchmarks/paired_points.py --results=runs/fight_pooled.json --method=stae --envelope=h264

Every clip is tested once, by its own fold's models; the pooled file concatenates the folds' per-clip
correctness and bits per method and point (`stae_jax.evaluation.folds`), so its intervals cover all
clips and `paired_points.py` pairs methods over them. Nothing is trained or measured here.
"""

import argparse
import json
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from stae_jax.evaluation import curves  # pylint: disable=wrong-import-position
from stae_jax.evaluation import folds as folds_lib  # pylint: disable=wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdirs", required=True,
                      help="comma-separated workdirs (or results.json files), one per fold")
  parser.add_argument("--out", required=True, help="where to write the pooled results JSON")
  args = parser.parse_args()
  paths = []
  for item in filter(None, args.workdirs.split(",")):
    path = pathlib.Path(item)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
      raise SystemExit(f"{path} not found: run evaluate.py on that fold first (see --help)")
    paths.append(path)
  try:
    pooled = folds_lib.pool_results([json.loads(p.read_text()) for p in paths],
                                    names=[str(p.parent) for p in paths])
  except folds_lib.FoldError as e:
    raise SystemExit(f"cannot pool: {e}") from e
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(pooled))
  ref = pooled["reference"]
  lo, hi = ref["top1_interval"]
  print(f"{len(paths)} folds, {pooled['num_clips']} test clips ({pooled['clips_per_fold']} per "
        f"fold); reference {100 * ref['top1']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]")
  print("\n| method | point | top-1 [95%] | bits per clip | ratio | on the envelope (validation) |")
  print("|---|---|---|---|---|---|")
  for method, entry in pooled["methods"].items():
    chosen = {p["name"] for p in curves.frontier(entry["points"])}
    for p in sorted(entry["points"], key=lambda p: p["bits_per_clip"]):
      lo, hi = p["top1_interval"]
      print(f"| {method} | {p['name']} | {100 * p['top1']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] "
            f"| {p['bits_per_clip']:,.0f} | {p['compression_ratio']:,.0f}x | "
            f"{'yes' if p['name'] in chosen else ''} |")
  for s in pooled["skipped"]:
    print(f"skipped {s['method']} {s['point']}: not measured on test in {', '.join(s['missing_in'])}")
  print(f"\nwrote {out}")


if __name__ == "__main__":
  main()
