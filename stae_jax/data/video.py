"""Reading video files into uint8 frames with PyAV, with one clear error for every way a file is bad.

Why the care: a dataset build decodes thousands of files, and a file that silently yields no frames,
or only its first half, becomes a wrong training example nobody notices. So every failure is a
`VideoReadError` naming the file and the cause, and a file that holds fewer frames than its
container declares is an error, not a shorter clip.

Truncation policy (decided here, relied on by the dataset builders): when a container declares its
frame count (AVI headers, MP4 sample tables) and its packets reach neither that many packets nor
that many frame slots by their timestamps, the file was cut short: `VideoReader.frames` raises, even
though its first frames decode. Decoded frames are not compared with packets, because intact real
files differ by design (an Xvid AVI of HMDB51 declares 75 frames, holds 75 packets and decodes to
74: the packed-bitstream placeholder yields no picture). Containers that declare no count
(Matroska/WebM) can only be caught by decode errors. When `max_frames` stops reading early, the
unread rest of the file is neither decoded nor checked (`frames_at`, which also stops early, checks
the counts of the demuxing pass below before decoding).

Dropped frames: a capture that dropped frames writes fewer packets than frame slots, their
timestamps skipping the dropped slots (OpenCV's sample tree.avi: 68 packets spanning timestamps
0-443, declaring 444 frames). Such a file is intact, not truncated, and is read by its timestamps:
each slot shows the last frame at or before it, so the clip keeps its real duration and pace. A
file is read this way only where its timestamps skip slots; otherwise frames come in decoding
order, as they always did. To know which before decoding, and how many frames the clip has, the
reader first demuxes the file without decoding it (`Timeline`: cheap, no pixels).
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import os
import pathlib
from typing import Iterator

import av
import numpy as np

# swscale's bilinear filter widens with the scale factor, so downscaling is antialiased too.
_INTERPOLATION = "BILINEAR"


class VideoReadError(ValueError):
  """A video file could not be read completely; the message names the file and the cause."""

  def __init__(self, path: str | os.PathLike, cause: str):
    self.path = str(path)
    self.cause = cause
    super().__init__(f"cannot read video {self.path}: {cause}")


@dataclasses.dataclass(frozen=True)
class VideoClip:
  """Decoded frames of one file and what the pipeline needs to know about their source.

  frames: uint8[T,H,W,3] RGB, after resizing; fps: the source frame rate;
  source_height, source_width: the frame size stored in the file, before resizing.
  """
  frames: np.ndarray
  fps: float
  source_height: int
  source_width: int

  @property
  def num_frames(self) -> int:
    return int(self.frames.shape[0])


def resized_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
  """(height, width) with the short side at `short_side`, aspect kept, both even.

  Even sizes keep 2x2 chroma subsampling and patch grids exact downstream; the long side is
  rounded to the nearest even number, so the aspect ratio moves by at most one pixel.
  `short_side=None` keeps the source size.
  """
  if short_side is None:
    return height, width
  if isinstance(short_side, bool) or not isinstance(short_side, (int, np.integer)):
    raise ValueError(f"short_side must be a positive even integer or None, got {short_side!r}")
  if short_side <= 0 or short_side % 2:
    raise ValueError(f"short_side must be a positive even integer, got {short_side}")
  short, long = (height, width) if height <= width else (width, height)
  new_long = max(2, int(round(long * short_side / short / 2)) * 2)
  return (short_side, new_long) if height <= width else (new_long, short_side)


class VideoReader:
  """An open video file whose frames are decoded one at a time.

  Streaming is for dataset builds: a long UCF101 clip at short side 256 is ~0.5 GB as uint8, so
  builders encode each frame as it comes instead of holding the whole clip. Use as a context
  manager; `frames()` raises `VideoReadError` when the file turns out truncated or undecodable.
  """

  def __init__(self, path: str | os.PathLike, *, short_side: int | None = None,
               max_frames: int | None = None):
    self.path = pathlib.Path(path)
    if max_frames is not None and max_frames <= 0:
      raise ValueError(f"max_frames must be positive or None, got {max_frames}")
    self.max_frames = max_frames
    _check_file(self.path)
    try:
      self._container = av.open(str(self.path), metadata_errors="ignore")
    except av.FFmpegError as e:
      raise VideoReadError(self.path, f"not a video FFmpeg can open ({_ffmpeg_reason(e)})") from e
    try:
      if not self._container.streams.video:
        kinds = sorted({s.type for s in self._container.streams}) or ["none"]
        raise VideoReadError(self.path, f"no video stream (streams: {', '.join(kinds)})")
      self._stream = self._container.streams.video[0]
      self.source_height = int(self._stream.height)
      self.source_width = int(self._stream.width)
      if self.source_height <= 0 or self.source_width <= 0:
        raise VideoReadError(self.path, f"video stream has no frame size "
                             f"({self.source_width}x{self.source_height})")
      rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
      if not rate or fractions.Fraction(rate) <= 0:
        raise VideoReadError(self.path, "video stream declares no frame rate")
      self.fps = float(rate)
      self.height, self.width = resized_size(self.source_height, self.source_width, short_side)
      # 0 means the container does not say (Matroska); then truncation shows only as decode errors.
      self.declared_frames = int(self._stream.frames or 0)
    except BaseException:
      self._container.close()
      raise

  def __enter__(self) -> "VideoReader":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    self._container.close()

  @functools.cached_property
  def timeline(self) -> "Timeline":
    """The file's packets and frame slots, from one demuxing pass that decodes nothing."""
    packets, first, last = 0, None, None
    try:
      with av.open(str(self.path), metadata_errors="ignore") as container:
        for packet in container.demux(container.streams.video[0]):
          if packet.size == 0:
            continue  # the flush packet PyAV appends, and empty (dropped-frame) chunks
          packets += 1
          pts = packet.pts if packet.pts is not None else packet.dts
          if pts is not None:
            first = pts if first is None else min(first, pts)
            last = pts if last is None else max(last, pts)
    except av.FFmpegError as e:
      raise VideoReadError(self.path, f"demuxing failed after {packets} packets "
                           f"({_ffmpeg_reason(e)}); the file is damaged or truncated") from e
    slots = packets if first is None else self._slot(last, first) + 1
    return Timeline(packets=packets, slots=slots, first_pts=first)

  def _slot(self, pts: int, first: int) -> int:
    return int(round(float((pts - first) * self._stream.time_base) * self.fps))

  @property
  def num_frames(self) -> int:
    """How many frames `frames()` yields for the whole file (before any `max_frames`): one per
    slot where the timestamps skip slots, else one per packet (a decoder that yields fewer, as
    Xvid's packed bitstreams do by one, ends the clip that much earlier)."""
    timeline = self.timeline
    return timeline.slots if timeline.gapped else timeline.packets

  def _check_truncation(self, decoded: int) -> None:
    timeline = self.timeline
    if self.declared_frames and max(timeline.packets, timeline.slots) < self.declared_frames:
      raise VideoReadError(self.path, f"truncated: the container declares {self.declared_frames} "
                           f"frames but holds only {timeline.packets} ({decoded} decoded, "
                           f"timestamps spanning {timeline.slots}); re-download or re-extract it")

  def _decoded(self) -> Iterator["av.VideoFrame"]:
    """Every frame of the clip's timeline in order, as PyAV frames (not yet converted): decoding
    order, or by timestamps (a dropped slot repeats the frame before it) for a gapped file."""
    timeline = self.timeline
    decoded = 0
    previous, slot = None, -1
    try:
      for packet in self._container.demux(self._stream):
        for frame in packet.decode():
          decoded += 1
          if not timeline.gapped:
            yield frame
            continue
          pts = frame.pts if frame.pts is not None else frame.dts
          target = slot + 1 if pts is None else max(slot + 1, self._slot(pts, timeline.first_pts))
          while previous is not None and slot + 1 < target:
            slot += 1
            yield previous
          slot, previous = slot + 1, frame
          yield frame
    except av.FFmpegError as e:
      raise VideoReadError(self.path, f"decoding failed after {decoded} frames "
                           f"({_ffmpeg_reason(e)}); the file is damaged or truncated") from e
    if decoded == 0:
      raise VideoReadError(self.path, f"no frames could be decoded ({timeline.packets} packets in "
                           "the video stream); the file is empty, damaged or truncated")
    self._check_truncation(decoded)

  def _convert(self, frame: "av.VideoFrame") -> np.ndarray:
    return frame.reformat(width=self.width, height=self.height, format="rgb24",
                          interpolation=_INTERPOLATION).to_ndarray()

  def frames(self) -> Iterator[np.ndarray]:
    """Yields uint8[H,W,3] RGB frames at (self.height, self.width); see the module's truncation
    and dropped-frame policies."""
    for count, frame in enumerate(self._decoded(), 1):
      yield self._convert(frame)
      if self.max_frames is not None and count >= self.max_frames:
        return

  def frames_at(self, indices) -> Iterator[tuple[int, np.ndarray]]:
    """(index, uint8[H,W,3]) for each of `indices` (timeline positions, `num_frames` of them, in
    any order, repeats allowed), in increasing order; decoding stops after the last one, and only
    those frames are converted, so memory and work are bounded by the clip, not the file.

    A file declaring more frames than its packets and timestamps reach is refused before anything
    is decoded (the demuxing pass counted them); an index past the frames the decoder gives (by
    at most the one Xvid's packed bitstreams lose) gets the last frame."""
    wanted = sorted(int(i) for i in indices)
    if self.num_frames == 0:
      raise VideoReadError(self.path, "no frames could be decoded (0 packets in the video stream); "
                           "the file is empty, damaged or truncated")
    if not wanted or wanted[0] < 0 or wanted[-1] >= self.num_frames:
      raise ValueError(f"frame indices {wanted[:3]}...{wanted[-1:]} are not within the "
                       f"{self.num_frames} frames of {self.path}")
    self._check_truncation(decoded=0)
    position, frame = 0, None
    for index, frame in enumerate(self._decoded()):
      if wanted[position] == index:
        rgb = self._convert(frame)
        while position < len(wanted) and wanted[position] == index:
          yield index, rgb
          position += 1
        if position == len(wanted):
          return
    rgb = self._convert(frame)  # the decoder's last frame (`_decoded` raises if there is none)
    for index in wanted[position:]:
      yield index, rgb


@dataclasses.dataclass(frozen=True)
class Timeline:
  """What demuxing (no decoding) finds: packets holding data, and the frame slots their
  timestamps span, first to last, at the stream's frame rate."""
  packets: int
  slots: int
  first_pts: int | None

  @property
  def gapped(self) -> bool:
    """Whether the timestamps skip slots (dropped frames): then frames are placed by them."""
    return self.first_pts is not None and self.slots > self.packets


def read_video(path: str | os.PathLike, *, short_side: int | None = None,
               max_frames: int | None = None) -> VideoClip:
  """Decodes a whole video file (or its first `max_frames` frames) into a `VideoClip`.

  short_side: resize so the shorter side has this many pixels (even), keeping the aspect ratio;
  None keeps the source size. Raises `VideoReadError` for a missing, empty, non-video, truncated
  or undecodable file; never returns an empty or silently shortened clip.
  """
  with VideoReader(path, short_side=short_side, max_frames=max_frames) as reader:
    frames = np.stack(list(reader.frames()))
    return VideoClip(frames=frames, fps=reader.fps, source_height=reader.source_height,
                     source_width=reader.source_width)


def _check_file(path: pathlib.Path) -> None:
  """Fails early, with the plain cause, where FFmpeg would give a cryptic one."""
  if not path.exists():
    raise VideoReadError(path, "no such file")
  if not path.is_file():
    raise VideoReadError(path, "not a regular file")
  if path.stat().st_size == 0:
    raise VideoReadError(path, "the file is empty (0 bytes); re-download or re-extract it")


def _ffmpeg_reason(error: av.FFmpegError) -> str:
  return getattr(error, "strerror", None) or str(error)
