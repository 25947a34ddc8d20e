r"""How much of a clip the trained classifier needs: its top-1 on test clips degraded in fixed ways.

  python benchmarks/classifier_robustness.py --workdir=runs/synthetic [--config=configs/synthetic.py]

Why: a semantic codec only has to keep what the classifier uses. If the frozen ViT still recognises
clips whose 8x8 blocks are replaced by their mean colour, or whose frames are held for 8 frames at a
time, then a codec that sends two frames of block colours can in principle lose almost nothing, and
a large accuracy loss points at the codec's training, not at the operating point. Every
degradation is computed here from the clips (no model but the classifier), on the first
`--clips` test clips.
"""

import argparse
import pathlib
import sys

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from configs import synthetic  # pylint: disable=wrong-import-position
from stae_jax.data import pipeline  # pylint: disable=wrong-import-position
from stae_jax.systems import loading  # pylint: disable=wrong-import-position


def block_means(clips: np.ndarray, p: int) -> np.ndarray:
  """Every p x p block replaced by its mean colour."""
  b, t, h, w, c = clips.shape
  means = clips.reshape(b, t, h // p, p, w // p, p, c).mean(axis=(3, 5), keepdims=True)
  return np.broadcast_to(means, (b, t, h // p, p, w // p, p, c)).reshape(clips.shape)


def hold_frames(clips: np.ndarray, every: int) -> np.ndarray:
  """Frames 0, every, 2*every, ... each held until the next (what a decoder without motion does)."""
  index = (np.arange(clips.shape[1]) // every) * every
  return clips[:, index]


def random_blocks(clips: np.ndarray, keep: float, p: int, rng) -> np.ndarray:
  """A random `keep` fraction of the p x p blocks of every frame; mid-grey elsewhere."""
  b, t, h, w, c = clips.shape
  kept = rng.random((b, t, h // p, 1, w // p, 1, 1)) < keep
  blocks = clips.reshape(b, t, h // p, p, w // p, p, c)
  return np.where(kept, blocks, 127.5).reshape(clips.shape)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--config_arg", default=None, help="switches of configs/synthetic.py")
  parser.add_argument("--clips", type=int, default=256)
  parser.add_argument("--block", type=int, default=8)
  args = parser.parse_args()
  config = synthetic.get_config(args.config_arg)
  # The stage-1 ViT, jitted: classify(clips) -> logits.
  classify = loading.load_classifier(config, pathlib.Path(args.workdir).absolute())
  predict = lambda v: np.argmax(classify(v), -1)
  clips, labels = [], []
  for batch in pipeline.make_loader(config.data, "test", seed=0, train=False, num_epochs=1):
    clips.append(batch["video"][batch["mask"]])
    labels.append(batch["label"][batch["mask"]])
    if sum(len(x) for x in labels) >= args.clips:
      break
  clips = np.concatenate(clips)[:args.clips].astype(np.float32)
  labels = np.concatenate(labels)[:args.clips]
  rng = np.random.default_rng(0)
  p = args.block
  cases = {
      "clean": clips,
      f"{p}x{p} block means": block_means(clips, p),
      "frames held every 4": hold_frames(clips, 4),
      "frames held every 8": hold_frames(clips, 8),
      "one frame held": hold_frames(clips, clips.shape[1]),
      f"held every 8 + {p}x{p} block means": hold_frames(block_means(clips, p), 8),
      f"random 50% of {p}x{p} blocks, grey elsewhere": random_blocks(clips, 0.5, p, rng),
      f"random 25% of {p}x{p} blocks, grey elsewhere": random_blocks(clips, 0.25, p, rng),
      "mid-grey clip": np.full_like(clips, 127.5),
  }
  print(f"classifier of {args.workdir}, {len(labels)} test clips")
  print("| clips | top-1 |\n|---|---|")
  for name, degraded in cases.items():
    correct = [np.asarray(predict(jnp.asarray(degraded[i:i + 64]))) == labels[i:i + 64]
               for i in range(0, len(labels), 64)]
    print(f"| {name} | {np.concatenate(correct).mean():.3f} |", flush=True)


if __name__ == "__main__":
  main()
