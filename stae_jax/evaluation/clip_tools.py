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
file bundles them so that one file is enough for `decompress.py`. Nothing in a header is trusted:
the system must be one trained in the workdir, the clip shape and the operating point must be the
trained model's, and only then is the stream decoded, within the codec's bounds. Every failure to
read a file is a `DecodeError` whose message says what is wrong.

Both tools work for any method with a codec (`stae_jax.systems`); they never ask which one.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import struct
import zlib

import numpy as np
from PIL import Image

from stae_jax import systems
from stae_jax.coding.bitstream import DecodeError
from stae_jax.data import video as video_lib
from stae_jax.training import workdir as workdir_lib

MAGIC = b"STAE"
VERSION = 2
FORMAT = "stae-jax clip file v2"
_MAX_HEADER = 1 << 20


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
  from stae_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  indices = pipeline.temporal_indices(len(frames), int(data_config.frames),
                                      int(data_config.stride), "uniform")
  height, width = frames.shape[1:3]
  box = pipeline.crop_box(height, width)
  size = (int(data_config.resolution),) * 2
  clip = np.stack([np.asarray(Image.fromarray(frames[i]).resize(
      size, Image.Resampling.BILINEAR, box=box)) for i in indices])
  return clip, indices, box


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
  if length > _MAX_HEADER or 9 + length + 4 > len(data):
    raise DecodeError(f".stae header claims {length} bytes, the file has {len(data)}: truncated "
                      "or corrupted")
  text = data[9:9 + length]
  (crc,) = struct.unpack("<I", data[9 + length:13 + length])
  if zlib.crc32(text) != crc:
    raise DecodeError(".stae header checksum mismatch: the file is corrupted")
  try:
    header = json.loads(text)
  except ValueError as error:
    raise DecodeError(f".stae header is not valid JSON ({error}): corrupted") from None
  if not isinstance(header, dict) or header.get("format") != FORMAT:
    raise DecodeError(f".stae header format is {header.get('format') if isinstance(header, dict) else None!r}, "
                      f"expected {FORMAT!r}")
  return header, data[13 + length:]


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
  source = video_lib.read_video(path)
  clip, indices, box = sample_clip(source.frames, data_config)
  coded = codec.device(clip[None], point)
  header = dict(
      format=FORMAT, system=codec.tag, fingerprint=codec.fingerprint(),
      clip_shape=list(clip.shape), operating_point=point.name,
      frame_indices=[int(i) for i in indices], crop_box=[float(b) for b in box],
      source=dict(name=pathlib.Path(path).name, fps=source.fps, height=source.source_height,
                  width=source.source_width, frames=source.num_frames))
  return pack(header, coded.streams[0]), header


def decompress(data: bytes, workdir) -> Decompressed:
  """Decodes and classifies a `.stae` file with the system of `workdir` that made it.

  The header is checked against the trained model before anything is loaded or allocated: its
  system must be one trained in `workdir`, its fingerprint that system's, its clip shape the one
  the system was trained on, its operating point one of the system's."""
  header, stream = unpack(data)
  tag, point_name = header.get("system"), header.get("operating_point")
  if not isinstance(tag, str) or not isinstance(point_name, str):
    raise DecodeError(".stae header lacks or garbles its system or operating_point field")
  trained = workdir_lib.discover_systems(workdir)
  if tag not in trained:
    raise DecodeError(f"this .stae file names system {tag[:40]!r}, which {workdir} has not "
                      f"trained (it has: {', '.join(trained) or 'none'})")
  codec = workdir_lib.load_codec(workdir, tag)
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
