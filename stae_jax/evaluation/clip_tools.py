"""Single-clip tools: a video file -> a `.stae` file on the device, `.stae` -> class on the server.

The `.stae` file is the clip bitstream (`stae_jax.coding.bitstream`, which carries its own CRC)
behind a small header that tells the server what it needs besides the bits:

  magic b"STAE" | version (1 byte) | header length (uint32 LE) | header (UTF-8 JSON)
  | crc32 of the header (uint32 LE) | the clip bitstream

  header: format, system (the tag of the trained system in the workdir), config_name,
          table_hash and model_hash (of the coding tables: a file from another model is refused
          with a message instead of decoding into noise), clip_shape [T,H,W,3] at model
          resolution, operating_point [frame_keep, block_keep], frame_indices (the frames of the
          source video that were sampled), crop_box, source {name, fps, height, width, frames}

Only the bitstream travels on a real link (the header fields are known to both ends there); the
file bundles them so that one file is enough for `decompress.py`. Every failure to read a file is a
`DecodeError` (from the bitstream module) whose message says what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import struct
import zlib

import numpy as np
from PIL import Image

from stae_jax.coding.bitstream import DecodeError
from stae_jax.data import video as video_lib
from stae_jax.evaluation import codec as codec_lib
from stae_jax.evaluation import loading

MAGIC = b"STAE"
VERSION = 1
FORMAT = "stae-jax clip file v1"
_MAX_HEADER = 1 << 20


@dataclasses.dataclass(frozen=True)
class Decompressed:
  """What the server gets from a `.stae` file."""
  header: dict
  reconstruction: np.ndarray  # uint8 [T,H,W,3]
  logits: np.ndarray          # float32 [classes]
  frame_mask: np.ndarray      # bool [T]
  block_masks: np.ndarray     # bool [k_f, N]
  block_size: int             # p of the p x p blocks the masks index

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


def compress_video(path, trained: loading.TrainedModels, operating_point=None) -> tuple[bytes, dict]:
  """Reads a video file and compresses it with a trained STAE system; returns (file bytes, header).

  `operating_point` (frame_keep, block_keep) must be one the system was trained for (default: its
  first). Raises `stae_jax.data.video.VideoReadError` for a file that is not a readable video.
  """
  if trained.system != "stae":
    raise ValueError(f"system {trained.tag!r} is a {trained.system!r} system; .stae files hold STAE "
                     "bitstreams: pass a STAE system (e.g. --system=stae).")
  codec = codec_lib.SystemCodec(trained)
  point = tuple(float(r) for r in (operating_point or codec.points[0]))
  if point not in codec.points:
    raise ValueError(f"operating point {point} is not one system {trained.tag!r} was trained for: "
                     f"{', '.join(map(str, codec.points))}")
  source = video_lib.read_video(path)
  clip, indices, box = sample_clip(source.frames, trained.config.data)
  encoded = codec.encode(clip[None], point)
  streams, _ = codec.to_bitstreams(encoded)
  header = dict(
      format=FORMAT, system=trained.tag, config_name=trained.config.name,
      table_hash=trained.tables.table_hash, model_hash=trained.tables.model_hash,
      clip_shape=list(clip.shape), operating_point=list(point),
      frame_indices=[int(i) for i in indices], crop_box=[float(b) for b in box],
      source=dict(name=pathlib.Path(path).name, fps=source.fps, height=source.source_height,
                  width=source.source_width, frames=source.num_frames))
  return pack(header, streams[0]), header


def decompress(data: bytes, workdir) -> Decompressed:
  """Decodes and classifies a `.stae` file with the system of `workdir` that made it."""
  header, stream = unpack(data)
  try:
    tag = header["system"]
    clip_shape = tuple(int(d) for d in header["clip_shape"])
    point = tuple(float(r) for r in header["operating_point"])
    table_hash = str(header["table_hash"])
  except (KeyError, TypeError, ValueError) as error:
    raise DecodeError(f".stae header lacks or garbles a field ({error})") from None
  trained = loading.load_system(workdir, tag)
  if trained.tables.table_hash != table_hash:
    raise DecodeError(
        f"this .stae file was made by another model: its coding tables {table_hash[:12]}... are "
        f"not those of system {tag!r} in {workdir} ({trained.tables.table_hash[:12]}...); "
        "decompress it with the workdir that compressed it.")
  codec = codec_lib.SystemCodec(trained)
  payload = codec.from_bitstreams([stream])[0]
  t = clip_shape[0]
  if payload.frame_mask is None or payload.frame_mask.shape != (t,) or payload.block_masks is None:
    raise DecodeError(f"the bitstream's masks do not fit the header's clip shape {clip_shape}")
  reconstruction = codec.decode([payload], point, clip_shape)
  logits = codec.classify(reconstruction)[0]
  clip = np.clip(np.round(np.asarray(reconstruction[0])), 0, 255).astype(np.uint8)
  return Decompressed(header=header, reconstruction=clip, logits=logits,
                      frame_mask=payload.frame_mask, block_masks=payload.block_masks,
                      block_size=int(trained.config.model.stae.block_size))
