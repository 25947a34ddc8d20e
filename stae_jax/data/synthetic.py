"""`synthetic_actions`: a seeded, procedurally generated action dataset that stands in for HMDB51.

It exists so that the whole system (classifier, compressor, evaluation) trains in minutes on two CPU
cores, and so that compression is a real trade-off on it rather than a free lunch:

- Classes are defined by motion only. Every actor state a single frame can show (where the actor
  is, which way its arrowhead points) has the same distribution in every moving class: positions
  live on a torus (the actor leaves one edge and re-enters at the opposite one) and start uniform
  on it, orientations start uniform on the circle, and every motion is a whole number of grid
  steps, so at every frame the position is uniform on the grid and the orientation uniform on the
  angle table, whatever the class. Hence travel left/right/up/down, rotate clockwise/anticlockwise
  and oscillate horizontally/vertically cannot be told apart from any one frame; only grow and
  shrink change the size distribution, and even they share it with each other up to where the
  window falls. Left and right are also time reversals of each other in distribution (window
  start, background pan, distractor motion and noise are all symmetric under reversal), so the
  frames of a clip as an unordered set do not tell them apart: frame order matters.
- The action happens only inside a window of 9-13 of 16 frames at a random position; outside it
  the actor is still. Frame attention has something to find. (Version 1.3.0, issue 15: the window
  was 5-9 frames; the motions are larger where a sense of motion was hard to see (travel 0.3-0.48
  of the side, grow/shrink by a factor 1.8-2.2 instead of ~1.25) and slower where it aliased
  (rotation 0.15-0.3 turns over the window), with noise 3, 3 distractors and a background pan of
  1 px per frame instead of 6, 4 and 2. The knobs of `generate_clip` make other variants;
  benchmarks/motion_probe.py trains a classifier on one in memory, BENCHMARKS.md "Motion probes".)
- The actor is small (an arrowhead 16-22 px long, down to ~9 px in grow and shrink; under 4% of
  a 64 px frame) over a panning multi-scale noise texture that is costly to code, among distractor discs and squares
  that drift randomly and carry no class information. Spatial attention has something to find.
  The actor's colour names its class pair (`group_colours`, see _GROUP_PALETTE): a foothold for a
  classifier trained from scratch in minutes, which leaves the sense of motion within a pair
  (left/right, ...) to be read from frames in order.
- Mild sensor noise (independent per pixel and frame) keeps perfect accuracy out of reach.

Determinism: each clip comes from `np.random.Generator(PCG64(SeedSequence([seed, split, index])))`
and is rendered in integer arithmetic only (fixed-point positions in 1/16 px, a 4x4 supersampled
coverage for anti-aliasing, integer blending). The one table computed with floating point, the
cos/sin table for rotation, is rounded to integers far from any rounding boundary (a test checks
the margin), so clips are bit-identical on every machine with the same numpy stream (numpy keeps
Generator streams stable within a major version; the lock file pins it).

`generate_clip` is a pure function usable without TFDS (tests, evaluation pictures);
`SyntheticActions` is the TFDS builder that stores clips as PNG frames in the shared record layout
(stae_jax/data/features.py), one BuilderConfig per size so different sizes never share files.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
import pathlib
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from stae_jax.data import features as features_lib

CLASS_NAMES = (
    "travel_left",
    "travel_right",
    "travel_up",
    "travel_down",
    "rotate_clockwise",
    "rotate_anticlockwise",
    "grow",
    "shrink",
    "oscillate_horizontal",
    "oscillate_vertical",
)
NUM_CLASSES = len(CLASS_NAMES)


def _label_permutation(*swaps: tuple[str, str]) -> tuple[int, ...]:
  mapping = list(range(NUM_CLASSES))
  for a, b in swaps:
    i, j = CLASS_NAMES.index(a), CLASS_NAMES.index(b)
    mapping[i], mapping[j] = j, i
  return tuple(mapping)


# Symmetries of the generator (config.data.*_labels, stae_jax/data/pipeline.py): the class a clip
# belongs to once mirrored left-right, mirrored top-bottom, or played backwards. Every other draw
# (positions on the torus, orientations, window start, background pan, distractor motion, noise)
# has a distribution that each of these maps onto itself, so a transformed clip is a clip of the
# mapped class. Oscillations keep their class under all three (their phase sign is drawn at random).
HFLIP_LABELS = _label_permutation(("travel_left", "travel_right"),
                                  ("rotate_clockwise", "rotate_anticlockwise"))
VFLIP_LABELS = _label_permutation(("travel_up", "travel_down"),
                                  ("rotate_clockwise", "rotate_anticlockwise"))
TIME_REVERSE_LABELS = _label_permutation(
    ("travel_left", "travel_right"), ("travel_up", "travel_down"),
    ("rotate_clockwise", "rotate_anticlockwise"), ("grow", "shrink"))
SPLITS = ("train", "test")

# Fixed point: positions and sizes in 1/16 px; a pixel is sampled 4x4 times at these offsets.
SUBPIXEL = 16
_SAMPLE_OFFSETS = np.array([2, 6, 10, 14], dtype=np.int64)
_COVER_MAX = 16  # samples per pixel
# Orientation: 256 steps per turn; cos and sin in units of 1/4096. Increasing angle turns the
# arrowhead clockwise on screen (y points down).
ANGLE_STEPS = 256
_TRIG_ONE = 4096
_TRIG_EXACT = [(_TRIG_ONE * math.cos(2 * math.pi * a / ANGLE_STEPS),
                _TRIG_ONE * math.sin(2 * math.pi * a / ANGLE_STEPS)) for a in range(ANGLE_STEPS)]
_COS = np.array([round(c) for c, _ in _TRIG_EXACT], dtype=np.int64)
_SIN = np.array([round(s) for _, s in _TRIG_EXACT], dtype=np.int64)
# Blending weight: coverage (0..16) x opacity (0..256) -> 0..4096.
_BLEND_ONE = _COVER_MAX * 256

# Object colours: vivid hues; each object jitters its colour a little. With group_colours=False the
# actor and distractors share them all, so that colour alone never picks out the actor.
_PALETTE = np.array([
    (230, 40, 40), (40, 200, 60), (50, 80, 230), (240, 220, 40), (220, 60, 220),
    (40, 210, 220), (250, 140, 30), (245, 245, 245), (20, 20, 20),
], dtype=np.int64)
_COLOUR_JITTER = 20
# With `group_colours` (the default) the actor's colour names its class pair (label // 2:
# left/right, up/down, clockwise/anticlockwise, grow/shrink, horizontal/vertical oscillation) and
# distractors take the other palette colours. Why: a from-scratch ViT trained for minutes on a CPU learns
# "which colour is present" from a bag of patches quickly, but direction of motion slowly; tying
# colour to the pair gives it a foothold (about half the classes' information), while telling the
# two classes of a pair apart still needs frames in order, so accuracy is clearly above chance but
# not perfect, and the compressed systems have something to keep and something to lose.
_GROUP_PALETTE = _PALETTE[:5]
_DISTRACTOR_PALETTE = _PALETTE[5:]
# Background texture: value-noise octaves (cells per side, luminance amplitude); a chroma part of a
# third of the amplitude per channel. Finer octaves make the texture costly to code.
_OCTAVES = ((2, 40), (4, 30), (8, 22), (16, 16), (32, 12))
# Generator version: bump when any clip changes, so old built data is never read as new.
GENERATOR_VERSION = "1.3.0"


def _check_range(name: str, value, low: float, high: float) -> tuple[float, float]:
  try:
    lo, hi = (float(v) for v in value)
  except (TypeError, ValueError):
    raise ValueError(f"{name}={value!r}: expected a (low, high) pair of numbers.") from None
  if not low <= lo <= hi <= high:
    raise ValueError(f"{name}={value!r}: expected {low} <= low <= high <= {high}.")
  return lo, hi


def _uniform_int(rng: np.random.Generator, lo: int, hi: int) -> int:
  """An integer uniform on [lo, hi] (inclusive)."""
  return int(rng.integers(lo, hi + 1))


def _colour(rng: np.random.Generator, palette: np.ndarray = _PALETTE) -> np.ndarray:
  base = palette[rng.integers(len(palette))]
  return np.clip(base + rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3), 0, 255)


def _periodic_upsample(grid: np.ndarray, size: int) -> np.ndarray:
  """int[n,n,C] -> int[size,size,C], bilinear and periodic (the texture tiles the torus)."""
  n = grid.shape[0]
  i = np.arange(size, dtype=np.int64)
  j0 = i * n // size
  j1 = (j0 + 1) % n
  frac = i * n % size  # weight of the next cell, in units of 1/size
  rows = grid[j0] * (size - frac)[:, None, None] + grid[j1] * frac[:, None, None]
  out = rows[:, j0] * (size - frac)[None, :, None] + rows[:, j1] * frac[None, :, None]
  return (out + size * size // 2) // (size * size)


def _background_texture(rng: np.random.Generator, size: int, contrast: int = 100) -> np.ndarray:
  """A periodic multi-scale colour noise texture, int64[size,size,3], values in 0..255.

  `contrast` scales every octave's amplitude, in percent (integers, so the texture stays exact).
  """
  texture = np.broadcast_to(rng.integers(70, 186, size=3), (size, size, 3)).astype(np.int64)
  for cells, amplitude in _OCTAVES:
    if cells > size // 2:
      continue
    amplitude = amplitude * contrast // 100
    luminance = rng.integers(-amplitude, amplitude + 1, size=(cells, cells, 1))
    chroma = rng.integers(-(amplitude // 3), amplitude // 3 + 1, size=(cells, cells, 3))
    texture = texture + _periodic_upsample(luminance + chroma, size)
  return np.clip(texture, 0, 255)


@functools.lru_cache(maxsize=None)
def _noise_table(noise: int) -> np.ndarray:
  """256 quantiles of the sum of three independent integers uniform on [-noise, noise].

  Sensor noise is then one random byte per value looked up here: a third of the cost of drawing
  three integers, the same bell shape (standard deviation about noise + 0.5), exact integers.
  """
  pmf = np.ones(2 * noise + 1, np.int64)
  pmf = np.convolve(np.convolve(pmf, pmf), pmf)  # counts of each sum in -3*noise..3*noise
  cdf = np.cumsum(pmf)
  total = int(cdf[-1])
  # Entry i is the quantile at probability (i + 0.5) / 256, compared in integers.
  levels = np.array([np.searchsorted(cdf * 512, (2 * i + 1) * total, side="right")
                     for i in range(256)], np.int64)
  return levels - 3 * noise


def _inside_arrow(dx, dy, radius, angle):
  """An isosceles arrowhead of half-length `radius` pointing along `angle` (all in 1/16 px)."""
  c, s = _COS[angle], _SIN[angle]
  u = (dx * c + dy * s) >> 12
  v = (dy * c - dx * s) >> 12
  return (u >= -radius) & (10 * np.abs(v) <= 3 * (radius - u))


def _inside_disc(dx, dy, radius, angle):
  del angle
  return dx * dx + dy * dy <= radius * radius


def _inside_square(dx, dy, radius, angle):
  del angle
  return np.maximum(np.abs(dx), np.abs(dy)) <= radius


_SHAPES = (_inside_disc, _inside_square)
# Farthest point of each shape from its centre, in units of its radius (arrow: sqrt(1 + 0.6^2)).
_ARROW_EXTENT = 1.17
_SQUARE_EXTENT = 1.42


def _paint(canvas: np.ndarray, cx: int, cy: int, radius: int, extent: float, inside, angle: int,
           colour: np.ndarray, opacity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Blends a shape into canvas (int64[H,W,3]) on the torus; returns (rows, cols, coverage)."""
  size = canvas.shape[0]
  reach = int(math.ceil(extent * radius / SUBPIXEL)) + 1
  n = 2 * reach + 1
  px0 = cx // SUBPIXEL - reach
  py0 = cy // SUBPIXEL - reach
  samples = (np.arange(n, dtype=np.int64)[:, None] * SUBPIXEL + _SAMPLE_OFFSETS[None, :]).reshape(-1)
  dx = (px0 * SUBPIXEL - cx) + samples
  dy = (py0 * SUBPIXEL - cy) + samples
  covered = inside(dx[None, :], dy[:, None], radius, angle)
  coverage = covered.reshape(n, 4, n, 4).sum(axis=(1, 3))
  weight = (coverage * opacity)[..., None]
  rows = (py0 + np.arange(n)) % size
  cols = (px0 + np.arange(n)) % size
  box = canvas[np.ix_(rows, cols)]
  canvas[np.ix_(rows, cols)] = (box * (_BLEND_ONE - weight) + colour * weight + _BLEND_ONE // 2) // _BLEND_ONE
  return rows, cols, coverage


def _progress(t: int, first: int, steps: int) -> int:
  """How many of the window's `steps` moves the actor has made by frame t."""
  return min(max(t - first, 0), steps)


def _triangle_wave(amplitude: int, k: int, steps: int) -> int:
  """One period 0 -> +a -> -a -> 0 over `steps`, at step k, in integers.

  The peak and the trough fall on whole steps, so the actor moves between every two consecutive
  frames of the window (a wave sampled symmetrically around its peak would repeat a position).
  """
  peak = max(1, (steps + 2) // 4)
  trough = steps - peak
  if k <= peak:
    return amplitude * k // peak
  if k <= trough:  # only reached when trough > peak
    return amplitude - 2 * amplitude * (k - peak) // (trough - peak)
  return -amplitude + amplitude * (k - trough) // peak


def _window_lengths(frames: int, window_fraction: tuple[float, float]) -> tuple[int, int]:
  shortest = max(3, round(frames * window_fraction[0]))
  longest = min(frames - 2, max(shortest, round(frames * window_fraction[1])))
  if shortest > longest:
    raise ValueError(
        f"frames={frames} leaves no room for an action window of at least 3 frames with still "
        "frames around it; use frames >= 5.")
  return shortest, longest


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The generator of one clip: a function of (seed, split, index) only, the same on every machine."""
  return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, SPLITS.index(split), index])))


def generate_clip(
    index: int,
    split: str = "train",
    *,
    frames: int = 16,
    size: int = 64,
    seed: int = 0,
    actor_size: tuple[float, float] = (0.25, 0.35),
    actor_contrast: float = 1.0,
    noise: int = 3,
    num_distractors: int = 3,
    distractor_size: tuple[float, float] = (0.09, 0.2),
    background_speed: int = 1,
    background_contrast: int = 100,
    distractor_speed: int = 2,
    window_fraction: tuple[float, float] = (9 / 16, 13 / 16),
    travel: tuple[float, float] = (0.3, 0.48),
    oscillation: tuple[float, float] = (0.1, 0.2),
    rotation: tuple[float, float] = (0.15, 0.3),
    growth: tuple[float, float] = (1.8, 2.2),
    group_colours: bool = True,
) -> tuple[np.ndarray, int, dict[str, Any]]:
  """Clip `index` of `split`: (uint8[frames,size,size,3], label, info).

  The label is `index % NUM_CLASSES`, so any run of NUM_CLASSES consecutive indices is balanced.

  Difficulty knobs (sizes and distances are fractions of the frame side):
    actor_size: (smallest, largest) length of the actor's arrowhead.
    actor_contrast: opacity of the actor over the background, in (0, 1].
    noise: sensor noise per pixel, channel and frame, distributed as a sum of three integers
      uniform in [-noise, noise] (256 quantiles of it; standard deviation about noise + 0.5 grey
      levels); 0 turns it off.
    num_distractors: drifting discs and squares that carry no class information.
    distractor_size: (smallest, largest) diameter of a distractor.
    background_speed: largest pan of the background texture, in px per frame per axis.
    background_contrast: amplitude of the background texture's octaves, in percent of _OCTAVES.
    distractor_speed: largest constant drift of a distractor, in px per frame per axis (each also
      jitters by up to half a pixel per frame).
    window_fraction: (shortest, longest) action window as a fraction of the clip's frames.
    travel, oscillation, rotation: (least, most) travel distance, oscillation amplitude (fractions
      of the frame side) and total rotation (turns) over the window.
    growth: (least, most) ratio of the largest to the smallest arrowhead of grow and shrink (the
      largest in the top third of `actor_size`, the smallest that divided by the ratio).
    group_colours: the actor's colour names its class pair (label // 2) and distractors use other
      colours; False draws the actor's and distractors' colours from one shared palette.

  info: class_name; window (first, last): the actor's state is the same on all frames up to
  `first` and on all from `last`, and changes between every two consecutive frames in between;
  actor_centre float[T,2] (x, y in px), actor_angle int[T] (1/256 turn), actor_size float[T] (px);
  actor_mask bool[T,H,W] (pixels the actor touches, before anything occludes it);
  background_velocity (vx, vy) in px per frame.
  """
  if split not in SPLITS:
    raise ValueError(f"split={split!r}: expected one of {SPLITS}.")
  for name, value in (("index", index), ("frames", frames), ("size", size), ("seed", seed),
                      ("noise", noise), ("num_distractors", num_distractors),
                      ("background_speed", background_speed),
                      ("background_contrast", background_contrast),
                      ("distractor_speed", distractor_speed)):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
      raise ValueError(f"{name}={value!r}: expected an integer.")
  if index < 0 or seed < 0:
    raise ValueError(f"index={index}, seed={seed}: neither may be negative.")
  if size < 16:
    raise ValueError(f"size={size}: frames must be at least 16x16 px.")
  if not 0.0 < actor_contrast <= 1.0:
    raise ValueError(f"actor_contrast={actor_contrast}: expected a number in (0, 1].")
  if min(noise, num_distractors, background_speed, background_contrast, distractor_speed) < 0:
    raise ValueError(f"noise={noise}, num_distractors={num_distractors}, background_speed="
                     f"{background_speed}, background_contrast={background_contrast}, "
                     f"distractor_speed={distractor_speed}: none may be negative.")
  actor_size = _check_range("actor_size", actor_size, 1.0 / size, 0.45)
  distractor_size = _check_range("distractor_size", distractor_size, 1.0 / size, 0.35)
  window_fraction = _check_range("window_fraction", window_fraction, 0.0, 1.0)
  travel = _check_range("travel", travel, 0.0, 1.0)
  oscillation = _check_range("oscillation", oscillation, 0.0, 0.5)
  rotation = _check_range("rotation", rotation, 0.0, 1.0)
  growth = _check_range("growth", growth, 1.0, 4.0)
  if min(travel[0], oscillation[0], rotation[0], growth[0] - 1) <= 0:
    raise ValueError(f"travel={travel}, oscillation={oscillation}, rotation={rotation}, growth="
                     f"{growth}: the least motion must be above 0 (growth above 1), or some clips "
                     "of a class would not move at all.")
  index = int(index)
  shortest, longest = _window_lengths(frames, window_fraction)

  rng = clip_rng(seed, split, index)
  label = index % NUM_CLASSES
  class_name = CLASS_NAMES[label]
  side = size * SUBPIXEL  # the torus, in 1/16 px
  px = lambda fraction: round(fraction * side)  # a fraction of the frame side -> 1/16 px

  # --- The action window and the actor's track. Everything is drawn in the same order for every
  # class, so a class changes only how the track moves, never the other draws.
  window = _uniform_int(rng, shortest, longest)
  steps = window - 1
  first = _uniform_int(rng, 0, frames - window)
  x0 = _uniform_int(rng, 0, side - 1)
  y0 = _uniform_int(rng, 0, side - 1)
  angle0 = _uniform_int(rng, 0, ANGLE_STEPS - 1)
  actor_lo, actor_hi = px(actor_size[0]), px(actor_size[1])
  third = (actor_hi - actor_lo) // 3
  size_still = _uniform_int(rng, actor_lo, actor_hi)
  size_large = _uniform_int(rng, actor_hi - third, actor_hi)
  ratio = _uniform_int(rng, round(growth[0] * 16), round(growth[1] * 16))  # in 1/16
  size_small = max(SUBPIXEL, size_large * 16 // ratio)
  distance = _uniform_int(rng, px(travel[0]), px(travel[1]))
  amplitude = _uniform_int(rng, px(oscillation[0]), px(oscillation[1]))
  oscillation_sign = 1 if rng.integers(2) else -1
  turn = _uniform_int(rng, round(rotation[0] * ANGLE_STEPS), round(rotation[1] * ANGLE_STEPS))
  if group_colours:
    actor_colour = _colour(rng, _GROUP_PALETTE[label // 2 : label // 2 + 1])
  else:
    actor_colour = _colour(rng)
  opacity = round(actor_contrast * 256)

  centres = np.zeros((frames, 2), np.int64)
  angles = np.zeros(frames, np.int64)
  lengths = np.zeros(frames, np.int64)  # arrowhead length (2 x radius), 1/16 px
  for t in range(frames):
    k = _progress(t, first, steps)
    dx = dy = dangle = 0
    length = size_still
    if class_name == "travel_left":
      dx = -(distance * k // steps)
    elif class_name == "travel_right":
      dx = distance * k // steps
    elif class_name == "travel_up":
      dy = -(distance * k // steps)
    elif class_name == "travel_down":
      dy = distance * k // steps
    elif class_name == "rotate_clockwise":
      dangle = turn * k // steps
    elif class_name == "rotate_anticlockwise":
      dangle = -(turn * k // steps)
    elif class_name == "grow":
      length = size_small + (size_large - size_small) * k // steps
    elif class_name == "shrink":
      length = size_large - (size_large - size_small) * k // steps
    elif class_name == "oscillate_horizontal":
      dx = oscillation_sign * _triangle_wave(amplitude, k, steps)
    elif class_name == "oscillate_vertical":
      dy = oscillation_sign * _triangle_wave(amplitude, k, steps)
    centres[t] = ((x0 + dx) % side, (y0 + dy) % side)
    angles[t] = (angle0 + dangle) % ANGLE_STEPS
    lengths[t] = length

  # --- Background: a periodic texture panning at a constant whole-pixel velocity (never still).
  texture = _background_texture(rng, size, background_contrast)
  while True:
    vx = _uniform_int(rng, -background_speed, background_speed)
    vy = _uniform_int(rng, -background_speed, background_speed)
    if vx or vy or background_speed == 0:
      break
  pan_x0, pan_y0 = _uniform_int(rng, 0, size - 1), _uniform_int(rng, 0, size - 1)

  # --- Distractors: constant drift plus independent jitter every frame, symmetric in sign so that
  # their motion reversed in time has the same distribution.
  distractors = []
  drift = distractor_speed * SUBPIXEL  # px per frame per axis, at most
  jitter = SUBPIXEL // 2
  for _ in range(num_distractors):
    radius = max(1, _uniform_int(rng, px(distractor_size[0]), px(distractor_size[1])) // 2)
    shape = int(rng.integers(len(_SHAPES)))
    colour = _colour(rng, _DISTRACTOR_PALETTE if group_colours else _PALETTE)
    above_actor = bool(rng.integers(4) == 0)
    start = rng.integers(0, side, size=2)
    velocity = rng.integers(-drift, drift + 1, size=2)
    moves = velocity + rng.integers(-jitter, jitter + 1, size=(frames, 2))
    moves[0] = 0
    track = (start + np.cumsum(moves, axis=0)) % side
    distractors.append((radius, shape, colour, above_actor, track))

  # --- Render, then add sensor noise.
  clip = np.empty((frames, size, size, 3), np.int64)
  actor_mask = np.zeros((frames, size, size), bool)
  for t in range(frames):
    canvas = np.roll(texture, (pan_y0 + vy * t, pan_x0 + vx * t), axis=(0, 1))
    for above in (False, True):
      if above:
        radius = lengths[t] // 2
        rows, cols, coverage = _paint(canvas, centres[t, 0], centres[t, 1], radius, _ARROW_EXTENT,
                                      _inside_arrow, angles[t], actor_colour, opacity)
        actor_mask[t][np.ix_(rows, cols)] = coverage > 0
      for radius, shape, colour, above_actor, track in distractors:
        if above_actor == above:
          _paint(canvas, track[t, 0], track[t, 1], radius, _SQUARE_EXTENT, _SHAPES[shape], 0,
                 colour, 256)
    clip[t] = canvas
  if noise:
    clip += _noise_table(noise)[np.frombuffer(rng.bytes(clip.size), np.uint8).reshape(clip.shape)]
  clip = np.clip(clip, 0, 255).astype(np.uint8)

  info = dict(
      class_name=class_name,
      window=(first, first + steps),
      actor_centre=centres / SUBPIXEL,
      actor_angle=angles,
      actor_size=lengths / SUBPIXEL,
      actor_mask=actor_mask,
      background_velocity=(vx, vy),
  )
  return clip, label, info


# ------------------------------------------------------------------------------------------------
# TFDS builder
# ------------------------------------------------------------------------------------------------

#: builder_kwargs of configs/synthetic.py that name the stored dataset, and their defaults.
SIZE_KWARGS = dict(num_train=3000, num_test=600, frames=16, size=64, seed=0)
#: Further builder_kwargs: generate_clip's difficulty knobs. Non-default values join the config name.
KNOB_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(generate_clip).parameters.items()
    if parameter.kind == inspect.Parameter.KEYWORD_ONLY and name not in SIZE_KWARGS
}


def _knob_text(value) -> str:
  if isinstance(value, (tuple, list)):
    return "-".join(_knob_text(v) for v in value)
  return f"{value:g}" if isinstance(value, float) else str(value)


def config_name(num_train: int, num_test: int, frames: int, size: int, seed: int,
                knobs: Mapping[str, Any] | None = None) -> str:
  """`f16_s64_tr3000_te600_seed0`, plus `_<knob><value>` for every non-default difficulty knob."""
  name = f"f{frames}_s{size}_tr{num_train}_te{num_test}_seed{seed}"
  for key, value in sorted((knobs or {}).items()):
    if tuple(np.atleast_1d(value)) != tuple(np.atleast_1d(KNOB_DEFAULTS[key])):
      name += f"_{key}{_knob_text(value)}"
  return name


@dataclasses.dataclass(eq=False)
class SyntheticActionsConfig(tfds.core.BuilderConfig):
  """One stored size of the dataset; `knobs` are generate_clip keyword arguments."""
  num_train: int = 3000
  num_test: int = 600
  frames: int = 16
  size: int = 64
  seed: int = 0
  knobs: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def make_config(**builder_kwargs) -> SyntheticActionsConfig:
  """A config from configs/synthetic.py's `builder_kwargs` (size kwargs plus optional knobs)."""
  unknown = set(builder_kwargs) - set(SIZE_KWARGS) - set(KNOB_DEFAULTS)
  if unknown:
    raise ValueError(
        f"unknown synthetic_actions builder_kwargs {sorted(unknown)}; known: "
        f"{sorted(SIZE_KWARGS)} and the difficulty knobs {sorted(KNOB_DEFAULTS)}.")
  sizes = {key: int(builder_kwargs.get(key, default)) for key, default in SIZE_KWARGS.items()}
  for key in ("num_train", "num_test"):
    if sizes[key] < 1:
      raise ValueError(f"{key}={sizes[key]}: a split needs at least one clip.")
  knobs = {key: builder_kwargs[key] for key in KNOB_DEFAULTS if key in builder_kwargs}
  knobs = {key: tuple(v) if isinstance(v, (list, tuple)) else v for key, v in knobs.items()}
  # Fail now, with generate_clip's message, rather than halfway through a build.
  generate_clip(0, "train", frames=sizes["frames"], size=sizes["size"], seed=sizes["seed"], **knobs)
  return SyntheticActionsConfig(
      name=config_name(**sizes, knobs=knobs),
      description=f"{sizes['frames']} frames of {sizes['size']}x{sizes['size']}, "
                  f"{sizes['num_train']} train / {sizes['num_test']} test clips, seed {sizes['seed']}.",
      **sizes, knobs=knobs)


class SyntheticActions(tfds.core.GeneratorBasedBuilder):
  """Procedural action clips (see the module docstring); PNG frames, so stored clips are exact."""

  VERSION = tfds.core.Version(GENERATOR_VERSION)
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "1.1.0": "Actor colour names its class pair (group_colours); larger, opaque actor.",
      "1.3.0": "Issue 15: action window 9-13 of 16 frames; travel 0.3-0.48 of the side, grow and "
               "shrink by 1.8-2.2x, rotation 0.15-0.3 turns; noise 3, 3 distractors, background "
               "pan 1 px/frame; growth knob. (1.2.0 was an unreleased intermediate.)",
  }
  BUILDER_CONFIGS = [make_config()]

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> pathlib.Path:
    """This module's file. TFDS's own lookup needs the `importlib_resources` backport (not
    installed, not needed on Python >= 3.11) only to find a checksums file; nothing is downloaded."""
    return pathlib.Path(inspect.getfile(cls))

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features_lib.video_features(CLASS_NAMES),
        supervised_keys=("frames", "label"),
        description=__doc__.split("\n\n")[0],
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # everything is generated
    return {
        "train": self._generate_examples("train", self.builder_config.num_train),
        "test": self._generate_examples("test", self.builder_config.num_test),
    }

  def _generate_examples(self, split: str, count: int) -> Iterator[tuple[str, dict[str, Any]]]:
    config = self.builder_config
    for index in range(count):
      clip, label, _ = generate_clip(index, split, frames=config.frames, size=config.size,
                                     seed=config.seed, **config.knobs)
      key = f"{split}_{index:06d}"
      yield key, {
          "frames": features_lib.encode_frames(clip, fmt="png"),
          "label": label,
          "num_frames": config.frames,
          "fps": 25.0,
          "height": config.size,
          "width": config.size,
          "source_height": config.size,
          "source_width": config.size,
          "filename": key,
      }


def make_builder(data_config: Mapping[str, Any], data_dir: str | os.PathLike) -> tfds.core.DatasetBuilder:
  """The builder for `config.data` of configs/synthetic.py (reads `data_config.builder_kwargs`).

  Returns it unbuilt; `download_and_prepare()` writes ArrayRecord files (the default file format
  set here), and a second call finds them and does nothing.
  """
  builder_kwargs = dict(data_config.get("builder_kwargs") or {})
  config = make_config(**builder_kwargs)
  registered = {c.name: c for c in SyntheticActions.BUILDER_CONFIGS}
  chosen = config.name if config.name in registered else config
  return SyntheticActions(config=chosen, data_dir=os.fspath(data_dir), file_format="array_record")
