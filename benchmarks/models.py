"""Cost of every model: CPU time per clip at the synthetic config, FLOPs and parameters at HMDB51's.

  python benchmarks/models.py [--batch 8] [--repeats 5] [--skip-timing]

Part 1 (timing; synthetic config, 16x64x64 clips): median milliseconds per clip of a jitted
forward pass (inference) and of a forward+backward pass (the gradient of a training loss), for the
classifier alone, STAE (at two operating points, plus its device-side encoder alone) and DeepISC.

Part 2 (size; HMDB51 config, 16x224x224, ViT-B/16, p=16): parameters and forward FLOPs per clip of
each model, counted by XLA's HLO cost analysis of the lowered (uncompiled) computation, so nothing
runs; the ViT-B count is checked against the analytic `vit.flops_per_clip`. The STAE encoder's FLOPs
(what the device runs: attention, selection, analysis, rounding) are given as a share of the
ViT-B's; the design bound is < 5%.
"""

import argparse
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from stae_jax import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))  # configs/ is a folder of the repository, not installed
from configs import hmdb51 as hmdb51_config  # noqa: E402
from configs import synthetic as synthetic_config  # noqa: E402
from stae_jax.data import synthetic as synthetic_data  # noqa: E402
from stae_jax import systems  # noqa: E402
from stae_jax.models import vit as vit_lib  # noqa: E402
from stae_jax.systems import deepisc as deepisc_system  # noqa: E402
from stae_jax.systems import stae as stae_system  # noqa: E402
from stae_jax.systems import loading  # noqa: E402
from timing import median_ms_per_clip  # noqa: E402  (benchmarks/timing.py)


def build(config, tag: str, abstract: bool):
  """Models of system `config.systems[tag]` (the ViT and the system's own modules); abstract
  (shapes only) for counting, real for timing."""
  make = lambda: loading.build_models(config, config.systems[tag],
                                          nnx.Rngs(jax.random.key(0, impl="rbg")))
  return nnx.eval_shape(make) if abstract else make()


def point_text(point) -> str:
  """An operating point as this table always printed it: (rho_f, rho_s) or a token count."""
  settings = point.as_dict()
  if "tokens_per_frame" in settings:
    return str(settings["tokens_per_frame"])
  return str((settings["frame_keep"], settings["block_keep"]))


def training_loss(method, models, video, labels, operating_point, rng):
  out = method.forward(models, video, operating_point, training=True, rng=rng)
  task = -jnp.take_along_axis(jax.nn.log_softmax(out["logits"]), labels[:, None], 1).mean()
  distortion = jnp.mean((out["reconstruction"] - video.astype(jnp.float32)) ** 2) / 255.0 ** 2
  return task + distortion + 1e-5 * out["bits"]["total"].mean()


def timing(args):
  config = synthetic_config.get_config()
  config.model.vit.num_classes = synthetic_data.NUM_CLASSES
  frames, size = config.data.frames, config.data.resolution
  rng = np.random.default_rng(0)
  video = jnp.asarray(rng.integers(0, 256, (args.batch, frames, size, size, 3), dtype=np.uint8))
  labels = jnp.asarray(rng.integers(0, synthetic_data.NUM_CLASSES, (args.batch,)), jnp.int32)
  key = jax.random.key(1)
  print(f"## Timing: backend {jax.default_backend()}, batch {args.batch} clips of "
        f"{frames}x{size}x{size}, median of {args.repeats}, ms per clip")
  print("| system | operating point | forward | forward+backward |")
  print("|---|---|---|---|")
  rows = []
  for system in ("stae", "deepisc"):
    entry = config.systems[system]
    method = systems.get(entry.method)
    models = build(config, system, abstract=False)
    graphdef, state = nnx.split(models)
    params_graph, params, rest = nnx.split(models, nnx.Param, ...)
    if system == "stae":
      classify = jax.jit(lambda s, v: dict(logits=nnx.merge(graphdef, s)["vit"](v)))
      loss = lambda p, r, v, y: jax.nn.log_softmax(
          nnx.merge(params_graph, p, r)["vit"](v))[
              jnp.arange(v.shape[0]), y].mean()
      grad = jax.jit(jax.grad(loss))
      rows.append(("classifier (ViT alone)", "-",
                   median_ms_per_clip(classify, state, video, batch=args.batch,
                                      repeats=args.repeats),
                   median_ms_per_clip(grad, params, rest, video, labels, batch=args.batch,
                                      repeats=args.repeats)))
      keep_ratios = entry.model.stae.keep_ratios
      points = [stae_system.point(*keep_ratios[1]), stae_system.point(*keep_ratios[-1])]
    else:
      points = [deepisc_system.point(max(entry.model.deepisc.token_choices))]
    for point in points:
      forward = jax.jit(lambda s, v, point=point: method.forward(
          nnx.merge(graphdef, s), v, point, training=False))
      grad = jax.jit(jax.grad(lambda p, r, v, y, k, point=point: training_loss(
          method, nnx.merge(params_graph, p, r), v, y, point, k)))
      rows.append((system, point_text(point),
                   median_ms_per_clip(forward, state, video, batch=args.batch,
                                      repeats=args.repeats),
                   median_ms_per_clip(grad, params, rest, video, labels, key, batch=args.batch,
                                      repeats=args.repeats)))
      if system == "stae":
        encode = jax.jit(lambda s, v, point=point: nnx.merge(graphdef, s)["stae"].encode(
            v, frame_keep=point["frame_keep"], block_keep=point["block_keep"]))
        rows.append(("stae encoder alone (device)", point_text(point),
                     median_ms_per_clip(encode, state, video, batch=args.batch,
                                        repeats=args.repeats), float("nan")))
  for name, point, fwd, bwd in rows:
    print(f"| {name} | {point} | {fwd:.2f} | {'-' if np.isnan(bwd) else f'{bwd:.2f}'} |")


def count_parameters(module) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(module, nnx.Param))))


def flops(fn, *args) -> float:
  return float(jax.jit(fn).lower(*args).cost_analysis()["flops"])


def size(args):
  config = hmdb51_config.get_config()
  frames, res = config.data.frames, config.data.resolution
  video = jax.ShapeDtypeStruct((1, frames, res, res, 3), jnp.uint8)
  models = build(config, "stae", abstract=True)
  graphdef, state = nnx.split(models)
  merged = lambda s: nnx.merge(graphdef, s)
  stae = models["stae"]
  stae_config = config.systems.stae.model.stae
  p = stae_config.block_size
  n = (res // p) ** 2
  print(f"\n## Size: HMDB51 config, one {frames}x{res}x{res} clip, forward FLOPs from XLA's HLO "
        "cost analysis (2 per multiply-add)")
  vit_flops = flops(lambda s, v: merged(s)["vit"](v), state, video)
  analytic = vit_lib.flops_per_clip(config)
  print(f"ViT-B/16: {vit_flops / 1e9:.1f} GFLOPs (analytic matmul count {analytic / 1e9:.1f}), "
        f"{count_parameters(models['vit']) / 1e6:.1f} M parameters")
  print("| model (where it runs) | operating point (rho_f, rho_s) | parameters | GFLOPs per clip |"
        " share of ViT-B |")
  print("|---|---|---|---|---|")
  rows = [("ViT-B/16 (server)", "-", count_parameters(models["vit"]), vit_flops)]
  stae_params = count_parameters(stae)
  synthesis_params = count_parameters(stae.synthesis) if stae.synthesis is not None else 0
  for rho_f, rho_s in stae_config.keep_ratios:
    encoder = flops(lambda s, v: merged(s)["stae"].encode(v, frame_keep=rho_f, block_keep=rho_s),
                    state, video)
    rows.append(("STAE encoder (device)", f"({rho_f}, {rho_s})", stae_params - synthesis_params,
                 encoder))
  for rho_f, rho_s in (stae_config.keep_ratios[0], stae_config.keep_ratios[-1]):
    k_f, k_s = stae.keep_counts(frames, n, rho_f, rho_s)
    h, w, c = stae.latent_shape()
    receive = flops(lambda s, fi, bi, y: merged(s)["stae"].receive(
        fi, bi, y, frames=frames, height=res, width=res), state,
        jax.ShapeDtypeStruct((1, k_f), jnp.int32), jax.ShapeDtypeStruct((1, k_f, k_s), jnp.int32),
        jax.ShapeDtypeStruct((1, k_f, k_s, h, w, c), jnp.float32))
    rows.append(("STAE synthesis (server)", f"({rho_f}, {rho_s})", synthesis_params, receive))
  pixels = jax.ShapeDtypeStruct((1, frames, res, res, 3), jnp.float32)
  mask = jax.ShapeDtypeStruct((1, frames, res, res, 1), jnp.float32)
  rows.append(("3D-2D CNN decoder (server)", "-", count_parameters(models["decoder"]),
               flops(lambda s, r, m: merged(s)["decoder"](r, m), state, pixels, mask)))
  deepisc_models = build(config, "deepisc", abstract=True)
  dgraph, dstate = nnx.split(deepisc_models)
  deepisc = deepisc_models["deepisc"]
  deepisc_config = config.systems.deepisc.model.deepisc
  tokens = max(deepisc_config.token_choices)
  latents = jax.ShapeDtypeStruct((1, frames, tokens, int(deepisc_config.channels)),
                                 jnp.float32)
  rows.append(("DeepISC encoder (device; parameters: whole model)", f"{tokens} tokens/frame", None,
               flops(lambda s, v: nnx.merge(dgraph, s)["deepisc"].encode(v), dstate, video)))
  rows.append(("DeepISC decoder (server)", f"{tokens} tokens/frame", None,
               flops(lambda s, y: nnx.merge(dgraph, s)["deepisc"].decode(y, tokens), dstate,
                     latents)))
  rows[-2] = rows[-2][:2] + (count_parameters(deepisc), rows[-2][3])
  for name, point, params, gflops in rows:
    share = 100 * gflops / vit_flops
    params_text = "-" if params is None else f"{params / 1e6:.3f} M"
    print(f"| {name} | {point} | {params_text} | {gflops / 1e9:.3f} | {share:.2f}% |")
  worst = max(g for name, _, _, g in rows if name.startswith("STAE encoder"))
  print(f"\nSTAE encoder at its costliest operating point: {100 * worst / vit_flops:.2f}% of the "
        f"ViT-B/16's FLOPs (bound: < 5%).")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--skip-timing", action="store_true", help="only count FLOPs/parameters")
  args = parser.parse_args()
  if not args.skip_timing:
    timing(args)
  size(args)


if __name__ == "__main__":
  main()
