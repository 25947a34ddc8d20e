"""HMDB51 from the official release (manual download), as a TFDS builder without TensorFlow.

Layout read (see data/README.md):
  <manual_dir>/<class>/<clip>.avi
  <manual_dir>/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt
Each split file line is `<clip>.avi <id> ` (trailing space): id 1 = train, 2 = test, 0 = not used in
that split; every split has 3570 train, 1530 test and 1666 unused of 6766 clips. Labels follow the
alphabetical class order (the order used by every published HMDB51 result we compare with).

Built data: configs `split{N}_{short_side}px[_partial]` with `train` and `test` splits; see
`stae_jax.data._manual` for why, and for what happens to missing or unreadable clips.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any, Mapping

import tensorflow_datasets as tfds

from stae_jax.data import _manual
from stae_jax.data._manual import ClipRef, ManualDataError, MissingManualDataError, SplitLists

SPLITS_FOLDER = "testTrainMulti_7030_splits"
CLASS_NAMES = (
    "brush_hair", "cartwheel", "catch", "chew", "clap", "climb", "climb_stairs", "dive",
    "draw_sword", "dribble", "drink", "eat", "fall_floor", "fencing", "flic_flac", "golf",
    "handstand", "hit", "hug", "jump", "kick", "kick_ball", "kiss", "laugh", "pick", "pour",
    "pullup", "punch", "push", "pushup", "ride_bike", "ride_horse", "run", "shake_hands",
    "shoot_ball", "shoot_bow", "shoot_gun", "sit", "situp", "smile", "smoke", "somersault",
    "stand", "swing_baseball", "sword", "sword_exercise", "talk", "throw", "turn", "walk", "wave",
)
HOW_TO_GET = (
    "Download hmdb51_org.rar and test_train_splits.rar from the HMDB51 page "
    "(https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/), extract "
    "hmdb51_org.rar and then every class archive in it so that the layout is "
    "<manual_dir>/<class>/<clip>.avi, and extract the splits to "
    f"<manual_dir>/{SPLITS_FOLDER}/<class>_test_split{{1,2,3}}.txt (see data/README.md). "
    "Point the config at it with --config.data.manual_dir=/path/to/hmdb51.")
_SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<split>[0-9]+)\.txt$")
_MEMBERSHIP = {"0": None, "1": "train", "2": "test"}


def split_file(manual_dir: str | os.PathLike, class_name: str, split: int) -> pathlib.Path:
  return pathlib.Path(manual_dir) / SPLITS_FOLDER / f"{class_name}_test_split{split}.txt"


def read_split(manual_dir: str | os.PathLike, split: int) -> SplitLists:
  """The train and test clips of official split `split`, from the split files alone (no video)."""
  if split not in _manual.SPLIT_NUMBERS:
    raise ValueError(f"HMDB51 has splits {_manual.SPLIT_NUMBERS}, not {split!r}")
  manual_dir = pathlib.Path(manual_dir)
  if not manual_dir.is_dir():
    raise MissingManualDataError(
        f"HMDB51 release not found: {manual_dir} is not a directory. {HOW_TO_GET}")
  folder = manual_dir / SPLITS_FOLDER
  if not folder.is_dir():
    raise MissingManualDataError(
        f"HMDB51 split files not found: {folder} is not a directory. {HOW_TO_GET}")
  known = set(CLASS_NAMES)
  strangers = sorted(p.name for p in folder.iterdir()
                     if (m := _SPLIT_FILE.match(p.name)) and m["cls"] not in known)
  if strangers:
    raise ManualDataError(
        f"{folder} holds split files for classes HMDB51 does not have: {_manual.shorten(strangers)}. "
        f"HMDB51's 51 classes are {', '.join(CLASS_NAMES)}. {HOW_TO_GET}")
  absent = [split_file(manual_dir, c, split).name for c in CLASS_NAMES
            if not split_file(manual_dir, c, split).is_file()]
  if absent:
    raise MissingManualDataError(
        f"{len(absent)} of the 51 HMDB51 split-{split} files are missing from {folder}: "
        f"{_manual.shorten(absent)}. {HOW_TO_GET}")

  members: dict[str, list[ClipRef]] = {"train": [], "test": []}
  seen: dict[str, pathlib.Path] = {}
  for label, class_name in enumerate(CLASS_NAMES):
    path = split_file(manual_dir, class_name, split)
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
      fields = line.split()
      if not fields:
        continue
      if len(fields) != 2 or fields[1] not in _MEMBERSHIP or not fields[0].endswith(".avi"):
        raise _manual.parse_error(path, line_number, line,
                                  "expected `<clip>.avi <0|1|2>`", HOW_TO_GET)
      clip_name, membership = fields
      if clip_name in seen:
        raise _manual.parse_error(path, line_number, line,
                                  f"{clip_name} is listed again (first in {seen[clip_name]})",
                                  HOW_TO_GET)
      seen[clip_name] = path
      if _MEMBERSHIP[membership]:
        members[_MEMBERSHIP[membership]].append(
            ClipRef(relpath=f"{class_name}/{clip_name}", label=label, class_name=class_name))
  return SplitLists(number=split, train=tuple(members["train"]), test=tuple(members["test"]))


def list_clips(manual_dir: str | os.PathLike) -> dict[int, SplitLists]:
  """All three official splits, keyed 1..3; with `missing_clips` a quick check of a release."""
  return {split: read_split(manual_dir, split) for split in _manual.SPLIT_NUMBERS}


def missing_clips(manual_dir: str | os.PathLike, clips) -> list[ClipRef]:
  """The listed clips whose .avi is not in the release (no decoding)."""
  return _manual.missing_clips(pathlib.Path(manual_dir), clips)


class Hmdb51(_manual.ManualVideoBuilder):
  """HMDB51, official splits 1-3; construct with `manual_dir=` (or use `make_builder`)."""

  RELEASE_NAME = "HMDB51"
  CLASS_NAMES = CLASS_NAMES
  HOMEPAGE = "https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/"
  HOW_TO_GET = HOW_TO_GET

  @classmethod
  def video_root(cls, manual_dir: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(manual_dir)

  @classmethod
  def read_split(cls, manual_dir: str | os.PathLike, split: int) -> SplitLists:
    return read_split(manual_dir, split)


def make_builder(data_config: Mapping[str, Any], data_dir: str | os.PathLike) -> tfds.core.DatasetBuilder:
  """The HMDB51 builder for `config.data` of configs/hmdb51.py; read its `train`/`test` splits."""
  return _manual.make_builder(Hmdb51, data_config, data_dir)
