r"""Times the embedded default main job and prints each stage's wall time and accuracy.

  python benchmarks/main_job.py --workdir=/tmp/mainjob            # runs train.py, then summarises
  python benchmarks/main_job.py --workdir=/tmp/mainjob --summarise_only

Why a script: the 10-minute CPU budget of `python train.py --config=configs/synthetic.py` (issue 5,
item 6) is a property of the config's stage sizes; this measures it the same way every time. The
dataset is built first (and timed separately), since a built dataset is reused across runs.
Per stage, wall time is the span of its metrics.jsonl records (the first record is written after
the first logged steps, so compilation before it is counted in the total, not in the stage);
accuracy is that of the stage's last record carrying one.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def build_dataset(config_arg: str) -> float:
  """Builds the config's dataset if it is not built; returns the seconds it took."""
  start = time.time()
  subprocess.run([sys.executable, "-c", (
      "import sys; sys.path.insert(0, '.');"
      "from configs import synthetic as c; from stae_jax.data import synthetic as s;"
      f"s.make_builder(c.get_config({config_arg!r}).data, 'data/tfds').download_and_prepare()")],
      cwd=REPO_ROOT, check=True)
  return time.time() - start


def summarise(workdir: pathlib.Path) -> list[dict]:
  """One row per metrics.jsonl under workdir: where, stage, last step, wall span, accuracies."""
  rows = []
  for path in sorted(workdir.rglob("metrics.jsonl")):
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
      continue
    accuracies = {}
    for record in records:
      for key, value in record.items():
        if "acc" in key and isinstance(value, (int, float)):
          accuracies[key] = value
    rows.append(dict(
        where=str(path.parent.relative_to(workdir)), stage=records[-1].get("stage"),
        steps=max(r["step"] for r in records), first_time=records[0]["time"],
        wall_s=round(records[-1]["time"] - records[0]["time"], 1), accuracies=accuracies))
  return sorted(rows, key=lambda row: row["first_time"])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--config", default="configs/synthetic.py")
  parser.add_argument("--summarise_only", action="store_true")
  args = parser.parse_args()
  workdir = pathlib.Path(args.workdir)
  if not args.summarise_only:
    config_arg = args.config.partition(":")[2] or None
    print(f"dataset build (or found built): {build_dataset(config_arg):.1f} s", flush=True)
    start = time.time()
    subprocess.run([sys.executable, "train.py", f"--config={args.config}", f"--workdir={workdir}"],
                   cwd=REPO_ROOT, check=True)
    print(f"train.py total wall: {time.time() - start:.1f} s", flush=True)
  for row in summarise(workdir):
    accuracies = ", ".join(f"{k}={v:.4f}" for k, v in sorted(row["accuracies"].items()))
    print(f"{row['where']:<32} steps {row['steps']:>5}  wall {row['wall_s']:>7.1f} s  {accuracies}")


if __name__ == "__main__":
  main()
