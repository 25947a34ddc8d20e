r"""Train-step time, clips/s and model FLOP utilisation of the compiled training steps.

  python benchmarks/train_step.py                      # synthetic config on this machine's CPU
  python benchmarks/train_step.py --vit_b               # + ViT-B/16 16x224x224 bf16 (accelerator)

FLOPs per step are XLA's own count for the compiled step (`cost_analysis`); utilisation is achieved
FLOP/s over the device's peak. On a CPU the peak is an assumption, printed with the result:
cores x GHz x 32 FLOP/cycle (two 8-wide fp32 FMA units, AVX2). Steps run on random uint8 clips
(no input pipeline), after one warm-up step that compiles; the median of --steps timed steps.
"""

import argparse
import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # pylint: disable=wrong-import-position
from flax import nnx  # pylint: disable=wrong-import-position
import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from stae_jax import systems  # pylint: disable=wrong-import-position
from stae_jax.models import vit as vit_lib  # pylint: disable=wrong-import-position
from stae_jax.training import mesh as mesh_lib  # pylint: disable=wrong-import-position
from stae_jax.training import optim  # pylint: disable=wrong-import-position
from stae_jax.training import state as state_lib  # pylint: disable=wrong-import-position
from stae_jax.training import trainer  # pylint: disable=wrong-import-position
from stae_jax.systems import loading  # pylint: disable=wrong-import-position

#: Dense peak FLOP/s by device kind (bf16 for accelerators), for the utilisation figure.
PEAKS = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
         "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5p": 459e12}


def cpu_peak(cores: int, ghz: float) -> float:
  return cores * ghz * 1e9 * 32


def build_step(config, stage_name: str, tag: str | None):
  """One stage's compiled train step as `trainer.run_stage` builds it: the shared classifier (tag
  None: the ViT alone) or a stage of system `config.systems[tag]`, on one batch of random uint8
  clips. Returns (steps: trainer.Steps, state, batch, op: the training point)."""
  stage = trainer.stage_settings(config, stage_name, tag)
  entry = None if tag is None else trainer.system_entry(config, tag)
  method = None if entry is None else systems.get(entry.method)
  mesh = mesh_lib.make_mesh()
  if entry is None:
    build = lambda rngs: nnx.Dict(vit=vit_lib.vit_from_config(config, rngs=rngs))
  else:
    build = functools.partial(loading.build_models, config, entry)
  shapes = state_lib.model_shapes(build, 0)
  tx, labels = optim.make_optimizer(stage, shapes[1])
  graphdef, state, shardings = state_lib.create_state(build, 0, tx, mesh, (), shapes)
  jitted = trainer.Steps(graphdef=graphdef, tx=tx, labels=labels, stage=stage, method=method,
                         state_shardings=shardings, mesh=mesh, key=jax.random.PRNGKey(0))
  d = config.data
  b = int(d.batch_size)
  rng = np.random.default_rng(0)
  batch = mesh_lib.global_batch(dict(
      video=rng.integers(0, 256, (b, d.frames, d.resolution, d.resolution, 3), dtype=np.uint8),
      label=rng.integers(0, int(config.model.vit.num_classes), (b,), dtype=np.int32)), mesh)
  # The training point: None for STAE and DeepISC (each clip draws its own inside the step).
  op = None if method is None else method.training_points(entry)[0]
  return jitted, state, batch, op


def bench(config, stage_name: str, tag: str | None, steps: int, peak: float, peak_note: str):
  """Times `build_step`'s step: the first call (compile), then the median of `steps` calls."""
  jitted, state, batch, op = build_step(config, stage_name, tag)
  b = int(config.data.batch_size)
  t0 = time.perf_counter()
  state, metrics = jitted.train(state, batch, op)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  compiled = jitted._train[op]  # pylint: disable=protected-access
  cost = compiled.lower(state, batch, None).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan")))
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = jitted.train(state, batch, op)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  step_s = statistics.median(times)
  name = f"{config.name}:{stage_name}" + (f"[{tag}]" if tag else "")
  print(f"{name:40s} batch {b:3d}  step {step_s * 1e3:8.1f} ms (median of {steps}; first step with "
        f"compile {compile_s:.1f} s)  {b / step_s:8.1f} clips/s  {flops / 1e9:9.2f} GFLOP/step  "
        f"{flops / step_s / 1e9:8.1f} GFLOP/s  MFU {100 * flops / step_s / peak:5.1f}% of {peak_note}",
        flush=True)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--cpu_ghz", type=float, default=2.5, help="assumed clock for the CPU peak")
  parser.add_argument("--vit_b", action="store_true", help="also ViT-B/16 16x224x224 bf16")
  parser.add_argument("--vit_b_batch", type=int, default=32)
  parser.add_argument("--skip_synthetic", action="store_true")
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()
  device = jax.devices()[0]
  print(f"device: {device.device_kind} x{jax.device_count()} ({jax.default_backend()}), jax {jax.__version__}")
  if device.platform == "cpu":
    cores = os.cpu_count()
    peak = cpu_peak(cores, args.cpu_ghz)
    note = f"assumed CPU peak {peak / 1e9:.0f} GFLOP/s ({cores} cores x {args.cpu_ghz} GHz x 32 FLOP/cycle)"
  else:
    peak = PEAKS.get(device.device_kind, 989e12)
    note = f"{device.device_kind} bf16 dense peak {peak / 1e12:.0f} TFLOP/s"
  if not args.skip_synthetic:
    from configs import synthetic  # pylint: disable=g-import-not-at-top
    from stae_jax.data import synthetic as synthetic_data  # pylint: disable=g-import-not-at-top
    config = synthetic.get_config(None)
    config.model.vit.num_classes = synthetic_data.NUM_CLASSES
    for stage, tag in (("classifier", None), ("compressor", "stae"), ("compressor", "deepisc")):
      bench(config, stage, tag, args.steps, peak, note)
  if args.vit_b:
    from configs import hmdb51  # pylint: disable=g-import-not-at-top
    config = hmdb51.get_config(None)
    config.data.batch_size = args.vit_b_batch
    bench(config, "classifier", None, args.steps, peak, note)


if __name__ == "__main__":
  main()
