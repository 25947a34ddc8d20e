"""The "tuned" column for headline baselines: where their ViT is tuned, and tuning it.

A learned system is scored in the tuned column by its own ViT (its joint stage trained it on the
system's reconstructions). A baseline has none, so it gets the reference ViT fine-tuned on its
decoded training clips with the same budget (`stae_jax.training.finetune.budget`: the main learned
system's last stage, steps and learning rate included) at the operating points that decide the
headline: the points on its envelope (chosen on the validation split) around the first one whose
validation top-1 reaches the reference's validation top-1 minus the target loss: `cells[0]` cheaper
ones and `cells[1]` from it up. Each is its own fine-tune from the reference's weights.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from absl import logging
import ml_collections
import numpy as np

from stae_jax import systems
from stae_jax.evaluation import curves
from stae_jax.evaluation import report
from stae_jax.training import finetune


@dataclasses.dataclass
class Tuned:
  classifiers: dict        # (tag, Point) -> classify(clips) -> logits
  descriptions: dict       # tag -> what scores its tuned column (results.json tuned_classifier)


def cells_to_tune(points: list[dict], target_top1: float, cells: tuple[int, int]) -> list[str]:
  """Names of the envelope points to tune at: `cells[0]` below the first whose top-1 reaches
  `target_top1` and `cells[1]` from it (the most accurate ones where none reaches it). `points`:
  {name, bits_per_clip, top1} measured on the validation split."""
  chosen = curves.frontier(points)
  first = next((i for i, p in enumerate(chosen) if p["top1"] >= target_top1), len(chosen))
  below, above = cells
  return [p["name"] for p in chosen[max(0, first - below):first + above]]


def decoded_batches(codec: systems.Codec, point: systems.Point, loader):
  """Training batches as the server rebuilds them at `point`: {"video": float32, "label"}."""
  for batch in loader:
    coded = codec.device(np.asarray(batch["video"]), point)
    yield {"video": np.asarray(codec.server(coded.streams, point), np.float32),
           "label": np.asarray(batch["label"])}


def tune_baselines(config, workdir, codecs, reference, validation, *, loader_fn: Callable,
                   budget_from: str, cells: tuple[int, int], progress: bool = False) -> Tuned:
  """Fine-tunes the reference ViT for each codec in `codecs` at its `cells_to_tune` (from the
  validation pass `validation`, an `evaluate._Split`), with `budget_from`'s last-stage budget."""
  stage = finetune.budget(workdir, budget_from)
  tuner = finetune.Finetuner(reference, stage, seed=int(config.seed))
  data = ml_collections.ConfigDict(config.data.to_dict())
  with data.unlocked():
    data.batch_size = tuner.batch_size or int(config.data.batch_size)
  reference_top1 = validation.reference.top1()
  target = reference_top1 - report.TARGET_LOSS_POINTS / 100.0
  classifiers, descriptions = {}, {}
  for codec in codecs:
    measured = validation.points[codec.tag]
    points = [dict(name=p.name, bits_per_clip=acc.bits(), top1=acc.top1())
              for p, acc in measured.items()]
    names = cells_to_tune(points, target, cells)
    for point in (p for p in measured if p.name in names):
      loader = loader_fn(data, "train", seed=int(config.seed), train=True)
      classifiers[(codec.tag, point)], last = tuner.run(decoded_batches(codec, point, loader))
      logging.info("%s at %s: reference ViT tuned for %d steps (last loss %.3f)", codec.label,
                   point.name, int(stage.steps), last.get("loss", float("nan")))
      if progress:
        print(f"tuned the reference ViT for {codec.label} at {point.name}", flush=True)
    descriptions[codec.tag] = (
        f"the reference ViT fine-tuned on its decoded training clips at each of {len(names)} "
        f"envelope points near the target, with {stage.budget_of} budget ({int(stage.steps)} "
        f"steps, lr {float(stage.lr):g}, batch {data.batch_size})")
  return Tuned(classifiers=classifiers, descriptions=descriptions)
