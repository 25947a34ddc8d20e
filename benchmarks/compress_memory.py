r"""Peak memory and start-up of compress.py on a long, large clip (issue 30: bounded reads).

  python benchmarks/compress_memory.py [--workdir=runs/synthetic] [--seconds=10] [--height=1080]

Writes a clip of --seconds at --height (16:9, 30 fps, libx264; textured, moving content) into a
temporary folder, then measures child processes, one per row, by their own peak resident memory
(`os.wait4`'s ru_maxrss) and wall time:

  whole decode   the old compress.py read: `read_video` (every frame at full size) + `sample_clip`
  read_clip      the bounded read compress.py now does (only the sampled frames, resized on arrival)
  compress.py    the command line on the clip, with the model of --workdir (restore + compile)
  missing input  compress.py --input=<a path that does not exist>: the time to the error

The model's share of compress.py's memory depends on the workdir's models; the video's share does
not (the read_clip row).
"""

import os
import pathlib
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import av
import numpy as np

from stae_jax import REPO_ROOT

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained workdir for the compress.py rows "
                               "(default: runs/synthetic; rows needing it are skipped if absent).")
_SECONDS = flags.DEFINE_float("seconds", 10.0, "Clip length.")
_HEIGHT = flags.DEFINE_integer("height", 1080, "Clip height (width 16:9).")


def write_clip(path: pathlib.Path, seconds: float, height: int, fps: int = 30) -> None:
  """Textured frames that move every frame, so x264 codes real detail (a few MB at 1080p)."""
  width = height * 16 // 9 // 2 * 2
  rng = np.random.default_rng(0)
  tile = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
  texture = tile.repeat(8, 0).repeat(8, 1)[:height, :width]
  with av.open(str(path), "w") as container:
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"preset": "ultrafast", "crf": "23"}
    for i in range(int(seconds * fps)):
      frame = av.VideoFrame.from_ndarray(np.roll(texture, 6 * i, axis=1), format="rgb24")
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode(None):
      container.mux(packet)


def measure(command: list[str]) -> tuple[float, float, int, str]:
  """(peak RSS in MB, wall seconds, exit status, last output line) of one child process."""
  start = time.perf_counter()
  child = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
  output = child.stdout.read()
  _, status, usage = os.wait4(child.pid, 0)
  child.returncode = os.waitstatus_to_exitcode(status)
  last = (output.strip().splitlines() or [""])[-1]
  return usage.ru_maxrss / 1024, time.perf_counter() - start, child.returncode, last


_READ = """
import sys, ml_collections
from stae_jax.serving import clip_tools
from stae_jax.data.video import read_video
data = ml_collections.ConfigDict(dict(frames=16, stride=1, resolution=64))
if sys.argv[2] == "whole":
  clip = clip_tools.sample_clip(read_video(sys.argv[1]).frames, data)[0]
else:
  clip = clip_tools.read_clip(sys.argv[1], data).clip
print(clip.shape)
"""


def main(argv):
  del argv
  workdir = pathlib.Path(_WORKDIR.value or REPO_ROOT / "runs" / "synthetic")
  with tempfile.TemporaryDirectory() as tmp:
    clip = pathlib.Path(tmp) / f"clip_{_HEIGHT.value}p.mp4"
    write_clip(clip, _SECONDS.value, _HEIGHT.value)
    megabytes = clip.stat().st_size / 1e6
    print(f"{clip.name}: {_SECONDS.value:g} s at {_HEIGHT.value}p, {megabytes:.1f} MB")
    rows = [("whole decode", [sys.executable, "-c", _READ, str(clip), "whole"]),
            ("read_clip", [sys.executable, "-c", _READ, str(clip), "bounded"])]
    if (workdir / "classifier").is_dir():
      rows += [("compress.py", [sys.executable, "compress.py", f"--workdir={workdir}",
                                f"--input={clip}", f"--output={pathlib.Path(tmp) / 'c.stae'}"]),
               ("missing input", [sys.executable, "compress.py", f"--workdir={workdir}",
                                  f"--input={pathlib.Path(tmp) / 'missing.avi'}"])]
    else:
      print(f"no trained workdir at {workdir}: the compress.py rows are skipped")
    print("| run | peak RSS MB | wall s | exit | last line |\n|---|---|---|---|---|")
    for name, command in rows:
      peak, wall, code, last = measure(command)
      print(f"| {name} | {peak:.0f} | {wall:.1f} | {code} | {last[:90]} |", flush=True)


if __name__ == "__main__":
  app.run(main)
