"""What the HMDB51 and UCF101 builders share: split lists, release checks, the TFDS builder itself.

Both datasets are manual downloads (no code can fetch them), laid out as a folder of `<class>/<clip>`
videos plus official split lists. The two differ only in how their lists are written, so each
module supplies `read_split` and its class names, and everything else lives here:

- Layout of the built data: one TFDS BuilderConfig per official split (`split1`, `split2`,
  `split3`), each holding the `train` and `test` clips of that split. Chosen over one store of all
  clips plus membership flags because the input pipeline can then read plain dense `train`/`test`
  ArrayRecord splits (random access and per-host sharding by index, no filtering), and a user
  builds only the split they train on (HMDB51: 5100 of 6766 clips; the 1666 unused ones cost
  nothing). Building all three splits stores most clips three times; that is the price.
- The config name also records the stored short side and whether the build was allowed to be
  incomplete (`split1_256px`, `split1_64px_partial`), so a partial build or another resolution can
  never be mistaken for the complete one sitting in the same data_dir.
- Nothing is skipped silently: a missing release, missing lists, malformed lines and missing clips
  are errors naming what is missing, where it was looked for and how to get it. With
  `allow_incomplete=True` missing or unreadable clips are left out, logged by name and count, and
  recorded in the dataset's metadata (`left_out`), which `make_builder` reports again on every load.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import inspect
import os
import pathlib
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from absl import logging
import tensorflow_datasets as tfds

from stae_jax.data import features as features_lib
from stae_jax.data import resolve
from stae_jax.data import video as video_lib

SPLIT_NUMBERS = (1, 2, 3)
BUILDER_KWARGS = ("short_side", "allow_incomplete", "jpeg_quality", "build_workers")
# How many names an error lists before it says "and N more": enough to spot a pattern.
_SHOWN = 5


class ManualDataError(ValueError):
  """The manual download is malformed (a bad split line, an unknown class, a wrong class list)."""


class MissingManualDataError(ManualDataError, FileNotFoundError):
  """Part of the manual download is absent (the folder, split lists, clips)."""


@dataclasses.dataclass(frozen=True)
class ClipRef:
  """One clip of a split list. relpath: `<class>/<file>` below the release's video folder."""
  relpath: str
  label: int
  class_name: str


@dataclasses.dataclass(frozen=True)
class SplitLists:
  """The clips of one split, in list order. validation: clips the dataset itself holds out of
  `train` (stored as a `validation` split); empty for the official splits, whose validation
  clips the input pipeline carves from `train` (`stae_jax.data.pipeline.VALIDATION_RULE`)."""
  number: int
  train: tuple[ClipRef, ...]
  test: tuple[ClipRef, ...]
  validation: tuple[ClipRef, ...] = ()

  @property
  def clips(self) -> tuple[ClipRef, ...]:
    return self.train + self.validation + self.test


def shorten(names: Sequence[str], shown: int = _SHOWN) -> str:
  """`a, b, c and 12 more`: error messages name examples without printing thousands of lines."""
  names = list(names)
  head = ", ".join(names[:shown])
  return head + (f" and {len(names) - shown} more" if len(names) > shown else "")


def missing_clips(video_root: str | os.PathLike, clips: Iterable[ClipRef]) -> list[ClipRef]:
  """The clips whose files are not under `video_root` (a stat per clip, no decoding)."""
  root = pathlib.Path(video_root)
  return [clip for clip in clips if not (root / clip.relpath).is_file()]


def parse_error(path: pathlib.Path, line_number: int, line: str, problem: str,
                how_to_get: str) -> ManualDataError:
  return ManualDataError(f"{path}, line {line_number}: {problem} (the line reads {line!r}). "
                         f"The split lists must be the official, unedited files. {how_to_get}")


@dataclasses.dataclass(eq=False)
class ManualVideoConfig(tfds.core.BuilderConfig):
  """One official split at one stored resolution; see the module docstring for the naming."""
  split: int = 1
  short_side: int = 256
  allow_incomplete: bool = False
  jpeg_quality: int = 90


def manual_config(split: int = 1, short_side: int = 256, allow_incomplete: bool = False,
                  jpeg_quality: int = 90) -> ManualVideoConfig:
  if split not in SPLIT_NUMBERS:
    raise ValueError(f"split must be one of {SPLIT_NUMBERS} (the official splits), got {split!r}")
  video_lib.resized_size(2, 2, short_side)  # validates short_side: positive and even
  if not 1 <= int(jpeg_quality) <= 100:
    raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
  name = f"split{split}_{short_side}px" + ("_partial" if allow_incomplete else "")
  quality = "" if jpeg_quality == 90 else f"_q{jpeg_quality}"
  return ManualVideoConfig(
      name=name + quality, split=split, short_side=short_side,
      allow_incomplete=bool(allow_incomplete), jpeg_quality=int(jpeg_quality),
      description=(f"official split {split}: train and test clips, frames stored as JPEG with "
                   f"short side {short_side}" + (", built from an incomplete release"
                                                   if allow_incomplete else "")))


class ManualVideoBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A TFDS builder reading an official release from a manual directory (see module docstring).

  Subclasses set RELEASE_NAME, CLASS_NAMES, HOMEPAGE, HOW_TO_GET and implement `video_root` and
  `read_split`. Constructor: `manual_dir` (where the release is), plus the TFDS arguments
  (`config`, `data_dir`); files are ArrayRecord unless `file_format` says otherwise.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Official splits 1-3, JPEG frames at a configured short side."}
  BUILDER_CONFIGS = [manual_config(split) for split in SPLIT_NUMBERS]
  RELEASE_NAME: str = ""
  CLASS_NAMES: tuple[str, ...] = ()
  HOMEPAGE: str = ""
  HOW_TO_GET: str = ""
  DESCRIPTION: str = ("{release} read from the official release (manual download). Frames are "
                      "JPEG bytes (no TensorFlow needed); label follows the official class "
                      "order; fps and source size are those of the file.")
  #: The `config.data.builder_kwargs` keys `make_builder` accepts (all but build_workers go to
  #: `make_config`).
  BUILDER_KWARGS: tuple[str, ...] = BUILDER_KWARGS

  @classmethod
  def make_config(cls, split: int, **kwargs: Any) -> tfds.core.BuilderConfig:
    """The BuilderConfig for `config.data.split` and `builder_kwargs` (less build_workers)."""
    return manual_config(split=split, **kwargs)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> pathlib.Path:
    """This module's file. TFDS's own lookup needs the `importlib_resources` backport, which is
    not installed (nor needed on Python >= 3.11); it only serves to find a checksums file, and a
    manual download has none."""
    return pathlib.Path(inspect.getfile(cls))

  def __init__(self, *, manual_dir: str | os.PathLike | None = None, build_workers: int | None = None,
               **kwargs: Any):
    kwargs.setdefault("file_format", "array_record")
    self.release_dir = pathlib.Path(manual_dir) if manual_dir is not None else None
    # Threads overlap PyAV decoding and JPEG encoding (both release the GIL); output order and
    # errors are exactly those of a sequential build.
    self.build_workers = max(1, build_workers if build_workers else min(8, os.cpu_count() or 1))
    # missing: relpaths; unreadable: {"file": relpath, "reason": the VideoReadError message}.
    self.left_out: dict[str, list[Any]] = {"missing": [], "unreadable": []}
    self.empty_splits: list[str] = []
    super().__init__(**kwargs)

  # Supplied by each dataset module.
  @classmethod
  def video_root(cls, manual_dir: pathlib.Path) -> pathlib.Path:
    raise NotImplementedError

  @classmethod
  def read_split(cls, manual_dir: str | os.PathLike, split: int) -> SplitLists:
    raise NotImplementedError

  def split_lists(self, manual_dir: pathlib.Path) -> SplitLists:
    """The clips this builder config stores: `read_split` of its split (a dataset whose configs
    choose more than the split number overrides this)."""
    return self.read_split(manual_dir, self.builder_config.split)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION.format(release=self.RELEASE_NAME),
        features=features_lib.video_features(self.CLASS_NAMES),
        homepage=self.HOMEPAGE,
        metadata=tfds.core.MetadataDict(),
    )

  def require_release_dir(self) -> pathlib.Path:
    """The manual directory, or an error saying where it was looked for and how to get it."""
    if self.release_dir is None:
      raise MissingManualDataError(
          f"{self.RELEASE_NAME} must be built from a manual download, but no manual_dir was given. "
          f"{self.HOW_TO_GET}")
    if not self.release_dir.is_dir():
      raise MissingManualDataError(
          f"{self.RELEASE_NAME} release not found: {self.release_dir} is not a directory. "
          f"{self.HOW_TO_GET}")
    return self.release_dir

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: the release is read where it lies
    release_dir = self.require_release_dir()
    config: ManualVideoConfig = self.builder_config
    lists = self.split_lists(release_dir)
    video_root = self.video_root(release_dir)
    absent = missing_clips(video_root, lists.clips)
    if absent:
      where = (f"{video_root} (the video folder itself does not exist)"
               if not video_root.is_dir() else str(video_root))
      message = (f"{self.RELEASE_NAME} split {config.split} lists {len(lists.clips)} clips, of "
                 f"which {len(absent)} are missing under {where}: "
                 f"{shorten([c.relpath for c in absent])}.")
      if not config.allow_incomplete:
        raise MissingManualDataError(
            f"{message} {self.HOW_TO_GET} To build from the clips that are there, set "
            "--config.data.builder_kwargs.allow_incomplete=True (the missing clips are then "
            "left out, logged and recorded in the dataset's metadata).")
      logging.warning("%s Building without them (allow_incomplete=True).", message)
    self.left_out = {"missing": [c.relpath for c in absent], "unreadable": []}
    absent_paths = {c.relpath for c in absent}
    stored = {"train": lists.train, "test": lists.test}
    if lists.validation:
      stored["validation"] = lists.validation
    present = {name: [c for c in clips if c.relpath not in absent_paths]
               for name, clips in stored.items()}
    # TFDS cannot write a split without examples. Only a partial build can get here; it then has
    # no such split at all, and says so (here, in its metadata, and in make_builder on each load).
    self.empty_splits = sorted(name for name, clips in present.items() if not clips)
    if self.empty_splits:
      logging.warning("%s split %d: none of the clips of %s are present; the build will have no "
                      "%s split.", self.RELEASE_NAME, config.split, " or ".join(self.empty_splits),
                      " or ".join(self.empty_splits))
    self._record_left_out()
    return {name: self._generate_examples(video_root, clips, name)
            for name, clips in present.items() if clips}

  def _generate_examples(self, video_root: pathlib.Path, clips: Sequence[ClipRef],
                         split_name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    config: ManualVideoConfig = self.builder_config
    written = 0
    for clip, result in _ordered_map(
        lambda clip: self._encode_clip(video_root / clip.relpath, clip), clips,
        self.build_workers):
      if isinstance(result, video_lib.VideoReadError):
        if not config.allow_incomplete:
          raise video_lib.VideoReadError(
              result.path, f"{result.cause}. Replace it with the file from the official release "
              f"({self.HOW_TO_GET}), or set --config.data.builder_kwargs.allow_incomplete=True to "
              "build without it (it is then logged and recorded as left out)") from result
        logging.warning("%s: leaving out unreadable clip %s", self.RELEASE_NAME, result)
        self.left_out["unreadable"].append({"file": clip.relpath, "reason": str(result)})
        self._record_left_out()
        continue
      written += 1
      yield clip.relpath, result
    counts = {kind: len(items) for kind, items in self.left_out.items()}
    logging.info("%s %s: wrote %d of %d listed clips (left out so far: %s)", self.RELEASE_NAME,
                 split_name, written, len(clips) + counts["missing"], counts)

  def _encode_clip(self, path: pathlib.Path, clip: ClipRef) -> dict[str, Any] | video_lib.VideoReadError:
    """One record, or the read error (returned, not raised, so it surfaces in list order)."""
    config: ManualVideoConfig = self.builder_config
    try:
      with video_lib.VideoReader(path, short_side=config.short_side) as reader:
        encoded = []
        for frame in reader.frames():
          encoded += features_lib.encode_frames(frame[None], "jpeg", config.jpeg_quality)
        return {
            "frames": encoded,
            "label": clip.label,
            "num_frames": len(encoded),
            "fps": reader.fps,
            "height": reader.height,
            "width": reader.width,
            "source_height": reader.source_height,
            "source_width": reader.source_width,
            "filename": clip.relpath,
        }
    except video_lib.VideoReadError as e:
      return e

  def _record_left_out(self) -> None:
    counts = {kind: len(items) for kind, items in self.left_out.items()}
    self.info.metadata["left_out"] = {**self.left_out, "counts": counts,
                                      "empty_splits": self.empty_splits}


def _ordered_map(fn: Callable[[ClipRef], Any], clips: Sequence[ClipRef],
                 workers: int) -> Iterator[tuple[ClipRef, Any]]:
  """(clip, fn(clip)) in input order, at most 2*workers clips in flight (bounded memory)."""
  if workers <= 1:
    for clip in clips:
      yield clip, fn(clip)
    return
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending = collections.deque()
    for clip in clips:
      pending.append((clip, pool.submit(fn, clip)))
      if len(pending) >= 2 * workers:
        done_clip, future = pending.popleft()
        yield done_clip, future.result()
    while pending:
      done_clip, future = pending.popleft()
      yield done_clip, future.result()


def make_builder(builder_cls: type[ManualVideoBuilder], data_config: Mapping[str, Any],
                 data_dir: str | os.PathLike) -> ManualVideoBuilder:
  """The builder for `config.data` (fields split, manual_dir, builder_kwargs); not yet built.

  Relative paths are taken from the repository root. Reports a prepared dataset that was built
  from an incomplete release, so that fact is never forgotten after the build log scrolls away.
  """
  kwargs = data_config.get("builder_kwargs") or {}
  kwargs = kwargs.to_dict() if hasattr(kwargs, "to_dict") else dict(kwargs)
  unknown = sorted(set(kwargs) - set(builder_cls.BUILDER_KWARGS))
  if unknown:
    raise ValueError(f"unknown {builder_cls.name} builder_kwargs {unknown}; known: "
                     f"{', '.join(builder_cls.BUILDER_KWARGS)}")
  build_workers = kwargs.pop("build_workers", None)
  config = builder_cls.make_config(int(data_config["split"]), **kwargs)
  # TFDS refuses a second config object under a registered name; reuse the registered one.
  config = builder_cls.builder_configs.get(config.name, config)
  manual_dir = data_config.get("manual_dir")
  builder = builder_cls(config=config, data_dir=str(resolve(data_dir)),
                        manual_dir=resolve(manual_dir) if manual_dir else None,
                        build_workers=build_workers)
  if builder.is_prepared():
    left_out = builder.info.metadata.get("left_out") if builder.info.metadata else None
    if left_out and any(left_out["counts"].values()):
      logging.warning("%s/%s in %s was built from an incomplete release; left out: %s%s",
                      builder.name, config.name, builder.data_dir, left_out["counts"],
                      f"; it has no {' or '.join(left_out['empty_splits'])} split"
                      if left_out.get("empty_splits") else "")
  return builder
