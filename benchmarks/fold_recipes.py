r"""Chooses the classifier recipe of a cross-validated config on its validation folds only.

  python benchmarks/fold_recipes.py --workdir=/tmp/fight_recipes --recipes=differences,motion

For each recipe and fold, `train.py --config=configs/surveillance_fight.py:fold=<k>` trains the
classifier stage alone into <workdir>/<recipe>/fold_<k> (`config.train.eval_split=validation`: its
evaluation reads fold k's validation part, fold k+1 mod 5, never its test part), then the folds'
validation accuracies are pooled over all 300 clips (every clip is in one fold's validation part),
with a 95% Wilson interval on the pooled count. A finished run is not trained again. The recipe with
the best pooled validation accuracy is the one to train the codecs on; its test accuracy is
measured afterwards, by evaluate.py on each fold.

Recipes (the config's own is "differences"):
""" 

import argparse
import json
import math
import pathlib
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

RECIPES = {
    # configs/surveillance_fight.py as committed: frame differences, 4x16x16 tubelets.
    "differences": [],
    # configs/synthetic.py's motion front end (26 motion channels on the clip pooled to 32x32, a
    # per-pixel layer to 32 channels, 4x8x8 tubelets: the same 32 tokens a clip).
    "motion": ["--config.model.vit.inputs=motion", "--config.model.vit.pool=2",
               "--config.model.vit.stem_channels=32", "--config.model.vit.patch=8"],
    # Frames themselves (VideoMAE's input), as a control: it learnt the scenes before.
    "frames": ["--config.model.vit.inputs=frames"],
}
__doc__ += "".join(f"  {name}: {' '.join(args) or '(the config)'}\n" for name, args in RECIPES.items())


def wilson(correct: float, n: int) -> tuple[float, float]:
  """95% Wilson score interval of a proportion correct / n."""
  z, p = 1.959964, correct / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return centre - half, centre + half


def run_fold(args, recipe: str, fold: int) -> tuple[float, float]:
  """Trains (or finds trained) the classifier of `recipe` on `fold`: (validation accuracy, wall s)."""
  workdir = pathlib.Path(args.workdir).absolute() / recipe / f"fold_{fold}"
  command = [sys.executable, "train.py", f"--config={args.config}:fold={fold}",
             f"--workdir={workdir}", "--config.train.stage_order=('classifier',)",
             "--config.train.eval_split=validation", "--config.train.progress=False",
             *RECIPES[recipe], *args.override]
  started = time.time()
  subprocess.run(command, cwd=REPO_ROOT, check=True)
  wall = time.time() - started
  records = [json.loads(line) for line in
             (workdir / "classifier" / "metrics.jsonl").read_text().splitlines() if line.strip()]
  accuracy = [r["eval_accuracy"] for r in records if "eval_accuracy" in r]
  if not accuracy:
    raise SystemExit(f"{workdir}: the classifier stage recorded no evaluation")
  return accuracy[-1], wall


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--config", default="configs/surveillance_fight.py")
  parser.add_argument("--recipes", default="differences,motion")
  parser.add_argument("--folds", default="0,1,2,3,4")
  parser.add_argument("--override", action="append", default=[],
                      help="train.py flags added to every run (e.g. --config.stages.classifier.steps=500)")
  args = parser.parse_args()
  from stae_jax.data import surveillance_fight as fight_data  # pylint: disable=g-import-not-at-top
  from configs import surveillance_fight as fight_config  # pylint: disable=g-import-not-at-top
  manual_dir = (REPO_ROOT / fight_config.get_config().data.manual_dir).resolve()
  counts = [c["clips"] for c in fight_data.fold_counts(manual_dir)]
  folds = [int(k) for k in args.folds.split(",")]
  recipes = args.recipes.split(",")
  unknown = [r for r in recipes if r not in RECIPES]
  if unknown:
    raise SystemExit(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
  rows = []
  for recipe in recipes:
    correct = clips = 0.0
    cells = []
    for k in folds:
      accuracy, wall = run_fold(args, recipe, k)
      n = counts[(k + 1) % len(counts)]  # fold k's validation part is fold k+1
      correct += accuracy * n
      clips += n
      cells.append(f"{100 * accuracy:.1f}% ({wall:.0f} s)")
    lo, hi = wilson(correct, int(round(clips)))
    rows.append(f"| {recipe} | {' | '.join(cells)} | {100 * correct / clips:.1f}% "
                f"[{100 * lo:.1f}, {100 * hi:.1f}] on {clips:.0f} clips |")
  print(f"\n| recipe | {' | '.join(f'fold {k} validation (train wall)' for k in folds)} | "
        "pooled validation top-1 [95% Wilson] |")
  print("|---|" + "---|" * len(folds) + "---|")
  print("\n".join(rows))


if __name__ == "__main__":
  main()
