"""Time controls of a clip classifier: the same clips with their frames shuffled, frozen or reversed.

A classifier that recognises actions should lose most of its accuracy when the frames lose their
order (shuffled) or the motion is gone (one frame repeated); `scores` also splits the accuracy
into "pair right" and "within-pair right" for datasets whose classes come in pairs (label // 2, as
synthetic_actions' left/right, up/down, ...). Used by benchmarks/classifier_controls.py (a trained
workdir) and benchmarks/motion_probe.py (a probe loop).
"""

import numpy as np


def shuffled(clips: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Each clip's frames in its own random order (the same multiset of frames, no order)."""
  order = np.stack([rng.permutation(clips.shape[1]) for _ in range(len(clips))])
  return np.take_along_axis(clips, order[:, :, None, None, None], axis=1)


def middle_repeated(clips: np.ndarray) -> np.ndarray:
  """Frame T // 2 repeated T times: everything one frame shows, no motion."""
  t = clips.shape[1]
  return np.repeat(clips[:, t // 2:t // 2 + 1], t, axis=1)


def reversed_in_time(clips: np.ndarray) -> np.ndarray:
  return clips[:, ::-1]


def scores(predictions: np.ndarray, labels: np.ndarray) -> dict:
  """top-1, pair right, within-pair right, and within-pair per pair (label // 2)."""
  correct = predictions == labels
  pair = predictions // 2 == labels // 2
  pairs = {}
  for k in range(int(labels.max()) // 2 + 1):
    in_pair = pair & (labels // 2 == k)
    pairs[k] = (float(correct[in_pair].mean()) if in_pair.any() else float("nan"), int(in_pair.sum()))
  return dict(top1=float(correct.mean()), pair=float(pair.mean()),
              within=float(correct[pair].mean()) if pair.any() else float("nan"), pairs=pairs)
