"""UCF101 from the official release (manual download), as a TFDS builder without TensorFlow.

Layout read (see data/README.md):
  <manual_dir>/UCF-101/<Class>/<clip>.avi
  <manual_dir>/ucfTrainTestlist/classInd.txt        `<index 1..101> <Class>`
  <manual_dir>/ucfTrainTestlist/trainlist0{1,2,3}.txt `<Class>/<clip>.avi <label 1..101>`
  <manual_dir>/ucfTrainTestlist/testlist0{1,2,3}.txt  `<Class>/<clip>.avi`
The lists have Windows line ends. Labels are classInd's order minus one; classInd.txt is checked
against the 101 names here, so a label means the same class in every build.

TFDS ships a `ucf101` builder that downloads by itself and needs TensorFlow; this one reads the
manual download instead, and is not registered under TFDS's name (`skip_registration`) so the two
never collide. Built data: configs `split{N}_{short_side}px[_partial]` with `train` and `test`
splits; see `stae_jax.data._manual`.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping

import tensorflow_datasets as tfds

from stae_jax.data import _manual
from stae_jax.data._manual import ClipRef, ManualDataError, MissingManualDataError, SplitLists

VIDEO_FOLDER = "UCF-101"
LISTS_FOLDER = "ucfTrainTestlist"
CLASS_NAMES = (
    "ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam", "BandMarching",
    "BaseballPitch", "Basketball", "BasketballDunk", "BenchPress", "Biking", "Billiards",
    "BlowDryHair", "BlowingCandles", "BodyWeightSquats", "Bowling", "BoxingPunchingBag",
    "BoxingSpeedBag", "BreastStroke", "BrushingTeeth", "CleanAndJerk", "CliffDiving",
    "CricketBowling", "CricketShot", "CuttingInKitchen", "Diving", "Drumming", "Fencing",
    "FieldHockeyPenalty", "FloorGymnastics", "FrisbeeCatch", "FrontCrawl", "GolfSwing", "Haircut",
    "Hammering", "HammerThrow", "HandstandPushups", "HandstandWalking", "HeadMassage", "HighJump",
    "HorseRace", "HorseRiding", "HulaHoop", "IceDancing", "JavelinThrow", "JugglingBalls",
    "JumpingJack", "JumpRope", "Kayaking", "Knitting", "LongJump", "Lunges", "MilitaryParade",
    "Mixing", "MoppingFloor", "Nunchucks", "ParallelBars", "PizzaTossing", "PlayingCello",
    "PlayingDaf", "PlayingDhol", "PlayingFlute", "PlayingGuitar", "PlayingPiano", "PlayingSitar",
    "PlayingTabla", "PlayingViolin", "PoleVault", "PommelHorse", "PullUps", "Punch", "PushUps",
    "Rafting", "RockClimbingIndoor", "RopeClimbing", "Rowing", "SalsaSpin", "ShavingBeard",
    "Shotput", "SkateBoarding", "Skiing", "Skijet", "SkyDiving", "SoccerJuggling", "SoccerPenalty",
    "StillRings", "SumoWrestling", "Surfing", "Swing", "TableTennisShot", "TaiChi", "TennisSwing",
    "ThrowDiscus", "TrampolineJumping", "Typing", "UnevenBars", "VolleyballSpiking",
    "WalkingWithDog", "WallPushups", "WritingOnBoard", "YoYo",
)
HOW_TO_GET = (
    "Download UCF101.rar and UCF101TrainTestSplits-RecognitionTask.zip from the UCF101 page "
    "(https://www.crcv.ucf.edu/data/UCF101.php) and extract both into <manual_dir>, so that the "
    f"layout is <manual_dir>/{VIDEO_FOLDER}/<Class>/<clip>.avi and <manual_dir>/{LISTS_FOLDER}/"
    "{classInd,trainlist0N,testlist0N}.txt (see data/README.md). Point the config at it with "
    "--config.data.manual_dir=/path/to/ucf101.")


def read_class_index(manual_dir: str | os.PathLike) -> tuple[str, ...]:
  """classInd.txt, checked against the 101 official names in their official order."""
  path = pathlib.Path(manual_dir) / LISTS_FOLDER / "classInd.txt"
  if not path.is_file():
    raise MissingManualDataError(f"UCF101 class list not found: {path} does not exist. {HOW_TO_GET}")
  names = []
  for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != 2 or fields[0] != str(len(names) + 1):
      raise _manual.parse_error(path, line_number, line,
                                f"expected `{len(names) + 1} <Class>`", HOW_TO_GET)
    names.append(fields[1])
  if tuple(names) != CLASS_NAMES:
    differing = [f"{i + 1}: {got!r} (official {want!r})"
                 for i, (got, want) in enumerate(zip(names, CLASS_NAMES)) if got != want]
    raise ManualDataError(
        f"{path} does not hold the 101 official UCF101 classes in their official order "
        f"({len(names)} classes; differences: {_manual.shorten(differing) or 'count'}). {HOW_TO_GET}")
  return tuple(names)


def read_split(manual_dir: str | os.PathLike, split: int) -> SplitLists:
  """The train and test clips of official split `split`, from the lists alone (no video)."""
  if split not in _manual.SPLIT_NUMBERS:
    raise ValueError(f"UCF101 has splits {_manual.SPLIT_NUMBERS}, not {split!r}")
  manual_dir = pathlib.Path(manual_dir)
  if not manual_dir.is_dir():
    raise MissingManualDataError(
        f"UCF101 release not found: {manual_dir} is not a directory. {HOW_TO_GET}")
  folder = manual_dir / LISTS_FOLDER
  if not folder.is_dir():
    raise MissingManualDataError(
        f"UCF101 split lists not found: {folder} is not a directory. {HOW_TO_GET}")
  list_paths = {"train": folder / f"trainlist0{split}.txt", "test": folder / f"testlist0{split}.txt"}
  absent = [p.name for p in list_paths.values() if not p.is_file()]
  if absent:
    raise MissingManualDataError(
        f"UCF101 split-{split} lists missing from {folder}: {', '.join(absent)}. {HOW_TO_GET}")
  class_names = read_class_index(manual_dir)
  label_of = {name: label for label, name in enumerate(class_names)}

  members: dict[str, list[ClipRef]] = {}
  seen: dict[str, str] = {}
  for part, path in list_paths.items():
    clips = members[part] = []
    expected = "`<Class>/<clip>.avi <label>`" if part == "train" else "`<Class>/<clip>.avi`"
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
      fields = line.split()
      if not fields:
        continue
      relpath = fields[0]
      class_name, slash, clip_name = relpath.partition("/")
      if (len(fields) != (2 if part == "train" else 1) or not slash or "/" in clip_name
          or not clip_name.endswith(".avi")):
        raise _manual.parse_error(path, line_number, line, f"expected {expected}", HOW_TO_GET)
      if class_name not in label_of:
        raise _manual.parse_error(path, line_number, line,
                                  f"unknown class {class_name!r} (not in classInd.txt)", HOW_TO_GET)
      label = label_of[class_name]
      if part == "train" and fields[1] != str(label + 1):
        raise _manual.parse_error(
            path, line_number, line,
            f"label {fields[1]} disagrees with classInd.txt ({class_name} is {label + 1})",
            HOW_TO_GET)
      if relpath in seen:
        raise _manual.parse_error(path, line_number, line,
                                  f"{relpath} is listed again (first in {seen[relpath]})",
                                  HOW_TO_GET)
      seen[relpath] = path.name
      clips.append(ClipRef(relpath=relpath, label=label, class_name=class_name))
  return SplitLists(number=split, train=tuple(members["train"]), test=tuple(members["test"]))


def list_clips(manual_dir: str | os.PathLike) -> dict[int, SplitLists]:
  """All three official splits, keyed 1..3; with `missing_clips` a quick check of a release."""
  return {split: read_split(manual_dir, split) for split in _manual.SPLIT_NUMBERS}


def missing_clips(manual_dir: str | os.PathLike, clips) -> list[ClipRef]:
  """The listed clips whose .avi is not under <manual_dir>/UCF-101 (no decoding)."""
  return _manual.missing_clips(pathlib.Path(manual_dir) / VIDEO_FOLDER, clips)


class Ucf101(_manual.ManualVideoBuilder, skip_registration=True):
  """UCF101, official splits 1-3; construct with `manual_dir=` (or use `make_builder`)."""

  RELEASE_NAME = "UCF101"
  CLASS_NAMES = CLASS_NAMES
  HOMEPAGE = "https://www.crcv.ucf.edu/data/UCF101.php"
  HOW_TO_GET = HOW_TO_GET

  @classmethod
  def video_root(cls, manual_dir: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(manual_dir) / VIDEO_FOLDER

  @classmethod
  def read_split(cls, manual_dir: str | os.PathLike, split: int) -> SplitLists:
    return read_split(manual_dir, split)


def make_builder(data_config: Mapping[str, Any], data_dir: str | os.PathLike) -> tfds.core.DatasetBuilder:
  """The UCF101 builder for `config.data` of configs/ucf101.py; read its `train`/`test` splits."""
  return _manual.make_builder(Ucf101, data_config, data_dir)
