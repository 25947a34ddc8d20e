"""Report, headline, channel comparison, plots and pictures, from hand-made results (no models)."""

import json
import math

import numpy as np
import pytest

from stae_jax.evaluation import curves
from stae_jax.evaluation import deadlines
from stae_jax.evaluation import pictures
from stae_jax.evaluation import plots
from stae_jax.evaluation import report
from stae_jax.evaluation import tuned
from stae_jax.evaluation.report import RESULTS_FORMAT, STEPS
from stae_jax.systems import loading

CLIP = [16, 64, 64, 3]
RAW_BYTES = 16 * 64 * 64 * 3
NUM_CLIPS = 40


def _correct(top1, seed, n=NUM_CLIPS):
  correct = np.zeros(n, int)
  correct[np.random.default_rng(seed).permutation(n)[:round(top1 * n)]] = 1
  return correct


def _point(name, bits, top1, *, seconds=0.001, reference=0.8, seed=0, validation=None,
           tuned_top1=None):
  """A POINT; `validation` (its top-1) adds a validation entry, `tuned_top1` a tuned one."""
  correct = _correct(top1, seed)
  num_bytes = bits / 8
  extra = {}
  if validation is not None:
    v = _correct(validation, seed + 100)
    extra["validation"] = dict(num_clips=NUM_CLIPS, top1=v.mean(), bits_per_clip=bits,
                               top1_interval=report.top1_interval(v),
                               per_clip=dict(correct=v.tolist(), bits=[bits] * NUM_CLIPS))
  if tuned_top1 is not None:
    t = _correct(tuned_top1, seed + 200)
    extra["tuned"] = dict(classifier="its own", top1=t.mean(), top1_interval=None,
                          accuracy_loss_points=100 * (reference - t.mean()),
                          per_clip=dict(correct=t.tolist()))
  return dict(
      **extra, name=name, setting={}, num_clips=NUM_CLIPS, top1=correct.mean(),
      accuracy_loss_points=100 * (reference - correct.mean()), bytes_per_clip=num_bytes,
      bits_per_clip=bits, compression_ratio=RAW_BYTES / num_bytes,
      bits_per_pixel=bits / (RAW_BYTES / 3), estimated_bits_per_clip=0.9 * bits,
      rate_gap_bits=0.1 * bits, rate_gap_relative=0.1 / 0.9,
      seconds={s: seconds for s in STEPS}, seconds_source="single_clip",
      batched_seconds={s: seconds for s in STEPS}, device_seconds=2 * seconds,
      server_seconds=3 * seconds, per_clip=dict(correct=correct.tolist(), bits=[bits] * NUM_CLIPS))


def fake_results(h264_skipped=None):
  methods = {
      "stae": dict(kind="stae", label="STAE", skipped=None, variant_of=None, headline=True,
                   config=dict(block_size=8), points=[
          _point("keep=0.25x0.25", 4000, 0.5), _point("keep=0.5x0.5", 16000, 0.7),
          _point("keep=1x0.5", 32000, 0.8)]),
      "stae_no-frame-attention": dict(kind="stae", label="STAE no frame", skipped=None,
                                      variant_of="stae", headline=False,
                                      config=dict(block_size=8), points=[
          _point("keep=0.25x0.25", 8000, 0.4), _point("keep=1x0.5", 32000, 0.75)]),
      "deepisc": dict(kind="deepisc", label="DeepISC", skipped=None, variant_of=None, headline=True,
                      config={}, points=[
          _point("tokens=1", 20000, 0.3), _point("tokens=4", 80000, 0.6)]),
      "h264": dict(kind="h264", label="H.264", skipped=h264_skipped, variant_of=None, headline=True,
                   config={}, points=[] if
                   h264_skipped else [_point("crf=45", 12000, 0.6, seconds=0.01),
                                      _point("crf=30", 60000, 0.8, seconds=0.01)]),
      "raw": dict(kind="raw", label="raw", skipped=None, variant_of=None, headline=False, config={},
                  points=[_point("uint8", RAW_BYTES * 8, 0.8, seconds=0.0)]),
  }
  return dict(format=RESULTS_FORMAT, config_name="fake", workdir="/tmp/x", dataset="fake",
              split="test", num_clips=NUM_CLIPS, clip_shape=CLIP, raw_clip_bytes=RAW_BYTES,
              machine=dict(platform="test", processor="cpu", cpu_count=2, jax_backend="cpu",
                           devices=[], jax="0"),
              reference=dict(top1=0.8, seconds={s: 0.001 for s in STEPS},
                             per_clip=dict(correct=_correct(0.8, 7).tolist())),
              methods=methods, evaluate_seconds=1.0)


def test_top1_interval_is_seeded_and_brackets_the_mean():
  correct = np.random.default_rng(3).random(600) < 0.45
  lo, hi = report.top1_interval(correct)
  assert lo < correct.mean() < hi and report.top1_interval(correct) == [lo, hi]
  # ~ +-4 points at 600 clips and 45%: what BENCHMARKS.md calls the noise of one evaluation.
  assert 0.06 < hi - lo < 0.10
  assert report.top1_interval([1, 1, 1]) == [1.0, 1.0]
  with pytest.raises(ValueError, match="at least one clip"):
    report.top1_interval([])


def test_bits_at_accuracy_interpolates_in_log_bits():
  points = [dict(bits_per_clip=1000, top1=0.5), dict(bits_per_clip=4000, top1=0.7)]
  bits, how = report.bits_at_accuracy(points, 0.6)
  assert how == "interpolated" and bits == pytest.approx(2000.0)
  assert report.bits_at_accuracy(points, 0.4) == (1000.0, "at most")
  assert report.bits_at_accuracy(points, 0.71) == (None, "not reached")
  # A worse point at more bits does not lower the curve (upper envelope).
  bits, _ = report.bits_at_accuracy(points + [dict(bits_per_clip=9000, top1=0.2)], 0.7)
  assert bits == pytest.approx(4000.0)


def test_accuracy_at_bits_only_inside_the_measured_range():
  points = [dict(bits_per_clip=1000, top1=0.5), dict(bits_per_clip=4000, top1=0.7)]
  assert report.accuracy_at_bits(points, 2000) == pytest.approx(0.6)
  assert report.accuracy_at_bits(points, 500) is None
  assert report.accuracy_at_bits(points, 5000) is None


def test_headline_is_computed_from_the_curves():
  results = fake_results()
  head = report.headline(results)
  assert head["target_top1"] == pytest.approx(0.75)
  stae = head["columns"]["frozen"]["methods"]["stae"]
  # 0.75 lies halfway (in top-1) between 16 kbit (0.7) and 32 kbit (0.8): sqrt(16k * 32k).
  assert stae["bits_per_clip"] == pytest.approx(math.sqrt(16000 * 32000))
  assert stae["compression_ratio"] == pytest.approx(8 * RAW_BYTES / stae["bits_per_clip"])
  lo, hi = stae["bits_interval"]
  assert lo <= stae["bits_per_clip"] and (hi is None or hi >= stae["bits_per_clip"])
  frozen = head["columns"]["frozen"]["methods"]
  assert not frozen["deepisc"]["reached"]
  assert frozen["h264"]["reached"]
  assert f"{stae['compression_ratio']:.0f}x" in head["text"]
  assert "DeepISC does not get that close" in head["text"]
  assert "frozen reference ViT for every method" in head["text"]
  assert [(c["method"], c["baseline"]) for c in head["columns"]["frozen"]["comparisons"]] == [
      ("stae", "deepisc"), ("stae", "h264")]
  assert "Paired bootstrap" in head["text"]
  skipped = report.headline(fake_results(h264_skipped="no libx264"))
  assert ("H.264 skipped" in skipped["text"]
          and "h264" not in skipped["columns"]["frozen"]["methods"])
  # No method of the fake results has a tuned column: it is empty, and says so.
  assert head["columns"]["tuned"]["methods"] == {} and "no method" in head["tuned_text"]


def test_the_envelope_is_chosen_on_validation_and_read_on_test():
  # B is lucky on the test clips (0.7) but the worst on validation: chosen on test it would be on
  # the envelope (and the curve biased up); chosen on validation it is not.
  points = [_point("A", 1000, 0.5, validation=0.5), _point("B", 2000, 0.7, validation=0.4),
            _point("C", 4000, 0.65, validation=0.6)]
  assert [p["name"] for p in curves.frontier(points)] == ["A", "C"]
  assert curves.frontier_split(points) == "validation"
  bits, top1 = curves.envelope(points)
  np.testing.assert_allclose(bits, [1000, 4000])
  np.testing.assert_allclose(top1, [0.5, 0.65])
  # 0.575 is halfway (in top-1) between A and C: halfway in log bits.
  assert report.bits_at_accuracy(points, 0.575)[0] == pytest.approx(2000.0)
  # Without validation entries the envelope is chosen on test, as before the validation split.
  on_test = [{k: v for k, v in p.items() if k != "validation"} for p in points]
  assert [p["name"] for p in curves.frontier(on_test)] == ["A", "B"]
  assert curves.frontier_split(on_test) == "test"
  # The results.json fields say which points and where.
  assert report.describe_envelope(points) == dict(envelope=["A", "C"],
                                                  envelope_split="validation")
  # A cheaper point with the same validation top-1 dominates a dearer one.
  tie = [_point("X", 1000, 0.5, validation=0.5), _point("Y", 2000, 0.6, validation=0.5)]
  assert [p["name"] for p in curves.frontier(tie)] == ["X"]


def test_tuned_column_uses_only_points_with_a_tuned_result():
  points = [_point("A", 1000, 0.5, tuned_top1=0.6), _point("B", 2000, 0.7),
            _point("C", 4000, 0.8, tuned_top1=0.9)]
  assert [p["name"] for p in curves.frontier(points, "tuned")] == ["A", "C"]
  np.testing.assert_allclose(curves.envelope(points, "tuned")[1], [0.6, 0.9])
  assert curves.column(points[1], "tuned") is None
  with pytest.raises(ValueError, match="unknown column"):
    curves.column(points[0], "retrained")


def _curve_points(correct_lo, correct_hi, bits_lo, bits_hi):
  n = len(correct_lo)
  return [dict(name=name, bits_per_clip=float(bits), top1=float(np.mean(c)),
               per_clip=dict(correct=list(map(int, c)), bits=[bits] * n))
          for name, c, bits in (("lo", correct_lo, bits_lo), ("hi", correct_hi, bits_hi))]


def test_paired_bootstrap_separates_what_the_same_clips_can_and_cannot_show():
  n = 400
  reference = _correct(0.6, 1, n)
  lo, hi = _correct(0.45, 2, n), _correct(0.75, 3, n)
  method = _curve_points(lo, hi, 900, 1800)
  # The same per-clip predictions at 10% more bits: on every resample exactly 10% more bits, so
  # paired resampling shows the difference, however noisy each curve is on its own.
  baseline = _curve_points(lo, hi, 1000, 2000)
  # An independent classifier of the same accuracy at the same bits: nothing to show.
  other = _curve_points(_correct(0.45, 4, n), _correct(0.75, 5, n), 1000, 2000)
  samples = curves.bootstrap_bits(dict(method=method, baseline=baseline, other=other), reference,
                                  target_loss_points=5.0)
  assert all(s.shape == (curves.RESAMPLES,) and np.isfinite(s).all() for s in samples.values())
  np.testing.assert_allclose(samples["method"] / samples["baseline"], 0.9)
  paired = curves.compare(samples["method"], samples["baseline"])
  assert paired["fewer_bits"] is True
  assert paired["ratio_interval"] == pytest.approx([0.9, 0.9])
  unpaired = curves.compare(samples["method"], samples["other"])
  assert unpaired["fewer_bits"] is None
  assert unpaired["ratio_interval"][0] < 0.9 < 1.0 < unpaired["ratio_interval"][1]
  assert curves.compare(samples["baseline"], samples["method"])["fewer_bits"] is False
  # The same seed gives the same resamples.
  again = curves.bootstrap_bits(dict(other=other), reference, target_loss_points=5.0)
  np.testing.assert_array_equal(again["other"], samples["other"])
  # A curve that never reaches the target is infinite in every resample: the ratio's upper end
  # is unbounded (None) and the comparison says the reaching method needs fewer bits.
  never = _curve_points(_correct(0.1, 6, n), _correct(0.2, 7, n), 1000, 2000)
  missing = curves.bootstrap_bits(dict(never=never), reference, target_loss_points=5.0)["never"]
  assert np.isinf(missing).all()
  versus = curves.compare(samples["method"], missing)
  assert versus["fewer_bits"] is True and versus["ratio_interval"] == [0.0, 0.0]
  assert curves.interval(missing) == [None, None]


def test_cells_to_tune_bracket_the_first_envelope_point_reaching_the_target():
  points = [dict(name=f"p{i}", bits_per_clip=1000 * 2 ** i, top1=t)
            for i, t in enumerate([0.3, 0.4, 0.5, 0.45, 0.6, 0.7])]
  # Envelope: p0, p1, p2, p4, p5 (p3 is worse than the cheaper p2); p4 first reaches 0.55.
  assert tuned.cells_to_tune(points, 0.55, (2, 1)) == ["p1", "p2", "p4"]
  assert tuned.cells_to_tune(points, 0.55, (1, 2)) == ["p2", "p4", "p5"]
  assert tuned.cells_to_tune(points, 0.9, (2, 2)) == ["p4", "p5"]  # none reaches: the best ones
  assert tuned.cells_to_tune(points, 0.1, (2, 2)) == ["p0", "p1"]


def test_ablations_read_variants_at_the_main_rates():
  rows = report.ablations(fake_results())["rows"]
  variant = {r["point"]: r for r in rows if r["method"] == "stae_no-frame-attention"}
  assert variant["keep=0.25x0.25"]["top1"] is None  # 4 kbit is below the variant's cheapest point
  assert variant["keep=1x0.5"]["top1"] == pytest.approx(0.75)
  # Its own point at the same keep ratios is reported with what it cost.
  assert variant["keep=0.25x0.25"]["same_point_top1"] == pytest.approx(0.4)
  assert variant["keep=0.25x0.25"]["same_point_bits_per_clip"] == 8000
  assert variant["keep=0.5x0.5"]["same_point_top1"] is None  # the variant has no such point
  assert [r["bits_per_clip"] for r in rows if r["method"] == "stae"] == [4000, 16000, 32000]
  table = report.markdown(fake_results())
  assert "| keep=0.25x0.25 (4,000) | 50.0 (4,000) | 40.0 (8,000) |" in table
  assert "| keep=0.25x0.25 (4,000) | 50.0 | - |" in table


def test_channel_comparison_scores_every_method_on_the_same_traces():
  results = fake_results()
  options = deadlines.ChannelOptions(deadlines_seconds=(0.05, 1.0), mean_snrs_db=(10.0,),
                                     seeds=(0,), max_clips=NUM_CLIPS, max_backlog_seconds=60.0)
  channel = deadlines.channel_comparison(results, options)
  rows = channel["rows"]
  num_points = sum(len(m["points"]) + 1 for m in results["methods"].values())
  assert len(rows) == num_points * 2
  raw = deadlines.best_fixed(rows, "raw", 10.0, 0.05)
  assert raw["accuracy"] == 0.0  # 3 Mbit per clip cannot arrive in 50 ms at ~3 Mbit/s
  assert deadlines.best_fixed(rows, "stae", 10.0, 0.05)["accuracy"] > 0.3
  cheap = next(r for r in rows if r["policy"] == "fixed:keep=0.25x0.25"
               and r["deadline_seconds"] == 0.05)
  assert cheap["on_time_fraction"] > 0.9  # 4 kbit takes ~1.5 ms on average
  # With a long deadline nothing is late for the small streams: accuracy = measured top-1.
  for point in results["methods"]["stae"]["points"]:
    row = next(r for r in rows if r["policy"] == f"fixed:{point['name']}"
               and r["deadline_seconds"] == 1.0)
    assert row["accuracy"] == pytest.approx(point["top1"])
  adaptive = deadlines.adaptive(rows, "stae", 10.0, 1.0)
  assert adaptive["accuracy"] == pytest.approx(0.8)  # picks the best point when all fit
  assert json.loads(json.dumps(channel)) == channel


def test_report_plots_and_results_file(tmp_path):
  results = fake_results(h264_skipped="libx264 missing: install the av wheel")
  results["channel"] = deadlines.channel_comparison(results, deadlines.ChannelOptions(
      deadlines_seconds=(0.1, 0.5), mean_snrs_db=(0.0, 20.0), seeds=(0,), max_clips=10,
      max_backlog_seconds=60.0))
  results["headline"] = report.headline(results)
  path = report.write_results(results, tmp_path / "results.json")
  assert loading.load_results(path) == json.loads(json.dumps(results))
  made = plots.write_plots(results, tmp_path / "plots")
  assert len(made) == 3
  for relative in made.values():
    assert (tmp_path / relative).stat().st_size > 1000
  text = report.markdown(results, plots=made, pictures=["pictures/clip_0.png"])
  for section in ("## Headline", "## Operating points", "## Ablations", "At matched rates",
                  "## Time-varying channel", "Mean SNR 20 dB", "## Plots", "## Pictures"):
    assert section in text
  assert "skipped: libx264 missing" in text
  # These results have no validation split: the report says the envelopes were chosen on test.
  assert "upper envelope (chosen on the test split itself)" in text
  assert "chosen on the validation" not in text
  (tmp_path / "bad.json").write_text(json.dumps(dict(format="other")))
  with pytest.raises(ValueError, match="not a results file"):
    loading.load_results(tmp_path / "bad.json")


def _validation_only(results):
  """`fake_results` with H.264 as evaluate.py's test_points "envelope" leaves a many-point grid:
  its two measured points (with validation entries) and 12 cells measured on validation only."""
  method = results["methods"]["h264"]
  for point, top1 in zip(method["points"], (0.55, 0.75)):
    point.update(_point(point["name"], point["bits_per_clip"], point["top1"], seconds=0.01,
                        validation=top1))
  method["config"] = dict(frames=[16, 1], sides=[64, 32], crfs=[30.0, 45.0, 51.0],
                          preset="veryfast")
  method["validation_only"] = []
  for i in range(12):
    v = _correct(0.2 + 0.02 * i, 300 + i)
    method["validation_only"].append(dict(
        name=f"frames=1,side=32,crf={i}", setting=dict(frames=1, side=32, crf=float(i)),
        validation=dict(num_clips=NUM_CLIPS, top1=v.mean(), top1_interval=report.top1_interval(v),
                        bits_per_clip=14000.0 + 1000 * i,
                        per_clip=dict(correct=v.tolist(), bits=[14000.0 + 1000 * i] * NUM_CLIPS))))
  method.update(report.describe_envelope(method["points"]))
  return results


def test_points_measured_on_validation_only_are_reported_and_read_by_no_number(tmp_path):
  """results.json's `validation_only` points: in report.md's "Every point" table with their
  validation top-1 and bits, marked; nothing that reads results.json reads them (the headline,
  channel, plots, serving's grid) or crashes on them."""
  results = _validation_only(fake_results())
  without = fake_results()
  without["methods"]["h264"] = dict(results["methods"]["h264"], validation_only=[])
  results["channel"] = deadlines.channel_comparison(results, deadlines.ChannelOptions(
      deadlines_seconds=(0.1,), mean_snrs_db=(10.0,), seeds=(0,), max_clips=10,
      max_backlog_seconds=60.0))
  assert results["channel"] == deadlines.channel_comparison(without, deadlines.ChannelOptions(
      deadlines_seconds=(0.1,), mean_snrs_db=(10.0,), seeds=(0,), max_clips=10,
      max_backlog_seconds=60.0))
  assert {r["policy"] for r in results["channel"]["rows"] if r["method"] == "h264"} == {
      "adaptive", "fixed:crf=45", "fixed:crf=30"}
  results["headline"] = report.headline(results)
  assert results["headline"] == report.headline(without)
  text = report.markdown(results)
  every = text.split("## Every point of H.264")[1].split("\n## ")[0]
  assert ("14 points, 2 on the envelope (*, chosen on the validation split). 12 were measured"
          in every)
  first = results["methods"]["h264"]["validation_only"][0]
  shown = report._pct_interval(first["validation"])  # pylint: disable=protected-access
  assert (f"| frames=1,side=32,crf=0 | not measured on test | - | {shown} | 14,000 (validation) | "
          f"{8 * RAW_BYTES / 14000:.1f} (validation) | - | - |") in every
  assert "| crf=30 * | " in every and "--test_points=all" in every
  table = text.split("## Operating points")[1].split("## Every point")[0]
  assert "crf=0" not in table  # the operating-point table shows the envelope only
  assert len(plots.write_plots(results, tmp_path / "plots")) == 3
  # Serving builds the cells measured on test (the client plans with them), unless --crfs asks
  # for another grid.
  report.write_results(results, tmp_path / "results.json")
  measured = loading.measured_baselines(tmp_path)["h264"]
  assert measured["cells"] == ("crf=45", "crf=30") and measured["scales"] == (1, 2)
  assert "cells" not in loading.measured_baselines(tmp_path, crfs=["30"])["h264"]


def test_h264_serves_only_the_cells_named():
  from stae_jax import systems  # pylint: disable=g-import-not-at-top
  from stae_jax.systems import h264  # pylint: disable=g-import-not-at-top
  grid = dict(frames=(4, 1), scales=(1, 2), crfs=(30, 51))

  def codec(**options):
    return h264.H264Codec(systems.BaselineContext(clip_shape=(4, 16, 16, 3), classify=None,
                                                  options=dict(h264=dict(grid, **options))))

  cells = ("frames=1,side=8,crf=51", "frames=4,side=16,crf=30")
  kept = codec(cells=cells)
  assert [p.name for p in kept.points] == list(reversed(cells))  # in the grid's order
  assert kept.summary() == codec().summary() and len(codec().points) == 8
  with pytest.raises(ValueError, match="not cells of the grid"):
    codec(cells=("frames=2,side=8,crf=51",))


def test_overlay_marks_dropped_frames_and_blocks():
  clip = np.full((3, 16, 16, 3), 200, np.uint8)
  frame_mask = np.array([True, False, True])
  block_masks = np.array([[True, False, False, True], [False, True, True, False]])
  shown = pictures.overlay(clip, frame_mask, block_masks, block_size=8)
  assert (shown[0, :8, :8] == 200).all() and (shown[0, :8, 8:] != 200).all()
  assert (shown[1] == 40).all()  # dropped frame at 20%
  assert (shown[2, :8, 8:] == 200).all() and (shown[2, :8, :8] != 200).all()
  image = pictures.clip_picture(clip, [("kept", shown)], "title")
  assert image.width > pictures.LABEL_WIDTH and image.height > 3 * 16


def test_channel_choices_come_from_the_validation_clips():
  """The adaptive policy expects each point's validation top-1 and the best fixed point is the best
  on the validation clips: a point that is only lucky on the test clips is never chosen."""
  results = fake_results()
  results["methods"] = dict(m=dict(
      kind="m", label="M", skipped=None, variant_of=None, headline=True, config={}, points=[
          _point("lucky", 2000, 0.8, validation=0.3), _point("steady", 2000, 0.5, validation=0.7)]))
  options = deadlines.ChannelOptions(deadlines_seconds=(1.0,), mean_snrs_db=(10.0,), seeds=(0,),
                                     max_clips=NUM_CLIPS, max_backlog_seconds=60.0)
  channel = deadlines.channel_comparison(results, options)
  assert channel["validation_clips"] == NUM_CLIPS
  splits = {(r["policy"], r["split"]) for r in channel["rows"]}
  assert splits == {("fixed:lucky", "test"), ("fixed:steady", "test"), ("adaptive", "test"),
                    ("fixed:lucky", "validation"), ("fixed:steady", "validation")}
  best = deadlines.best_fixed(channel["rows"], "m", 10.0, 1.0)
  assert best["policy"] == "fixed:steady" and best["split"] == "test"
  assert best["chosen_on"] == "validation" and best["accuracy"] == pytest.approx(0.5)
  assert deadlines.adaptive(channel["rows"], "m", 10.0, 1.0)["accuracy"] == pytest.approx(0.5)
  lo, hi = best["accuracy_interval"]
  assert lo < 0.5 < hi
  # Without validation entries both choices fall back to the test clips (in hindsight).
  for p in results["methods"]["m"]["points"]:
    del p["validation"]
  rows = deadlines.channel_comparison(results, options)["rows"]
  hindsight = deadlines.best_fixed(rows, "m", 10.0, 1.0)
  assert hindsight["policy"] == "fixed:lucky" and hindsight["chosen_on"] == "test"
