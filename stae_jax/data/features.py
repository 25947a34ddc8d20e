"""The one record layout every video dataset here is stored in, and its frame codec.

TFDS's `Video` and `Image` features need TensorFlow, so frames are stored as our own encoded bytes
(JPEG for real video, PNG where exactness matters) in a `Sequence` of scalar object tensors. Every
builder (synthetic_actions, hmdb51, ucf101, surveillance_fight) uses `video_features(...)` so the input pipeline reads
them all the same way.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

FRAME_FORMATS = ("jpeg", "png")


def video_features(class_names: Sequence[str]) -> tfds.features.FeaturesDict:
  """Features of one clip record.

  frames: encoded frames (JPEG or PNG bytes), all of one size; label: class index;
  fps, height, width: of the stored frames (height, width) and of the source video (fps), except
  where a builder resamples time (surveillance_fight: fps is the stored frames' rate);
  source_height, source_width: the original frame size; filename: the source file name (or a
  synthetic id); num_frames: len(frames).
  """
  return tfds.features.FeaturesDict({
      "frames": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_)),
      "label": tfds.features.ClassLabel(names=list(class_names)),
      "num_frames": tfds.features.Scalar(dtype=np.int32),
      "fps": tfds.features.Scalar(dtype=np.float32),
      "height": tfds.features.Scalar(dtype=np.int32),
      "width": tfds.features.Scalar(dtype=np.int32),
      "source_height": tfds.features.Scalar(dtype=np.int32),
      "source_width": tfds.features.Scalar(dtype=np.int32),
      "filename": tfds.features.Text(),
  })


def encode_frames(frames: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> list[bytes]:
  """uint8[T,H,W,3] -> one encoded image per frame."""
  if fmt not in FRAME_FORMATS:
    raise ValueError(f"frame format {fmt!r} is not one of {FRAME_FORMATS}")
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"expected uint8[T,H,W,3] frames, got {frames.dtype}{list(frames.shape)}")
  out = []
  for frame in frames:
    buf = io.BytesIO()
    if fmt == "jpeg":
      Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    else:
      Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    out.append(buf.getvalue())
  return out


def decode_frames(encoded: Sequence[bytes], indices: Sequence[int] | None = None) -> np.ndarray:
  """Encoded frames (optionally only those at `indices`) -> uint8[T,H,W,3]."""
  if indices is not None:
    encoded = [encoded[i] for i in indices]
  frames = [np.asarray(Image.open(io.BytesIO(bytes(b))).convert("RGB")) for b in encoded]
  return np.stack(frames)
