"""H.264 baseline on real HMDB51 clips: compression ratio, bytes and codec time per clip.

  python benchmarks/x264.py [--repeats=3] [--preset=veryfast]

Every HMDB51 clip in the real-data folder (stae_jax.data.real_data_dir(): hmdb51/ and
hmdb51_reencoded/) is sampled as DESIGN.md's table was: 16 frames spread uniformly over the clip,
short side resized to the model resolution (bilinear), centre crop. Each clip is encoded with the
low-delay settings of stae_jax/systems/h264.py at each CRF. Printed per (resolution, CRF): the
median over clips of the compression ratio (T*H*W*3 / stream bytes) with x264's SEI banner dropped
(the default) and kept, the median bytes, and the median over clips of each clip's fastest encode
and decode (min over --repeats, since this machine is shared and noisy).
"""

import os
import platform
import time

from absl import app
from absl import flags
import av
import numpy as np

from stae_jax.data import real_data_dir
from stae_jax.evaluation import metrics
from stae_jax.systems import h264 as x264

_REPEATS = flags.DEFINE_integer("repeats", 3, "Encodes and decodes per clip and CRF (min is kept).")
_PRESET = flags.DEFINE_string("preset", "veryfast", "x264 preset.")
_FRAMES = 16
_SIZES = (112, 224)
_CRFS = (23, 35, 45, 51)


def sample_clip(path, num_frames: int, size: int) -> np.ndarray:
  """Uniformly spaced frames, short side resized to `size`, centre crop: uint8[T,size,size,3]."""
  with av.open(str(path), metadata_errors="ignore") as container:
    frames = list(container.decode(video=0))
  picked = [frames[i] for i in np.linspace(0, len(frames) - 1, num_frames).round().astype(int)]
  scale = size / min(picked[0].height, picked[0].width)
  height, width = round(picked[0].height * scale), round(picked[0].width * scale)
  clip = np.stack([f.reformat(width=width, height=height, format="rgb24",
                              interpolation="BILINEAR").to_ndarray() for f in picked])
  top, left = (height - size) // 2, (width - size) // 2
  return clip[:, top:top + size, left:left + size]


def main(argv):
  del argv
  x264.check_x264()
  root = real_data_dir()
  paths = sorted((root / "hmdb51").glob("*/*.avi")) + sorted(
      (root / "hmdb51_reencoded").glob("*/*.mp4"))
  if not paths:
    raise SystemExit(f"no HMDB51 clips under {root}; set STAE_REAL_DATA to shared/data/real.")
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"av {av.__version__}; preset {_PRESET.value}; {len(paths)} HMDB51 clips; "
        f"repeats {_REPEATS.value}")
  print("clip        CRF  ratio(no SEI)  ratio(SEI kept)  bytes(no SEI)  encode ms  decode ms")
  for size in _SIZES:
    clips = [sample_clip(path, _FRAMES, size) for path in paths]
    for crf in _CRFS:
      ratios, ratios_with_sei, sizes, encode_ms, decode_ms = [], [], [], [], []
      for clip in clips:
        encodes, decodes = [], []
        for _ in range(_REPEATS.value):
          stream = x264.encode_h264(clip, crf, preset=_PRESET.value)
          started = time.perf_counter()
          x264.decode_h264(stream)
          decodes.append(time.perf_counter() - started)
          encodes.append(stream.encode_seconds)
        ratios.append(metrics.compression_ratio(clip.shape, stream.num_bytes))
        ratios_with_sei.append(metrics.compression_ratio(clip.shape,
                                                         stream.num_bytes + stream.sei_bytes))
        sizes.append(stream.num_bytes)
        encode_ms.append(1e3 * min(encodes))
        decode_ms.append(1e3 * min(decodes))
      print(f"{_FRAMES}x{size}x{size}  {crf:3d}  {np.median(ratios):12.0f}x  "
            f"{np.median(ratios_with_sei):14.0f}x  {np.median(sizes):13.0f}  "
            f"{np.median(encode_ms):9.1f}  {np.median(decode_ms):9.1f}")


if __name__ == "__main__":
  app.run(main)
