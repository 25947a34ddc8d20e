r"""What the server half of each method costs per batch, step by step, on a trained workdir.

  python benchmarks/server_half.py --workdir=/tmp/mj [--methods=stae,h264] [--batch=8]
      [--repeats=7]

Why: a server's clips per second at saturation is set by what it runs per batch of streams:
entropy decoding, the method's decode (STAE: synthesis, the receiver's fill and the 3D-2D CNN;
H.264: the x264 decoder and the resize), and the classifier. This encodes the first --batch test
clips once per operating point (the device half, untimed), then times each server step on those
streams: the median of --repeats calls after one untimed call (the compile), in milliseconds per
batch, at every point the workdir serves (H.264: the cells of results.json's test pass). Run it on
an idle machine; compare only figures of one run.
"""

import argparse
import pathlib
import sys

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from stae_jax.data import pipeline  # pylint: disable=wrong-import-position
from stae_jax.systems import loading  # pylint: disable=wrong-import-position
from timing import median_ms_per_clip  # pylint: disable=wrong-import-position  (benchmarks/)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--methods", default="stae,h264")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args()
  workdir = pathlib.Path(args.workdir).absolute()
  codecs = loading.load_codecs(workdir, args.methods.split(","))
  data = loading.trained_data(workdir)
  clips = None
  for batch in pipeline.make_loader(data, "test", seed=0, train=False, num_epochs=1):
    clips = np.asarray(batch["video"])[np.asarray(batch["mask"]).astype(bool)][:args.batch]
    break
  if clips is None or len(clips) < args.batch:
    raise SystemExit(f"the test split of {workdir} has fewer than --batch={args.batch} clips")
  print(f"{workdir}: batch {args.batch}, median of {args.repeats} calls, ms per batch")
  print("| method | point | entropy decode | decode | classify | server half | clips/s |")
  print("|---|---|---|---|---|---|---|")
  for codec in codecs:
    for point in codec.points:
      streams = codec.device(clips, point).streams
      received = codec.entropy_decode(streams, point)
      rebuilt = codec.decode(received, point)
      per_batch = lambda fn, *a: median_ms_per_clip(fn, *a, batch=1, repeats=args.repeats)
      ms = dict(entropy=per_batch(codec.entropy_decode, streams, point),
                decode=per_batch(codec.decode, received, point),
                classify=per_batch(codec.classify, rebuilt))
      total = sum(ms.values())
      print(f"| {codec.tag} | {point.name} | {ms['entropy']:.1f} | {ms['decode']:.1f} | "
            f"{ms['classify']:.1f} | {total:.1f} | {1e3 * args.batch / total:.0f} |", flush=True)


if __name__ == "__main__":
  main()
