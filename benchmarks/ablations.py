r"""STAE's frame-versus-spatial attention ablations: train, evaluate and print the paired table.

  python benchmarks/ablations.py --workdir=<main job's workdir>
  python benchmarks/ablations.py --workdir=<...> --table_only     # from its results.json
  python benchmarks/ablations.py --workdir=<...> --table_only --split=validation \
      --learned=<tag> --tags='random=<tag>,evenly spaced=<tag>'     # any trained systems
  python benchmarks/ablations.py --workdir=<...> --variants=stae_random-selection,stae_uniform-selection

On a workdir holding the main job's classifier (and STAE, which is trained if missing), trains
each variant below with train.py into `<workdir>/systems/<tag>` (train.py skips a finished stage
and resumes a cut one), all on the same frozen classifier, then runs evaluate.py on the workdir (every
trained system, the same test clips) unless its results.json already has them all, and prints,
per STAE operating point, each variant's top-1 and bits and learned minus the variant, paired over
the same test clips with 95% bootstrap intervals (`benchmarks/paired_points.py`'s resamples):

  random                  `:selection=random`: any k frames at random (trained), every block
  evenly spaced           `:selection=uniform`: evenly spaced frames (first and last)
  no frame attention      `:frame_attention=False,spatial_attention=True`: every frame, spatial
                          attention only, at the default's blocks per clip
                          (`configs.common.matched_keep_ratios`)
  with spatial attention  `:spatial_attention=True`: both attentions (twice the frames, spatial
                          attention keeping half their blocks), at the default's blocks per clip
  learned per clip        `:frame_rule=segments`: frame attention choosing each clip's frames (the
                          best of each of k stretches), instead of the frames chosen once on
                          validation clips

The default (configs/synthetic.py) is frame attention only with chosen frames, so "no spatial
attention" is the default itself and "with spatial attention" the variant that adds it. The tags
are those configs/synthetic.py gives (`configs.common.system_tag`: what differs from its default).

Where a variant's point of the same name sends bits more than `--bits_tolerance` away (the
attention switched off keeps every frame or block there), learned is compared with the variant's
upper envelope read at learned's bits instead (linear in top-1 against log bits; "env" in the
table), or "outside" where learned's bits are outside the variant's range. Nothing here is typed
in: every figure is read from the results.json that evaluate.py wrote.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import paired_points  # pylint: disable=wrong-import-position
from stae_jax.evaluation import curves  # pylint: disable=wrong-import-position

#: (name in the table, config switch, system tag train.py gives it).
VARIANTS = (
    ("random", "selection=random", "stae_random-selection"),
    ("evenly spaced", "selection=uniform", "stae_uniform-selection"),
    ("no frame attention", "frame_attention=False,spatial_attention=True",
     "stae_no-frame-attention_spatial-attention"),
    ("with spatial attention", "spatial_attention=True", "stae_spatial-attention"),
    ("learned per clip", "frame_rule=segments", "stae_segment-frames"),
)


def train(args, workdir: pathlib.Path, switch: str, tag: str) -> None:
  """train.py for one system; it skips finished stages and resumes a cut one."""
  print(f"{tag}: python train.py --config={args.config}:{switch} --workdir={workdir}", flush=True)
  start = time.time()
  subprocess.run([sys.executable, "train.py", f"--config={args.config}:{switch}",
                  f"--workdir={workdir}"], cwd=REPO_ROOT, check=True)
  print(f"{tag}: {time.time() - start:.0f} s", flush=True)


def evaluate(args, workdir: pathlib.Path, tags: list[str]) -> dict:
  path = workdir / "results.json"
  if path.is_file():
    results = json.loads(path.read_text())
    if all(tag in results["methods"] for tag in tags):
      print(f"{path}: has every variant; not re-evaluated", flush=True)
      return results
  print(f"evaluating (python evaluate.py --config={args.config} --workdir={workdir})", flush=True)
  start = time.time()
  subprocess.run([sys.executable, "evaluate.py", f"--config={args.config}",
                  f"--workdir={workdir}"], cwd=REPO_ROOT, check=True)
  print(f"evaluated in {time.time() - start:.0f} s", flush=True)
  return json.loads(path.read_text())


def table(results: dict, tolerance: float, resamples: int, seed: int, *, learned: str = "stae",
          variants=None, split: str = "test") -> str:
  """The paired table of `learned` (a tag) against `variants` ((name, tag) pairs; default
  VARIANTS), on the test split or, from the same results.json, the validation split."""
  pairs = variants if variants is not None else [(name, tag) for name, _, tag in VARIANTS]
  tags = [learned] + [tag for _, tag in pairs if tag in results["methods"]]
  methods = {tag: dict(results["methods"][tag], points=[
      paired_points.on_split(p, split) for p in results["methods"][tag]["points"]]) for tag in tags}
  clips = len(methods[learned]["points"][0]["per_clip"]["correct"])
  index = curves._resample_index(clips, resamples, seed)  # pylint: disable=protected-access
  present = [(name, tag) for name, tag in pairs if tag in methods]
  by_name = {tag: {p["name"]: p for p in methods[tag]["points"]} for _, tag in present}
  lines = [f"{clips} {split} clips, frozen reference ViT, {resamples} paired "
           f"resamples; top-1 % (bits per clip); learned minus the variant [95%] (env: against "
           f"the variant's envelope at learned's bits)", ""]
  lines.append("| STAE point | learned |" + "".join(
      f" {name} | learned minus {name} |" for name, _ in present))
  lines.append("|---|---|" + "---|---|" * len(present))
  for point in methods[learned]["points"]:
    mine = paired_points.resampled_top1(point, index)
    bits = point["bits_per_clip"]
    row = f"| {point['name']} | {100 * point['top1']:.1f} ({bits:,.0f}) |"
    for _, tag in present:
      other = by_name[tag].get(point["name"])
      if other is not None and abs(other["bits_per_clip"] / bits - 1) <= tolerance:
        diff = point["top1"] - other["top1"]
        row += (f" {100 * other['top1']:.1f} ({other['bits_per_clip']:,.0f}) | {100 * diff:+.1f} "
                f"{paired_points.interval(mine - paired_points.resampled_top1(other, index))} |")
        continue
      env = paired_points.envelope_at(methods[tag]["points"], bits, index)
      at = curves.accuracy_at_bits(methods[tag]["points"], bits)
      if env is None or at is None:
        row += " outside its bits | - |"
      else:
        row += (f" env {100 * at:.1f} | {100 * (point['top1'] - at):+.1f} "
                f"{paired_points.interval(mine - env)} |")
    lines.append(row)
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--config", default="configs/synthetic.py")
  parser.add_argument("--table_only", action="store_true",
                      help="print the table from the workdir's results.json; train nothing")
  parser.add_argument("--bits_tolerance", type=float, default=0.05,
                      help="largest relative bit difference compared point to point")
  parser.add_argument("--resamples", type=int, default=curves.RESAMPLES)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--variants", default="",
                      help="comma-separated tags of the variants to train and evaluate (default: all)")
  parser.add_argument("--learned", default=None,
                      help="--table_only: tag of the system the table compares (default stae)")
  parser.add_argument("--tags", default="",
                      help="--table_only: the variants' tags as name=tag pairs, comma-separated "
                      "(e.g. 'random=stae_no-spatial-attention_random-selection'); default VARIANTS")
  parser.add_argument("--split", default="test", choices=("test", "validation"),
                      help="the clips the table pairs over (validation: what a choice is made on)")
  args = parser.parse_args()
  if (args.learned or args.tags) and not args.table_only:
    raise SystemExit("--learned and --tags read a results.json: add --table_only")
  learned = args.learned or "stae"
  pairs = ([tuple(pair.split("=", 1)) for pair in args.tags.split(",") if pair]
           if args.tags else None)
  if pairs is not None and any(len(pair) != 2 for pair in pairs):
    raise SystemExit(f"--tags takes name=tag pairs, got {args.tags!r}")
  known = [tag for _, _, tag in VARIANTS]
  chosen = [t for t in args.variants.split(",") if t] or known
  unknown = [t for t in chosen if t not in known]
  if unknown:
    raise SystemExit(f"unknown variant(s) {unknown}; the variants are {', '.join(known)}")
  workdir = pathlib.Path(args.workdir).absolute()
  if args.table_only:
    results = json.loads((workdir / "results.json").read_text())
  else:
    if not (workdir / "classifier").is_dir():
      raise SystemExit(f"{workdir}/classifier not found: run the main job first "
                       f"(python benchmarks/main_job.py --workdir={workdir})")
    start = time.time()
    train(args, workdir, "system=stae", "stae")
    for _, switch, tag in VARIANTS:
      if tag in chosen:
        train(args, workdir, switch, tag)
    results = evaluate(args, workdir, ["stae"] + chosen)
    print(f"ablations: {time.time() - start:.0f} s in all\n")
  if learned not in results["methods"]:
    raise SystemExit(f"results.json has no {learned!r}: train and evaluate it first")
  print(table(results, args.bits_tolerance, args.resamples, args.seed, learned=learned,
              variants=pairs, split=args.split))
  missing = [tag for _, tag in (pairs or [(n, t) for n, _, t in VARIANTS])
             if tag not in results["methods"]]
  if missing:
    print(f"\nnot in results.json (not trained or not evaluated): {', '.join(missing)}")


if __name__ == "__main__":
  main()
