r"""How much a race saves the frame choice, and whether it keeps the frames the full search chose.

  python benchmarks/frame_race.py --workdir=/tmp/mjL --scores=/tmp/frame_scores.json
  python benchmarks/frame_race.py --workdir=/tmp/mjL --scores=/tmp/frame_scores.json --races=0,24

STAE's frame choice (`stae_jax.systems.stae.choose_frames`, frame_rule="chosen") scores candidate
frame subsets with the frozen classifier on validation clips. Here each (subset, batch of clips)
is scored once with the workdir's classifier on the same clips `prepare` reads (the first
`--clips` validation clips, in choose_frames' batches), kept in `--scores` (JSON; a rerun reads it
and scores only what is missing), and the search (`search_frames`, the trainer's own code) is replayed on
those scores at each race size: the batches each race scores, and the frames and accuracy it
chooses for every k of the default's points. Nothing is trained.
"""

import argparse
import inspect
import json
import pathlib
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

# pylint: disable=wrong-import-position
from flax import nnx
import numpy as np

from stae_jax.data import pipeline
from stae_jax.models.stae import STAE
from stae_jax.systems import loading
from stae_jax.systems import stae as stae_method


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="a run with a finished classifier stage")
  parser.add_argument("--scores", required=True, help="JSON of per-batch scores (read, extended)")
  parser.add_argument("--clips", type=int, default=0, help="0: STAE's choice_clips")
  parser.add_argument("--batch", type=int, default=0, help="0: choose_frames' batch")
  parser.add_argument("--races", default="0,32,24,16,8")
  parser.add_argument("--ks", default="1,2,4,8")
  args = parser.parse_args()

  path = pathlib.Path(args.scores)
  cache = json.loads(path.read_text()) if path.exists() else {}
  config = loading.read_record(loading.classifier_dir(args.workdir))
  classifier = loading.load_classifier(config, args.workdir)
  vit = nnx.merge(classifier.graphdef, classifier.params, classifier.rest)["vit"]
  # The trainer's settings, each from its one source: STAE's clip count, choose_frames' search.
  defaults = inspect.signature(stae_method.choose_frames).parameters
  clips = args.clips or inspect.signature(STAE.__init__).parameters["choice_clips"].default
  batch = args.batch or defaults["batch"].default
  videos, labels = stae_method.choice_clips(
      pipeline.make_loader(config.data, "validation", seed=int(config.seed), train=False,
                           num_epochs=1), clips)
  score, batches, used = stae_method.frame_scorer(vit, videos, labels, batch=batch)
  began, fresh = time.perf_counter(), 0

  def score_batch(subset, index):
    nonlocal fresh
    key = f"{','.join(map(str, subset))}@{index}"
    if key not in cache:
      cache[key] = list(score(subset, index))
      fresh += 1
    return tuple(cache[key])

  ks = [int(k) for k in args.ks.split(",")]
  search = {name: defaults[name].default for name in ("beam", "exhaustive")}
  print(f"classifier of {args.workdir}; {used} validation clips in {batches} batches of "
        f"{batch}")
  print("| race | batches scored | " + " | ".join(f"k={k}" for k in ks) + " |")
  print("|---|---|" + "---|" * len(ks))
  full = None
  for race in (int(r) for r in args.races.split(",")):
    asked = set()

    def counted(subset, index):
      asked.add((subset, index))
      return score_batch(subset, index)

    _, report = stae_method.search_frames(counted, frames=videos.shape[1], batches=batches,
                                          clips=used, ks=ks, race=race, **search)
    chosen = {k: (report[k]["frames"], report[k]["accuracy"]) for k in ks}
    full = chosen if race == 0 else full
    cells = [("the same" if full is not None and race != 0 and chosen[k] == full[k] else
              f"{chosen[k][0]} {100 * chosen[k][1]:.1f}%") for k in ks]
    print(f"| {race or 'none (every batch)'} | {len(asked)} | " + " | ".join(cells) + " |",
          flush=True)
    path.write_text(json.dumps(cache))
  print(f"{fresh} batches scored now in {time.perf_counter() - began:.0f} s; {len(cache)} kept in "
        f"{path}")


if __name__ == "__main__":
  main()
