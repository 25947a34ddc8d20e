r"""Does the trained reference classifier need the motion? Its top-1 on test clips under time controls.

  python benchmarks/classifier_controls.py --workdir=runs/synthetic [--config=configs/synthetic.py]

Why (issue 15): a classifier that recognises the action from what one frame shows (the actor's
colour, say) makes every compression figure measured on it a measure of how cheaply that frame
travels, not of how well a codec keeps an action. So the classifier of a workdir is scored on the
whole test split (the pipeline evaluate.py reads) under four versions of each clip:

- clean;
- frames shuffled in time (one seeded permutation per clip; `--seed`);
- the middle frame repeated T times (a still clip: no motion at all);
- frames reversed (on synthetic_actions a time reversal swaps the classes of the left/right,
  up/down, clockwise/anticlockwise and grow/shrink pairs, and keeps the oscillations).

For each it prints top-1 (with a 95% bootstrap interval over clips), "pair right" (the predicted
class is in the label's class pair, label // 2: what the actor's colour says on synthetic_actions)
and "within-pair right" (correct among the clips whose pair was right), then the within-pair
accuracy of every class pair. Nothing is trained or tuned here.
"""

import pathlib
import sys

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from stae_jax.data import datasets  # pylint: disable=wrong-import-position
from stae_jax.data import pipeline  # pylint: disable=wrong-import-position
from stae_jax.evaluation import report  # pylint: disable=wrong-import-position
from stae_jax.evaluation import time_controls  # pylint: disable=wrong-import-position
from stae_jax.systems import loading  # pylint: disable=wrong-import-position

_CONFIG = config_flags.DEFINE_config_file("config", str(REPO_ROOT / "configs" / "synthetic.py"),
                                          "Experiment config (file.py[:switches]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir (holds the classifier).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the per-clip shuffles and of the bootstrap.")
_BATCH = flags.DEFINE_integer("batch", 64, "Clips per classifier call.")
_BOOTSTRAP = flags.DEFINE_integer("bootstrap", 1000, "Bootstrap resamples for the intervals.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  config = _CONFIG.value
  workdir = loading.resolve(_WORKDIR.value, config)
  classify = loading.load_classifier(config, workdir)
  clips, labels = [], []
  for batch in pipeline.make_loader(config.data, "test", seed=0, train=False, num_epochs=1):
    clips.append(batch["video"][batch["mask"]])
    labels.append(batch["label"][batch["mask"]])
  clips, labels = np.concatenate(clips), np.concatenate(labels).astype(np.int64)
  rng = np.random.default_rng(_SEED.value)
  cases = {
      "clean": clips,
      f"frames shuffled in time (seed {_SEED.value})": time_controls.shuffled(clips, rng),
      f"middle frame repeated {clips.shape[1]} times": time_controls.middle_repeated(clips),
      "frames reversed": time_controls.reversed_in_time(clips),
  }
  names = datasets.class_names_of(config.data)
  results = {}
  for name, case in cases.items():
    predictions = np.concatenate([
        np.argmax(classify(case[i:i + _BATCH.value]), -1)
        for i in range(0, len(case), _BATCH.value)])
    results[name] = (time_controls.scores(predictions, labels), predictions == labels)

  print(f"classifier of {workdir}; {len(labels)} test clips of {config.data.name}, "
        f"{clips.shape[1]}x{clips.shape[2]}x{clips.shape[3]}")
  print("\n| clips given to it | top-1 [95% interval] | pair right | within-pair right |")
  print("|---|---|---|---|")
  for name, (s, correct) in results.items():
    lo, hi = report.top1_interval(correct, resamples=_BOOTSTRAP.value, seed=_SEED.value)
    print(f"| {name} | {100 * s['top1']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] | "
          f"{100 * s['pair']:.1f}% | {100 * s['within']:.1f}% |")
  print("\nwithin-pair right per class pair (clips whose pair was right)\n")
  print("| class pair | " + " | ".join(results) + " |")
  print("|---|" + "---|" * len(results))
  for k in sorted(results["clean"][0]["pairs"]):
    pair_name = (f"{names[2 * k]} / {names[2 * k + 1]}" if 2 * k + 1 < len(names)
                 else names[2 * k])
    cells = [(f"{100 * s['pairs'][k][0]:.1f}%" if s['pairs'][k][1] else "-")  # no clip: no rate
             + f" ({s['pairs'][k][1]})" for s, _ in results.values()]
    print(f"| {pair_name} | " + " | ".join(cells) + " |")
  clean = results["clean"][0]
  print(f"\nclean minus shuffled: "
        f"{100 * (clean['top1'] - list(results.values())[1][0]['top1']):.1f} points; clean minus "
        f"middle frame repeated: {100 * (clean['top1'] - list(results.values())[2][0]['top1']):.1f} "
        f"points; lowest within-pair (clean): "
        f"{100 * min(v[0] for v in clean['pairs'].values()):.1f}%")


if __name__ == "__main__":
  app.run(main)
