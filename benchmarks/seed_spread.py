r"""How far STAE's operating points move between training seeds, on one classifier.

  python benchmarks/seed_spread.py --workdir=runs/synthetic --out=/tmp/seeds [--seeds=0,1,2]

Why (issue 16): one training run moved a point by +-2.5 points (BENCHMARKS.md), as much as the
+-2 points 600 test clips allow, so a single run cannot say whether a difference is STAE's or its
seed's. The classifier stage of --workdir (trained already) is shared: for each seed, STAE's later
stages (config.train.stage_order after the classifier: compressor, joint) are trained into
<out>/seed_<s>/ from that one classifier with config.seed = s (the system's initialisation, its data
order, its quantisation noise and selection keys), then evaluated as evaluate.py evaluates (the
validation clips, the test split, the frozen reference ViT and STAE's own ViT; no baselines). It
prints, per operating point, bits per clip and top-1 of each seed with their mean, standard
deviation and range, then each seed's bits at the headline's target, in both columns. A seed whose
stages are done is not trained again (`--evaluate_only` skips training altogether).

Run on a tiny config to check the script (not a measurement: models of a few thousand parameters,
a few steps; 16 minutes on the shared 2-core machine, most of it the three seeds' compiles):
  CFG=configs/synthetic.py:frames=8,size=32,num_train=64,num_test=32
  OV="--config.model.vit.width=32 --config.model.vit.depth=1 --config.model.vit.num_heads=2
      --config.model.vit.patch=8 --config.systems.stae.model.stae.transform_width=8
      --config.systems.stae.model.decoder.width=8 --config.stages.classifier.steps=20
      --config.stages.compressor.steps=4 --config.stages.joint.steps=2
      --config.data.batch_size=8 --config.data.eval_batch_size=16"
  python train.py --config=$CFG --workdir=/tmp/ss/base $OV "--config.train.stage_order=('classifier',)"
  python benchmarks/seed_spread.py --config=$CFG $OV --workdir=/tmp/ss/base --out=/tmp/ss/seeds \
      --validation_clips=6
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

_CONFIG = config_flags.DEFINE_config_file("config", str(REPO_ROOT / "configs" / "synthetic.py"),
                                          "Experiment config (file.py[:switches]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir whose classifier stage is trained.")
_OUT = flags.DEFINE_string("out", None, "Where the seeds' workdirs go (<out>/seed_<s>).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds of the STAE stages.")
_SYSTEM = flags.DEFINE_string("system", "stae", "The config.systems tag to train.")
_MAX_CLIPS = flags.DEFINE_integer("max_clips", 0, "Test clips (0: the whole split).")
_VALIDATION = flags.DEFINE_integer("validation_clips", None, "Validation clips (default: "
                                   "config.eval.validation_clips, as evaluate.py).")
_EVALUATE_ONLY = flags.DEFINE_bool("evaluate_only", False, "Evaluate the seeds' workdirs only.")
_JSON = flags.DEFINE_string("json", None, "Also write the spread as JSON here.")


def seed_config(config, seed: int):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.seed = int(seed)
  return config


def train_seed(config, base_workdir, out, seed: int, tag: str, *, loader_fn=None) -> pathlib.Path:
  """Trains system `tag`'s stages with `seed` into <out>/seed_<seed>, from the classifier of
  `base_workdir` (linked, not copied or retrained); returns that workdir."""
  from stae_jax.training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.training import trainer  # pylint: disable=g-import-not-at-top
  from stae_jax.systems import loading  # pylint: disable=g-import-not-at-top
  config = seed_config(config, seed)
  classifier = loading.classifier_dir(pathlib.Path(base_workdir).absolute())
  loading.trained_data(base_workdir)  # a missing classifier is an error that says what to run
  workdir = pathlib.Path(out).absolute() / f"seed_{seed}"
  workdir.mkdir(parents=True, exist_ok=True)
  link = loading.classifier_dir(workdir)
  if not link.exists():
    link.symlink_to(classifier, target_is_directory=True)
  plan = [(stage, directory) for stage, t, directory in trainer.stage_plan(config, workdir)
          if t == tag]
  if not plan:
    raise ValueError(f"config.systems has no stages for {tag!r} (it has {list(config.systems)})")
  plan_dirs = {loading.CLASSIFIER: classifier, **dict(plan)}
  mesh = mesh_lib.make_mesh(int(config.train.get("model_axis_size", 1)))
  for i, (stage, directory) in enumerate(plan):
    trainer.run_stage(config, stage, tag, directory, mesh=mesh,
                      loader_fn=loader_fn or trainer.default_loader, plan_dirs=plan_dirs,
                      is_last_of_system=i == len(plan) - 1)
  return workdir


def evaluate_seed(config, workdir, tag: str, *, max_clips: int = 0,
                  validation_clips: int | None = None, loader_fn=None) -> dict:
  """results.json's dict for system `tag` of a seed's workdir (no baselines), headline included.
  Validation clips as evaluate.py counts them (`config.eval`, unless `validation_clips` says)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import report  # pylint: disable=g-import-not-at-top
  options, _ = evaluate.options_from_config(config, max_clips=max_clips, systems_to_run=(tag,),
                                            progress=False, validation_clips=validation_clips)
  options = dataclasses.replace(options, latency_clips=0, num_pictures=0, baseline_methods=(),
                                tune_baselines=False)
  results, _ = evaluate.evaluate_workdir(config, workdir, options, loader_fn=loader_fn)
  results["headline"] = report.headline(results)
  return results


def _stats(values) -> dict:
  values = np.asarray(values, np.float64)
  return dict(values=values.tolist(), mean=float(values.mean()),
              std=float(values.std(ddof=1)) if values.size > 1 else 0.0,
              min=float(values.min()), max=float(values.max()),
              range=float(values.max() - values.min()))


def spread(results_by_seed: dict[int, dict], tag: str) -> dict:
  """Per operating point of `tag`: bits per clip, top-1 (frozen) and tuned top-1 over the seeds;
  per column, bits at the headline target over the seeds (None where a seed does not reach it)."""
  seeds = sorted(results_by_seed)
  by_point: dict[str, dict[int, dict]] = {}
  for seed in seeds:
    for point in results_by_seed[seed]["methods"][tag]["points"]:
      by_point.setdefault(point["name"], {})[seed] = point
  points = {}
  for name, per_seed in by_point.items():
    if sorted(per_seed) != seeds:
      raise ValueError(f"operating point {name} is missing for some seeds: the seeds were trained "
                       "with different keep ratios")
    ordered = [per_seed[s] for s in seeds]
    points[name] = dict(
        bits_per_clip=_stats([p["bits_per_clip"] for p in ordered]),
        top1=_stats([p["top1"] for p in ordered]),
        tuned_top1=_stats([p["tuned"]["top1"] for p in ordered])
        if all(p.get("tuned") for p in ordered) else None)
  at_target = {}
  for column in ("frozen", "tuned"):
    values = [results_by_seed[s]["headline"]["columns"][column]["methods"].get(tag, {}).get(
        "bits_per_clip") for s in seeds]
    reached = [v for v in values if v is not None]
    at_target[column] = dict(per_seed=values, **(_stats(reached) if reached else {}))
  return dict(system=tag, seeds=seeds, points=points, bits_at_target=at_target,
              reference_top1=_stats([results_by_seed[s]["reference"]["top1"] for s in seeds]))


def table(result: dict) -> str:
  """The spread as the markdown table BENCHMARKS.md shows."""
  seeds = ", ".join(map(str, result["seeds"]))
  lines = [f"| point | bits per clip (seeds {seeds}) | top-1 % frozen ViT: mean +- std "
           "[min, max] | top-1 % own ViT: mean +- std [min, max] |", "|---|---|---|---|"]

  def pct(stats):
    if stats is None:
      return "-"
    return (f"{100 * stats['mean']:.1f} +- {100 * stats['std']:.1f} "
            f"[{100 * stats['min']:.1f}, {100 * stats['max']:.1f}]")

  for name, row in sorted(result["points"].items(), key=lambda kv: kv[1]["bits_per_clip"]["mean"]):
    bits = " / ".join(f"{b:,.0f}" for b in row["bits_per_clip"]["values"])
    lines.append(f"| {name} | {bits} | {pct(row['top1'])} | {pct(row['tuned_top1'])} |")
  for column, entry in result["bits_at_target"].items():
    values = " / ".join("not reached" if v is None else f"{v:,.0f}" for v in entry["per_seed"])
    lines.append(f"\nBits per clip at the headline target ({column} column), per seed: {values}")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value or not _OUT.value:
    raise app.UsageError("--workdir (with a trained classifier) and --out are required")
  from stae_jax.library_logs import quiet_library_logs  # pylint: disable=g-import-not-at-top
  quiet_library_logs()
  config = _CONFIG.value
  results = {}
  for seed in (int(s) for s in _SEEDS.value):
    workdir = pathlib.Path(_OUT.value).absolute() / f"seed_{seed}"
    if not _EVALUATE_ONLY.value:
      workdir = train_seed(config, _WORKDIR.value, _OUT.value, seed, _SYSTEM.value)
    results[seed] = evaluate_seed(seed_config(config, seed), workdir, _SYSTEM.value,
                                  max_clips=_MAX_CLIPS.value,
                                  validation_clips=_VALIDATION.value)
    print(f"seed {seed}: {results[seed]['headline']['text']}", flush=True)
  result = spread(results, _SYSTEM.value)
  print(table(result))
  if _JSON.value:
    pathlib.Path(_JSON.value).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
  app.run(main)
