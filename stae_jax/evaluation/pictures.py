"""Pictures a person can look at: the frames and blocks a STAE operating point kept, and what the
server rebuilt, beside the original clip. Plain PIL PNGs, one per clip.

Layout of `clip_<i>.png`: row 1 the original frames; then per operating point two rows: the
overlay (dropped frames darkened to 20%, dropped blocks of kept frames dimmed to 35% with a red
tint, kept blocks untouched) and the reconstruction the ViT classified. Frames wider than 128 px
are shown at half size so that a 16-frame clip stays a readable strip.
"""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image, ImageDraw

LABEL_WIDTH = 150


def overlay(clip: np.ndarray, frame_mask: np.ndarray, block_masks: np.ndarray,
            block_size: int) -> np.ndarray:
  """uint8 [T,H,W,3] with the kept frames and blocks shown (see the module docstring).

  frame_mask bool [T]; block_masks bool [k_f, N]: one row per kept frame, in frame order (the
  bitstream's layout), blocks in raster order.
  """
  frames, height, width, _ = clip.shape
  shown = clip.astype(np.float32)
  tint = np.array([255.0, 60.0, 60.0])
  cols = width // block_size
  rows_of = iter(np.asarray(block_masks, bool))
  for t in range(frames):
    if not frame_mask[t]:
      shown[t] *= 0.2
      continue
    kept = next(rows_of).reshape(height // block_size, cols)
    pixel_kept = np.repeat(np.repeat(kept, block_size, 0), block_size, 1)
    dimmed = 0.35 * shown[t] + 0.25 * tint
    shown[t] = np.where(pixel_kept[..., None], shown[t], dimmed)
  return np.clip(shown, 0, 255).astype(np.uint8)


def _strip(frames: np.ndarray, scale: float) -> Image.Image:
  row = np.concatenate(list(frames), axis=1)
  image = Image.fromarray(np.clip(row, 0, 255).astype(np.uint8))
  if scale != 1:
    image = image.resize((int(image.width * scale), int(image.height * scale)),
                         Image.Resampling.BILINEAR)
  return image


def clip_picture(original: np.ndarray, rows: list[tuple[str, np.ndarray]], title: str, *,
                 first_label: str = "original") -> Image.Image:
  """Stacks labelled strips: (first_label, original), then (label, clip) per row."""
  scale = 0.5 if original.shape[2] > 128 else (2.0 if original.shape[2] < 48 else 1.0)
  strips = [(first_label, _strip(original, scale))] + [(label, _strip(c, scale)) for label, c in rows]
  width = LABEL_WIDTH + max(s.width for _, s in strips)
  height = 20 + sum(s.height + 4 for _, s in strips)
  canvas = Image.new("RGB", (width, height), "white")
  draw = ImageDraw.Draw(canvas)
  draw.text((4, 4), title, fill="black")
  y = 20
  for label, strip in strips:
    draw.text((4, y + strip.height // 2 - 6), label, fill="black")
    canvas.paste(strip, (LABEL_WIDTH, y))
    y += strip.height + 4
  return canvas


def write_pictures(pictures: dict, directory: pathlib.Path, *,
                   class_names: list[str] | None = None) -> list[str]:
  """Writes one PNG per clip from `evaluate_workdir`'s pictures data; returns their paths
  relative to the workdir."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  if pictures.get("videos") is None:
    return []
  written = []
  for i, (clip, label) in enumerate(zip(pictures["videos"], pictures["labels"])):
    rows = []
    for tag, shown in pictures["systems"].items():
      for name, data in shown["points"].items():
        kept = overlay(clip, data["frame_mask"][i], data["block_masks"][i], shown["block_size"])
        rows.append((f"{tag} {name}\nkept", kept))
        rows.append((f"{tag} {name}\nrebuilt", data["reconstruction"][i]))
    name = class_names[int(label)] if class_names and int(label) < len(class_names) else str(label)
    path = directory / f"clip_{i}.png"
    clip_picture(clip, rows, f"test clip {i}, class {name}").save(path)
    written.append(str(path.relative_to(directory.parent)))
  return written
