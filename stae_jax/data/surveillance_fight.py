"""Surveillance Camera Fight (Akti, Tataroglu, Ekenel, IPTA 2019) as a TFDS builder, split by source.

The release (MIT licence; github.com/seymanurakti/fight-detection-surv-dataset) is 300 CCTV clips of
about 2 s, 150 with a fight and 150 without, read where it lies (manual directory):
  <manual_dir>/fight/fi001.mp4 ... fi150.mp4
  <manual_dir>/noFight/nofi001.mp4 ... nofi150.mp4
  <manual_dir>/videos.txt   a YouTube URL line, then `<clip>: <start> - <end>` lines of the clips cut
                            from it; the last lines give ranges from two other datasets
                            (`nofi062 - nofi076 : CamNet Dataset`, `nofi076 - nofi091 : Synopsis
                            dataset`). Windows line ends.
Labels: 0 = noFight, 1 = fight (`CLASS_NAMES`), so "positive" means a fight.

Two traps of this release decide the layout of the built data:

- The frame size and the frame rate give the label away (every 320x240 and 704x480 clip has no
  fight, 1280x720 is 48 noFight against 21 fight; 18 fps occurs only without a fight). So every
  clip is stored at one size and one rate: the centred crop of the stored aspect ratio (4:3 by
  default; a 16:9 frame loses an eighth on each side), resized (antialiased) to `width` x `height`
  (128x96), and resampled in time to `fps` (10) by taking the frame on screen at each output
  instant (source frame floor(k * source_fps / fps)). 10 fps is the slowest source rate, so no
  clip ever repeats a frame, which would mark it as slow-sourced; and 96 rows is less than half the
  smallest source's 240, so every clip is downscaled by 2.5x or more and none looks softer for
  having been upscaled. The record's `fps`, `height` and `width` are those of the stored frames;
  `source_height`/`source_width` (and `filename`) are provenance that the input pipeline never
  feeds a model. What cannot be removed: each source's own compression artefacts, and the field of
  view (wide and narrow cameras are cropped alike, not zoomed alike).
- Clips cut from one source video are near-duplicates in scene, so the split is by source, never
  by clip. Sources that share a clip are one group (videos.txt lists nofi022 under two URLs, and
  nofi076 in both dataset ranges), so 46 sources form 44 groups. The one fixed split (`SPLIT`,
  BuilderConfig `split=1`): groups in the order of crc32(group name), each put in `test` when that
  keeps the test set within 50 fight and 50 noFight clips, else in `train`. It yields 97 test
  clips (50 fight, 47 noFight) from 14 groups and 203 training clips (100 fight, 103 noFight) from
  the other 30; the CamNet/Synopsis group (30 noFight clips) is in `train`
  (tests/test_surveillance_fight.py checks the counts and that no source is on both sides). Its
  validation clips are carved from `train` by the input pipeline (every 10th clip,
  `stae_jax.data.pipeline.VALIDATION_RULE`), so they may share a source with training clips.

Cross-validation by source group (`builder_kwargs.fold` = 0..folds-1, `folds` = FOLDS = 5 by
default; configs/surveillance_fight.py:fold=<k>): so that every clip is tested once, by a model that
never saw its source, `assign_folds` puts the 44 groups into k folds, greedily (largest group
first, into the fold with fewest clips of the group's classes), then by the single moves and swaps
of groups that best even out the clips per class per fold, until none does. Fold k's `test` split
is fold k, its `validation` split fold k+1 (mod folds; stored, whole source groups, so the model
that choices are made for never trained on a validation or test source), its `train` split the
other folds. Over the folds every clip is tested once and validated once: a choice made for all
folds can be made on the five validation parts pooled (300 clips). With 5 folds (`fold_counts`;
tests/test_surveillance_fight.py checks these numbers):

  fold   groups  sources  clips  fight  noFight   fold as test: train / validation / test clips
  0      9       10       62     28     34        176 / 62 / 62
  1      8       8        62     30     32        179 / 59 / 62
  2      9       10       59     31     28        183 / 58 / 59
  3      9       9        58     30     28        183 / 59 / 58
  4      9       9        59     31     28        179 / 62 / 59

Fold 0 holds the CamNet/Synopsis group (30 noFight clips, half a fold), which is why it leans to
noFight (45% fight against 48-53% in the others). A fold trains on 176-183 clips, against the fixed
split's 203: the price of a validation part of whole sources. The benchmark across folds is five
training runs and five evaluations, each into its own workdir (runs/surveillance_fight_fold=<k>):

  for k in 0 1 2 3 4; do
    python train.py --config=configs/surveillance_fight.py:fold=$k
    python evaluate.py --config=configs/surveillance_fight.py:fold=$k
  done

Pooling the five folds' test clips into one table (per-clip results side by side, paired intervals
at matched bits) is not built yet: today each fold has its own results.json and report.

Built data: config `source_split_{width}x{height}_{fps}fps[_partial][_q{quality}]` (the fixed
split; `train` and `test`) or `source_fold{k}of{folds}_...` (a fold; `train`, `validation` and
`test`); missing and unreadable clips behave as for HMDB51 (`stae_jax.data._manual`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re
import zlib
from typing import Any, Mapping

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from stae_jax.data import _manual
from stae_jax.data import features as features_lib
from stae_jax.data import video as video_lib
from stae_jax.data._manual import ClipRef, ManualDataError, MissingManualDataError, SplitLists

CLASS_NAMES = ("noFight", "fight")
#: The release's folder of each class, and the prefix of its clip names.
CLASS_FOLDERS = {"noFight": "nofi", "fight": "fi"}
CLIPS_PER_CLASS = 150
SOURCES_FILE = "videos.txt"
#: The one fixed split (see the module docstring); BuilderConfig.split must be this.
SPLIT = 1
#: Test-set size per class that the split fills up to.
TEST_PER_CLASS = 50
#: The number of folds of the cross-validation by source group (`assign_folds`).
FOLDS = 5
#: builder_kwargs.fold of the one fixed split (no cross-validation); 0..folds-1 picks a fold.
NO_FOLD = -1
BUILDER_KWARGS = ("height", "width", "fps", "allow_incomplete", "jpeg_quality", "fold", "folds",
                  "build_workers")
HOMEPAGE = "https://github.com/seymanurakti/fight-detection-surv-dataset"
HOW_TO_GET = (
    f"Download the release from {HOMEPAGE} (MIT licence; cite Akti, Tataroglu and Ekenel, IPTA "
    "2019) so that the layout is <manual_dir>/fight/fi001.mp4 ... fi150.mp4, "
    "<manual_dir>/noFight/nofi001.mp4 ... nofi150.mp4 and <manual_dir>/videos.txt, unedited. "
    "Point the config at it with --config.data.manual_dir=/path/to/surveillance_fight (this "
    "project's machines hold a copy in ../shared/data/real/surveillance_fight).")

_CLIP = r"(?:fi|nofi)[0-9]{3}"
_URL_LINE = re.compile(r"^https?://\S+$")
_CLIP_LINE = re.compile(rf"^(?P<clip>{_CLIP})\s*:\s*\S+\s*-\s*\S+$")
_RANGE_LINE = re.compile(rf"^(?P<first>{_CLIP})\s*-\s*(?P<last>{_CLIP})\s*:\s*(?P<name>.+)$")


def clip_names(class_name: str) -> tuple[str, ...]:
  prefix = CLASS_FOLDERS[class_name]
  return tuple(f"{prefix}{i:03d}" for i in range(1, CLIPS_PER_CLASS + 1))


def clip_ref(name: str) -> ClipRef:
  """The ClipRef of clip `fi001` / `nofi001` (relpath `<class folder>/<name>.mp4`)."""
  class_name = "noFight" if name.startswith("nofi") else "fight"
  return ClipRef(relpath=f"{class_name}/{name}.mp4", label=CLASS_NAMES.index(class_name),
                 class_name=class_name)


@dataclasses.dataclass(frozen=True)
class SourceGroup:
  """Sources linked by a shared clip, and every clip cut from them. name: the first source's."""
  name: str
  sources: tuple[str, ...]
  clips: tuple[ClipRef, ...]

  def count(self, class_name: str) -> int:
    return sum(c.class_name == class_name for c in self.clips)


def read_sources(manual_dir: str | os.PathLike) -> tuple[SourceGroup, ...]:
  """The source groups of videos.txt (no video is opened), in the file's order.

  A source is a YouTube video (named by its URL) or one of the two datasets of the last lines.
  Every one of the release's 300 clips must have a source, or the file is not the release's.
  """
  manual_dir = pathlib.Path(manual_dir)
  if not manual_dir.is_dir():
    raise MissingManualDataError(
        f"Surveillance fight release not found: {manual_dir} is not a directory. {HOW_TO_GET}")
  path = manual_dir / SOURCES_FILE
  if not path.is_file():
    raise MissingManualDataError(
        f"Surveillance fight source list not found: {path} does not exist; without it the clips "
        f"cannot be split by source video. {HOW_TO_GET}")
  known = set(clip_names("fight") + clip_names("noFight"))
  sources_of: dict[str, list[str]] = {}
  order: list[str] = []
  current = None
  for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
    text = line.strip()
    if not text:
      continue
    if _URL_LINE.match(text):
      current = text
      order.append(current)
      continue
    if m := _CLIP_LINE.match(text):
      if current is None:
        raise _manual.parse_error(path, line_number, line,
                                  "a clip line before any source URL line", HOW_TO_GET)
      names, source = [m["clip"]], current
    elif m := _RANGE_LINE.match(text):
      first, last = m["first"], m["last"]
      prefix = "nofi" if first.startswith("nofi") else "fi"
      if not last.startswith(prefix) or int(last[-3:]) < int(first[-3:]):
        raise _manual.parse_error(path, line_number, line,
                                  "a range must run upwards within one class", HOW_TO_GET)
      names = [f"{prefix}{i:03d}" for i in range(int(first[-3:]), int(last[-3:]) + 1)]
      source = m["name"].strip()
      order.append(source)
    else:
      raise _manual.parse_error(
          path, line_number, line, "expected a source URL, `<clip>: <start> - <end>` or "
          "`<first clip> - <last clip> : <dataset>`", HOW_TO_GET)
    for name in names:
      if name not in known:
        raise _manual.parse_error(path, line_number, line,
                                  f"{name} is not a clip of the release (fi/nofi001-150)",
                                  HOW_TO_GET)
      sources_of.setdefault(name, [])
      if source not in sources_of[name]:
        sources_of[name].append(source)
  unsourced = sorted(known - set(sources_of))
  if unsourced:
    raise ManualDataError(
        f"{path} gives no source for {len(unsourced)} of the release's 300 clips "
        f"({_manual.shorten(unsourced)}), so they cannot be split by source. {HOW_TO_GET}")
  return _group(sources_of, order)


def _group(sources_of: dict[str, list[str]], order: list[str]) -> tuple[SourceGroup, ...]:
  """Union of sources that share a clip (union-find), in the order sources first appear."""
  parent = {source: source for source in order}

  def root(source):
    while parent[source] != source:
      parent[source] = parent[parent[source]]
      source = parent[source]
    return source

  for sources in sources_of.values():
    for other in sources[1:]:
      a, b = root(sources[0]), root(other)
      if a != b:
        # The earlier source names the group.
        first, second = sorted((a, b), key=order.index)
        parent[second] = first
  members: dict[str, list[str]] = {}
  for source in order:
    members.setdefault(root(source), []).append(source)
  clips: dict[str, list[ClipRef]] = {name: [] for name in members}
  for name in sorted(sources_of):
    clips[root(sources_of[name][0])].append(clip_ref(name))
  return tuple(SourceGroup(name=name, sources=tuple(sources), clips=tuple(clips[name]))
               for name, sources in members.items() if clips[name])


def split_groups(groups: tuple[SourceGroup, ...]) -> dict[str, tuple[SourceGroup, ...]]:
  """{"train": groups, "test": groups}: the fixed rule of the module docstring."""
  test, train = [], []
  counts = {name: 0 for name in CLASS_NAMES}
  for group in sorted(groups, key=lambda g: zlib.crc32(g.name.encode("utf-8"))):
    if all(counts[name] + group.count(name) <= TEST_PER_CLASS for name in CLASS_NAMES):
      test.append(group)
      for name in CLASS_NAMES:
        counts[name] += group.count(name)
    else:
      train.append(group)
  return {"train": tuple(train), "test": tuple(test)}


def read_split(manual_dir: str | os.PathLike, split: int = SPLIT) -> SplitLists:
  """The train and test clips of the fixed split, from videos.txt alone (no video)."""
  if split != SPLIT:
    raise ValueError(f"the surveillance_fight dataset has one fixed split by source ({SPLIT}), "
                     f"not {split!r}; set config.data.split={SPLIT}.")
  parts = split_groups(read_sources(manual_dir))
  return SplitLists(number=split, train=_clips(parts["train"]), test=_clips(parts["test"]))


def _by_size(groups):
  """Largest group first; equal sizes in the order of crc32(group name)."""
  return sorted(groups, key=lambda g: (-len(g.clips), zlib.crc32(g.name.encode("utf-8"))))


def _imbalance(folds: list[list[SourceGroup]]) -> int:
  """Sum over folds and classes of (clips - the class's clips / number of folds)^2, times the
  number of folds squared (an integer, so comparisons are exact)."""
  k = len(folds)
  totals = {name: sum(g.count(name) for fold in folds for g in fold) for name in CLASS_NAMES}
  return sum((k * sum(g.count(name) for g in fold) - totals[name]) ** 2
             for fold in folds for name in CLASS_NAMES)


def assign_folds(groups: tuple[SourceGroup, ...],
                 folds: int = FOLDS) -> tuple[tuple[SourceGroup, ...], ...]:
  """`folds` disjoint sets of source groups covering all of them, balanced in clips per class.

  Greedy, then improved: groups in `_by_size` order each join the fold whose clips of their
  classes are fewest (the fold that least raises `_imbalance`: smallest sum over classes of the
  group's clips times the fold's; ties to the fold of fewer groups, then the lower index); then
  the single move of a group to another fold, or swap of two groups, that lowers `_imbalance` most
  is made, until none does. Deterministic: no randomness, and the order is fixed by sizes and
  names. Each fold's groups are in `_by_size` order.
  """
  if isinstance(folds, bool) or not isinstance(folds, int) or not 3 <= folds <= len(groups):
    raise ValueError(f"builder_kwargs.folds must be an integer in 3..{len(groups)} (a fold's "
                     f"test, validation and training parts are whole folds, and each fold needs "
                     f"at least one of the {len(groups)} source groups), got {folds!r}")
  parts: list[list[SourceGroup]] = [[] for _ in range(folds)]
  count = lambda part, name: sum(g.count(name) for g in part)
  for group in _by_size(groups):
    best = min(range(folds), key=lambda f: (
        sum(group.count(name) * count(parts[f], name) for name in CLASS_NAMES), len(parts[f]), f))
    parts[best].append(group)
  while True:
    current, best_change = _imbalance(parts), None
    for a in range(folds):
      for b in range(folds):
        if a == b:
          continue
        for i, group in enumerate(parts[a]):
          if len(parts[a]) > 1:  # a move never empties a fold
            moved = [p for p in parts]
            moved[a] = parts[a][:i] + parts[a][i + 1:]
            moved[b] = parts[b] + [group]
            if (cost := _imbalance(moved)) < current and (
                best_change is None or cost < best_change[0]):
              best_change = (cost, moved)
          for j, other in enumerate(parts[b] if a < b else ()):
            swapped = [p for p in parts]
            swapped[a] = parts[a][:i] + [other] + parts[a][i + 1:]
            swapped[b] = parts[b][:j] + [group] + parts[b][j + 1:]
            if (cost := _imbalance(swapped)) < current and (
                best_change is None or cost < best_change[0]):
              best_change = (cost, swapped)
    if best_change is None:
      return tuple(tuple(_by_size(part)) for part in parts)
    parts = best_change[1]


def fold_parts(groups: tuple[SourceGroup, ...], fold: int,
               folds: int = FOLDS) -> dict[str, tuple[SourceGroup, ...]]:
  """{"train", "validation", "test": groups} of fold `fold` of `assign_folds`: test is that fold,
  validation the next one (fold + 1 modulo folds), train the other folds."""
  if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
    raise ValueError(f"builder_kwargs.fold must be an integer in 0..{folds - 1} (one of the "
                     f"{folds} folds), or {NO_FOLD} for the one fixed split; got {fold!r}")
  assigned = assign_folds(groups, folds)
  validation = (fold + 1) % folds
  return {"train": tuple(g for f, part in enumerate(assigned) if f not in (fold, validation)
                         for g in part),
          "validation": assigned[validation], "test": assigned[fold]}


def _clips(groups) -> tuple[ClipRef, ...]:
  return tuple(sorted((c for g in groups for c in g.clips), key=lambda c: c.relpath))


def read_fold(manual_dir: str | os.PathLike, fold: int, folds: int = FOLDS) -> SplitLists:
  """The train, validation and test clips of fold `fold`, from videos.txt alone (no video)."""
  parts = fold_parts(read_sources(manual_dir), fold, folds)
  return SplitLists(number=SPLIT, train=_clips(parts["train"]), test=_clips(parts["test"]),
                    validation=_clips(parts["validation"]))


def fold_counts(manual_dir: str | os.PathLike, folds: int = FOLDS) -> list[dict[str, int]]:
  """Per fold of `assign_folds`: {"groups", "sources", "clips", "fight", "noFight"} (what the
  module docstring's table shows; tests/test_surveillance_fight.py checks it)."""
  return [dict(groups=len(part), sources=sum(len(g.sources) for g in part),
               clips=sum(len(g.clips) for g in part),
               **{name: sum(g.count(name) for g in part) for name in CLASS_NAMES})
          for part in assign_folds(read_sources(manual_dir), folds)]


def validation_rule(data_config: Mapping[str, Any]) -> str | None:
  """How the stored validation split of `data_config`'s builder config was chosen, or None where
  it stores none (the fixed split: the input pipeline then carves validation clips from `train`,
  `stae_jax.data.pipeline.VALIDATION_RULE`)."""
  kwargs = data_config.get("builder_kwargs") or {}
  fold, folds = kwargs.get("fold", NO_FOLD), kwargs.get("folds", FOLDS)
  if fold == NO_FOLD:
    return None
  return (f"fold {(fold + 1) % folds} of the {folds} folds by source group (the source groups of "
          f"the fold after the test fold {fold}), held out of training")


def missing_clips(manual_dir: str | os.PathLike, clips) -> list[ClipRef]:
  """The listed clips whose .mp4 is not in the release (no decoding)."""
  return _manual.missing_clips(pathlib.Path(manual_dir), clips)


# ------------------------------------------------------------------------------------------------
# One size, one frame rate
# ------------------------------------------------------------------------------------------------

def centre_crop_box(height: int, width: int, aspect: float) -> tuple[float, float, float, float]:
  """(left, top, right, bottom) of the largest centred box of width/height `aspect`."""
  if width / height > aspect:
    crop = height * aspect
    return (width - crop) / 2, 0.0, (width + crop) / 2, float(height)
  crop = width / aspect
  return 0.0, (height - crop) / 2, float(width), (height + crop) / 2


@dataclasses.dataclass(eq=False)
class SurveillanceFightConfig(tfds.core.BuilderConfig):
  """The fixed split (fold NO_FOLD) or one fold of the cross-validation, stored at one frame size
  and one frame rate."""
  split: int = SPLIT
  height: int = 96
  width: int = 128
  fps: int = 10
  allow_incomplete: bool = False
  jpeg_quality: int = 90
  fold: int = NO_FOLD
  folds: int = FOLDS


def make_config(split: int = SPLIT, height: int = 96, width: int = 128, fps: int = 10,
                allow_incomplete: bool = False, jpeg_quality: int = 90, fold: int = NO_FOLD,
                folds: int = FOLDS) -> SurveillanceFightConfig:
  if fold != NO_FOLD:
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 3:
      raise ValueError(f"builder_kwargs.folds must be an integer >= 3 (a fold's test, validation "
                       f"and training parts are whole folds), got {folds!r}")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
      raise ValueError(f"builder_kwargs.fold must be an integer in 0..{folds - 1} (one of the "
                       f"{folds} folds; configs/surveillance_fight.py:fold=<k>), or {NO_FOLD} for "
                       f"the one fixed split; got {fold!r}")
  elif folds != FOLDS:
    raise ValueError(f"builder_kwargs.folds={folds!r} needs a fold: set builder_kwargs.fold to "
                     f"0..{folds - 1} (configs/surveillance_fight.py:fold=<k>,folds={folds}), or "
                     f"leave folds at {FOLDS} for the fixed split")
  if split != SPLIT:
    raise ValueError(f"the surveillance_fight dataset has one fixed split by source ({SPLIT}), "
                     f"not {split!r}; set config.data.split={SPLIT}.")
  for name, value in (("height", height), ("width", width)):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % 2:
      raise ValueError(f"builder_kwargs.{name} must be a positive even integer, got {value!r}")
  if isinstance(fps, bool) or not isinstance(fps, int) or not 1 <= fps <= 10:
    raise ValueError(f"builder_kwargs.fps must be an integer in 1..10 (10 fps is the slowest "
                     f"source; a higher rate would repeat frames), got {fps!r}")
  if not 1 <= int(jpeg_quality) <= 100:
    raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
  layout = "source_split" if fold == NO_FOLD else f"source_fold{fold}of{folds}"
  name = (f"{layout}_{width}x{height}_{fps}fps" + ("_partial" if allow_incomplete else "")
          + ("" if jpeg_quality == 90 else f"_q{jpeg_quality}"))
  what = ("the fixed split by source video" if fold == NO_FOLD else
          f"fold {fold} of {folds} by source group (validation: fold {(fold + 1) % folds})")
  return SurveillanceFightConfig(
      name=name, split=split, height=height, width=width, fps=fps,
      allow_incomplete=bool(allow_incomplete), jpeg_quality=int(jpeg_quality), fold=fold,
      folds=folds,
      description=(f"{what}; every clip at {width}x{height} (centred crop of that aspect), {fps} "
                   "fps, frames stored as JPEG"
                   + (", built from an incomplete release" if allow_incomplete else "")))


class SurveillanceFight(_manual.ManualVideoBuilder, skip_registration=True):
  """The release split by source, every clip at one size and rate; construct with `manual_dir=`
  (or use `make_builder`)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Fixed split by source video; one frame size and one frame rate."}
  BUILDER_CONFIGS = [make_config()] + [make_config(fold=fold) for fold in range(FOLDS)]
  RELEASE_NAME = "Surveillance fight"
  CLASS_NAMES = CLASS_NAMES
  HOMEPAGE = HOMEPAGE
  HOW_TO_GET = HOW_TO_GET
  DESCRIPTION = ("{release} (Akti, Tataroglu, Ekenel, IPTA 2019; MIT licence) read from the "
                 "release (manual directory). Every clip is cropped and resized to one frame "
                 "size and resampled to one frame rate (fps, height and width are the stored "
                 "frames'); label 0 = noFight, 1 = fight; no source video is in two splits.")
  BUILDER_KWARGS = BUILDER_KWARGS

  @classmethod
  def make_config(cls, split: int, **kwargs: Any) -> SurveillanceFightConfig:
    return make_config(split=split, **kwargs)

  @classmethod
  def video_root(cls, manual_dir: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(manual_dir)

  @classmethod
  def read_split(cls, manual_dir: str | os.PathLike, split: int) -> SplitLists:
    return read_split(manual_dir, split)

  def split_lists(self, manual_dir: pathlib.Path) -> SplitLists:
    """The fixed split's train/test, or the fold's train/validation/test."""
    config: SurveillanceFightConfig = self.builder_config
    if config.fold == NO_FOLD:
      return read_split(manual_dir, config.split)
    return read_fold(manual_dir, config.fold, config.folds)

  def _encode_clip(self, path: pathlib.Path, clip: ClipRef) -> dict[str, Any] | video_lib.VideoReadError:
    """One record at the configured size and rate, or the read error (returned, in list order)."""
    config: SurveillanceFightConfig = self.builder_config
    size = (config.width, config.height)
    try:
      with video_lib.VideoReader(path) as reader:
        if reader.fps < config.fps * (1 - 1e-6):
          raise video_lib.VideoReadError(
              path, f"{reader.fps:g} fps is slower than the stored {config.fps} fps (frames "
              "would repeat); build with a lower --config.data.builder_kwargs.fps")
        box = centre_crop_box(reader.source_height, reader.source_width,
                              config.width / config.height)
        # Frames are kept as they come, so the clip's length need not be known in advance.
        step = reader.fps / config.fps
        encoded, wanted = [], 0
        for index, frame in enumerate(reader.frames()):
          if index != math.floor(wanted * step + 1e-6):
            continue
          small = Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR, box=box)
          encoded += features_lib.encode_frames(np.asarray(small)[None], "jpeg",
                                                config.jpeg_quality)
          wanted += 1
        return {
            "frames": encoded,
            "label": clip.label,
            "num_frames": len(encoded),
            "fps": float(config.fps),
            "height": config.height,
            "width": config.width,
            "source_height": reader.source_height,
            "source_width": reader.source_width,
            "filename": clip.relpath,
        }
    except video_lib.VideoReadError as e:
      return e


def make_builder(data_config: Mapping[str, Any], data_dir: str | os.PathLike) -> tfds.core.DatasetBuilder:
  """The builder for `config.data` of configs/surveillance_fight.py; read its `train`/`test`
  (and, for a fold, its `validation`)."""
  return _manual.make_builder(SurveillanceFight, data_config, data_dir)
