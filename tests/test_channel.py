"""The fading channel, transmission time, replay, deadline accounting and the adaptive policy."""

import math

import numpy as np
import pytest
from scipy import special

from stae_jax import channel
from stae_jax.channel import ChannelConfig, ChannelTrace, OperatingPoint
from stae_jax.evaluation import deadlines


def _constant_trace(rate_bps: float, num_slots: int = 100, slot_seconds: float = 1e-3):
  """A trace whose every slot has |h| = 1, at an SNR chosen so that the rate is `rate_bps`."""
  bandwidth_hz = 1e6
  snr = 2.0 ** (rate_bps / bandwidth_hz) - 1.0
  config = ChannelConfig(bandwidth_hz=bandwidth_hz, mean_snr_db=10 * math.log10(snr),
                         slot_seconds=slot_seconds)
  return ChannelTrace(gains=np.ones(num_slots, np.complex128), config=config)


def test_doppler_and_jakes_correlation():
  config = ChannelConfig(carrier_hz=3e9, speed_mps=10.0, slot_seconds=2e-3)
  assert config.max_doppler_hz == pytest.approx(10.0 * 3e9 / channel.SPEED_OF_LIGHT_MPS)
  assert config.correlation == pytest.approx(special.j0(2 * np.pi * config.max_doppler_hz * 2e-3))
  assert ChannelConfig(doppler_hz=50.0, speed_mps=99.0).max_doppler_hz == 50.0
  assert ChannelConfig(speed_mps=0.0).correlation == 1.0  # A still device: a static channel.
  with pytest.raises(ValueError, match="bandwidth"):
    ChannelConfig(bandwidth_hz=0.0)


def test_fading_statistics_match_the_gauss_markov_model():
  config = ChannelConfig(doppler_hz=100.0, slot_seconds=1e-3)  # rho = J0(0.63) ~ 0.90.
  rho = config.correlation
  trace = ChannelTrace.generate(200.0, config, seed=3)
  gains = trace.gains
  assert trace.num_slots == 200_000
  assert np.mean(np.abs(gains) ** 2) == pytest.approx(1.0, abs=0.03)
  lag1 = np.vdot(gains[:-1], gains[1:]) / np.vdot(gains, gains)
  assert lag1.real == pytest.approx(rho, abs=0.01)
  assert abs(lag1.imag) < 0.01
  # Rayleigh: |h|^2 is exponential with mean 1, so P(|h|^2 < 0.1) = 1 - exp(-0.1).
  assert np.mean(trace.power_gains < 0.1) == pytest.approx(1 - math.exp(-0.1), abs=0.01)


def test_generation_is_seeded():
  a = ChannelTrace.generate(1.0, seed=7)
  b = ChannelTrace.generate(1.0, seed=7)
  c = ChannelTrace.generate(1.0, seed=8)
  np.testing.assert_array_equal(a.gains, b.gains)
  assert not np.array_equal(a.gains, c.gains)


def test_rate_is_monotone_in_snr_and_shannon_at_unit_gain():
  rates = [ChannelConfig(mean_snr_db=snr).rate_bps(1.0) for snr in (-5, 0, 5, 10, 20, 30)]
  assert all(np.diff(rates) > 0)
  assert ChannelConfig(bandwidth_hz=2e6, mean_snr_db=0.0).rate_bps(1.0) == pytest.approx(2e6)
  trace = ChannelTrace.generate(0.5, ChannelConfig(mean_snr_db=5.0), seed=0)
  better = ChannelTrace(gains=trace.gains, config=ChannelConfig(mean_snr_db=15.0))
  assert (better.rates_bps > trace.rates_bps).all()


def test_constant_rate_transmission_time_is_bits_over_rate():
  trace = _constant_trace(2e6, num_slots=200)
  assert trace.rates_bps[0] == pytest.approx(2e6, rel=1e-12)
  rate = trace.rates_bps[0]
  for bits, start in [(1000, 0.0), (1000, 0.0005), (5e4, 0.0), (5e4, 0.0123), (1.5e5, 0.0301)]:
    assert trace.transmission_seconds(bits, start) == pytest.approx(bits / rate, rel=1e-12)
  assert trace.transmission_seconds(0, 0.05) == 0.0


def test_transmission_spans_slots_with_partial_first_and_last_slots():
  config = ChannelConfig(bandwidth_hz=1e6, mean_snr_db=0.0, slot_seconds=1e-3)  # |h|=1 -> 1 Mbit/s.
  power = np.array([1.0, 3.0, 0.0, 7.0, 1.0])  # Rates 1, 2, 0, 3, 1 Mbit/s (log2(1+g)).
  trace = ChannelTrace(gains=np.sqrt(power).astype(np.complex128), config=config)
  np.testing.assert_allclose(trace.rates_bps, [1e6, 2e6, 0.0, 3e6, 1e6])
  # From 0.5 ms: 500 bits in slot 0, 2000 in slot 1, nothing in slot 2, then 500 of slot 3's 3000.
  assert trace.transmission_seconds(3000, 0.0005) == pytest.approx(0.0005 + 0.001 + 0.001 + 500 / 3e6)
  # Exactly filling the first partial slot ends at the slot boundary.
  assert trace.transmission_seconds(500, 0.0005) == pytest.approx(0.0005)
  # Starting in the dead slot waits it out.
  assert trace.transmission_seconds(300, 0.0025) == pytest.approx(0.0005 + 300 / 3e6)
  with pytest.raises(ValueError, match="longer trace"):
    trace.transmission_seconds(1e6, 0.0)
  with pytest.raises(ValueError, match="outside this trace"):
    trace.transmission_seconds(10, 0.006)


def test_long_transmission_agrees_with_cumulative_integral():
  trace = ChannelTrace.generate(5.0, ChannelConfig(mean_snr_db=3.0), seed=11)
  start, bits = 0.1234, 2e6  # Hundreds of slots, so several of the growing cumsum chunks.
  seconds = trace.transmission_seconds(bits, start)
  # Independent check: bits delivered by time t, from the cumulative capacity of whole slots.
  slot = trace.config.slot_seconds
  cumulative = np.concatenate([[0.0], np.cumsum(trace.rates_bps * slot)])

  def delivered_by(t):
    n = int(t // slot)
    return cumulative[n] + trace.rates_bps[n] * (t - n * slot)

  assert delivered_by(start + seconds) - delivered_by(start) == pytest.approx(bits, rel=1e-9)


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_save_load_replays_identically(tmp_path, suffix):
  trace = ChannelTrace.generate(0.3, ChannelConfig(mean_snr_db=7.0, speed_mps=30.0), seed=5)
  loaded = ChannelTrace.load(trace.save(tmp_path / f"trace{suffix}"))
  assert loaded.config == trace.config and loaded.seed == 5
  np.testing.assert_array_equal(loaded.gains, trace.gains)
  np.testing.assert_array_equal(loaded.rates_bps, trace.rates_bps)
  times = [trace.transmission_seconds(b, t) for b, t in [(3e4, 0.0), (1e5, 0.1017), (7, 0.25)]]
  replay = [loaded.transmission_seconds(b, t) for b, t in [(3e4, 0.0), (1e5, 0.1017), (7, 0.25)]]
  assert times == replay


def test_load_rejects_other_files(tmp_path):
  (tmp_path / "x.json").write_text('{"format": "something else"}')
  with pytest.raises(ValueError, match="not a channel trace"):
    ChannelTrace.load(tmp_path / "x.json")
  with pytest.raises(ValueError, match=".json or .npz"):
    ChannelTrace.generate(0.01, seed=0).save(tmp_path / "x.pkl")


def test_latency_breakdown_totals_and_serialises():
  latency = channel.LatencyBreakdown(encode_seconds=0.01, wait_seconds=0.0, transmit_seconds=0.05,
                                     decode_seconds=0.02, classify_seconds=0.03)
  assert latency.total_seconds == pytest.approx(0.11)
  record = latency.as_dict()
  assert record["total_seconds"] == pytest.approx(0.11) and record["transmit_seconds"] == 0.05
  with pytest.raises(ValueError, match="transmit_seconds"):
    channel.LatencyBreakdown(0.0, 0.0, -1.0, 0.0, 0.0)


def test_latency_queues_on_the_link_and_deadlines_count_as_wrong():
  trace = _constant_trace(1e6, num_slots=1000)  # 1 Mbit/s for 1 s.
  latencies = channel.clip_latencies(
      trace, bits=[20_000, 20_000, 1_000], arrival_seconds=[0.0, 0.005, 0.5],
      encode_seconds=0.01, decode_seconds=0.002, classify_seconds=0.003)
  first, second, third = latencies
  assert first.transmit_seconds == pytest.approx(0.02) and first.wait_seconds == 0.0
  assert first.total_seconds == pytest.approx(0.01 + 0.02 + 0.002 + 0.003)
  # The second clip is ready at 0.015 s but the link is busy until 0.03 s.
  assert second.wait_seconds == pytest.approx(0.015)
  assert second.total_seconds == pytest.approx(0.01 + 0.015 + 0.02 + 0.005)
  assert third.wait_seconds == 0.0 and third.transmit_seconds == pytest.approx(0.001)
  no_queue = channel.clip_latencies(trace, bits=[20_000, 20_000], arrival_seconds=[0.0, 0.005],
                                    encode_seconds=0.01, queue=False)
  assert no_queue[1].wait_seconds == 0.0
  with pytest.raises(ValueError, match="one per clip"):
    channel.clip_latencies(trace, bits=[1, 2, 3], arrival_seconds=[0.0, 0.1], encode_seconds=0.0)

  report = channel.accuracy_under_deadline(np.array([True, True, False]), latencies,
                                           deadline_seconds=0.04)
  # Clip 1 is right and on time, clip 2 right but late (0.05 s), clip 3 on time but wrong.
  assert report.accuracy == pytest.approx(1 / 3)
  assert report.on_time_fraction == pytest.approx(2 / 3)
  assert report.num_clips == 3
  with pytest.raises(ValueError, match="one per clip"):
    channel.accuracy_under_deadline(np.array([True]), latencies, 0.04)


def _points():
  return [
      OperatingPoint("small", bits=10_000, expected_accuracy=0.60, encode_seconds=0.005),
      OperatingPoint("medium", bits=50_000, expected_accuracy=0.70, encode_seconds=0.005),
      OperatingPoint("large", bits=200_000, expected_accuracy=0.75, encode_seconds=0.005),
      OperatingPoint("large_twin", bits=250_000, expected_accuracy=0.75, encode_seconds=0.005),
  ]


def test_policy_picks_the_best_feasible_point_and_falls_back():
  points = _points()
  # At 10 Mbit/s all fit in 100 ms: the most accurate, and of the tied two the smaller.
  assert channel.choose_operating_point(points, rate_bps=1e7, deadline_seconds=0.1) == 2
  # At 1 Mbit/s the 200 kbit points take 0.2 s; 50 kbit takes 0.055 s.
  assert channel.choose_operating_point(points, rate_bps=1e6, deadline_seconds=0.1) == 1
  # At 100 kbit/s only the small one (0.105 s) fits a 0.11 s deadline.
  assert channel.choose_operating_point(points, rate_bps=1e5, deadline_seconds=0.11) == 0
  # Nothing fits: fall back to the quickest.
  assert channel.choose_operating_point(points, rate_bps=1e4, deadline_seconds=0.1) == 0
  assert channel.choose_operating_point(points, rate_bps=0.0, deadline_seconds=0.1) == 0
  # A margin plans for a fraction of the known rate: 10% of 10 Mbit/s rules the large points out.
  assert channel.choose_operating_point(points, rate_bps=1e7, deadline_seconds=0.1,
                                        rate_margin=0.1) == 1
  with pytest.raises(ValueError, match="rate_margin"):
    channel.choose_operating_point(points, rate_bps=1e7, deadline_seconds=0.1, rate_margin=0.0)


def _nested_correctness(num_clips, accuracies):
  """bool[N, P]: clip n is right at point p for the first accuracies[p] share of every 20 clips.

  Nested (a richer point is right wherever a poorer one is) and exactly at the expected accuracy,
  so policies differ only through the channel, not through sampling noise.
  """
  rank = (np.arange(num_clips) % 20)[:, None] / 20
  return rank < np.asarray(accuracies)[None, :]


def _score(trace, points, choices, arrivals, correct, queue=True):
  """Accuracy at a 0.1 s deadline, through the scoring that `deadlines.channel_comparison` runs."""
  (report,), _ = channel.simulate_choices(
      trace, points, choices, arrival_seconds=arrivals, deadlines_seconds=[0.1],
      correct_by_point=correct, queue=queue)
  return report.accuracy


def test_adaptive_policy_is_optimal_when_the_rate_holds_for_the_transmission():
  # Block fading with 1 s blocks and clips arriving mid-block: the known rate is the true rate.
  rng = np.random.default_rng(2)
  block_gains = (rng.standard_normal(60) + 1j * rng.standard_normal(60)) / np.sqrt(2)
  trace = ChannelTrace(gains=np.repeat(block_gains, 1000), config=ChannelConfig(mean_snr_db=5.0))
  points = _points()[:3]
  arrivals = np.arange(0.25, 59.0, 0.5)
  correct = _nested_correctness(arrivals.size, [p.expected_accuracy for p in points])
  choices = channel.adaptive_choices(trace, points, arrival_seconds=arrivals, deadline_seconds=0.1)
  expected = [channel.choose_operating_point(points, rate_bps=trace.rate_at(t), deadline_seconds=0.1)
              for t in arrivals]
  np.testing.assert_array_equal(choices, expected)
  assert len(set(choices.tolist())) == 3  # The channel really does change the choice.
  adaptive = _score(trace, points, choices, arrivals, correct, queue=False)
  fixed = [_score(trace, points, np.full(arrivals.size, p), arrivals, correct, queue=False)
           for p in range(3)]
  assert adaptive > max(fixed)


def _results(points, correct, bits=None):
  """A results.json with one method sending clips every 0.5 s (16 frames at 32 fps)."""
  num_clips = correct.shape[0]
  bits = np.array([[p.bits for p in points]] * num_clips) if bits is None else bits
  return dict(num_clips=num_clips, clip_shape=[16, 64, 64, 3], methods=dict(stae=dict(
      skipped=None, points=[dict(
          name=p.name, bits_per_clip=p.bits, top1=float(correct[:, i].mean()),
          device_seconds=p.encode_seconds,
          seconds=dict(entropy_decode=p.decode_seconds, decode=0.0, classify=p.classify_seconds),
          per_clip=dict(correct=correct[:, i].tolist(), bits=bits[:, i].tolist()))
          for i, p in enumerate(points)])))


def test_rate_margin_pays_off_under_fast_fading():
  """Why `ChannelOptions.rate_margin` is 0.7, measured through the comparison evaluate.py runs."""
  points = _points()[:3]
  correct = _nested_correctness(118, [p.expected_accuracy for p in points])  # 0 s to 58.5 s
  results = _results(points, correct)

  def rows(margin):
    # Traces of 58.5 + 0.5 + 61 = 120 s on the default walking-speed link (35 ms coherence).
    options = deadlines.ChannelOptions(deadlines_seconds=(0.1,), mean_snrs_db=(5.0,),
                                       seeds=(0, 1, 2), fps=32.0, rate_margin=margin,
                                       max_backlog_seconds=61.0)
    return deadlines.channel_comparison(results, options)["rows"]

  plain, margined = rows(1.0), rows(0.7)
  adaptive = {margin: deadlines.adaptive(r, "stae", 5.0, 0.1)["accuracy"]
              for margin, r in ((1.0, plain), (0.7, margined))}
  best_fixed = deadlines.best_fixed(margined, "stae", 5.0, 0.1)["accuracy"]
  assert deadlines.ChannelOptions().rate_margin == 0.7
  assert adaptive[0.7] > adaptive[1.0]
  assert adaptive[0.7] > best_fixed
  assert not any(r["saturated"] for r in plain + margined)


def test_a_saturated_link_counts_every_clip_late():
  points = _points()[:2]
  correct = _nested_correctness(20, [1.0, 1.0])
  trace = _constant_trace(1e6, num_slots=1000)  # 1 Mbit/s for 1 s: 20 clips of 50 kbit need more.
  with pytest.raises(channel.TraceEndedError, match="longer trace"):
    channel.simulate_choices(trace, points, np.ones(20, int), arrival_seconds=np.zeros(20),
                             deadlines_seconds=[1.0], correct_by_point=correct)
  with pytest.raises(ValueError, match="bits_by_point") as error:  # a bad call is not saturation
    channel.simulate_choices(trace, points, np.ones(20, int), arrival_seconds=np.zeros(20),
                             deadlines_seconds=[1.0], correct_by_point=correct,
                             bits_by_point=np.ones((20, 3)))
  assert not isinstance(error.value, channel.TraceEndedError)
  # A link whose queue outgrows the trace: every row of the heavy point saturated, scored 0.
  bits = np.array([[1_000, 3_000_000]] * 20, np.float64)
  rows = deadlines.channel_comparison(_results(points, correct, bits), deadlines.ChannelOptions(
      deadlines_seconds=(0.1, 10.0), mean_snrs_db=(10.0,), seeds=(0,), max_backlog_seconds=1.0))[
          "rows"]
  heavy = [r for r in rows if r["policy"] == "fixed:medium"]
  assert len(heavy) == 2 and all(r["saturated"] and r["accuracy"] == 0.0 for r in heavy)
  light = [r for r in rows if r["policy"] == "fixed:small"]
  assert not any(r["saturated"] for r in light) and light[1]["accuracy"] == 1.0


def test_the_channel_cells_come_from_the_device_profile_alone(tmp_path):
  """The cells are a function of results.json: its per-clip results and its `device_profile`;
  the points' own seconds (a run's wall times) are not read once a profile is there, and a
  declared profile replaces the measured one."""
  import json  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import device_profile  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  points = _points()[:3]
  correct = _nested_correctness(40, [0.6, 0.7, 0.75])
  results = _results(points, correct)
  options = deadlines.ChannelOptions(deadlines_seconds=(0.1, 0.3), mean_snrs_db=(5.0,), seeds=(0, 1),
                                     fps=32.0, max_backlog_seconds=30.0)
  # Without a profile (results written before it): the points' own seconds, as before.
  before = deadlines.channel_comparison(results, options)
  assert before["device_profile"] == dict(source="point_seconds", path=None)
  profile = device_profile.from_points(results)
  measured = dict(profile, source="measured", load_average=dict(before=[5.0, 4.0, 3.0],
                                                                 after=[6.0, 4.0, 3.0]))
  results["device_profile"] = measured
  results["channel"] = deadlines.channel_comparison(results, options)
  assert results["channel"]["rows"] == before["rows"]
  # The points' seconds as a loaded machine would time them: the cells do not move.
  stored = json.loads(json.dumps(results))
  for p in stored["methods"]["stae"]["points"]:
    p["seconds"] = {step: 0.2 for step in device_profile.STEPS}
    p["device_seconds"] = 0.4
  assert deadlines.recompute(stored) == results["channel"]
  # A declared profile (a slower device) replaces the measured one, which is kept beside it.
  slow = json.loads(json.dumps(measured))
  for times in slow["methods"]["stae"].values():
    times["classify"] = 0.2
  path = tmp_path / "slow.json"
  path.write_text(json.dumps(dict(slow, source="measured")))
  declared = device_profile.load(path)
  assert declared["source"] == "declared" and declared["path"] == str(path)
  evaluate.declare_profile(stored, declared)
  assert stored["measured_device_profile"] == measured
  slower = deadlines.recompute(stored)
  assert slower["device_profile"] == dict(source="declared", path=str(path))
  on_time = {(r["policy"], r["deadline_seconds"]): r["on_time_fraction"] for r in slower["rows"]}
  assert on_time[("adaptive", 0.1)] == 0.0  # 0.2 s of classifying misses a 0.1 s deadline
  # A profile without a time for a measured point is refused, naming it.
  del slow["methods"]["stae"]["large"]
  with pytest.raises(ValueError, match="stae large encode"):
    device_profile.check(slow, stored)
