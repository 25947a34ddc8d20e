"""The device client: a camera that compresses clips with a method's device half and offloads them.

A `Camera` is long-running: its codec is restored and every operating point's encoder compiled
once (`warm_up`), then clips are taken at a fixed capture rate (one every T / fps seconds, T the
clip's frames), each compressed (`codec.encode` + `codec.entropy_encode`) at the operating point
the policy picks and sent to the edge server as one `ClassifyRequest` while the next clip is
captured. Answers arrive asynchronously.

Policy. `fixed:<point>` always sends that point; `adaptive` is the rule evaluate.py scores
(`stae_jax.channel.choose_operating_point`, at `rate_margin` of the link-rate estimate, with each
point's bits, top-1 and step times as evaluate.py measured them in the workdir's results.json).
The estimate is the channel trace's rate at the clip's capture (the channel state fed back from the
server, as evaluate.py's comparison assumes) when a trace is replayed, else `rate_bps`.

The link. On loopback the bytes go at memory speed. A shaped link is either a network namespace
whose tbf rate follows the trace (`stae_jax.serving.link`; the client process runs inside it) or,
where that is not available, pacing (`pacing=True`): the client holds each request until the
trace says its last bit would have arrived (one FIFO link), then sends it over loopback.

Retries. A request refused as UNAVAILABLE (server draining or down), RESOURCE_EXHAUSTED (queue
full) or failing to connect is sent again with the same request id, up to `retries` times with a
growing back-off (at most 2 s) and not after `answer_timeout_seconds` past the clip's deadline; the server answers a retried id once (`stae_jax.serving.server`), and the camera
records the first answer per id.

Per clip the camera records (`ClipRecord`): capture time, bytes, the point, send start, answer
arrival, status, predicted and true label, whether it was correct and whether the deadline was met
(status OK and answer - capture <= deadline).
"""

from __future__ import annotations

import dataclasses
import json
import math
import queue as queue_lib
import threading
import time
import uuid
from typing import Callable, Iterable, Sequence

import grpc
import numpy as np

from stae_jax import channel as channel_lib
from stae_jax import systems
from stae_jax.systems import loading
from stae_jax.serving import protocol

RETRIABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


@dataclasses.dataclass(frozen=True)
class ClientOptions:
  fps: float = 30.0
  deadline_seconds: float = 0.5
  policy: str = "adaptive"         # "adaptive" or "fixed:<point name>"
  rate_margin: float = 0.7         # as deadlines.ChannelOptions
  rate_bps: float = 2.9e6          # the link-rate estimate where no trace is replayed
  pacing: bool = False             # hold each request for its transmission time on the trace
  max_clips: int = 0               # 0: every clip the source gives
  max_seconds: float = 300.0       # stop capturing after this long
  retries: int = 50
  retry_backoff_seconds: float = 0.2
  answer_timeout_seconds: float = 30.0  # per attempt, beyond the deadline

  def __post_init__(self):
    values = (self.fps, self.deadline_seconds, self.max_seconds)
    if not all(math.isfinite(v) and v > 0 for v in values):
      raise ValueError(f"ClientOptions fps={self.fps}, deadline_seconds={self.deadline_seconds}, "
                       f"max_seconds={self.max_seconds}: each must be a finite number > 0.")
    if not _is_policy(self.policy):
      raise ValueError(f"policy={self.policy!r}: use 'adaptive' or 'fixed:<point name>'.")


def _is_policy(text: str) -> bool:
  return text == "adaptive" or (text.startswith("fixed:") and len(text) > len("fixed:"))


def policies_for(values: Sequence[str], tags: Sequence[str]) -> dict[str, str]:
  """Each method's policy from the --policy values: 'adaptive' or 'fixed:<point>' for every
  method, or '<method>:adaptive' / '<method>:fixed:<point>' for one (the rest adaptive, or the
  bare value). A bare fixed point with several methods is refused: a point names one method's
  point (`keep=0.25x1` is STAE's, `frames=16,side=64,crf=35` H.264's)."""
  default, own = None, {}
  for value in values:
    if _is_policy(value):
      if default is not None:
        raise ValueError(f"--policy given twice for every method ({default!r}, {value!r})")
      default = value
      continue
    tag, _, policy = value.partition(":")
    if tag not in tags:
      raise ValueError(f"--policy={value!r}: {tag!r} is not one of the methods sent "
                       f"({', '.join(tags)}); write <method>:adaptive or <method>:fixed:<point>")
    if not _is_policy(policy):
      raise ValueError(f"--policy={value!r}: after '{tag}:' use 'adaptive' or 'fixed:<point>'")
    if tag in own:
      raise ValueError(f"--policy names {tag} twice")
    own[tag] = policy
  if default is not None and default != "adaptive" and len(tags) > 1:
    raise ValueError(f"--policy={default!r} would send one point name to {len(tags)} methods; "
                     f"give each its own: " + " ".join(f"--policy={t}:fixed:<point>" for t in tags))
  return {tag: own.get(tag, default or "adaptive") for tag in tags}


@dataclasses.dataclass
class ClipRecord:
  """One clip's journey (times in seconds since the epoch; answer_unix None: never answered)."""
  camera: str
  index: int
  method: str
  point: str
  request_id: str
  capture_unix: float
  encode_seconds: float
  bytes: int
  rate_estimate_bps: float
  send_start_unix: float = 0.0
  answer_unix: float | None = None
  status: str = "pending"          # ok, late, error, failed (no answer after the retries)
  error: str = ""
  label: int = -1                  # what the server answered
  true_label: int = -1             # the clip's label where the source knows it
  attempts: int = 0
  batch_size: int = 0
  deadline_seconds: float = 0.0

  @property
  def latency_seconds(self) -> float | None:
    return None if self.answer_unix is None else self.answer_unix - self.capture_unix

  @property
  def deadline_met(self) -> bool:
    return (self.status == "ok" and self.latency_seconds is not None
            and self.latency_seconds <= self.deadline_seconds)

  @property
  def correct(self) -> bool:
    return self.status == "ok" and self.true_label >= 0 and self.label == self.true_label

  def as_dict(self) -> dict:
    return dataclasses.asdict(self) | dict(latency_seconds=self.latency_seconds,
                                           deadline_met=self.deadline_met, correct=self.correct)


def channel_for(servers: str | Sequence[str]):
  """A gRPC channel to one server, or round robin over several (`host:port,host:port`)."""
  addresses = servers.split(",") if isinstance(servers, str) else list(servers)
  options = [("grpc.max_send_message_length", 64 << 20),
             ("grpc.max_receive_message_length", 64 << 20)]
  if len(addresses) == 1:
    return grpc.insecure_channel(addresses[0], options=options)
  target = "ipv4:" + ",".join(addresses)
  return grpc.insecure_channel(target, options=options + [("grpc.lb_policy_name", "round_robin")])


def wait_ready(stub: protocol.Stub, timeout_seconds: float = 120.0) -> protocol.HealthReply:
  """Polls Health until the server says ready (TimeoutError after `timeout_seconds`)."""
  stop = time.monotonic() + timeout_seconds
  last = "no answer"
  while time.monotonic() < stop:
    try:
      health = stub.Health(protocol.HealthRequest(), timeout=2.0)
      if health.ready:
        return health
      last = "not ready (compiling)"
    except grpc.RpcError as error:
      last = f"{error.code().name}: {error.details()}"
    time.sleep(0.2)
  raise TimeoutError(f"the server was not ready within {timeout_seconds:.0f} s ({last})")


class Encoder:
  """The device half of one codec: `__call__(clip, point) -> (stream, encode_seconds)`, measured.
  Compiles every point at batch 1 on `warm_up`."""

  def __init__(self, codec: systems.Codec):
    self.codec = codec

  def warm_up(self) -> None:
    clip = np.zeros((1,) + tuple(self.codec.clip_shape), np.uint8)
    for point in self.codec.points:
      self.codec.device(clip, point)

  def __call__(self, index: int, clip: np.ndarray, point: systems.Point) -> tuple[bytes, float]:
    del index
    started = time.perf_counter()
    stream = self.codec.device(clip[None], point).streams[0]
    return stream, time.perf_counter() - started


class ReplayEncoder:
  """Streams made once per (clip, point) by `Encoder`, replayed with their measured encode time.

  For load tests on one machine: N cameras' device compute would otherwise run on the server's
  cores. The camera still waits the measured encode time before it sends. Clips are given to the
  camera as clip ids (int) into `clips`."""

  def __init__(self, codec: systems.Codec, clips: Sequence[np.ndarray]):
    encoder = Encoder(codec)
    encoder.warm_up()
    self.codec = codec
    self._coded = {(i, p): encoder(i, clip, p) for i, clip in enumerate(clips)
                   for p in codec.points}

  def __call__(self, index: int, clip_id, point: systems.Point) -> tuple[bytes, float]:
    del index
    return self._coded[int(clip_id), point]


class Camera:
  """One device sending one method's clips to the edge server (module doc)."""

  def __init__(self, codec: systems.Codec, stub: protocol.Stub, options: ClientOptions, *,
               planned: Sequence[channel_lib.OperatingPoint] | None = None,
               trace: channel_lib.ChannelTrace | None = None, name: str = "camera0",
               encoder: Callable | None = None):
    self.codec, self.stub, self.options, self.trace, self.name = codec, stub, options, trace, name
    self.encoder = encoder or Encoder(codec)
    self.records: dict[str, ClipRecord] = {}
    self._lock = threading.Lock()
    self._outstanding = threading.Semaphore(0)
    self._sent = 0
    if options.policy == "adaptive":
      if planned is None:
        raise ValueError(f"the adaptive policy needs {codec.tag}'s measured operating points "
                         "(results.json of the workdir: run evaluate.py first), or use "
                         "policy='fixed:<point>'")
      names = [p.name for p in planned]
      if names != [p.name for p in codec.points]:
        raise ValueError(f"results.json lists {codec.tag} points {names}, this client built "
                         f"{[p.name for p in codec.points]}: leave out --crfs/--h264_preset (they "
                         "default to what evaluate.py measured), or re-run evaluate.py if the "
                         "workdir was retrained since")
      self._planned = list(planned)
      self._fixed = None
    else:
      self._fixed = codec.point(options.policy.removeprefix("fixed:"))
      self._planned = None
    self._link_free = 0.0
    self._start = None
    self._sender: queue_lib.Queue = queue_lib.Queue()

  # --- the policy -------------------------------------------------------------------------------

  def rate_estimate(self, seconds_since_start: float) -> float:
    if self.trace is not None:
      return self.trace.rate_at(min(seconds_since_start, self.trace.duration_seconds - 1e-9))
    return self.options.rate_bps

  def choose(self, rate_bps: float) -> systems.Point:
    if self._fixed is not None:
      return self._fixed
    index = channel_lib.choose_operating_point(
        self._planned, rate_bps=rate_bps, deadline_seconds=self.options.deadline_seconds,
        rate_margin=self.options.rate_margin)
    return self.codec.points[index]

  # --- running ----------------------------------------------------------------------------------

  def run(self, clips: Iterable[tuple[np.ndarray, int]], *, start_unix: float | None = None
          ) -> list[ClipRecord]:
    """Captures `clips` ((uint8 [T,H,W,3] clip, or a clip id for `ReplayEncoder`, label) pairs)
    at the capture rate from `start_unix`
    (default now), sends each, waits for every answer; returns the records in capture order."""
    frames = self.codec.clip_shape[0]
    interval = frames / self.options.fps
    self._start = start_unix or time.time()
    sender = threading.Thread(target=self._send_loop, name=f"{self.name}-sender", daemon=True)
    sender.start()
    ordered = []
    for index, (clip, label) in enumerate(clips):
      if self.options.max_clips and index >= self.options.max_clips:
        break
      capture = self._start + index * interval
      if capture - self._start > self.options.max_seconds:
        break
      delay = capture - time.time()
      if delay > 0:
        time.sleep(delay)
      # the slot of the clip's capture, from index x interval exactly as evaluate.py's simulation
      # takes it (start + t - start in float can land in the neighbouring 1 ms slot)
      rate = self.rate_estimate(index * interval)
      point = self.choose(rate)
      stream, encode_seconds = self.encoder(index, clip, point)
      record = ClipRecord(camera=self.name, index=index, method=self.codec.tag, point=point.name,
                          request_id=f"{self.name}-{index}-{uuid.uuid4().hex[:12]}",
                          capture_unix=capture, encode_seconds=encode_seconds, bytes=len(stream),
                          rate_estimate_bps=rate, true_label=int(label),
                          deadline_seconds=self.options.deadline_seconds)
      with self._lock:
        self.records[record.request_id] = record
      ordered.append(record)
      ready = max(time.time(), capture + encode_seconds)
      self._sender.put((record, stream) + self._send_time(ready, 8 * len(stream)))
    self._sender.put(None)
    sender.join()
    for _ in ordered:  # one release per record, when it is answered or given up
      self._outstanding.acquire(timeout=self.options.deadline_seconds
                                + self.options.answer_timeout_seconds)
    return ordered

  def _send_time(self, ready_unix: float, bits: int) -> tuple[float, float | None]:
    """(when the request goes out, when its first bit enters the link): at once, or (pacing) when
    its last bit would have arrived on the trace's FIFO link."""
    if not self.options.pacing or self.trace is None:
      return ready_unix, None
    start = max(ready_unix - self._start, self._link_free)
    transmit = self.trace.transmission_seconds(bits, start)
    self._link_free = start + transmit
    return self._start + self._link_free, self._start + start

  def _send_loop(self) -> None:
    while (item := self._sender.get()) is not None:
      record, stream, at, link_start = item
      delay = at - time.time()
      if delay > 0:
        time.sleep(delay)
      record.send_start_unix = time.time() if link_start is None else link_start
      request = protocol.ClassifyRequest(
          method=self.codec.tag, point=record.point, request_id=record.request_id,
          deadline_unix_seconds=record.capture_unix + self.options.deadline_seconds,
          stream=stream, fingerprint=self.codec.fingerprint() or "")
      self._attempt(record, request)

  def _attempt(self, record: ClipRecord, request) -> None:
    record.attempts += 1
    timeout = (max(request.deadline_unix_seconds - time.time(), 0)
               + self.options.answer_timeout_seconds)
    future = self.stub.Classify.future(request, timeout=timeout)
    future.add_done_callback(lambda f: self._answered(record, request, f))

  def _answered(self, record: ClipRecord, request, future) -> None:
    arrived = time.time()
    try:
      reply = future.result()
    except grpc.RpcError as error:
      give_up = (record.capture_unix + self.options.deadline_seconds
                 + self.options.answer_timeout_seconds)
      backoff = min(self.options.retry_backoff_seconds * record.attempts, 2.0)
      if (error.code() in RETRIABLE and record.attempts <= self.options.retries
          and time.time() + backoff < give_up):
        timer = threading.Timer(backoff,
                                self._attempt, (record, request))
        timer.daemon = True
        timer.start()
        return
      self._finish(record, arrived, "failed", error=f"{error.code().name}: {error.details()}")
      return
    self._finish(record, arrived, protocol.STATUS_NAMES[reply.status], error=reply.error,
                 label=reply.label if reply.status == protocol.OK else -1,
                 batch_size=reply.batch_size)

  def _finish(self, record: ClipRecord, arrived: float, status: str, **fields) -> None:
    with self._lock:
      if record.answer_unix is not None or record.status != "pending":
        return  # the first answer per request id counts
      record.answer_unix = arrived if status != "failed" else None
      record.status = status
      for key, value in fields.items():
        setattr(record, key, value)
    self._outstanding.release()


def summarize(records: Sequence[ClipRecord]) -> dict:
  """Counts, latency percentiles and deadline figures of a list of records."""
  answered = [r for r in records if r.latency_seconds is not None]
  latencies = np.array([r.latency_seconds for r in answered]) if answered else np.zeros(0)
  known = [r for r in records if r.true_label >= 0]
  out = dict(clips=len(records), answered=len(answered),
             ok=sum(r.status == "ok" for r in records),
             late=sum(r.status == "late" for r in records),
             errors=sum(r.status == "error" for r in records),
             failed=sum(r.status in ("failed", "pending") for r in records),
             deadline_hit_rate=(float(np.mean([r.deadline_met for r in records])) if records
                                else 0.0),
             accuracy_within_deadline=(float(np.mean([r.deadline_met and r.correct for r in known]))
                                       if known else None),
             mean_bytes=float(np.mean([r.bytes for r in records])) if records else 0.0)
  for q in (50, 95, 99):
    out[f"latency_p{q}_seconds"] = float(np.percentile(latencies, q)) if latencies.size else None
  return out


def write_records(records: Sequence[ClipRecord], path) -> None:
  with open(path, "w") as f:
    for record in records:
      f.write(json.dumps(record.as_dict()) + "\n")


def planned_points(workdir, tag: str) -> list[channel_lib.OperatingPoint] | None:
  """A method's operating points as evaluate.py measured them (None: no results.json for it)."""
  method = loading.results_method(workdir, tag)
  return None if method is None else loading.operating_points(method)
