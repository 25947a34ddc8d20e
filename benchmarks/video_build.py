"""How fast real clips are decoded (read_video) and built into ArrayRecord (hmdb51/ucf101 builders).

  python benchmarks/video_build.py [--repeats=3]

Reads the real AVIs of shared/data/real (2 HMDB51, 3 UCF101: MPEG-4 Part 2, 320x240). Decoding is
timed at the source size and at the short sides the configs use; the build is timed on a small
copy of each release whose split lists name only those clips (so no clip is missing), with one
and with two build threads, at short side 256 (the default) and JPEG quality 90. Medians of
`--repeats` runs; the thread comparison is made within the same run.
"""

import pathlib
import shutil
import statistics
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import tensorflow_datasets as tfds

from stae_jax.data import hmdb51
from stae_jax.data import real_data_dir
from stae_jax.data import ucf101
from stae_jax.data.video import read_video

_REPEATS = flags.DEFINE_integer("repeats", 3, "runs per measurement; medians are printed")


def _small_release(kind: str, root: pathlib.Path) -> pathlib.Path:
  """A copy of a real release sample whose lists hold only the clips that are present."""
  real = real_data_dir() / kind
  release = root / kind
  if kind == "hmdb51":
    clips = sorted(p.relative_to(real) for p in real.glob("*/*.avi"))
    names = {p.name for p in clips}
    (release / "testTrainMulti_7030_splits").mkdir(parents=True)
    for path in (real / "testTrainMulti_7030_splits").iterdir():
      lines = [l for l in path.read_text().splitlines(True) if l.split() and l.split()[0] in names]
      (release / "testTrainMulti_7030_splits" / path.name).write_text("".join(lines))
    video_root = release
  else:
    clips = sorted(p.relative_to(real / "UCF-101") for p in real.glob("UCF-101/*/*.avi"))
    names = {str(p) for p in clips}
    (release / "ucfTrainTestlist").mkdir(parents=True)
    for path in (real / "ucfTrainTestlist").iterdir():
      lines = [l for l in path.read_bytes().splitlines(True)
               if path.name == "classInd.txt" or (l.split() and l.split()[0].decode() in names)]
      (release / "ucfTrainTestlist" / path.name).write_bytes(b"".join(lines))
    video_root = release / "UCF-101"
    real = real / "UCF-101"
  for clip in clips:
    (video_root / clip).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(real / clip, video_root / clip)
  return release


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  tfds.disable_progress_bar()
  real = real_data_dir()
  avis = sorted(real.glob("hmdb51/*/*.avi")) + sorted(real.glob("ucf101/UCF-101/*/*.avi"))

  print(f"read_video on {len(avis)} real AVIs (320x240 MPEG-4 Part 2), median of {_REPEATS.value}:")
  for short_side in (None, 256, 112, 64):
    seconds, frames = [], 0
    for _ in range(_REPEATS.value):
      start = time.perf_counter()
      frames = sum(read_video(path, short_side=short_side).num_frames for path in avis)
      seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    print(f"  short_side={short_side}: {frames} frames in {median:.3f} s = {frames / median:.0f} frames/s")

  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    for module, kind, split in ((hmdb51, "hmdb51", 2), (ucf101, "ucf101", 2)):
      release = _small_release(kind, tmp)
      print(f"{kind} build, split {split}, short side 256 (clips all in `train`):")
      for workers in (1, 2):
        seconds = []
        for repeat in range(_REPEATS.value):
          config = dict(split=split, manual_dir=str(release),
                        builder_kwargs=dict(short_side=256, build_workers=workers))
          builder = module.make_builder(config, tmp / f"tfds_{kind}_{workers}_{repeat}")
          start = time.perf_counter()
          builder.download_and_prepare()
          seconds.append(time.perf_counter() - start)
        info = builder.info.splits["train"]
        median = statistics.median(seconds)
        frames = sum(builder.as_data_source("train")[i]["num_frames"] for i in range(info.num_examples))
        print(f"  build_workers={workers}: {info.num_examples} clips, {frames} frames in "
              f"{median:.2f} s = {info.num_examples / median:.1f} clips/s, {frames / median:.0f} "
              f"frames/s; stored {info.num_bytes / frames / 1e3:.1f} kB/frame")


if __name__ == "__main__":
  app.run(main)
