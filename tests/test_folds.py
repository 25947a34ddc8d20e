"""Pooling cross-validation folds (stae_jax/evaluation/folds.py, benchmarks/pool_folds.py)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from stae_jax import REPO_ROOT
from stae_jax.evaluation import folds

RAW_BYTES = 8 * 64 * 64 * 3


def fold_results(seed: int, clips: int, points: dict, shape=(8, 64, 64, 3)) -> dict:
  """A results.json dict as evaluate.py writes it, with the fields pooling reads: per point its
  test and validation clips' correctness and bits (point name -> (top-1, mean bits))."""
  rng = np.random.default_rng(seed)

  def split(top1, bits, n):
    correct = (rng.random(n) < top1).astype(int)
    per_clip_bits = rng.normal(bits, bits / 10, n).round()
    return dict(top1=float(correct.mean()), bits_per_clip=float(per_clip_bits.mean()),
                per_clip=dict(correct=correct.tolist(), bits=per_clip_bits.tolist()))

  methods = {}
  for (method, name), (top1, bits) in points.items():
    methods.setdefault(method, dict(label=method.upper(), points=[]))["points"].append(dict(
        name=name, setting={}, **split(top1, bits, clips), validation=split(top1, bits, 20)))
  reference = dict(per_clip=dict(correct=(rng.random(clips) < 0.9).astype(int).tolist()))
  return dict(clip_shape=list(shape), raw_clip_bytes=RAW_BYTES, reference=reference,
              methods=methods)


POINTS = {("stae", "keep=1x1"): (0.7, 9000), ("stae", "keep=0.5x0.5"): (0.5, 3000),
          ("h264", "frames=8,side=64,crf=35"): (0.75, 8000),
          ("h264", "frames=8,side=64,crf=47"): (0.5, 2500)}


def test_pooled_points_are_the_folds_clips_concatenated():
  parts = [fold_results(k, clips, POINTS) for k, clips in enumerate((60, 58, 62))]
  pooled = folds.pool_results(parts)
  assert pooled["num_clips"] == 180 and pooled["clips_per_fold"] == [60, 58, 62]
  for method in ("stae", "h264"):
    for point in pooled["methods"][method]["points"]:
      correct = np.concatenate([
          [p for p in f["methods"][method]["points"] if p["name"] == point["name"]][0]
          ["per_clip"]["correct"] for f in parts])
      bits = np.concatenate([
          [p for p in f["methods"][method]["points"] if p["name"] == point["name"]][0]
          ["per_clip"]["bits"] for f in parts])
      assert point["num_clips"] == 180
      assert point["top1"] == pytest.approx(correct.mean())
      assert point["bits_per_clip"] == pytest.approx(bits.mean())
      assert point["compression_ratio"] == pytest.approx(8 * RAW_BYTES / bits.mean())
      lo, hi = point["top1_interval"]
      assert lo < point["top1"] < hi
      assert point["validation"]["num_clips"] == 60
  reference = np.concatenate([f["reference"]["per_clip"]["correct"] for f in parts])
  assert pooled["reference"]["top1"] == pytest.approx(reference.mean())


def test_a_point_missing_in_a_fold_is_skipped_and_said():
  first = fold_results(0, 40, POINTS)
  second = fold_results(1, 40, {k: v for k, v in POINTS.items() if v[1] != 2500})
  pooled = folds.pool_results([first, second], names=["a", "b"])
  names = [p["name"] for p in pooled["methods"]["h264"]["points"]]
  assert names == ["frames=8,side=64,crf=35"]
  assert pooled["skipped"] == [dict(method="h264", point="frames=8,side=64,crf=47",
                                    missing_in=["b"])]


def test_folds_of_different_configs_are_refused():
  with pytest.raises(folds.FoldError, match="clip_shape"):
    folds.pool_results([fold_results(0, 40, POINTS),
                        fold_results(1, 40, POINTS, shape=(16, 64, 64, 3))])
  with pytest.raises(folds.FoldError, match="at least 2"):
    folds.pool_results([fold_results(0, 40, POINTS)])
  with pytest.raises(folds.FoldError, match="no operating point"):
    folds.pool_results([fold_results(0, 40, {("stae", "a"): (0.5, 100)}),
                        fold_results(1, 40, {("stae", "b"): (0.5, 100)})])


def test_pooled_file_feeds_the_paired_table(tmp_path):
  """pool_folds.py writes a file that paired_points.py reads: STAE against H.264's envelope."""
  workdirs = []
  for k in range(3):
    workdir = tmp_path / f"fold_{k}"
    workdir.mkdir()
    (workdir / "results.json").write_text(json.dumps(fold_results(k, 50, POINTS)))
    workdirs.append(str(workdir))
  out = tmp_path / "pooled.json"
  run = lambda *args: subprocess.run([sys.executable, *args], cwd=REPO_ROOT, check=True,
                                     capture_output=True, text=True).stdout
  table = run("benchmarks/pool_folds.py", f"--workdirs={','.join(workdirs)}", f"--out={out}")
  assert "3 folds, 150 test clips" in table and "| stae | keep=1x1 |" in table
  paired = run("benchmarks/paired_points.py", f"--results={out}", "--method=stae",
               "--envelope=h264")
  assert "150 test clips" in paired
  rows = {line.split("|")[1].strip(): line.split("|") for line in paired.splitlines()
          if line.startswith("| keep=")}
  assert "%" in rows["keep=0.5x0.5"][4]  # the envelope read at STAE's bits, paired interval
  assert "outside" in rows["keep=1x1"][4]  # 9 kbit: above the envelope's measured range


def test_paired_table_against_another_run_on_either_split(tmp_path):
  """paired_points.py --against_results pairs a method with another run's on the same clips, on the
  test or the validation split, and refuses runs of different clips."""
  new, old = tmp_path / "new.json", tmp_path / "old.json"
  new.write_text(json.dumps(dict(fold_results(0, 50, POINTS), num_clips=50)))
  old.write_text(json.dumps(dict(fold_results(1, 50, POINTS), num_clips=50)))
  run = lambda *args: subprocess.run([sys.executable, "benchmarks/paired_points.py", *args],
                                     cwd=REPO_ROOT, capture_output=True, text=True)
  for split, clips in (("test", 50), ("validation", 20)):
    out = run(f"--results={new}", "--method=stae", "--against=stae", f"--against_results={old}",
              f"--split={split}")
    assert out.returncode == 0, out.stderr
    assert f"{clips} {split} clips" in out.stdout and f"stae from {old}" in out.stdout
    row = [l for l in out.stdout.splitlines() if l.startswith("| keep=1x1 ")][0].split("|")
    mine = [p for p in json.loads(new.read_text())["methods"]["stae"]["points"]
            if p["name"] == "keep=1x1"][0]
    theirs = [p for p in json.loads(old.read_text())["methods"]["stae"]["points"]
              if p["name"] == "keep=1x1"][0]
    if split == "validation":
      mine, theirs = mine["validation"], theirs["validation"]
    diff = np.mean(mine["per_clip"]["correct"]) - np.mean(theirs["per_clip"]["correct"])
    assert row[6].strip().startswith(f"{100 * diff:+.1f} [")
  other = tmp_path / "other.json"
  other.write_text(json.dumps(dict(fold_results(2, 40, POINTS), num_clips=40)))
  out = run(f"--results={new}", "--method=stae", "--against=stae", f"--against_results={other}")
  assert out.returncode != 0 and "pairing needs the same clips" in out.stderr
