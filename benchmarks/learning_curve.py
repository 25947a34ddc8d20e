r"""A learned system's learning curve: eval accuracy and rate per operating point against steps.

  python benchmarks/learning_curve.py --workdir=/tmp/mj --budgets=100,300,1000,3000
  python benchmarks/learning_curve.py --workdir=/tmp/mj --budgets=300 --eval_every=50
  python benchmarks/learning_curve.py --workdir=/tmp/mj --system=deepisc --budgets=100,300,1000

Why: a step count is chosen where the curve flattens, not where the time runs out (issue 28).
Each budget is its own run of the stage (`--stage`, default the compressor) from the same finished
classifier (`<workdir>/classifier`, e.g. from `python train.py --config=configs/synthetic.py
--workdir=<workdir> "--config.train.stage_order=('classifier',)"`), into
`<workdir>/curve/<system>_<budget>`, with the config's learning-rate schedule stretched to the
budget: a run of 300 steps is what the config would train at `steps=300`, not step 300 of a
longer run. `--eval_every` adds evaluations inside each run (a curve within one schedule, for a
quick look). Reports the trainer's evaluation (`config.train.eval_batches` batches of the test
split: the stage's own estimate, whose rate is the learned estimate, not a real stream), per point:
accuracy, bits per clip, PSNR; and each run's wall time. The config's other settings are as
committed; `--override` adds train.py flags (e.g.
`--override=--config.systems.stae.model.stae.latent_channels=8`).
"""

import argparse
import json
import pathlib
import re
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_budget(args, budget: int) -> tuple[pathlib.Path, float]:
  """Trains the stage for `budget` steps into its own workdir (resumes if it was cut); wall s."""
  base = pathlib.Path(args.workdir).absolute()
  if not (base / "classifier").is_dir():
    raise SystemExit(f"{base}/classifier not found: train the classifier first (see --help)")
  workdir = base / "curve" / f"{args.system}_{budget}"
  workdir.mkdir(parents=True, exist_ok=True)
  link = workdir / "classifier"
  if not link.exists():
    link.symlink_to(base / "classifier", target_is_directory=True)
  command = [sys.executable, "train.py", f"--config={args.config}:system={args.system}",
             f"--workdir={workdir}", f"--config.train.stage_order=('{args.stage}',)",
             f"--config.stages.{args.stage}.steps={budget}",
             f"--config.train.eval_every={args.eval_every}", *args.override]
  start = time.time()
  subprocess.run(command, cwd=REPO_ROOT, check=True)
  return workdir, time.time() - start


def clip_pixels(workdir: pathlib.Path, system: str, stage: str) -> int:
  """T*H*W of the clips the stage trained on (bits per pixel are per these), from its record."""
  data = json.loads((workdir / "systems" / system / stage / "config.json").read_text())["data"]
  return int(data["frames"]) * int(data["resolution"]) ** 2


def evaluations(workdir: pathlib.Path, system: str, stage: str) -> list[dict]:
  """The stage's evaluation records (step, {point: {metric: value}})."""
  path = workdir / "systems" / system / stage / "metrics.jsonl"
  rows = []
  for line in path.read_text().splitlines():
    record = json.loads(line)
    points = {}
    for key, value in record.items():
      match = re.fullmatch(r"eval(?:\[(.+)\])?_(accuracy|bpp|psnr)", key)
      if match:
        points.setdefault(match.group(1) or "only", {})[match.group(2)] = value
    if points:
      rows.append(dict(step=record["step"], points=points))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--config", default="configs/synthetic.py")
  parser.add_argument("--system", default="stae")
  parser.add_argument("--stage", default="compressor")
  parser.add_argument("--budgets", default="100,300,1000,3000")
  parser.add_argument("--eval_every", type=int, default=0)
  parser.add_argument("--override", action="append", default=[])
  args = parser.parse_args()
  config_arg = args.config.partition(":")[2]
  if config_arg:
    raise SystemExit("pass the config file alone (--config=configs/synthetic.py); the system is "
                     "--system")
  print(f"| budget | step | point | accuracy | bits per clip | PSNR dB | run wall s |")
  print(f"|---|---|---|---|---|---|---|")
  for budget in (int(b) for b in args.budgets.split(",")):
    workdir, wall = run_budget(args, budget)
    pixels = clip_pixels(workdir, args.system, args.stage)
    for row in evaluations(workdir, args.system, args.stage):
      for point, m in sorted(row["points"].items()):
        bits = "-" if "bpp" not in m else f"{m['bpp'] * pixels:,.0f}"
        print(f"| {budget} | {row['step']} | {point} | {m.get('accuracy', float('nan')):.4f} | "
              f"{bits} | {m.get('psnr', float('nan')):.2f} | {wall:.0f} |", flush=True)


if __name__ == "__main__":
  main()
