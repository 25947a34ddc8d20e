"""Clips/s of the classifier train step: our Flax ViT against transformers' VideoMAE (PyTorch).

  python benchmarks/vit_vs_torch.py                      # ViT-B/16, 16x224x224, batch 8 (accelerator)
  python benchmarks/vit_vs_torch.py --small              # ViT-S/16, 8x112x112, batch 4 (2-core CPU)
  python benchmarks/vit_vs_torch.py --size=B --frames=16 --resolution=224 --batch=16 --rounds=5

Both sides run the same step on the same device and batch: uint8 clips normalised on the device,
forward, float32 softmax cross-entropy, backward, AdamW (lr 1e-4, weight decay 0.05).
  ours             `VideoViT` (compute dtype --dtype, float32 parameters), `jax.jit` of a pure
                   function of `nnx.split` state, state donated (as the trainer's step).
  torch autocast   `VideoMAEForVideoClassification`, attn_implementation="sdpa", float32
                   parameters under torch.autocast(--dtype): the same mixed precision as ours.
  torch bf16       the same model cast to bfloat16 (parameters and Adam moments in bfloat16):
                   less memory traffic, less accurate; shown because it is what many people run.
  (--torch_compile adds a torch.compile'd autocast row; it needs a C++ compiler on CPU.)
On a GPU the torch rows need a CUDA build of torch (the lock pins the CPU wheel); without one
they run on the CPU and the script says so in its header line.
Timing: the steps alternate in rounds (ours, torch, ...), so load on a shared machine hits each
alike; each row's figure is the median step over all rounds after warm-up. Prints clips/s and the
ratio of ours to each torch row, plus the analytic train FLOPs (3x the forward) per clip.
"""

import argparse
import os
import time

# Both frameworks share one accelerator: JAX must not take 75% of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from stae_jax.models import vit as vit_lib


def our_step(vit_config, batch_clips, labels, seed=0):
  """(step, state): one jitted AdamW step of the ViT on a batch, as the classifier stage runs it."""
  model = vit_lib.vit_from_config(vit_config, rngs=nnx.Rngs(seed))
  graphdef, params = nnx.split(model, nnx.Param)
  tx = optax.adamw(1e-4, weight_decay=0.05)
  state = {"params": params, "opt_state": tx.init(params)}

  def step(state, clips, labels):
    def loss_fn(params):
      logits = nnx.merge(graphdef, params)(clips)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}, loss

  jitted = jax.jit(step, donate_argnums=0)
  clips, labels = jnp.asarray(batch_clips), jnp.asarray(labels)
  box = {"state": state}

  def run():
    box["state"], loss = jitted(box["state"], clips, labels)
    jax.block_until_ready(loss)

  return run


def torch_step(vit_config, batch_clips, labels, *, mode: str, dtype: str, device: str):
  """One AdamW step of transformers' VideoMAEForVideoClassification with SDPA attention."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  dims = vit_lib.vit_dimensions(vit_config)
  frames, resolution = batch_clips.shape[1], batch_clips.shape[2]
  config = transformers.VideoMAEConfig(
      image_size=resolution, patch_size=int(vit_config.patch), num_frames=frames,
      tubelet_size=int(vit_config.tubelet), hidden_size=dims["width"],
      num_hidden_layers=dims["depth"], num_attention_heads=dims["num_heads"],
      intermediate_size=dims["mlp_dim"], num_labels=int(vit_config.num_classes),
      layer_norm_eps=float(vit_config.layer_norm_eps), attn_implementation="sdpa")
  torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
  model = transformers.VideoMAEForVideoClassification(config).to(device).train()
  assert model.config._attn_implementation == "sdpa", model.config._attn_implementation  # pylint: disable=protected-access
  if mode == "bf16":
    model = model.to(torch.bfloat16)
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05,
                                fused=device == "cuda")
  forward = torch.compile(model) if mode == "compile" else model
  clips = torch.as_tensor(batch_clips, device=device)
  targets = torch.as_tensor(labels, device=device, dtype=torch.long)
  mean = torch.tensor(vit_lib.IMAGENET_MEAN, device=device)
  std = torch.tensor(vit_lib.IMAGENET_STD, device=device)
  input_dtype = torch.bfloat16 if mode == "bf16" else torch.float32
  autocast = mode in ("autocast", "compile") and dtype != "float32"

  def run():
    pixels = ((clips.float() / 255.0 - mean) / std).permute(0, 1, 4, 2, 3).to(input_dtype)
    with torch.autocast(device_type=device, dtype=torch_dtype, enabled=autocast):
      logits = forward(pixel_values=pixels).logits
    loss = torch.nn.functional.cross_entropy(logits.float(), targets)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
      torch.cuda.synchronize()

  return run


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--small", action="store_true", help="CPU preset: S/16, 8x112x112, batch 4")
  parser.add_argument("--size", default="B")
  parser.add_argument("--frames", type=int, default=16)
  parser.add_argument("--resolution", type=int, default=224)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--num_classes", type=int, default=51)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps_per_round", type=int, default=3)
  parser.add_argument("--torch_modes", default="autocast,bf16")
  parser.add_argument("--torch_compile", action="store_true")
  args = parser.parse_args()
  if args.small:
    args.size, args.frames, args.resolution, args.batch = "S", 8, 112, 4

  import torch  # pylint: disable=g-import-not-at-top
  device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
  vit_config = ml_collections.ConfigDict(dict(
      size=args.size, tubelet=2, patch=16, num_classes=args.num_classes, layer_norm_eps=1e-12,
      dtype=args.dtype, attention="auto"))
  rng = np.random.default_rng(0)
  clips = rng.integers(0, 256, (args.batch, args.frames, args.resolution, args.resolution, 3),
                       dtype=np.uint8)
  labels = rng.integers(0, args.num_classes, (args.batch,), dtype=np.int32)
  gflops = 3 * vit_lib.flops_per_clip(vit_config, frames=args.frames, resolution=args.resolution) / 1e9
  print(f"ViT-{args.size}/16 on {args.frames}x{args.resolution}x{args.resolution}, batch "
        f"{args.batch}, {args.dtype}; {gflops:.0f} GFLOP per clip per train step (3x forward)")
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}); torch "
        f"{torch.__version__} on {device}, {torch.get_num_threads()} threads; "
        f"{os.cpu_count()} CPUs")

  rows = {"ours (jax)": our_step(vit_config, clips, labels)}
  modes = [m for m in args.torch_modes.split(",") if m] + (["compile"] if args.torch_compile else [])
  for mode in modes:
    name = "torch float32" if mode == "autocast" and args.dtype == "float32" else f"torch {mode}"
    rows[name] = torch_step(vit_config, clips, labels, mode=mode, dtype=args.dtype,
                                       device=device)
  times = {name: [] for name in rows}
  for name, run in rows.items():
    for _ in range(args.warmup):
      run()
  for _ in range(args.rounds):
    for name, run in rows.items():
      for _ in range(args.steps_per_round):
        start = time.perf_counter()
        run()
        times[name].append(time.perf_counter() - start)
  ours = args.batch / float(np.median(times["ours (jax)"]))
  for name, samples in times.items():
    clips_per_second = args.batch / float(np.median(samples))
    ratio = "" if name == "ours (jax)" else f"; ours / this = {ours / clips_per_second:.2f}x"
    print(f"{name:>16}: {clips_per_second:8.2f} clips/s (median of {len(samples)} steps, "
          f"{1e3 * np.median(samples):.0f} ms/step, {gflops * clips_per_second:.0f} GFLOP/s){ratio}")


if __name__ == "__main__":
  main()
