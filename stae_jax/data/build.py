r"""Builds the configured dataset and writes a preview of what the model will see.

  python -m stae_jax.data.build --config=configs/synthetic.py [--workdir=runs/synthetic]

Building writes the ArrayRecord files under `config.data.data_dir` (once; later runs reuse them).
The preview, `<workdir>/preview.png`, has one row per clip (clips of different classes where the
split has them): its class name, then its frames side by side as the evaluation loader makes them
(centre window, centre crop, at model resolution), so a wrong stride, crop or label is seen before
any training is spent on it.
"""

from __future__ import annotations

import pathlib

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stae_jax import REPO_ROOT
from stae_jax.data import datasets
from stae_jax.data import pipeline

#: Frames in the preview are shown at most this many pixels high, so a 16x224 row stays viewable.
PREVIEW_FRAME_PX = 96
LABEL_WIDTH_PX = 170


def preview_clips(data_config: ml_collections.ConfigDict, source, count: int,
                  max_scan: int = 500) -> list[tuple[np.ndarray, int]]:
  """Up to `count` (video uint8[T,R,R,3], label) pairs, one per class first, from `source`."""
  chosen, seen_labels, spare = [], set(), []
  for index in range(min(len(source), max_scan)):
    record = source[index]
    if record["label"] in seen_labels:
      spare.append(index)
      continue
    seen_labels.add(record["label"])
    chosen.append(index)
    if len(chosen) == count:
      break
  chosen += spare[:count - len(chosen)]
  clips = [pipeline.make_clip(source[i], data_config, train=False) for i in chosen]
  return [(clip["video"], int(clip["label"])) for clip in clips]


def preview_image(clips: list[tuple[np.ndarray, int]], class_names: list[str]) -> Image.Image:
  """One row per clip: its class name, then its frames left to right."""
  frames, resolution = clips[0][0].shape[:2]
  frame_px = min(resolution, PREVIEW_FRAME_PX)
  row_px = frame_px + 4
  image = Image.new("RGB", (LABEL_WIDTH_PX + frames * (frame_px + 2), row_px * len(clips)), "white")
  draw = ImageDraw.Draw(image)
  font = ImageFont.load_default(size=14)
  for row, (video, label) in enumerate(clips):
    top = row * row_px + 2
    draw.text((6, top + frame_px // 2), f"{label}: {class_names[label]}", fill="black", font=font,
              anchor="lm")
    for t, frame in enumerate(video):
      thumb = Image.fromarray(frame).resize((frame_px, frame_px), Image.Resampling.BILINEAR)
      image.paste(thumb, (LABEL_WIDTH_PX + t * (frame_px + 2), top))
  return image


def dataset_summary(builder) -> str:
  """`name/config: train N clips, test M clips, X MB in DIR`."""
  splits = ", ".join(f"{name} {info.num_examples} clips"
                     for name, info in sorted(builder.info.splits.items()))
  data_dir = pathlib.Path(builder.data_dir)
  size_mb = sum(p.stat().st_size for p in data_dir.iterdir() if p.is_file()) / 1e6
  config_name = f"/{builder.builder_config.name}" if builder.builder_config else ""
  return f"{builder.name}{config_name}: {splits}, {size_mb:.1f} MB in {data_dir}"


def build_and_preview(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                      num_clips: int = 6, split: str = "train") -> pathlib.Path:
  """Builds `config.data` if needed, prints its size, writes `workdir/preview.png` and returns it."""
  builder = datasets.ensure_built(config.data)
  print(dataset_summary(builder))
  source = builder.as_data_source(split=split)
  if len(source) == 0:
    raise ValueError(f"split {split!r} of {builder.name} is empty; preview another one with "
                     "--preview_split.")
  clips = preview_clips(config.data, source, num_clips)
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / "preview.png"
  preview_image(clips, datasets.class_names(builder)).save(path)
  print(f"wrote a preview of {len(clips)} {split} clips "
        f"({config.data.frames}x{config.data.resolution}x{config.data.resolution}) to {path}")
  return path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/synthetic.py")
  workdir = pathlib.Path(_WORKDIR.value) if _WORKDIR.value else REPO_ROOT / "runs" / config.name
  build_and_preview(config, workdir, _PREVIEW_CLIPS.value, _PREVIEW_SPLIT.value)


def define_flags() -> None:
  """The command's flags, defined only when it runs as a program: importing this module (tests,
  other entry points with their own --config) defines none."""
  global _CONFIG, _WORKDIR, _PREVIEW_CLIPS, _PREVIEW_SPLIT
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:switches]).")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where preview.png goes; default runs/<config.name>.")
  _PREVIEW_CLIPS = flags.DEFINE_integer("preview_clips", 6, "Clips (rows) in the preview.")
  _PREVIEW_SPLIT = flags.DEFINE_string("preview_split", "train",
                                       "Split the previewed clips come from.")


if __name__ == "__main__":
  define_flags()
  app.run(main)
