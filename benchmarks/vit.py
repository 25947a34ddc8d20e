"""Times the classifier ViT and the DeepISC baseline on the synthetic config's clip size.

  python benchmarks/vit.py [--batch 8] [--repeats 7]

Prints, per model, the median milliseconds per 16x64x64 clip of a jitted forward pass (and for
DeepISC the device-side encode alone and a training step's gradient), with analytic GFLOPs per
clip for the ViT. Also compares ViT variants (tubelet/patch/width) in the same run, since the
shared machine is noisy: ratios between rows mean more than absolute figures.
"""

import argparse
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from stae_jax import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))  # configs/ is a folder of the repository, not installed
from configs import synthetic as synthetic_config  # noqa: E402
from stae_jax.models import deepisc as deepisc_lib  # noqa: E402
from stae_jax.models import vit as vit_lib  # noqa: E402
from stae_jax.systems import deepisc as deepisc_system  # noqa: E402
from timing import median_ms_per_clip  # noqa: E402  (benchmarks/timing.py)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args()
  config = synthetic_config.get_config()
  frames, size = config.data.frames, config.data.resolution
  clip = jnp.asarray(np.random.default_rng(0).integers(
      0, 256, (args.batch, frames, size, size, 3), dtype=np.uint8))
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s); batch {args.batch} "
        f"clips of {frames}x{size}x{size}; median of {args.repeats}")

  v = config.model.vit
  # Labels come from the config, so they stay true when its defaults change.
  variants = [(f"config (tubelet {v.tubelet}, patch {v.patch}, width {v.width}, depth {v.depth})", {}),
              ("tubelet 4, patch 8", dict(tubelet=4, patch=8)),
              ("tubelet 2, patch 8", dict(tubelet=2, patch=8)),
              ("tubelet 2, patch 16, width 192, depth 6, heads 3",
               dict(tubelet=2, patch=16, width=192, depth=6, num_heads=3))]
  for name, overrides in variants:
    vit_config = config.model.vit.copy_and_resolve_references()
    vit_config.update(overrides)
    vit = vit_lib.vit_from_config(vit_config, rngs=nnx.Rngs(0))
    graph, state = nnx.split(vit)
    forward = jax.jit(lambda s, x, graph=graph: nnx.merge(graph, s)(x))
    ms = median_ms_per_clip(forward, state, clip, batch=args.batch, repeats=args.repeats)
    gflops = vit_lib.flops_per_clip(vit_config, frames=frames, resolution=size) / 1e9
    print(f"ViT {name}: {ms:.1f} ms/clip forward, {gflops:.2f} GFLOP/clip")

  vit = vit_lib.vit_from_config(config, rngs=nnx.Rngs(0))
  entry = config.systems.deepisc  # DeepISC's system entry: model.deepisc (+ model.entropy)
  for patch in (entry.model.deepisc.patch, 8):
    entry.model.deepisc.patch = patch
    model = deepisc_system.build(entry, config.data, rngs=nnx.Rngs(1))["deepisc"]
    graph, state = nnx.split((model, vit))

    def encode(s, x, graph=graph):
      return nnx.merge(graph, s)[0].encode(x)

    def forward(s, x, graph=graph):
      model, vit = nnx.merge(graph, s)
      return deepisc_lib.deepisc_forward(model, vit, x, num_tokens=model.max_tokens,
                                         training=False, rng=None)

    def grad(s, x, rng, graph=graph):
      def loss(s):
        model, vit = nnx.merge(graph, s)
        out = deepisc_lib.deepisc_forward(model, vit, x, num_tokens=None, training=True, rng=rng)
        return out["bits"]["total"].mean() + jnp.mean((out["reconstruction"] - x) ** 2)
      return jax.grad(loss)(s)

    times = [median_ms_per_clip(jax.jit(fn), state, clip, *extra, batch=args.batch,
                                repeats=args.repeats)
             for fn, extra in ((encode, ()), (forward, ()), (grad, (jax.random.key(0),)))]
    print(f"DeepISC patch {patch}: encode {times[0]:.1f} ms/clip, forward with ViT "
          f"{times[1]:.1f} ms/clip, training gradient {times[2]:.1f} ms/clip")


if __name__ == "__main__":
  main()
