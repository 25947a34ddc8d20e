"""Reading video files into uint8 frames with PyAV, with one clear error for every way a file is bad.

Why the care: a dataset build decodes thousands of files, and a file that silently yields no frames,
or only its first half, becomes a wrong training example nobody notices. So every failure is a
`VideoReadError` naming the file and the cause, and a file that holds fewer frames than its
container declares is an error, not a shorter clip.

Truncation policy (decided here, relied on by the dataset builders): when a container declares its
frame count (AVI headers, MP4 sample tables) and demuxing finds fewer packets than declared, the
file was cut short: `read_video` raises, even though its first frames decode. Decoded frames are
not compared with packets, because intact real files differ by design (an Xvid AVI of HMDB51
declares 75 frames, holds 75 packets and decodes to 74: the packed-bitstream placeholder yields no
picture). Containers that declare no count (Matroska/WebM) can only be caught by decode errors.
When `max_frames` stops reading early, the unread rest of the file is not checked.
"""

from __future__ import annotations

import dataclasses
import fractions
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

  def frames(self) -> Iterator[np.ndarray]:
    """Yields uint8[H,W,3] RGB frames at (self.height, self.width); see the module's truncation policy."""
    packets = 0
    decoded = 0
    try:
      for packet in self._container.demux(self._stream):
        if packet.dts is None and packet.size == 0:
          pass  # the flush packet PyAV appends at the end: drains the decoder, is not in the file
        else:
          packets += 1
        for frame in packet.decode():
          decoded += 1
          yield frame.reformat(width=self.width, height=self.height, format="rgb24",
                               interpolation=_INTERPOLATION).to_ndarray()
          if self.max_frames is not None and decoded >= self.max_frames:
            return
    except av.FFmpegError as e:
      raise VideoReadError(self.path, f"decoding failed after {decoded} frames "
                           f"({_ffmpeg_reason(e)}); the file is damaged or truncated") from e
    if decoded == 0:
      raise VideoReadError(self.path, f"no frames could be decoded ({packets} packets in the "
                           "video stream); the file is empty, damaged or truncated")
    if self.declared_frames and packets < self.declared_frames:
      raise VideoReadError(self.path, f"truncated: the container declares {self.declared_frames} "
                           f"frames but holds only {packets} ({decoded} decoded); "
                           "re-download or re-extract it")


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
