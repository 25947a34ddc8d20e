"""Where a camera's clips come from: the test split (as evaluate.py reads it) or video files.

Both give a list of (uint8 [T,H,W,3] clip, label) pairs at the model's clip shape, loaded once and
kept in memory (bounded by `max_clips`), so several cameras can replay the same clips.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def test_clips(config, *, max_clips: int, loader_fn: Callable | None = None
               ) -> list[tuple[np.ndarray, int]]:
  """The first `max_clips` clips of the test split in their stored order (evaluate.py's order)."""
  if max_clips <= 0:
    raise ValueError(f"max_clips={max_clips}: a camera replays a bounded number of test clips; "
                     "pass a positive count")
  if loader_fn is None:
    from stae_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    loader_fn = pipeline.make_loader
  loader = loader_fn(config.data, "test", seed=int(config.seed), train=False, num_epochs=1)
  clips: list[tuple[np.ndarray, int]] = []
  for batch in loader:
    video, labels = np.asarray(batch["video"]), np.asarray(batch["label"])
    valid = np.asarray(batch.get("mask", np.ones(len(labels), bool)), bool)
    for clip, label, ok in zip(video, labels, valid):
      if ok and len(clips) < max_clips:
        clips.append((clip, int(label)))
    if len(clips) >= max_clips:
      break
  if not clips:
    raise ValueError("the test split gave no clips; check config.data and the dataset")
  return clips


def video_clips(paths: Sequence[str], data_config) -> list[tuple[np.ndarray, int]]:
  """Each video file's evaluation view (`clip_tools.read_clip`: only the sampled frames are
  decoded), label unknown (-1)."""
  from stae_jax.data import video as video_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.serving import clip_tools  # pylint: disable=g-import-not-at-top
  clips = []
  for path in paths:
    try:
      clips.append((clip_tools.read_clip(path, data_config).clip, -1))
    except video_lib.VideoReadError as error:
      raise ValueError(str(error)) from None
  return clips
