"""The time-varying wireless link between the device and the edge server, and deadline accounting.

Channel model (ours; the paper's abstract fixes none of it): Rayleigh block fading. Time is cut into
slots of `slot_seconds`; the complex gain h[n] is constant within slot n and evolves as a first-order
Gauss-Markov process

    h[0] ~ CN(0, 1),   h[n+1] = rho h[n] + sqrt(1 - rho^2) w[n],   w[n] ~ CN(0, 1) i.i.d.,

so E|h|^2 = 1 in every slot and the lag-1 correlation is rho. rho follows Jakes' model,
rho = J0(2 pi f_D T_slot), with the Doppler f_D = v f_c / c from the device's speed and the carrier
(or given directly). Slot n carries rate[n] = B log2(1 + SNR |h[n]|^2) bits per second (Shannon
capacity at the mean SNR scaled by the fading power), and a payload is sent by integrating that
rate over slots, partial slots included, from when it starts.

Everything here is NumPy on the host: it is accounting, not a jit path. A `ChannelTrace` is
generated once from a seed and saved (JSON or .npz, no pickle), so every method in a comparison is
scored on the very same channel realisation.

Latency of a clip (DESIGN.md) = encode + transmission + decode + ViT time. Transmission starts when
encoding has finished (arrival + encode time: the bitstream does not exist earlier) and, on one
link, not before the previous clip has left (`queue=True`). A clip that misses its deadline counts
as wrong.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from typing import Sequence

import numpy as np
from scipy import signal
from scipy import special

SPEED_OF_LIGHT_MPS = 299_792_458.0
TRACE_FORMAT = "stae_jax.channel_trace/1"


class TraceEndedError(ValueError):
  """The trace ends before a transmission does: for a queue, the link is saturated.

  Its own type so that deadline scoring can count a saturated link's clips as late without also
  swallowing a caller's bad arguments (plain ValueError).
  """


@dataclasses.dataclass(frozen=True)
class ChannelConfig:
  """Parameters of the link, with units in the names.

  Defaults: a 1 MHz channel at 10 dB mean SNR (about 2.9 Mbit/s on average under Rayleigh fading,
  so a 16x112x112 clip at H.264 CRF 23, ~70 kbit, takes ~25 ms), 1 ms slots (an LTE subframe), a
  2.4 GHz carrier and a walking-speed device (1.5 m/s): f_D = 12 Hz, coherence time ~35 ms, so the
  channel fades within one clip's transmission and is nearly independent between clips 0.5 s apart.
  `doppler_hz`, when set, overrides speed and carrier.
  """
  bandwidth_hz: float = 1e6
  mean_snr_db: float = 10.0
  slot_seconds: float = 1e-3
  carrier_hz: float = 2.4e9
  speed_mps: float = 1.5
  doppler_hz: float | None = None

  def __post_init__(self):
    checks = {
        "bandwidth_hz": self.bandwidth_hz > 0, "slot_seconds": self.slot_seconds > 0,
        "carrier_hz": self.carrier_hz > 0, "speed_mps": self.speed_mps >= 0,
        "mean_snr_db": math.isfinite(self.mean_snr_db),
        "doppler_hz": self.doppler_hz is None or self.doppler_hz >= 0,
    }
    for name, ok in checks.items():
      if not ok:
        raise ValueError(
            f"ChannelConfig.{name}={getattr(self, name)!r} is out of range: bandwidth, slot length "
            "and carrier must be > 0, speed and Doppler >= 0, the SNR (in dB) finite.")

  @property
  def max_doppler_hz(self) -> float:
    if self.doppler_hz is not None:
      return float(self.doppler_hz)
    return self.speed_mps * self.carrier_hz / SPEED_OF_LIGHT_MPS

  @property
  def correlation(self) -> float:
    """rho = J0(2 pi f_D T_slot): Jakes' correlation of the gain between adjacent slots."""
    return float(special.j0(2.0 * math.pi * self.max_doppler_hz * self.slot_seconds))

  @property
  def mean_snr(self) -> float:
    """The mean SNR as a linear power ratio (E|h|^2 = 1, so it is also the SNR of an average slot)."""
    return 10.0 ** (self.mean_snr_db / 10.0)

  def rate_bps(self, power_gain: np.ndarray | float) -> np.ndarray:
    """Shannon rate B log2(1 + SNR |h|^2) in bits/s for fading power gain(s) |h|^2."""
    return self.bandwidth_hz * np.log2(1.0 + self.mean_snr * np.asarray(power_gain, np.float64))


def gauss_markov_gains(num_slots: int, correlation: float, rng: np.random.Generator) -> np.ndarray:
  """complex128[num_slots]: h[0] ~ CN(0,1), h[n+1] = rho h[n] + sqrt(1-rho^2) w[n]."""
  if not -1.0 <= correlation <= 1.0:
    raise ValueError(f"correlation rho={correlation} must lie in [-1, 1].")
  innovation_scale = math.sqrt(1.0 - correlation ** 2)
  real = rng.standard_normal(num_slots)
  imag = rng.standard_normal(num_slots)
  draws = (real + 1j * imag) / math.sqrt(2.0)  # CN(0, 1): unit power split over I and Q.
  drive = np.empty(num_slots, np.complex128)
  drive[0] = draws[0]
  drive[1:] = innovation_scale * draws[1:]
  # y[n] = rho y[n-1] + drive[n] with y[0] = drive[0] = h[0]: the recursion, in C rather than Python.
  return signal.lfilter([1.0], [1.0, -correlation], drive)


@dataclasses.dataclass(frozen=True, eq=False)
class ChannelTrace:
  """One realisation of the fading link: a complex gain per slot, plus the config that made it.

  Rates are recomputed from the stored gains and config, bit-identically on every load, so a saved
  trace replays the same channel to every method.
  """
  gains: np.ndarray  # complex128[num_slots]
  config: ChannelConfig = ChannelConfig()
  seed: int | None = None

  def __post_init__(self):
    gains = np.asarray(self.gains, np.complex128)
    if gains.ndim != 1 or gains.size == 0 or not np.isfinite(gains).all():
      raise ValueError(
          f"channel gains {gains.dtype}{list(gains.shape)}: expected a non-empty 1-D array of finite "
          "complex gains, one per slot (use ChannelTrace.generate to make one).")
    gains.setflags(write=False)
    object.__setattr__(self, "gains", gains)
    rates = self.config.rate_bps(np.abs(gains) ** 2)
    rates.setflags(write=False)
    object.__setattr__(self, "_rates_bps", rates)

  @classmethod
  def generate(cls, duration_seconds: float, config: ChannelConfig = ChannelConfig(), *,
               seed: int) -> ChannelTrace:
    """A seeded trace covering at least `duration_seconds` of link time."""
    if not duration_seconds > 0:
      raise ValueError(f"duration_seconds={duration_seconds}: a trace must cover a positive time.")
    num_slots = max(1, math.ceil(duration_seconds / config.slot_seconds - 1e-9))
    rng = np.random.default_rng(seed)
    return cls(gains=gauss_markov_gains(num_slots, config.correlation, rng), config=config,
               seed=seed)

  @property
  def num_slots(self) -> int:
    return self.gains.size

  @property
  def duration_seconds(self) -> float:
    return self.num_slots * self.config.slot_seconds

  @property
  def power_gains(self) -> np.ndarray:
    return np.abs(self.gains) ** 2

  @property
  def rates_bps(self) -> np.ndarray:
    """float64[num_slots]: the rate of each slot in bits/s."""
    return self._rates_bps

  def slot_index(self, time_seconds: float) -> int:
    """The slot containing `time_seconds` (slot n covers [n T, (n+1) T))."""
    if not 0.0 <= time_seconds < self.duration_seconds:
      error = TraceEndedError if time_seconds >= self.duration_seconds else ValueError
      raise error(
          f"time {time_seconds} s is outside this trace, which covers [0, {self.duration_seconds}) s; "
          "generate a longer trace (ChannelTrace.generate(duration_seconds=...)).")
    return min(int(time_seconds // self.config.slot_seconds), self.num_slots - 1)

  def rate_at(self, time_seconds: float) -> float:
    """The rate (bits/s) of the slot containing `time_seconds`: the channel state known then."""
    return float(self._rates_bps[self.slot_index(time_seconds)])

  def transmission_seconds(self, bits: float, start_seconds: float) -> float:
    """Seconds to send `bits` starting at `start_seconds`, integrating the rate over slots.

    Exact for partial slots: the first slot contributes rate * (time left in it), then whole slots,
    then the fraction of the last slot that the remaining bits need.
    """
    if not (bits >= 0 and math.isfinite(bits)):
      raise ValueError(f"bits={bits}: a payload must be a finite, non-negative number of bits.")
    if bits == 0:
      return 0.0
    slot_seconds = self.config.slot_seconds
    rates = self._rates_bps
    first = self.slot_index(start_seconds)
    first_left_seconds = max((first + 1) * slot_seconds - start_seconds, 0.0)
    first_capacity = rates[first] * first_left_seconds
    if bits <= first_capacity:
      return bits / rates[first]
    bits_left = bits - first_capacity
    elapsed = first_left_seconds
    slot = first + 1
    chunk = 256  # Grows geometrically: short payloads touch few slots, long ones few cumsums.
    while slot < self.num_slots:
      stop = min(slot + chunk, self.num_slots)
      delivered = np.cumsum(rates[slot:stop] * slot_seconds)
      k = int(np.searchsorted(delivered, bits_left, side="left"))
      if k < delivered.size:
        before = delivered[k - 1] if k else 0.0
        return elapsed + k * slot_seconds + (bits_left - before) / rates[slot + k]
      bits_left -= delivered[-1]
      elapsed += (stop - slot) * slot_seconds
      slot = stop
      chunk *= 2
    raise TraceEndedError(
        f"the trace ends ({self.duration_seconds} s) before {bits:.0f} bits sent from {start_seconds} s "
        "are delivered; generate a longer trace.")

  # --- replay -------------------------------------------------------------------------------

  def save(self, path: str | os.PathLike) -> pathlib.Path:
    """Writes the trace to `.json` (readable, exact: floats round-trip) or `.npz` (compact)."""
    path = pathlib.Path(path)
    header = {"format": TRACE_FORMAT, "config": dataclasses.asdict(self.config), "seed": self.seed}
    if path.suffix == ".json":
      record = {**header, "gains_real": self.gains.real.tolist(),
                "gains_imag": self.gains.imag.tolist()}
      path.write_text(json.dumps(record))
    elif path.suffix == ".npz":
      np.savez(path, gains=self.gains, header=np.array(json.dumps(header)))
    else:
      raise ValueError(f"channel trace path {str(path)!r}: use a .json or .npz file name.")
    return path

  @classmethod
  def load(cls, path: str | os.PathLike) -> ChannelTrace:
    path = pathlib.Path(path)

    def check_format(header):
      if not isinstance(header, dict) or header.get("format") != TRACE_FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise ValueError(
            f"{path} is not a channel trace of format {TRACE_FORMAT!r} (found {found!r}); make one "
            "with ChannelTrace.generate(...).save(path).")

    if path.suffix == ".json":
      header = json.loads(path.read_text())
      check_format(header)
      gains = np.asarray(header["gains_real"], np.float64) + 1j * np.asarray(
          header["gains_imag"], np.float64)
    elif path.suffix == ".npz":
      with np.load(path, allow_pickle=False) as archive:
        header = json.loads(str(archive["header"])) if "header" in archive.files else None
        check_format(header)
        gains = archive["gains"]
    else:
      raise ValueError(f"channel trace path {str(path)!r}: expected a .json or .npz file.")
    return cls(gains=gains, config=ChannelConfig(**header["config"]), seed=header["seed"])


# --- latency and deadlines ------------------------------------------------------------------


def _per_clip(name: str, values, num_clips: int) -> np.ndarray:
  try:
    array = np.broadcast_to(np.asarray(values, np.float64), (num_clips,))
  except ValueError:
    raise ValueError(
        f"{name}: got {np.shape(values)} values for {num_clips} clips; pass one value or one per "
        "clip (as many as arrival_seconds).") from None
  if not (np.isfinite(array).all() and (array >= 0).all()):
    raise ValueError(f"{name}: expected finite, non-negative values (seconds or bits), one per clip.")
  return array


@dataclasses.dataclass(frozen=True)
class LatencyBreakdown:
  """Where one clip's end-to-end latency went, in seconds.

  `wait_seconds` is time queued behind earlier clips on the same link (zero for an idle link).
  The total is what a deadline is checked against (DESIGN.md: encode + bits / rate integrated over
  the channel's slots + decode + ViT).
  """
  encode_seconds: float
  wait_seconds: float
  transmit_seconds: float
  decode_seconds: float
  classify_seconds: float

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{field.name}={value}: a latency component must be finite and >= 0 seconds.")

  @property
  def total_seconds(self) -> float:
    return (self.encode_seconds + self.wait_seconds + self.transmit_seconds + self.decode_seconds
            + self.classify_seconds)

  def as_dict(self) -> dict[str, float]:
    """A JSON-ready record, total included."""
    return {**dataclasses.asdict(self), "total_seconds": self.total_seconds}


def clip_latencies(trace: ChannelTrace, *, bits, arrival_seconds, encode_seconds,
                   decode_seconds=0.0, classify_seconds=0.0,
                   queue: bool = True) -> list[LatencyBreakdown]:
  """Latency breakdown of each clip of a sequence sent over `trace`.

  Every argument is a scalar or one value per clip (len(arrival_seconds) clips, arrivals in
  order). A clip's bits start to flow at arrival + encode time; with `queue` they also wait for the
  previous clip's last bit (one link, first come first served), which is where a slow channel
  makes later clips late too.
  """
  arrivals = np.atleast_1d(np.asarray(arrival_seconds, np.float64))
  num_clips = arrivals.size
  arrivals = _per_clip("arrival_seconds", arrivals, num_clips)
  if queue and (np.diff(arrivals) < 0).any():
    raise ValueError("arrival_seconds must be non-decreasing when clips queue on one link.")
  bits = _per_clip("bits", bits, num_clips)
  encode = _per_clip("encode_seconds", encode_seconds, num_clips)
  decode = _per_clip("decode_seconds", decode_seconds, num_clips)
  classify = _per_clip("classify_seconds", classify_seconds, num_clips)
  link_free_at = 0.0
  latencies = []
  for i in range(num_clips):
    ready = arrivals[i] + encode[i]
    start = max(ready, link_free_at) if queue else ready
    transmit = trace.transmission_seconds(bits[i], start)
    link_free_at = start + transmit
    latencies.append(LatencyBreakdown(
        encode_seconds=float(encode[i]), wait_seconds=float(start - ready),
        transmit_seconds=float(transmit), decode_seconds=float(decode[i]),
        classify_seconds=float(classify[i])))
  return latencies


@dataclasses.dataclass(frozen=True)
class DeadlineReport:
  """Accuracy under a deadline: a late clip counts as wrong."""
  accuracy: float  # Fraction of clips both correct and on time.
  on_time_fraction: float
  num_clips: int
  median_latency_seconds: float


def accuracy_under_deadline(correct, latencies: Sequence[LatencyBreakdown] | np.ndarray,
                            deadline_seconds) -> DeadlineReport:
  """Scores a sequence of clips: correct (bool[N]) and on time (latency <= deadline, per clip or one)."""
  correct = np.asarray(correct)
  if correct.dtype != np.bool_ or correct.ndim != 1:
    raise ValueError(f"correct {correct.dtype}{list(correct.shape)}: expected bool[N], one per clip.")
  if len(latencies) and isinstance(latencies[0], LatencyBreakdown):
    totals = np.array([latency.total_seconds for latency in latencies], np.float64)
  else:
    totals = np.asarray(latencies, np.float64)
  if totals.shape != correct.shape:
    raise ValueError(f"{totals.size} latencies for {correct.size} clips: pass one per clip.")
  if correct.size == 0:
    raise ValueError("accuracy under a deadline of no clip is undefined.")
  on_time = totals <= np.broadcast_to(np.asarray(deadline_seconds, np.float64), totals.shape)
  return DeadlineReport(accuracy=float((correct & on_time).mean()),
                        on_time_fraction=float(on_time.mean()), num_clips=int(correct.size),
                        median_latency_seconds=float(np.median(totals)))


# --- adaptive choice of operating point -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
  """One way to send a clip: its size and what it is expected to buy, with its compute times."""
  name: str
  bits: float
  expected_accuracy: float
  encode_seconds: float = 0.0
  decode_seconds: float = 0.0
  classify_seconds: float = 0.0

  def predicted_latency_seconds(self, rate_bps: float) -> float:
    """Latency if the rate stayed at `rate_bps` for the whole transmission."""
    transmit = self.bits / rate_bps if rate_bps > 0 else (0.0 if self.bits == 0 else math.inf)
    return self.encode_seconds + transmit + self.decode_seconds + self.classify_seconds


def choose_operating_point(points: Sequence[OperatingPoint], *, rate_bps: float,
                           deadline_seconds: float, rate_margin: float = 1.0) -> int:
  """Index of the point with the best expected accuracy whose predicted latency meets the deadline.

  The prediction assumes the rate stays at `rate_margin * rate_bps` for the whole transmission.
  Ties go to fewer bits. Where no point is predicted to make it, the fallback is the point with the
  smallest predicted latency: the best remaining chance to arrive in time, and the shortest hold
  on the link for the clips behind it.
  """
  if not points:
    raise ValueError("choose_operating_point needs at least one operating point.")
  if not 0.0 < rate_margin <= 1.0:
    raise ValueError(f"rate_margin={rate_margin}: expected a fraction in (0, 1] of the known rate.")
  predicted = [point.predicted_latency_seconds(rate_margin * rate_bps) for point in points]
  feasible = [i for i, latency in enumerate(predicted) if latency <= deadline_seconds]
  if feasible:
    return max(feasible, key=lambda i: (points[i].expected_accuracy, -points[i].bits, -i))
  return min(range(len(points)), key=lambda i: (predicted[i], i))


def adaptive_choices(trace: ChannelTrace, points: Sequence[OperatingPoint], *, arrival_seconds,
                     deadline_seconds: float, rate_margin: float = 1.0) -> np.ndarray:
  """int[N]: per clip, `choose_operating_point` at the rate of the slot in which the clip arrives.

  The device knows the channel state at the clip's start (fed back from the server) and nothing of
  the fading to come, nor of its own queue: the decision is made with that one rate. Where the
  channel's coherence time (~0.42 / f_D) is shorter than a transmission, that rate is as likely to
  be a peak as a fade, and the rule overreaches: on the default channel (35 ms coherence) with
  transmissions of ~50-100 ms it did worse than the best fixed point, and `rate_margin=0.7` (plan
  for 70% of the known rate) beat every fixed point over three seeds, scored by the comparison
  evaluate.py runs (tests/test_channel.py). With slow fading (coherence >> transmission) the rule
  is exact and `rate_margin=1` is right.
  """
  arrivals = np.atleast_1d(np.asarray(arrival_seconds, np.float64))
  return np.array([
      choose_operating_point(points, rate_bps=trace.rate_at(t), deadline_seconds=deadline_seconds,
                             rate_margin=rate_margin)
      for t in arrivals], np.int32)


def simulate_choices(trace: ChannelTrace, points: Sequence[OperatingPoint], choices, *,
                     arrival_seconds, deadlines_seconds: Sequence[float], correct_by_point,
                     bits_by_point=None,
                     queue: bool = True) -> tuple[list[DeadlineReport], list[LatencyBreakdown]]:
  """Sends each clip at its chosen point over `trace` and scores it against each deadline.

  `correct_by_point` is bool[N, P]: whether the classifier is right on clip n sent at point p, so
  the same measured predictions serve every policy (a fixed point is `choices = [p] * N`).
  `bits_by_point` is [N, P], the length of clip n's own bitstream at point p (what evaluation
  measured); None sends every clip at its point's mean `bits`. One latency simulation serves all
  deadlines, since the choices do not depend on them here. Raises `TraceEndedError` when the
  trace ends before the last clip is delivered (the link is saturated).
  """
  choices = np.asarray(choices)
  correct_by_point = np.asarray(correct_by_point)
  arrivals = np.atleast_1d(np.asarray(arrival_seconds, np.float64))
  shape = (arrivals.size, len(points))
  if correct_by_point.shape != shape or correct_by_point.dtype != np.bool_:
    raise ValueError(
        f"correct_by_point {correct_by_point.dtype}{list(correct_by_point.shape)}: expected "
        f"bool[{arrivals.size}, {len(points)}] (clips x operating points).")
  if bits_by_point is None:
    bits_by_point = np.broadcast_to(np.array([p.bits for p in points], np.float64), shape)
  bits_by_point = np.asarray(bits_by_point, np.float64)
  if bits_by_point.shape != shape:
    raise ValueError(
        f"bits_by_point of shape {list(bits_by_point.shape)}: expected [{arrivals.size}, "
        f"{len(points)}] (clips x operating points), or None for each point's mean bits.")
  if choices.shape != arrivals.shape or not ((choices >= 0) & (choices < len(points))).all():
    raise ValueError(f"choices must hold one operating point index in [0, {len(points)}) per clip.")
  clips = np.arange(arrivals.size)
  chosen = [points[i] for i in choices]
  latencies = clip_latencies(
      trace, bits=bits_by_point[clips, choices], arrival_seconds=arrivals,
      encode_seconds=[p.encode_seconds for p in chosen],
      decode_seconds=[p.decode_seconds for p in chosen],
      classify_seconds=[p.classify_seconds for p in chosen], queue=queue)
  correct = correct_by_point[clips, choices]
  reports = [accuracy_under_deadline(correct, latencies, float(d)) for d in deadlines_seconds]
  return reports, latencies
