"""benchmarks/seed_spread.py's summary of several seeds' results (the training and evaluation it
drives are the trainer's and evaluate's, tested in their own files; the script itself was run on a
tiny config, see its docstring)."""

import pytest

import benchmark_modules


def _benchmark():
  return benchmark_modules.load("seed_spread")


def _results(points, reference=0.5, at_target=None):
  """What evaluate_seed returns, reduced to what `spread` reads."""
  return dict(
      reference=dict(top1=reference),
      methods=dict(stae=dict(points=[
          dict(name=name, bits_per_clip=bits, top1=top1, tuned=dict(top1=tuned))
          for name, bits, top1, tuned in points])),
      headline=dict(columns={column: dict(methods={} if bits is None else dict(
          stae=dict(bits_per_clip=bits))) for column, bits in (at_target or {}).items()}))


def test_spread_of_each_point_over_seeds():
  seed_spread = _benchmark()
  results = {
      0: _results([("keep=0.25x1", 4000, 0.40, 0.42), ("keep=0.125x1", 2000, 0.30, 0.33)],
                  at_target=dict(frozen=2500.0, tuned=2100.0)),
      1: _results([("keep=0.25x1", 4200, 0.44, 0.45), ("keep=0.125x1", 2100, 0.36, 0.35)],
                  at_target=dict(frozen=None, tuned=2200.0)),
      2: _results([("keep=0.25x1", 4100, 0.42, 0.40), ("keep=0.125x1", 1900, 0.33, 0.34)],
                  at_target=dict(frozen=2700.0, tuned=2300.0)),
  }
  result = seed_spread.spread(results, "stae")
  assert result["seeds"] == [0, 1, 2] and result["reference_top1"]["std"] == 0.0
  row = result["points"]["keep=0.25x1"]
  assert row["top1"]["values"] == [0.40, 0.44, 0.42]
  assert row["top1"]["mean"] == pytest.approx(0.42) and row["top1"]["std"] == pytest.approx(0.02)
  assert row["top1"]["range"] == pytest.approx(0.04)
  assert row["bits_per_clip"]["min"] == 4000 and row["tuned_top1"]["max"] == 0.45
  frozen = result["bits_at_target"]["frozen"]
  assert frozen["per_seed"] == [2500.0, None, 2700.0] and frozen["mean"] == pytest.approx(2600.0)
  text = seed_spread.table(result)
  lines = text.splitlines()
  assert lines[2].startswith("| keep=0.125x1 | 2,000 / 2,100 / 1,900 | 33.0 +- 3.0 [30.0, 36.0] |")
  assert "(frozen column), per seed: 2,500 / not reached / 2,700" in text
  # Seeds trained with other keep ratios cannot be compared point by point.
  results[2]["methods"]["stae"]["points"].pop()
  with pytest.raises(ValueError, match="missing for some seeds"):
    seed_spread.spread(results, "stae")
