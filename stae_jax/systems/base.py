"""The codec interface every method implements, and the operating point as a typed value.

A method (STAE, DeepISC, H.264, raw offloading, ...) is cut where a real link cuts it:

  device half   `encode(clips, point)`           the device's model step (jitted for learned
                                                 methods): uint8 clips -> what the coder needs
                `entropy_encode(encoded, point)` host coding -> `Coded`: one bitstream per clip,
                                                 plus the learned rate estimate where there is one
  server half   `entropy_decode(streams, point)` host decoding; every check of what arrived
                                                 (lengths, shapes, the operating point) happens
                                                 here, before anything is allocated or compiled;
                                                 anything malformed is a `DecodeError`
                `decode(received, point)`        -> float32 clips [B,T,H,W,3] in 0..255 (what the
                                                 ViT sees)
                `classify(clips)`                the ViT this method's server runs: a learned
                                                 system's own (trained on its output), a
                                                 baseline's the reference

Evaluation, the single-clip tools and serving time and call these five steps and nothing else, so
a new method is one module and one line in `stae_jax.systems.METHODS`: nothing outside a method's
module asks which method it is.

Operating points are `Point`s: a readable name and its settings as a sorted tuple, so a point is
hashable, compares by value, and serves as a static `jax.jit` argument (one compile per point, as
the codecs' inference steps have: their gathers have the point's sizes). Training passes points
traced instead (`point_inputs`), one compile for all of them.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from stae_jax.coding.bitstream import DecodeError

__all__ = ["Point", "Coded", "Codec", "Trained", "BaselineContext", "DecodeError", "check_clips",
           "check_streams"]


@dataclasses.dataclass(frozen=True, order=True)
class Point:
  """One operating point of a method: `name` (as reports show it) and its settings."""
  name: str
  settings: tuple[tuple[str, Any], ...] = ()

  @classmethod
  def of(cls, name: str, **settings) -> "Point":
    return cls(name, tuple(sorted(settings.items())))

  def __getitem__(self, key: str):
    return dict(self.settings)[key]

  def as_dict(self) -> dict:
    return dict(self.settings)


@dataclasses.dataclass
class Coded:
  """What the device half sends: one stream per clip, and the learned rate estimate (bits per clip,
  header excluded) where the method has an entropy model (None otherwise)."""
  streams: list[bytes]
  estimated_bits: np.ndarray | None = None


@dataclasses.dataclass
class Trained:
  """A trained learned system as the trainer left it (`stae_jax.systems.loading.load_system`).

  `entry` is the system's `config.systems.<tag>` (method, model sections, stage overrides) and
  `data` the `config.data` it was trained on; graphdef/params/rest are what `jax.jit` functions
  take (`nnx.split`); `tables` the frozen coding tables of its entropy model."""
  tag: str
  entry: Any
  data: Any
  graphdef: Any
  params: Any
  rest: Any
  tables: Any = None
  directory: Any = None
  step: int = 0

  @property
  def clip_shape(self) -> tuple[int, int, int, int]:
    return (int(self.data.frames), int(self.data.resolution), int(self.data.resolution), 3)


@dataclasses.dataclass
class BaselineContext:
  """What a baseline's `codecs(context)` builds from: the clip shape, the reference classifier
  (`classify(clips) -> logits`) that scores baselines, and per-baseline options
  (`options[<name>]`, e.g. {"crfs": (...), "preset": "veryfast"} for h264; absent: defaults)."""
  clip_shape: tuple[int, int, int, int]
  classify: Any
  options: dict = dataclasses.field(default_factory=dict)


def check_clips(clips, clip_shape: Sequence[int]) -> np.ndarray:
  """uint8 [B,T,H,W,3] of the shape a codec was built for, or a ValueError naming the fix."""
  clips = np.asarray(clips)
  if clips.dtype != np.uint8 or clips.ndim != 5 or tuple(clips.shape[1:]) != tuple(clip_shape):
    raise ValueError(
        f"the device half takes uint8 clips [B,{','.join(map(str, clip_shape))}], got "
        f"{clips.dtype}{list(clips.shape)}: sample clips as the config's data section says "
        "(frames, resolution) and keep them uint8.")
  return clips


def check_streams(streams, max_bytes: int) -> list[bytes]:
  """A non-empty list of byte strings, none longer than `max_bytes` (DecodeError otherwise)."""
  if isinstance(streams, (bytes, bytearray)) or not isinstance(streams, (list, tuple)):
    raise DecodeError(f"expected a list of bitstreams (bytes), got {type(streams).__name__}")
  out = []
  for i, stream in enumerate(streams):
    if not isinstance(stream, (bytes, bytearray, memoryview)):
      raise DecodeError(f"bitstream {i} is a {type(stream).__name__}, not bytes")
    if len(stream) > max_bytes:
      raise DecodeError(f"bitstream {i} has {len(stream)} bytes; a clip of this model never "
                        f"needs more than {max_bytes}: not a stream of this model")
    out.append(bytes(stream))
  if not out:
    raise DecodeError("no bitstream to decode")
  return out


class Codec(abc.ABC):
  """Base of every method's codec: the five steps (module doc), its points and its description.

  Attributes a subclass sets: `tag` (its name in results.json: a system's workdir tag or the
  baseline's registry name), `kind` (its registry name), `label`, `points`, `clip_shape`
  (T, H, W, 3), and optionally `skipped` (why it cannot run here: reported, not measured),
  `variant_of` (the tag of the method an ablation varies; None for a method of its own),
  `headline` (whether the report's headline compares it), `block_size` (for pictures of what
  was kept) and `tuned_classifier` (what `classify` is where it is a ViT tuned for this method's
  output, for the report's "tuned" column; None where it is the reference ViT, which evaluation
  scores every method with anyway).
  """
  tag: str
  kind: str
  label: str
  points: tuple[Point, ...] = ()
  clip_shape: tuple[int, int, int, int]
  skipped: str | None = None
  variant_of: str | None = None
  headline: bool = True
  block_size: int | None = None
  tuned_classifier: str | None = None

  # --- the five steps ---------------------------------------------------------------------------

  @abc.abstractmethod
  def encode(self, clips: np.ndarray, point: Point) -> Any:
    """See the module doc."""

  @abc.abstractmethod
  def entropy_encode(self, encoded: Any, point: Point) -> Coded:
    """See the module doc."""

  @abc.abstractmethod
  def entropy_decode(self, streams: Sequence[bytes], point: Point) -> Any:
    """See the module doc."""

  @abc.abstractmethod
  def decode(self, received: Any, point: Point):
    """See the module doc."""

  @abc.abstractmethod
  def classify(self, clips) -> np.ndarray:
    """See the module doc."""

  # --- descriptions -----------------------------------------------------------------------------

  def summary(self) -> dict:
    """The method's settings for results.json (`methods.<tag>.config`)."""
    return {}

  def kept(self, received: Any) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Per clip, (frame_mask bool[T], block_masks bool[k_f, N]) of what was sent, for pictures;
    None where the method sends no masks."""
    return None

  def fingerprint(self) -> str | None:
    """What identifies the model a stream needs (learned codecs: their coding tables' hash), so a
    stream from another model is refused by name; None where any instance decodes any stream."""
    return None

  def server_programs(self, point: Point):
    """A hashable key: points with equal keys run the server half (`entropy_decode`, `decode`,
    `classify`) through the same compiled programs at every batch size, so a server warms one of
    them per key. Default: the point itself (nothing shared)."""
    return point

  def max_stream_bytes(self, point: Point) -> int:
    """The most bytes a stream of this codec at `point` can take (streams beyond it are refused)."""
    return 8 * math.prod(self.clip_shape)

  # --- shared -----------------------------------------------------------------------------------

  def point(self, value) -> Point:
    """`value` (a Point, or a point's name) as one of this codec's points, else DecodeError."""
    for point in self.points:
      if value == point or value == point.name:
        return point
    known = ", ".join(p.name for p in self.points)
    raise DecodeError(f"operating point {value!r} is not one {self.tag!r} was trained or set up "
                      f"for (it has: {known})")

  def device(self, clips, point: Point) -> Coded:
    """The whole device half."""
    point = self.point(point)
    return self.entropy_encode(self.encode(clips, point), point)

  def server(self, streams, point: Point):
    """The whole server half, up to the clips the ViT sees."""
    point = self.point(point)
    return self.decode(self.entropy_decode(streams, point), point)
