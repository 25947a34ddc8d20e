r"""The paper-size path (configs/hmdb51.py as it is: ViT-B/16 on 16x224x224, STAE at its HMDB51
operating points, the 3D-2D decoder, DeepISC) run end to end on a CPU, with its memory measured.

  python benchmarks/paper_size.py --workdir=/tmp/paper_size                 # everything below
  python benchmarks/paper_size.py --workdir=/tmp/paper_size --parts=memory  # one part
  python benchmarks/paper_size.py --workdir=/tmp/paper_size --parts=memory --remat=False

Parts (each runs in child processes, one at a time, whose resident memory is watched: a child
that passes --rss_limit_gb, or leaves the machine less than --min_available_gb, is killed and
reported as such):

- `train`: `train.py --config=configs/hmdb51.py` on HMDB51 built from the real clips of
  ../shared/data/real/hmdb51 (allow_incomplete: 2 of 6766 clips; split 1 has one train and one
  test clip), every stage for 2 steps at batch 2, one process per stage (the shared classifier;
  STAE compressor, joint; DeepISC compressor, joint), so each stage's peak host memory is its own
  process's. Per stage: wall, peak RSS, first step (compile included: the difference to the second
  is the compile time) and second step, from the stage's metrics.jsonl.
- `evaluate`: `evaluate.py` on that workdir (real bitstreams of both systems, H.264, raw, the
  reference), its wall and peak RSS. With `--validation_clips=0`: the one stored training clip
  leaves no validation split to carve (data/pipeline.py VALIDATION_RULE), so envelopes and policies
  are chosen on the test clip and no baseline is tuned (the report says so).
- `memory`: per stage and per-device batch 1, 2 and 4, the trainer's own train step
  (`trainer.Steps.lower_train`) lowered and compiled ahead of time: compile seconds and XLA's
  `memory_analysis()` (arguments: parameters, optimizer state and batch; temporaries: activations
  kept for the backward pass and scratch), then 2 steps at batch 1 and 2 (step time, peak RSS of
  that process). A linear fit of temporaries over the batch sizes separates the per-clip part
  from the fixed part, which is what says the per-device batch that fits a memory size. For the
  STAE compressor, the same analysis of its pieces (the frozen ViT-B on the rebuilt clip, STAE's
  dense training forward, the decoder) says where the memory goes.

`--remat` (default True, as configs/hmdb51.py has it) sets `config.model.vit.remat` and
`config.systems.deepisc.model.deepisc.remat` (each transformer block's activations are recomputed
in the backward pass instead of kept); `--remat=False` is the config as it was before that option,
for the before/after figures. `--cpu_scheduler=memory` (default) runs the children
with XLA:CPU's concurrency-optimised scheduler off
(`XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false`): that scheduler, XLA:CPU's
default, orders independent work for parallelism and keeps every block's attention buffers alive at
once, so rematerialisation saves nothing under it (measured: ViT-B, 4 blocks, batch 1: 2.08 GB of
temporaries with or without remat; 1.21 and 0.75 GB with it off). `--cpu_scheduler=default` keeps
XLA's default. Memory figures are XLA:CPU's buffer assignment; an accelerator's differs in layout,
fusion and scheduling (its schedulers are memory-aware; bf16 dots are not upcast there), so they
estimate the per-clip cost, they do not guarantee it.
"""


from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import threading
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

GB = 1e9
#: XLA_FLAGS per --cpu_scheduler choice.
SCHEDULER_FLAGS = {"default": "", "memory": "--xla_cpu_enable_concurrency_optimized_scheduler=false"}
#: The stages of the paper-size run, in the trainer's order: (stage, system tag or None).
STAGES = (("classifier", None), ("compressor", "stae"), ("joint", "stae"),
          ("compressor", "deepisc"), ("joint", "deepisc"))


# ------------------------------------------------------------------------------------------------
# The config: configs/hmdb51.py as it is, on the real sample, with run-length overrides only
# ------------------------------------------------------------------------------------------------

def overrides(batch: int, steps: int, remat: bool, real_data: pathlib.Path) -> dict:
  """Dotted config keys -> values: where the data is, the batch, the run length; nothing else."""
  o = {
      "data.manual_dir": str(real_data / "hmdb51"),
      "data.builder_kwargs.allow_incomplete": True,
      "data.batch_size": batch, "data.eval_batch_size": batch,
      "data.workers": 0, "data.prefetch": 1,
      "train.log_every": 1, "train.eval_every": 0, "train.eval_batches": 1,
      "train.checkpoint_every": steps, "train.progress": False, "train.async_checkpoints": False,
  }
  for stage in ("classifier", "compressor", "joint"):
    o[f"stages.{stage}.steps"] = steps
  o["model.vit.remat"] = o["systems.deepisc.model.deepisc.remat"] = bool(remat)
  return o


def paper_config(batch: int, steps: int, remat: bool, real_data: pathlib.Path):
  from configs import hmdb51  # pylint: disable=g-import-not-at-top
  config = hmdb51.get_config(None)
  for key, value in overrides(batch, steps, remat, real_data).items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    with node.unlocked():
      node[leaf] = value
  return config


def flag_list(batch: int, steps: int, remat: bool, real_data: pathlib.Path,
              system: str | None = None) -> list[str]:
  """`overrides` as train.py/evaluate.py flags; with `system` (a `:system=` switch, which leaves
  only that system in config.systems) the other systems' keys are left out."""
  keep = lambda key: system is None or not key.startswith("systems.") or key.startswith(
      f"systems.{system}.")
  return [f"--config.{k}={v}" for k, v in overrides(batch, steps, remat, real_data).items()
          if keep(k)]


# ------------------------------------------------------------------------------------------------
# Children, one at a time, with their memory watched
# ------------------------------------------------------------------------------------------------

def _rss_bytes(pid: int) -> int:
  try:
    with open(f"/proc/{pid}/status") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) * 1024
  except FileNotFoundError:
    pass
  return 0


def _available_bytes() -> int:
  with open("/proc/meminfo") as f:
    for line in f:
      if line.startswith("MemAvailable:"):
        return int(line.split()[1]) * 1024
  return 0


def run_child(command: list[str], *, rss_limit_gb: float, min_available_gb: float,
              log: pathlib.Path, scheduler: str) -> dict:
  """Runs `command` (cwd: the repository), sampling its RSS every 0.2 s. Returns rc, wall, peak
  RSS, whether it was killed for memory, and its stdout's last JSON line (if any)."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join(f for f in (env.get("XLA_FLAGS", ""), SCHEDULER_FLAGS[scheduler]) if f)
  start = time.time()
  with open(log, "w") as out:
    child = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=out, text=True,
                             env=env)
    peak, killed = 0, None
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
    reader.start()
    while child.poll() is None:
      rss = _rss_bytes(child.pid)
      peak = max(peak, rss)
      if rss > rss_limit_gb * GB:
        killed = f"RSS {rss / GB:.1f} GB passed --rss_limit_gb={rss_limit_gb}"
      elif _available_bytes() < min_available_gb * GB:
        killed = (f"the machine had less than --min_available_gb={min_available_gb} GB available "
                  f"(this child: {rss / GB:.1f} GB)")
      if killed:
        child.kill()
        break
      time.sleep(0.2)
    child.wait()
    reader.join(timeout=5)
  result = None
  for line in reversed(lines):
    if line.startswith("{"):
      result = json.loads(line)
      break
  out_text = "".join(lines)
  with open(log, "a") as f:
    f.write("\n--- stdout ---\n" + out_text)
  return dict(rc=child.returncode, wall_s=round(time.time() - start, 1),
              peak_rss_gb=round(peak / GB, 2), killed=killed, result=result)


# ------------------------------------------------------------------------------------------------
# Part `train` / `evaluate`: the real entry scripts
# ------------------------------------------------------------------------------------------------

def stage_times(directory: pathlib.Path) -> dict:
  """First step (compile included) and second step, from a stage's metrics.jsonl records."""
  path = directory / "metrics.jsonl"
  if not path.exists():
    return {}
  records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  times = {r["step"]: r["time"] for r in records if "loss" in r}
  start = next((r["time"] for r in records if r.get("event") == "start"), None)
  if start is None or 1 not in times or 2 not in times:
    return {}
  first, second = times[1] - start, times[2] - times[1]
  return dict(first_step_s=round(first, 1), second_step_s=round(second, 1),
              compile_s=round(first - second, 1))


def part_train(args, workdir: pathlib.Path) -> list[dict]:
  rows = []
  for stage, tag in STAGES:
    flags = flag_list(2, 2, args.remat, args.real_data, tag)
    config_arg = "configs/hmdb51.py" + (f":system={tag}" if tag else "")
    # One stage per run: a stage whose init_from stage is not in stage_order starts from that
    # stage's folder in the workdir (the previous run's).
    command = [sys.executable, "train.py", f"--config={config_arg}", f"--workdir={workdir}",
               f"--config.train.stage_order={stage}", *flags]
    print(f"train: {stage} ({tag or 'shared'}) ...", flush=True)
    out = run_child(command, rss_limit_gb=args.rss_limit_gb,
                    min_available_gb=args.min_available_gb, scheduler=args.cpu_scheduler,
                    log=workdir.parent / f"{workdir.name}_train_{stage}_{tag or 'shared'}.log")
    directory = workdir / ("classifier" if tag is None else f"systems/{tag}/{stage}")
    row = dict(part="train", stage=stage, system=tag or "shared", rc=out["rc"],
               wall_s=out["wall_s"], peak_rss_gb=out["peak_rss_gb"], killed=out["killed"],
               **stage_times(directory))
    print(json.dumps(row), flush=True)
    rows.append(row)
    if out["rc"] != 0:
      break
  return rows


def part_evaluate(args, workdir: pathlib.Path) -> list[dict]:
  flags = flag_list(2, 2, args.remat, args.real_data)
  command = [sys.executable, "evaluate.py", "--config=configs/hmdb51.py", f"--workdir={workdir}",
             "--progress=False", "--latency_clips=1", "--num_pictures=1", "--validation_clips=0",
             *flags]
  print("evaluate ...", flush=True)
  out = run_child(command, rss_limit_gb=args.rss_limit_gb, min_available_gb=args.min_available_gb,
                  scheduler=args.cpu_scheduler, log=workdir.parent / f"{workdir.name}_evaluate.log")
  row = dict(part="evaluate", rc=out["rc"], wall_s=out["wall_s"], peak_rss_gb=out["peak_rss_gb"],
             killed=out["killed"])
  results = workdir / "results.json"
  if out["rc"] == 0 and results.exists():
    data = json.loads(results.read_text())
    row["num_clips"] = data["num_clips"]
    row["points"] = {name: [(p["name"], round(p["bits_per_clip"]), p["top1"])
                            for p in method["points"]]
                     for name, method in data["methods"].items()}
  print(json.dumps(row), flush=True)
  return [row]


# ------------------------------------------------------------------------------------------------
# Part `memory`: the trainer's step compiled ahead of time, per stage and batch
# ------------------------------------------------------------------------------------------------

def _stats(compiled) -> dict:
  m = compiled.memory_analysis()
  return dict(argument_gb=round(m.argument_size_in_bytes / GB, 3),
              output_gb=round(m.output_size_in_bytes / GB, 3),
              alias_gb=round(m.alias_size_in_bytes / GB, 3),
              temp_gb=round(m.temp_size_in_bytes / GB, 3))


def child_stage(args) -> dict:
  """One stage at one batch: lower, compile (timed), memory_analysis, then `--run_steps` steps."""
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  absl_flags.FLAGS.mark_as_parsed()
  import functools  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from stae_jax import systems  # pylint: disable=g-import-not-at-top
  from stae_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from stae_jax.models import vit as vit_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.training import optim  # pylint: disable=g-import-not-at-top
  from stae_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.training import trainer  # pylint: disable=g-import-not-at-top
  from stae_jax.systems import loading  # pylint: disable=g-import-not-at-top

  config = paper_config(args.batch, 2, args.remat, args.real_data)
  tag = None if args.system == "shared" else args.system
  stage = trainer.stage_settings(config, args.stage, tag)
  entry = None if tag is None else trainer.system_entry(config, tag)
  method = None if entry is None else systems.get(entry.method)
  if entry is None:
    build = lambda rngs: nnx.Dict(vit=vit_lib.vit_from_config(config, rngs=rngs))
  else:
    build = functools.partial(loading.build_models, config, entry)
  mesh = mesh_lib.make_mesh()
  shapes = state_lib.model_shapes(build, 0)
  tx, labels = optim.make_optimizer(stage, shapes[1])
  graphdef, state, shardings = state_lib.create_state(build, 0, tx, mesh, (), shapes)
  steps = trainer.Steps(graphdef=graphdef, tx=tx, labels=labels, stage=stage, method=method,
                        state_shardings=shardings, mesh=mesh, key=jax.random.PRNGKey(0))
  # The real clips, through the real loader (split 1: one train clip, repeated to fill a batch).
  loader = iter(pipeline.make_loader(config.data, "train", seed=0, train=True))
  batch = mesh_lib.global_batch(next(loader), mesh)
  op = None if method is None else method.training_points(entry)[0]
  t0 = time.perf_counter()
  lowered = steps.lower_train(state, batch, op)
  lower_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  row = dict(part="memory", stage=args.stage, system=args.system, batch=args.batch,
             remat=args.remat, lower_s=round(lower_s, 1), compile_s=round(compile_s, 1),
             **_stats(compiled))
  times = []
  for _ in range(args.run_steps):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch, None)  # None: no traced point (training draws)
    jax.block_until_ready(metrics)
    times.append(round(time.perf_counter() - t0, 1))
    batch = mesh_lib.global_batch(next(loader), mesh)
  if times:
    row["step_s"] = times
    row["loss"] = round(float(metrics["loss"]), 4)
    if not np.isfinite(row["loss"]):
      raise FloatingPointError(f"non-finite loss {row['loss']} after {len(times)} steps")
  if args.pieces and tag == "stae" and args.stage == "compressor":
    row["pieces"] = stae_pieces(config, entry, graphdef, state, batch, op)
  return row


def stae_pieces(config, entry, graphdef, state, batch, op) -> dict:
  """memory_analysis of the STAE compressor step's parts, each with its own backward pass: the
  frozen ViT on a rebuilt clip (gradient to the clip and, as in the trainer's step, which takes the
  gradient of every parameter and lets the optimizer freeze some, to the parameters), STAE's dense
  training forward (gradient to its parameters, loss on the blocks it synthesises) and the decoder
  (gradient to its parameters). Each part merges the models inside its trace from traced
  parameters, as the trainer's step does (nnx.remat cannot update parameters closed over from
  outside the gradient's trace)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  params, rest = state["params"], state["rest"]
  video = batch["video"]
  b, t, h, w, _ = video.shape
  models = lambda p: nnx.merge(graphdef, p, rest)

  def vit_part(p, clip):
    return models(p)["vit"](clip).sum()

  def stae_part(p, clip):
    out = models(p)["stae"](clip, frame_keep=op["frame_keep"], block_keep=op["block_keep"],
                            training=True, rng=jax.random.PRNGKey(0))
    return (out["synthesised"] - clip.astype(jnp.float32)).mean() + out["rate_latents"].mean()

  def decoder_part(p, received, mask):
    return models(p)["decoder"](received, mask).mean()

  clip = jnp.zeros((b, t, h, w, 3), jnp.float32)
  mask = jnp.ones((b, t, h, w, 1), jnp.float32)
  pieces = {
      "vit_on_rebuilt_clip": jax.jit(jax.grad(vit_part, argnums=(0, 1))).lower(params,
                                                                             clip).compile(),
      "stae_dense_forward": jax.jit(jax.grad(stae_part)).lower(params, video).compile(),
      "decoder": jax.jit(jax.grad(decoder_part)).lower(params, clip, mask).compile(),
  }
  return {name: _stats(c) for name, c in pieces.items()}


def part_memory(args, workdir: pathlib.Path) -> list[dict]:
  rows = []
  for stage, tag in STAGES:
    if args.stages and f"{stage}:{tag or 'shared'}" not in args.stages:
      continue
    for batch in args.batches:
      run_steps = 2 if batch in args.run_batches else 0
      command = [sys.executable, __file__, "--child=stage", f"--stage={stage}",
                 f"--system={tag or 'shared'}", f"--batch={batch}", f"--run_steps={run_steps}",
                 f"--remat={args.remat}", f"--real_data={args.real_data}",
                 f"--pieces={batch == args.batches[0]}"]
      print(f"memory: {stage} ({tag or 'shared'}) batch {batch} "
            f"{'compile + 2 steps' if run_steps else 'compile only'} ...", flush=True)
      out = run_child(command, rss_limit_gb=args.rss_limit_gb,
                      min_available_gb=args.min_available_gb, scheduler=args.cpu_scheduler,
                      log=workdir.parent / f"{workdir.name}_memory_{stage}_{tag or 'shared'}_b{batch}"
                      f"{'_remat' if args.remat else ''}_{args.cpu_scheduler}.log")
      row = out["result"] or dict(part="memory", stage=stage, system=tag or "shared", batch=batch,
                                  remat=args.remat)
      row.update(rc=out["rc"], wall_s=out["wall_s"], peak_rss_gb=out["peak_rss_gb"],
                 killed=out["killed"], cpu_scheduler=args.cpu_scheduler)
      print(json.dumps(row), flush=True)
      rows.append(row)
  return rows


def fit(rows: list[dict]) -> list[dict]:
  """Per stage: temporaries = fixed + per_clip * batch (least squares over the batches), and the
  largest per-device batch whose arguments + outputs + temporaries fit 80 GB and 16 GB."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  out = []
  for stage, tag in STAGES:
    mine = [r for r in rows if r.get("part") == "memory" and r["stage"] == stage
            and r["system"] == (tag or "shared") and "temp_gb" in r]
    if len(mine) < 2:
      continue
    batch = np.array([r["batch"] for r in mine], float)
    total = np.array([r["argument_gb"] + r["output_gb"] - r["alias_gb"] + r["temp_gb"]
                      for r in mine])
    per_clip, fixed = np.polyfit(batch, total, 1)
    fits = {f"fits_{cap}gb": int(max((cap - fixed) // per_clip, 0)) if per_clip > 0 else None
            for cap in (80, 16)}
    out.append(dict(stage=stage, system=tag or "shared", remat=mine[0]["remat"],
                    cpu_scheduler=mine[0].get("cpu_scheduler"),
                    fixed_gb=round(float(fixed), 2), per_clip_gb=round(float(per_clip), 3),
                    **fits))
  return out


def tables(rows: list[dict]) -> str:
  """The rows as markdown tables (what BENCHMARKS.md copies): train and evaluate runs, the AOT
  memory per stage and batch, and the fits."""
  cell = lambda v: "-" if v is None else (", ".join(map(str, v)) if isinstance(v, list) else str(v))
  layouts = {
      "train": ("stage", "system", "rc", "wall_s", "peak_rss_gb", "first_step_s", "second_step_s",
                "compile_s", "killed"),
      "evaluate": ("rc", "wall_s", "peak_rss_gb", "num_clips", "killed"),
      "memory": ("stage", "system", "batch", "remat", "compile_s", "argument_gb", "output_gb",
                 "alias_gb", "temp_gb", "step_s", "peak_rss_gb", "rc", "killed"),
      "fit": ("stage", "system", "remat", "fixed_gb", "per_clip_gb", "fits_80gb", "fits_16gb"),
  }
  out = []
  for part, columns in layouts.items():
    mine = [r for r in rows if r.get("part") == part]
    if not mine:
      continue
    out += [f"{part}:", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in mine]
    out.append("")
  for r in rows:
    if r.get("part") == "evaluate" and r.get("points"):
      out += ["evaluate points (name, bits per clip, top-1 on the test clip):", ""]
      out += [f"- {name}: {points}" for name, points in r["points"].items()]
      out.append("")
    if r.get("pieces"):
      out += [f"pieces of {r['stage']} ({r['system']}) at batch {r['batch']}: "
              + "; ".join(f"{name} {stats}" for name, stats in r["pieces"].items()), ""]
  return "\n".join(out)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default="/tmp/paper_size")
  parser.add_argument("--parts", default="train,evaluate,memory")
  parser.add_argument("--remat", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
  parser.add_argument("--cpu_scheduler", default="memory", choices=sorted(SCHEDULER_FLAGS))
  parser.add_argument("--batches", default="1,2,4")
  parser.add_argument("--stages", default="", help="memory part only for these, e.g. "
                      "compressor:stae,classifier:shared (default: every stage)")
  parser.add_argument("--run_batches", default="1,2", help="batches also run for 2 steps")
  parser.add_argument("--rss_limit_gb", type=float, default=15.0)
  parser.add_argument("--min_available_gb", type=float, default=2.0)
  parser.add_argument("--real_data", default=None, help="default: stae_jax.data.real_data_dir()")
  parser.add_argument("--out", default=None, help="JSON file for every row (default: beside workdir)")
  # Child mode (the driver runs these; not for direct use).
  parser.add_argument("--child", default=None, choices=[None, "stage"])
  parser.add_argument("--stage", default="classifier")
  parser.add_argument("--system", default="shared")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--run_steps", type=int, default=2)
  parser.add_argument("--pieces", type=lambda s: s.lower() in ("1", "true", "yes"), default=False)
  args = parser.parse_args()
  from stae_jax.data import real_data_dir  # pylint: disable=g-import-not-at-top
  args.real_data = pathlib.Path(args.real_data) if args.real_data else real_data_dir()
  if args.child == "stage":
    print(json.dumps(child_stage(args)), flush=True)
    return
  if not (args.real_data / "hmdb51").is_dir():
    raise SystemExit(f"the real HMDB51 sample is not at {args.real_data / 'hmdb51'}; pass "
                     "--real_data=/path/to/shared/data/real")
  args.batches = [int(b) for b in args.batches.split(",")]
  args.stages = [s for s in args.stages.split(",") if s]
  args.run_batches = [int(b) for b in args.run_batches.split(",")]
  workdir = pathlib.Path(args.workdir).absolute()
  workdir.parent.mkdir(parents=True, exist_ok=True)
  parts = args.parts.split(",")
  print(f"paper-size path: configs/hmdb51.py, remat={args.remat}, XLA:CPU scheduler "
        f"{args.cpu_scheduler}; load {os.getloadavg()}, "
        f"{_available_bytes() / GB:.1f} GB available", flush=True)
  rows = []
  if "train" in parts:
    rows += part_train(args, workdir)
  if "evaluate" in parts:
    rows += part_evaluate(args, workdir)
  if "memory" in parts:
    rows += part_memory(args, workdir)
    for row in fit(rows):
      row["part"] = "fit"
      print(json.dumps(row), flush=True)
      rows.append(row)
  out = pathlib.Path(args.out) if args.out else workdir.parent / (
      f"{workdir.name}_{'-'.join(parts)}{'_remat' if args.remat else ''}_{args.cpu_scheduler}.json")
  out.write_text(json.dumps(dict(load=os.getloadavg(), rows=rows), indent=1))
  print(tables(rows), flush=True)
  print(f"wrote {out}; load average {os.getloadavg()}", flush=True)


if __name__ == "__main__":
  main()
