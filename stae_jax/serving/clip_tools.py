"""Single-clip tools: a video file -> a `.stae` file on the device, `.stae` -> class on the server.

The `.stae` file is one clip's bitstream (as the method's codec made it; learned codecs' streams
carry their own CRC) behind a small header that tells the server what it needs besides the bits:

  magic b"STAE" | version (1 byte) | header length (uint32 LE) | header (UTF-8 JSON)
  | crc32 of the header (uint32 LE) | the clip bitstream

  header: format, system (the tag of the trained system in the workdir), fingerprint (its coding
          tables' hash: a file from another model is refused with a message instead of decoding
          into noise), clip_shape [T,H,W,3] at model resolution, operating_point (the point's
          name, e.g. "keep=0.25x0.5"), frame_indices (the frames of the source video that were
          sampled), crop_box, source {name, fps, height, width, frames}

Only the bitstream travels on a real link (the header fields are known to both ends there); the
file bundles them so that one file is enough for `decompress.py`. Nothing in a header is trusted.
`unpack` checks it against one schema (`HEADER_SCHEMA`: every field required, none unknown, exact
JSON types (16.0 is not an integer), ranges, string lengths and list lengths, one level of nesting)
before any field is used or printed; then the system must be one trained in the workdir, the clip
shape and the operating point must be the trained model's, and only then is the stream decoded,
within the codec's bounds. Text from a file is printed through `printable` (control characters and
terminal escapes escaped). Every failure to read a file is a `DecodeError` whose message says what
is wrong.

Both tools work for any method with a codec (`stae_jax.systems`); they never ask which one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import struct
import zlib

import numpy as np
from PIL import Image

from stae_jax import systems
from stae_jax.coding.bitstream import DecodeError
from stae_jax.data import video as video_lib
from stae_jax.systems import loading

MAGIC = b"STAE"
VERSION = 2
FORMAT = "stae-jax clip file v2"
#: compress.py writes ~450-byte headers; a longer one is refused before it is parsed.
_MAX_HEADER = 1 << 14
#: The most bytes a `.stae` file may have (headers are bounded above, bitstreams by their codec's
#: max_stream_bytes, far below this): a larger file is refused before it is read.
MAX_FILE_BYTES = 64 << 20
_MAX_SIDE = 1 << 16
_MAX_COUNT = 1 << 31


@dataclasses.dataclass(frozen=True)
class _Field:
  """One header field: its JSON type and its bounds (see HEADER_SCHEMA)."""
  kind: str              # "str", "int", "number", "list", "object"
  low: float | None = None       # numbers: the least value; str/list: the least length
  high: float | None = None      # numbers: the most value; str/list: the most length
  item: "_Field | None" = None   # lists: every item's field
  fields: dict | None = None     # objects: their fields
  nullable: bool = False

  def check(self, value, name: str) -> None:
    if value is None and self.nullable:
      return
    if self.kind == "object":
      if not isinstance(value, dict):
        _garbled(name, f"expected an object, got {_describe(value)}")
      missing = sorted(set(self.fields) - set(value))
      unknown = sorted(set(value) - set(self.fields))
      if missing:
        _garbled(name, f"it lacks {', '.join(missing)}")
      if unknown:
        _garbled(name, f"unknown fields {printable(', '.join(unknown), 80)}")
      for key, field in self.fields.items():
        field.check(value[key], f"{name}.{key}" if name else key)
      return
    if self.kind == "list":
      if not isinstance(value, list):
        _garbled(name, f"expected a list, got {_describe(value)}")
      if not self.low <= len(value) <= self.high:
        _garbled(name, f"{len(value)} items, expected {self.low:g} to {self.high:g}")
      for i, item in enumerate(value):
        self.item.check(item, f"{name}[{i}]")
      return
    if self.kind == "str":
      if not isinstance(value, str):
        _garbled(name, f"expected a string, got {_describe(value)}")
      if not self.low <= len(value) <= self.high:
        _garbled(name, f"a string of {len(value)} characters, expected {self.low:g} to "
                 f"{self.high:g}")
      return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        self.kind == "int" and not isinstance(value, int)):
      _garbled(name, f"expected {'an integer' if self.kind == 'int' else 'a number'}, got "
               f"{_describe(value)}")
    if not ((isinstance(value, int) or math.isfinite(value)) and self.low <= value <= self.high):
      _garbled(name, f"{_describe(value)} is outside [{self.low:g}, {self.high:g}]")


def _describe(value) -> str:
  if isinstance(value, (dict, list)):
    return f"a{'n object' if isinstance(value, dict) else ' list'}"
  return printable(json.dumps(value), 40)


def _garbled(name: str, problem: str):
  raise DecodeError(f".stae header garbles its {name or 'top level'} field: {problem}; the file is "
                    "corrupted or was not made by compress.py (re-make it with compress.py)")


_SIDE = _Field("int", 1, _MAX_SIDE)
#: The one description of a `.stae` header (the module doc lists what each field means).
HEADER_SCHEMA = _Field("object", fields=dict(
    format=_Field("str", 0, 64),
    system=_Field("str", 1, 100),
    fingerprint=_Field("str", 1, 128, nullable=True),
    clip_shape=_Field("list", 4, 4, item=_SIDE),
    operating_point=_Field("str", 1, 100),
    frame_indices=_Field("list", 1, 4096, item=_Field("int", 0, _MAX_COUNT)),
    crop_box=_Field("list", 4, 4, item=_Field("number", 0, _MAX_SIDE)),
    source=_Field("object", fields=dict(
        name=_Field("str", 0, 255), fps=_Field("number", 1e-3, 1e6), height=_SIDE, width=_SIDE,
        frames=_Field("int", 0, _MAX_COUNT))),
))


def check_header(header) -> dict:
  """Checks a parsed header against `HEADER_SCHEMA` and its own consistency; raises DecodeError."""
  if isinstance(header, dict) and header.get("format") != FORMAT:
    raise DecodeError(f".stae header format is {_describe(header.get('format'))}, expected "
                      f"{FORMAT!r}")
  HEADER_SCHEMA.check(header, "")
  if len(header["frame_indices"]) != header["clip_shape"][0]:
    _garbled("frame_indices", f"{len(header['frame_indices'])} indices for a clip of "
             f"{header['clip_shape'][0]} frames")
  return header


def printable(text: str, limit: int = 200) -> str:
  """`text` from a file, safe for a terminal: control characters, terminal escapes and other
  unprintable characters written as Python escapes, at most `limit` characters kept."""
  text = str(text)
  cut = text[:limit]
  safe = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in cut)
  return safe + ("..." if len(text) > limit else "")


@dataclasses.dataclass(frozen=True)
class Decompressed:
  """What the server gets from a `.stae` file."""
  header: dict
  reconstruction: np.ndarray  # uint8 [T,H,W,3]
  logits: np.ndarray          # float32 [classes]
  frame_mask: np.ndarray | None   # bool [T] (None: the method sends no masks)
  block_masks: np.ndarray | None  # bool [k_f, N]
  block_size: int | None      # p of the p x p blocks the masks index

  @property
  def predicted(self) -> int:
    return int(np.argmax(self.logits))


def sample_clip(frames: np.ndarray, data_config) -> tuple[np.ndarray, np.ndarray, tuple]:
  """A decoded video uint8 [F,h,w,3] -> the evaluation view the models see: uint8 [T,R,R,3].

  The same view as the test pipeline (`stae_jax.data.pipeline`): the centre window of T frames
  `stride` apart, the centred square crop, bilinear resize to R. Returns (clip, indices, box).
  """
  indices, box = _view(len(frames), *frames.shape[1:3], data_config)
  clip = np.stack([_resize(frames[i], box, data_config) for i in indices])
  return clip, indices, box


def _view(num_frames: int, height: int, width: int, data_config) -> tuple[np.ndarray, tuple]:
  from stae_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  indices = pipeline.temporal_indices(num_frames, int(data_config.frames),
                                      int(data_config.stride), "uniform")
  return indices, pipeline.crop_box(height, width)


def _resize(frame: np.ndarray, box: tuple, data_config) -> np.ndarray:
  size = (int(data_config.resolution),) * 2
  return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR, box=box))


@dataclasses.dataclass(frozen=True)
class SourceClip:
  """A video file's evaluation view (`sample_clip`'s) and what the header records of its source."""
  clip: np.ndarray      # uint8 [T,R,R,3]
  indices: np.ndarray   # the source frames sampled
  box: tuple            # the crop, in source pixels
  fps: float
  height: int
  width: int
  num_frames: int


def read_clip(path, data_config) -> SourceClip:
  """`sample_clip` of a video file, reading only the frames it samples: decoding stops after the
  window and each sampled frame is cropped and resized as it arrives, so memory is bounded by the
  clip (T frames at full size at most), not by the file (a 10 s 1080p clip decoded whole is 1.9 GB
  of RGB). The frame count comes from a demuxing pass first (`video.VideoReader.timeline`), so a
  file whose timestamps skip dropped frames is sampled over its real duration. Raises
  `VideoReadError` for a file that is not a readable video."""
  with video_lib.VideoReader(path) as reader:
    indices, box = _view(reader.num_frames, reader.source_height, reader.source_width, data_config)
    resized = {}
    for index, frame in reader.frames_at(indices):
      if index not in resized:
        resized[index] = _resize(frame, box, data_config)
    clip = np.stack([resized[int(i)] for i in indices])
    return SourceClip(clip=clip, indices=indices, box=box, fps=reader.fps,
                      height=reader.source_height, width=reader.source_width,
                      num_frames=reader.num_frames)


def pack(header: dict, stream: bytes) -> bytes:
  """Header + bitstream -> the bytes of a `.stae` file."""
  text = json.dumps(header, sort_keys=True).encode()
  return (MAGIC + bytes([VERSION]) + struct.pack("<I", len(text)) + text
          + struct.pack("<I", zlib.crc32(text)) + bytes(stream))


def unpack(data: bytes) -> tuple[dict, bytes]:
  """The inverse of `pack`; raises DecodeError for anything that is not an intact `.stae` file."""
  data = bytes(data)
  if data[:4] != MAGIC:
    raise DecodeError("not a .stae file (it does not start with b'STAE'); make one with "
                      "`python compress.py --input=<video>`")
  if len(data) < 13:
    raise DecodeError(f".stae file of {len(data)} bytes is truncated (not even a header)")
  if data[4] != VERSION:
    raise DecodeError(f".stae file version {data[4]} is not supported (this reader knows "
                      f"version {VERSION})")
  (length,) = struct.unpack("<I", data[5:9])
  if length > _MAX_HEADER:
    raise DecodeError(f".stae header claims {length} bytes, more than any header has "
                      f"({_MAX_HEADER}): corrupted or not a .stae file")
  if 9 + length + 4 > len(data):
    raise DecodeError(f".stae header claims {length} bytes, the file has {len(data)}: truncated "
                      "or corrupted")
  text = data[9:9 + length]
  (crc,) = struct.unpack("<I", data[9 + length:13 + length])
  if zlib.crc32(text) != crc:
    raise DecodeError(".stae header checksum mismatch: the file is corrupted")
  try:
    header = json.loads(text)
  except (ValueError, RecursionError) as error:  # RecursionError: nesting deeper than the stack
    reason = "nested too deeply" if isinstance(error, RecursionError) else printable(error, 80)
    raise DecodeError(f".stae header is not valid JSON ({reason}): corrupted") from None
  return check_header(header), data[13 + length:]


def compress_video(path, codec: systems.Codec, data_config, operating_point=None
                   ) -> tuple[bytes, dict]:
  """Reads a video file and compresses it with `codec`; returns (file bytes, header).

  `operating_point` (a point's name) must be one of the codec's (default: its first). Raises
  `stae_jax.data.video.VideoReadError` for a file that is not a readable video, ValueError for an
  unknown point.
  """
  try:
    point = codec.point(operating_point or codec.points[0])
  except DecodeError as error:
    raise ValueError(str(error)) from None
  return compress_clip(read_clip(path, data_config), pathlib.Path(path).name, codec, point)


def compress_clip(source: SourceClip, name: str, codec: systems.Codec, point: systems.Point
                  ) -> tuple[bytes, dict]:
  """`read_clip`'s clip of the file called `name` -> (file bytes, header)."""
  coded = codec.device(source.clip[None], point)
  header = dict(
      format=FORMAT, system=codec.tag, fingerprint=codec.fingerprint(),
      clip_shape=list(source.clip.shape), operating_point=point.name,
      frame_indices=[int(i) for i in source.indices], crop_box=[float(b) for b in source.box],
      source=dict(name=name, fps=source.fps, height=source.height, width=source.width,
                  frames=source.num_frames))
  return pack(check_header(header), coded.streams[0]), header


def decompress(data: bytes, workdir) -> Decompressed:
  """Decodes and classifies a `.stae` file with the system of `workdir` that made it.

  The header is checked against the trained model before anything is loaded or allocated: its
  system must be one trained in `workdir`, its fingerprint that system's, its clip shape the one
  the system was trained on, its operating point one of the system's."""
  header, stream = unpack(data)
  tag, point_name = header.get("system"), header.get("operating_point")
  if not isinstance(tag, str) or not isinstance(point_name, str):
    raise DecodeError(".stae header lacks or garbles its system or operating_point field")
  trained = loading.discover_systems(workdir)
  if tag not in trained:
    raise DecodeError(f"this .stae file names system {tag[:40]!r}, which {workdir} has not "
                      f"trained (it has: {', '.join(trained) or 'none'})")
  codec = loading.load_codec(workdir, tag)
  if header.get("fingerprint") != codec.fingerprint():
    raise DecodeError(
        f"this .stae file was made by another model: its fingerprint "
        f"{str(header.get('fingerprint'))[:12]}... is not that of system {tag!r} in {workdir} "
        f"({str(codec.fingerprint())[:12]}...); decompress it with the workdir that compressed it.")
  if header.get("clip_shape") != list(codec.clip_shape):
    raise DecodeError(f".stae header claims a clip of {str(header.get('clip_shape'))[:60]}; system "
                      f"{tag!r} was trained on {list(codec.clip_shape)}: corrupted or foreign")
  point = codec.point(point_name)
  received = codec.entropy_decode([stream], point)
  reconstruction = codec.decode(received, point)
  logits = codec.classify(reconstruction)[0]
  clip = np.clip(np.round(np.asarray(reconstruction[0])), 0, 255).astype(np.uint8)
  kept = codec.kept(received)
  frame_mask, block_masks = kept[0] if kept else (None, None)
  return Decompressed(header=header, reconstruction=clip, logits=logits, frame_mask=frame_mask,
                      block_masks=block_masks, block_size=codec.block_size)
