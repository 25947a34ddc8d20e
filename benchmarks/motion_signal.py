r"""How well single motion numbers tell the two classes of a synthetic_actions pair apart.

  python benchmarks/motion_signal.py [--pair=rotate_clockwise,rotate_anticlockwise] [--clips=200]
      [--rotation=0.3,0.6]

Why (issue 15): the classifier's weakest pair is clockwise against anticlockwise rotation. Before
training a classifier on a new input channel (30 minutes on two cores), this says in a minute
whether the channel carries the difference at all. For test clips of the pair's two classes
(generated, the default knobs), each candidate is averaged over the whole clip to one number; the
script prints d' (the distance of the two classes' means in units of their mean standard
deviation) and the accuracy of the best threshold on that number. Candidates: every channel of
`motion_features` as the default classifier sees it (2x2 pooling), and the full-resolution fine
curl times colour gates (chroma = x - its mean over the channels; relu(...) = max(..., 0)).
A linear read-out of a frame mean is a lower bound on what a classifier could use, not a forecast
of what it learns (BENCHMARKS.md, "Motion probes, fourth round").
"""

import argparse
import pathlib
import sys

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def separation(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
  """(d', accuracy of the midpoint threshold) of two samples of one number."""
  d = abs(a.mean() - b.mean()) / (0.5 * (a.std() + b.std()) + 1e-12)
  mid, sign = (a.mean() + b.mean()) / 2, np.sign(a.mean() - b.mean())
  return float(d), float(0.5 * ((sign * (a - mid) > 0).mean() + (sign * (b - mid) < 0).mean()))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--pair", default="rotate_clockwise,rotate_anticlockwise")
  parser.add_argument("--clips", type=int, default=200, help="test clips of the pair, in all")
  parser.add_argument("--pool", type=int, default=2, help="motion_features' pooling")
  parser.add_argument("--rotation", default=None,
                      help="least,most turns of a rotation (default: the generator's)")
  args = parser.parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from stae_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  from stae_jax.models import motion  # pylint: disable=g-import-not-at-top
  from stae_jax.models import vit  # pylint: disable=g-import-not-at-top
  pair = args.pair.split(",")
  if len(pair) != 2 or not set(pair) <= set(synthetic.CLASS_NAMES):
    raise SystemExit(f"--pair needs two of {synthetic.CLASS_NAMES}; got {args.pair!r}")

  @jax.jit
  def candidates(clip):
    x = vit.normalize_video(clip)
    features = motion.motion_features(x, args.pool).mean(axis=(0, 1, 2, 3))
    out = {f"motion_features channel {c}": features[c] for c in range(features.shape[0])}
    _, _, _, u, v = motion._normal_flow(x)  # pylint: disable=protected-access
    fine = jnp.tanh(motion.FIELD_GAIN * motion._curl_div(u, v)[2])  # pylint: disable=protected-access
    chroma = x - x.mean(axis=-1, keepdims=True)
    for c, name in enumerate("RGB"):
      out[f"fine curl x x_{name}"] = (fine * x[..., c]).mean()
      out[f"fine curl x chroma_{name}"] = (fine * chroma[..., c]).mean()
      for threshold in (0.5, 1.0, 1.5):
        out[f"fine curl x relu(chroma_{name} - {threshold:g})"] = (
            fine * jax.nn.relu(chroma[..., c] - threshold)).mean()
        out[f"fine curl x relu(-chroma_{name} - {threshold:g})"] = (
            fine * jax.nn.relu(-chroma[..., c] - threshold)).mean()
    return out

  knobs = {}
  if args.rotation:
    knobs["rotation"] = tuple(float(t) for t in args.rotation.split(","))
  values = {name: [] for name in pair}
  index = 0
  while sum(map(len, values.values())) < args.clips:
    clip, _, info = synthetic.generate_clip(index, "test", **knobs)
    index += 1
    if info["class_name"] in values:
      values[info["class_name"]].append(jax.device_get(candidates(jnp.asarray(clip[None]))))
  a, b = values[pair[0]], values[pair[1]]
  print(f"{pair[0]} ({len(a)} clips) against {pair[1]} ({len(b)} clips), means over the clip\n")
  print("| candidate | d' | threshold accuracy |\n|---|---|---|")
  rows = [(name, *separation(np.array([r[name] for r in a]), np.array([r[name] for r in b])))
          for name in a[0]]
  for name, d, accuracy in sorted(rows, key=lambda row: -row[1]):
    print(f"| {name} | {d:.2f} | {100 * accuracy:.1f}% |")


if __name__ == "__main__":
  main()
