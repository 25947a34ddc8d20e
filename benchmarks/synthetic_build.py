"""Time to build `synthetic_actions` at a given size (default: the size configs/synthetic.py uses).

  python benchmarks/synthetic_build.py                       # 3000 train + 600 test, 16x64x64
  python benchmarks/synthetic_build.py num_train=300,num_test=60

Prints the wall and CPU time of generate_clip alone (a sample of clips), of PNG encoding, and of
the whole TFDS build into a fresh temporary data_dir, plus the size on disk. Then how costly the clips
are to code: H.264 (stae_jax.systems.h264) compression ratios, median over clips, for the default
clips and for the same clips with the nuisances off (no noise, still background, no distractors).
"""

import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a plain script

from configs import synthetic as synthetic_config
from stae_jax.data import features
from stae_jax.data import synthetic
from stae_jax.systems import h264 as x264


def main(arg: str | None) -> None:
  data_config = synthetic_config.get_config(arg).data
  kwargs = data_config.builder_kwargs
  shape = dict(frames=kwargs.frames, size=kwargs.size, seed=kwargs.seed)
  sample = 100
  start, cpu_start = time.perf_counter(), time.process_time()
  clips = [synthetic.generate_clip(i, "train", **shape)[0] for i in range(sample)]
  generate_ms = (time.perf_counter() - start) / sample * 1e3
  generate_cpu_ms = (time.process_time() - cpu_start) / sample * 1e3
  start = time.perf_counter()
  encoded = [features.encode_frames(clip, fmt="png") for clip in clips]
  encode_ms = (time.perf_counter() - start) / sample * 1e3
  png_kb = sum(len(b) for frames in encoded for b in frames) / sample / 1e3
  print(f"generate_clip: {generate_ms:.1f} ms/clip ({generate_cpu_ms:.1f} ms CPU); PNG encode: {encode_ms:.1f} ms/clip, "
        f"{png_kb:.0f} kB/clip")

  with tempfile.TemporaryDirectory() as data_dir:
    builder = synthetic.make_builder(data_config, data_dir)
    start, cpu_start = time.perf_counter(), time.process_time()
    builder.download_and_prepare()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    clips_total = kwargs.num_train + kwargs.num_test
    disk_mb = sum(p.stat().st_size for p in pathlib.Path(data_dir).rglob("*") if p.is_file()) / 1e6
    print(f"build {builder.builder_config.name}: {seconds:.1f} s wall, {cpu_seconds:.1f} s CPU for "
          f"{clips_total} clips ({clips_total / seconds:.0f} clips/s), {disk_mb:.0f} MB on disk")

  plain = dict(noise=0, background_speed=0, num_distractors=0)
  for name, knobs in (("default", {}), ("nuisances off", plain)):
    ratios = []
    for crf in (23, 35, 45, 51):
      sizes = [len(x264.encode_h264(synthetic.generate_clip(i, "test", **shape, **knobs)[0], crf).data)
               for i in range(20)]
      median = sorted(sizes)[len(sizes) // 2]
      ratios.append(f"CRF {crf}: {clips[0].nbytes / median:.0f}x ({median} B)")
    print(f"H.264 on {name} clips: " + ", ".join(ratios))


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else None)
