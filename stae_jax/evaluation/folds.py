"""Pooling the folds of a cross-validation: one results file as if one evaluation had seen every clip.

Each fold's `evaluate.py` run writes a results.json whose test clips are that fold's (every clip of
the dataset is tested in exactly one fold, by models that never saw its source). `pool_results`
concatenates, per method and operating point, the folds' per-clip correctness and bits (test and
validation), recomputes each point's top-1, interval, bits and ratio over all clips, and keeps the
per-clip arrays, so the pooled file feeds what reads one results.json (`benchmarks/paired_points.py`:
paired differences and envelopes at matched bits over every clip).

A point enters the pooled file only where every fold measured it on test (the same name); the
others are listed in `skipped` with the folds that lacked them. H.264's test pass measures its
validation envelope by default, which may differ between folds; run each fold with
`--test_points=all` so that every cell is pooled and the pooled envelope is chosen on the pooled
validation clips. What pooling does not do: it does not make the folds' models one model (each
clip is scored by its own fold's), and the bootstrap resamples clips, not folds.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from stae_jax.evaluation import curves


class FoldError(ValueError):
  """The folds' results cannot be pooled (different datasets, clip shapes or no common point)."""


def _split(point: dict, raw_bits: float) -> dict:
  correct = np.asarray(point["per_clip"]["correct"], np.float64)
  bits = np.asarray(point["per_clip"]["bits"], np.float64)
  mean_bits = float(bits.mean())
  return dict(num_clips=int(correct.size), top1=float(correct.mean()),
              top1_interval=curves.top1_interval(correct), bits_per_clip=mean_bits,
              compression_ratio=raw_bits / mean_bits if mean_bits > 0 else None,
              per_clip=dict(correct=correct.astype(int).tolist(), bits=bits.tolist()))


def _concatenate(parts: Sequence[dict]) -> dict:
  return dict(correct=[c for p in parts for c in p["per_clip"]["correct"]],
              bits=[b for p in parts for b in p["per_clip"]["bits"]])


def pool_results(folds: Sequence[dict], names: Sequence[str] | None = None) -> dict:
  """One results dict from the folds' results.json dicts (module docstring)."""
  if len(folds) < 2:
    raise FoldError(f"pooling needs at least 2 folds' results, got {len(folds)}")
  names = list(names) if names else [f"fold {k}" for k in range(len(folds))]
  for key in ("clip_shape", "raw_clip_bytes"):
    values = {str(f.get(key)) for f in folds}
    if len(values) > 1:
      raise FoldError(f"the folds disagree on {key} ({', '.join(sorted(values))}): pool runs of "
                      "one config only")
  raw_bits = 8.0 * float(folds[0]["raw_clip_bytes"])
  reference = [dict(per_clip=dict(correct=f["reference"]["per_clip"]["correct"],
                                   bits=[raw_bits] * len(f["reference"]["per_clip"]["correct"])))
               for f in folds]
  pooled_reference = _split(dict(per_clip=_concatenate(reference)), raw_bits)
  methods, skipped = {}, []
  common = set(folds[0]["methods"]).intersection(*(f["methods"] for f in folds[1:]))
  for method in sorted(common):
    by_name = [{p["name"]: p for p in f["methods"][method]["points"]} for f in folds]
    points = []
    for name in by_name[0]:  # the first fold's order
      missing = [names[k] for k, pts in enumerate(by_name) if name not in pts]
      if missing:
        skipped.append(dict(method=method, point=name, missing_in=missing))
        continue
      parts = [pts[name] for pts in by_name]
      point = dict(name=name, setting=parts[0].get("setting"),
                   **_split(dict(per_clip=_concatenate(parts)), raw_bits))
      if all(p.get("validation") for p in parts):
        point["validation"] = _split(
            dict(per_clip=_concatenate([p["validation"] for p in parts])), raw_bits)
      points.append(point)
    for k, pts in enumerate(by_name[1:], start=1):  # names only later folds measured
      skipped.extend(dict(method=method, point=n, missing_in=[names[0]]) for n in pts
                     if n not in by_name[0])
    if points:
      methods[method] = dict(label=folds[0]["methods"][method].get("label", method),
                             points=points)
  if not methods:
    raise FoldError("no operating point was measured on test in every fold; run each fold's "
                    "evaluate.py with the same methods (and --test_points=all for H.264's grid)")
  return dict(format="stae_jax.results.pooled/1", folds=names,
              clips_per_fold=[len(f["reference"]["per_clip"]["correct"]) for f in folds],
              num_clips=pooled_reference["num_clips"], clip_shape=folds[0]["clip_shape"],
              raw_clip_bytes=folds[0]["raw_clip_bytes"],
              reference=dict(top1=pooled_reference["top1"],
                             top1_interval=pooled_reference["top1_interval"],
                             per_clip=dict(correct=pooled_reference["per_clip"]["correct"])),
              methods=methods, skipped=skipped)
