"""benchmarks/seed_spread.py on the tiny trained workdir: STAE's stages from two seeds on one
classifier, evaluated, and the spread of each operating point."""

import importlib.util

import pytest

import evaluate_helpers
from stae_jax import REPO_ROOT
from stae_jax.training import workdir as workdir_lib

pytestmark = pytest.mark.slow


def _benchmark():
  spec = importlib.util.spec_from_file_location("seed_spread",
                                                REPO_ROOT / "benchmarks" / "seed_spread.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_seeds_share_the_classifier_and_their_spread_is_reported(tmp_path_factory, tmp_path):
  """One seed trained here; the tiny workdir's own STAE (seed 0, the same classifier) is the
  other (each seed's stages cost a compile of their steps)."""
  seed_spread = _benchmark()
  base = evaluate_helpers.tiny_workdir(tmp_path_factory)
  config = evaluate_helpers.tiny_config()
  workdir = seed_spread.train_seed(config, base, tmp_path, 3, "stae",
                                   loader_fn=evaluate_helpers.memory_loader)
  assert workdir == tmp_path / "seed_3"
  assert workdir_lib.classifier_dir(workdir).resolve() == workdir_lib.classifier_dir(base)
  assert workdir_lib.read_record(workdir / "systems" / "stae" / "compressor").seed == 3
  # A seed whose stages are done is not trained again.
  assert seed_spread.train_seed(config, base, tmp_path, 3, "stae",
                                loader_fn=evaluate_helpers.memory_loader) == workdir
  results = {seed: seed_spread.evaluate_seed(seed_spread.seed_config(config, seed), where, "stae",
                                             validation_clips=4,
                                             loader_fn=evaluate_helpers.memory_loader)
             for seed, where in ((0, base), (3, workdir))}
  assert all(list(r["methods"]) == ["stae"] for r in results.values())  # no baseline measured
  result = seed_spread.spread(results, "stae")
  assert result["seeds"] == [0, 3]
  assert result["reference_top1"]["std"] == 0.0  # one classifier for every seed
  points = result["points"]
  assert sorted(points) == ["keep=0.5x0.5", "keep=1x0.5"]
  for row in points.values():
    assert len(row["bits_per_clip"]["values"]) == 2 and row["tuned_top1"] is not None
    assert row["top1"]["min"] <= row["top1"]["mean"] <= row["top1"]["max"]
  # Different seeds train different codecs: their rates differ.
  assert any(row["bits_per_clip"]["range"] > 0 for row in points.values())
  text = seed_spread.table(result)
  assert "| keep=0.5x0.5 |" in text and "headline target (frozen column)" in text
