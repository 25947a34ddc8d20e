"""The edge server: classifies compressed clips from many cameras, batching them on the accelerator.

One process serves every method of a workdir (each a `stae_jax.systems.Codec`; only the server
half is called: `entropy_decode`, `decode`, `classify`) over gRPC (`protocol.SERVICE`).

Requests. A `ClassifyRequest` names a method and one of its operating points, carries one clip's
bitstream, a client-chosen request id and a deadline. Everything in it is checked before it is
queued (the method and point must be served, the stream no longer than the codec's
`max_stream_bytes(point)`, the fingerprint, if sent, the served model's, the deadline a finite
time or 0) and the codec checks the stream itself, what its header declares against the point
before anything is decoded (`Codec.entropy_decode`); whatever is wrong is answered as an ERROR
that names the problem, and only that request fails. A message that is not a protobuf of the rpc
is answered INVALID_ARGUMENT with one log line (no traceback) and counted
(`stae_serving_malformed_total`).

Dynamic batching. Requests queue per (method, operating point). A batch starts when it holds
`max_batch` requests or when its oldest request has waited `max_wait_seconds`, whichever is first.
Batches run one at a time on one accelerator thread (the host entropy decoding included) and are
padded to the smallest of the fixed `batch_sizes` that holds them (padding repeats the last
stream), so the jitted decode and classify see a handful of shapes, all compiled before the server
says it is ready: nothing compiles under load (`stae_serving_compiles_total` counts XLA compiles in
the process). A request whose deadline has passed when its batch starts is answered LATE without
being decoded. If a batch fails to decode, each of its streams is decoded alone (at batch 1) to
find the bad ones; the others are batched again.

Idempotency. Answers are kept by request id (the last `answer_cache` ids): a retry of an id that is
queued waits for the same answer, a retry of an answered id gets that answer again; neither is
decoded or counted again (`stae_serving_retries_total` counts them). The same id with another
method, point or stream is an ERROR. The cache lives in the process: a restarted server, or
another replica, computes a retried request again (the same stream gives the same answer).

Stalled clients. The server runs on grpc.aio: a request occupies no thread until its whole message
has arrived, so a client that stops mid-message holds a coroutine and its bytes, not a worker.

Shutdown (`stop`): readiness turns false, new requests are refused with UNAVAILABLE (a client
retries them elsewhere), every accepted request is still answered, then the server stops.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import hashlib
import math
import threading
import time
from typing import Sequence

from absl import logging
import grpc
import jax
import numpy as np
import prometheus_client

from stae_jax import systems
from stae_jax.serving import protocol

#: jax.monitoring's event for one XLA compile (jax._src.dispatch.BACKEND_COMPILE_EVENT); with the
#: workdir's persistent compilation cache (`loading.use_compile_cache`) a load from the cache
#: counts too: what the count shows is that nothing new is compiled under load.
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compiles = 0
_compiles_lock = threading.Lock()
_listening = False


def _on_event(event: str, duration: float, **kwargs) -> None:
  del duration, kwargs
  global _compiles
  if event == COMPILE_EVENT:
    with _compiles_lock:
      _compiles += 1


def compile_count() -> int:
  """XLA compiles in this process since the first server (or this function) was created."""
  global _listening
  with _compiles_lock:
    if not _listening:
      jax.monitoring.register_event_duration_secs_listener(_on_event)
      _listening = True
    return _compiles


@dataclasses.dataclass(frozen=True)
class ServeOptions:
  """What serve.py's flags set."""
  max_batch: int = 8
  max_wait_seconds: float = 0.01
  #: The padded batch shapes (each compiled at start); None: 1, 2, 4, ... up to max_batch.
  batch_sizes: Sequence[int] | None = None
  max_queue: int = 256             # requests queued per (method, point) before RESOURCE_EXHAUSTED
  answer_cache: int = 65536        # request ids whose answers are kept for retries
  warmup: bool = True              # compile every (method, point, batch size) before ready
  grpc_workers: int = 4            # threads of grpc.aio's executor (not used by handlers)

  def __post_init__(self):
    if self.max_batch < 1 or self.max_wait_seconds < 0 or self.max_queue < 1:
      raise ValueError(f"ServeOptions max_batch={self.max_batch}, max_wait_seconds="
                       f"{self.max_wait_seconds}, max_queue={self.max_queue}: expected a batch of "
                       "at least 1, a wait >= 0 s and a queue of at least 1.")
    sizes = self.sizes()
    if sizes[0] != 1 or sizes[-1] != self.max_batch:
      raise ValueError(f"batch_sizes={list(sizes)} must include 1 (a stream is decoded alone to "
                       f"find a bad one) and end at max_batch={self.max_batch}.")

  def sizes(self) -> tuple[int, ...]:
    if self.batch_sizes is not None:
      return tuple(sorted({int(s) for s in self.batch_sizes}))
    sizes, size = [], 1
    while size < self.max_batch:
      sizes.append(size)
      size *= 2
    return tuple(sizes) + (self.max_batch,)

  def padded(self, n: int) -> int:
    return next(s for s in self.sizes() if s >= n)


class _Answer:
  """One accepted request id: what identifies it, and its (future) reply."""
  __slots__ = ("digest", "future", "method", "point")

  def __init__(self, digest, future, method, point):
    self.digest, self.future, self.method, self.point = digest, future, method, point


@dataclasses.dataclass
class _Pending:
  request: object
  answer: _Answer
  accepted: float  # time.monotonic()


class _Queue:
  """The requests of one (method, point) waiting for a batch, and an event set on each arrival."""

  def __init__(self):
    self.items: collections.deque[_Pending] = collections.deque()
    self.arrived = asyncio.Event()


def _digest(request) -> bytes:
  return hashlib.sha256(b"\0".join([request.method.encode(), request.point.encode(),
                                    request.stream])).digest()


def _error(request_id: str, message: str):
  return protocol.ClassifyReply(request_id=request_id, status=protocol.ERROR, error=message)


class Metrics:
  """The server's Prometheus metrics (its own registry, so several servers share a process)."""

  def __init__(self, sizes: Sequence[int]):
    self.registry = prometheus_client.CollectorRegistry()
    r = self.registry
    self.requests = prometheus_client.Counter(
        "stae_serving_requests", "Answered requests (each request id once).",
        ["method", "point", "status"], registry=r)
    self.retries = prometheus_client.Counter(
        "stae_serving_retries", "Requests whose id was already accepted (answered from the cache).",
        ["method"], registry=r)
    self.refused = prometheus_client.Counter(
        "stae_serving_refused", "Requests refused before acceptance (draining, queue full).",
        ["reason"], registry=r)
    self.batch_size = prometheus_client.Histogram(
        "stae_serving_batch_size", "Requests per batch run (before padding).", ["method"],
        buckets=tuple(float(s) for s in sizes), registry=r)
    self.padded_size = prometheus_client.Histogram(
        "stae_serving_padded_batch_size", "Padded shape of each batch run.", ["method"],
        buckets=tuple(float(s) for s in sizes), registry=r)
    seconds = (.001, .002, .005, .01, .02, .05, .1, .2, .5, 1., 2., 5.)
    self.queue = prometheus_client.Histogram(
        "stae_serving_queue_seconds", "Accepted -> its batch started.", ["method"], buckets=seconds,
        registry=r)
    self.decode = prometheus_client.Histogram(
        "stae_serving_decode_seconds", "entropy_decode + decode per batch.", ["method"],
        buckets=seconds, registry=r)
    self.classify = prometheus_client.Histogram(
        "stae_serving_classify_seconds", "classify per batch.", ["method"], buckets=seconds,
        registry=r)
    self.queued = prometheus_client.Gauge(
        "stae_serving_queued", "Requests waiting for a batch.", ["method"], registry=r)
    base = compile_count()
    compiles = prometheus_client.Gauge(
        "stae_serving_compiles", "XLA compiles in this process since the server was built.",
        registry=r)
    compiles.set_function(lambda: compile_count() - base)
    self.ready = prometheus_client.Gauge("stae_serving_ready", "1 when serving.", registry=r)
    self.malformed = prometheus_client.Counter(
        "stae_serving_malformed", "Messages that are not the rpc's protobuf (answered "
        "INVALID_ARGUMENT, one log line each).", ["rpc"], registry=r)

  def text(self) -> str:
    return prometheus_client.generate_latest(self.registry).decode()


class EdgeService:
  """The service behind `protocol.SERVICE`: validation, the answer cache, the batch queues."""

  def __init__(self, codecs: Sequence[systems.Codec], options: ServeOptions = ServeOptions()):
    self.options = options
    self.codecs = {c.tag: c for c in codecs if not c.skipped}
    if not self.codecs:
      raise ValueError("no method to serve: every codec given is skipped or none was given")
    self.metrics = Metrics(options.sizes())
    # Read at every scrape, so /metrics over HTTP is as current as the Health rpc.
    self.metrics.ready.set_function(lambda: float(self.ready and not self.draining))
    self._answers: collections.OrderedDict[str, _Answer] = collections.OrderedDict()
    self._queues: dict[tuple[str, systems.Point], _Queue] = {}
    self._collectors: dict[tuple[str, systems.Point], asyncio.Task] = {}
    self._accelerator = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="accelerator")
    self._loop: asyncio.AbstractEventLoop | None = None
    self.ready = False
    self.draining = False
    self.max_request_bytes = max(c.max_stream_bytes(p) for c in self.codecs.values()
                                 for p in c.points) + protocol.REQUEST_OVERHEAD_BYTES

  # --- start ------------------------------------------------------------------------------------

  def warm_up(self) -> int:
    """Runs every (method, point, padded batch size) once, so that serving compiles nothing.
    Returns the compiles it took (loads from the compilation cache included).

    Points whose codec says they share the server half's programs (`Codec.server_programs`:
    H.264's CRFs of one kept-frames x side cell) are warmed at every size once, the others of the
    key at the smallest size only: with the default's 75 H.264 points this cuts serve.py's second
    start (BENCHMARKS.md "Serving start-up"). `test_nothing_compiles_under_load` checks that a
    batch of every size of every point then compiles nothing."""
    before = compile_count()
    sizes = self.options.sizes()
    for codec in self.codecs.values():
      warmed = set()  # server_programs keys run at every size
      for point in codec.points:
        clip = np.zeros((1,) + tuple(codec.clip_shape), np.uint8)
        stream = codec.device(clip, point).streams[0]
        key = codec.server_programs(point)
        for size in sizes[:1] if key in warmed else sizes:
          codec.classify(codec.server([stream] * size, point))
        warmed.add(key)
    return compile_count() - before

  # --- the rpcs ---------------------------------------------------------------------------------

  async def Health(self, request, context):
    del request, context
    return protocol.HealthReply(
        live=True, ready=self.ready and not self.draining, draining=self.draining,
        max_batch=self.options.max_batch,
        methods=[protocol.MethodInfo(method=c.tag, label=c.label,
                                     points=[p.name for p in c.points],
                                     fingerprint=c.fingerprint() or "",
                                     max_request_bytes=max(c.max_stream_bytes(p) for p in c.points))
                 for c in self.codecs.values()])

  async def Metrics(self, request, context):
    del request, context
    return protocol.MetricsReply(text=self.metrics.text())

  async def Classify(self, request, context):
    rid = request.request_id
    if not rid or len(rid) > 128:
      return _error(rid[:128], f"request_id has {len(rid)} characters; send a unique id of 1 to "
                               "128 characters (a retry reuses it)")
    known = self._answers.get(rid)
    if known is not None:
      if known.digest != _digest(request):
        return _error(rid, f"request_id {rid!r} was already used for another request (method, "
                           "point or stream differ); use a fresh id for a new request")
      self.metrics.retries.labels(known.method).inc()
      return await asyncio.shield(known.future)
    if self.draining or not self.ready:
      self.metrics.refused.labels("draining" if self.draining else "not_ready").inc()
      await context.abort(grpc.StatusCode.UNAVAILABLE,
                          "the server is shutting down; retry (same request id) on another replica"
                          if self.draining else "the server is still starting (compiling); retry "
                          "when Health says ready")
    reply, codec, point = self._check(request)
    loop = asyncio.get_running_loop()
    method = codec.tag if codec else "unknown"
    answer = _Answer(_digest(request), loop.create_future(), method,
                     point.name if point else "unknown")
    if reply is None:
      key = (codec.tag, point)
      queue = self._queue(key)
      if len(queue.items) >= self.options.max_queue:
        self.metrics.refused.labels("queue_full").inc()
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"{len(queue.items)} requests already queued for {codec.tag} at "
                            f"{point.name}; retry later (same request id) or on another replica")
      self._remember(rid, answer)
      self.metrics.queued.labels(method).inc()
      queue.items.append(_Pending(request, answer, time.monotonic()))
      queue.arrived.set()
    else:
      self._remember(rid, answer)
      self._resolve(answer, reply)
    return await asyncio.shield(answer.future)

  # --- admission --------------------------------------------------------------------------------

  def _check(self, request):
    """(error reply or None, codec, point) for a request, without decoding anything."""
    rid = request.request_id
    codec = self.codecs.get(request.method)
    if codec is None:
      return _error(rid, f"unknown method {request.method[:40]!r}; this server serves: "
                         f"{', '.join(self.codecs)}"), None, None
    try:
      point = codec.point(request.point)
    except systems.DecodeError as error:
      return _error(rid, str(error)), codec, None
    limit = codec.max_stream_bytes(point)
    if not request.stream:
      return _error(rid, f"empty stream: send one clip's bitstream from {codec.tag}'s device "
                         "half"), codec, point
    if len(request.stream) > limit:
      return _error(rid, f"stream of {len(request.stream)} bytes; a {codec.tag} clip at "
                         f"{point.name} never needs more than {limit}: not a stream of this "
                         "model"), codec, point
    fingerprint = codec.fingerprint()
    if request.fingerprint and fingerprint is not None and request.fingerprint != fingerprint:
      return _error(rid, f"the stream comes from another model (fingerprint "
                         f"{request.fingerprint[:12]}..., this server's {codec.tag} is "
                         f"{fingerprint[:12]}...): use the workdir the server serves"), codec, point
    if not math.isfinite(request.deadline_unix_seconds):
      return _error(rid, f"deadline_unix_seconds is {request.deadline_unix_seconds}: send a "
                         "finite time (seconds since the epoch), or 0 for no deadline"
                    ), codec, point
    if request.deadline_unix_seconds and time.time() > request.deadline_unix_seconds:
      return protocol.ClassifyReply(request_id=rid, status=protocol.LATE,
                                    error="the deadline had passed when the request arrived"
                                    ), codec, point
    return None, codec, point

  def _remember(self, rid: str, answer: _Answer) -> None:
    self._answers[rid] = answer
    while len(self._answers) > self.options.answer_cache:
      oldest, entry = next(iter(self._answers.items()))
      if not entry.future.done():
        break  # never forget a request still in flight
      del self._answers[oldest]

  def _resolve(self, answer: _Answer, reply) -> None:
    """On the event loop: answer a request once, and count it."""
    if answer.future.done():
      return
    self.metrics.requests.labels(answer.method, answer.point,
                                 protocol.STATUS_NAMES[reply.status]).inc()
    answer.future.set_result(reply)

  def _queue(self, key) -> "_Queue":
    if key not in self._queues:
      self._queues[key] = _Queue()
      self._collectors[key] = asyncio.get_running_loop().create_task(self._collect(key))
    return self._queues[key]

  # --- batching ---------------------------------------------------------------------------------

  async def _collect(self, key) -> None:
    """Forms batches of one (method, point) and runs them on the accelerator thread, forever."""
    queue = self._queues[key]
    loop = asyncio.get_running_loop()
    size = self.options.max_batch
    while True:
      while not queue.items:
        queue.arrived.clear()
        await queue.arrived.wait()
      closes = queue.items[0].accepted + self.options.max_wait_seconds
      while len(queue.items) < size:
        left = closes - time.monotonic()
        if left <= 0:
          break
        queue.arrived.clear()
        try:
          await asyncio.wait_for(queue.arrived.wait(), left)
        except asyncio.TimeoutError:
          break
      batch = [queue.items.popleft() for _ in range(min(size, len(queue.items)))]
      self.metrics.queued.labels(key[0]).dec(len(batch))
      replies = await loop.run_in_executor(self._accelerator, self._run, key, batch)
      for pending, reply in zip(batch, replies):
        self._resolve(pending.answer, reply)

  def _run(self, key, batch: list[_Pending]) -> list:
    """On the accelerator thread: one batch -> one reply per request."""
    tag, point = key
    codec = self.codecs[tag]
    started_wall, started = time.time(), time.monotonic()
    replies: list = [None] * len(batch)
    live = []
    for i, pending in enumerate(batch):
      deadline = pending.request.deadline_unix_seconds
      if deadline and started_wall > deadline:
        replies[i] = protocol.ClassifyReply(
            request_id=pending.request.request_id, status=protocol.LATE,
            error=f"the deadline passed after {started - pending.accepted:.3f} s in the queue",
            queue_seconds=started - pending.accepted)
      else:
        live.append(i)
    try:
      self._decode_and_classify(codec, point, batch, live, replies, started)
    except Exception as error:  # pylint: disable=broad-except
      # A bug in a server half must not take the server down; every request still gets an answer.
      logging.exception("batch of %s at %s failed", tag, point.name)
      for i in live:
        if replies[i] is None:
          replies[i] = _error(batch[i].request.request_id,
                              f"internal error decoding this batch ({type(error).__name__}: "
                              f"{error}); the server keeps serving")
    return replies

  def _decode_and_classify(self, codec, point, batch, live, replies, started) -> None:
    if not live:
      return
    try:
      self._batch(codec, point, batch, live, replies, started)
      return
    except systems.DecodeError:
      pass
    good = []
    for i in live:  # find the streams that fail, each alone
      try:
        codec.decode(codec.entropy_decode([batch[i].request.stream], point), point)
        good.append(i)
      except systems.DecodeError as error:
        replies[i] = _error(batch[i].request.request_id, f"the stream does not decode as "
                            f"{codec.tag} at {point.name}: {error}")
    if good:
      self._batch(codec, point, batch, good, replies, started)

  def _batch(self, codec, point, batch, indices, replies, started) -> None:
    streams = [batch[i].request.stream for i in indices]
    padded = self.options.padded(len(streams))
    streams = streams + [streams[-1]] * (padded - len(streams))
    t0 = time.monotonic()
    clips = codec.decode(codec.entropy_decode(streams, point), point)
    t1 = time.monotonic()
    logits = np.asarray(codec.classify(clips), np.float32)
    t2 = time.monotonic()
    method = codec.tag
    self.metrics.batch_size.labels(method).observe(len(indices))
    self.metrics.padded_size.labels(method).observe(padded)
    self.metrics.decode.labels(method).observe(t1 - t0)
    self.metrics.classify.labels(method).observe(t2 - t1)
    for row, i in enumerate(indices):
      queued = started - batch[i].accepted
      self.metrics.queue.labels(method).observe(queued)
      replies[i] = protocol.ClassifyReply(
          request_id=batch[i].request.request_id, status=protocol.OK,
          label=int(np.argmax(logits[row])), logits=logits[row].tolist(), queue_seconds=queued,
          decode_seconds=t1 - t0, classify_seconds=t2 - t1, batch_size=len(indices),
          padded_size=padded)

  # --- stop -------------------------------------------------------------------------------------

  async def drain(self) -> None:
    """Refuses new requests and returns when every accepted one is answered."""
    self.draining = True
    pending = [a.future for a in self._answers.values() if not a.future.done()]
    if pending:
      await asyncio.wait(pending)

  def close(self) -> None:
    for task in self._collectors.values():
      task.cancel()
    self._accelerator.shutdown(wait=True)


class _Malformed:
  """A message that did not parse as its rpc's request: handed to the handler (which answers it)
  instead of raised in gRPC's deserializer, where each one cost a logged traceback."""
  __slots__ = ("error", "size")

  def __init__(self, error: Exception, size: int):
    self.error, self.size = error, size


def _parser(request_class):
  def parse(data: bytes):
    try:
      return request_class.FromString(data)
    except Exception as error:  # pylint: disable=broad-except
      return _Malformed(error, len(data))
  return parse


def _answering_malformed(service: EdgeService, rpc: str, request_class):
  """The rpc's handler, answering a `_Malformed` message with INVALID_ARGUMENT, one log line and
  a count (`stae_serving_malformed_total{rpc}`) before it reaches the handler."""
  handler = getattr(service, rpc)
  name = request_class.DESCRIPTOR.name

  async def handle(request, context):
    if isinstance(request, _Malformed):
      service.metrics.malformed.labels(rpc).inc()
      reason = f"{type(request.error).__name__}: {request.error}"[:200]
      logging.warning("malformed %s message (%d bytes) from %s: %r", rpc, request.size,
                      str(context.peer())[:100], reason)
      await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"the message ({request.size} bytes) is not a {name} ({reason}); "
                          "send one serialized with stae_jax.serving.protocol")
    return await handler(request, context)

  return handle


def _handlers(service: EdgeService) -> grpc.GenericRpcHandler:
  methods = {}
  for rpc in protocol.RPCS:
    request, reply = protocol.classes(rpc)
    methods[rpc] = grpc.unary_unary_rpc_method_handler(
        _answering_malformed(service, rpc, request), request_deserializer=_parser(request),
        response_serializer=reply.SerializeToString)
  return grpc.method_handlers_generic_handler(protocol.SERVICE, methods)


class Server:
  """An `EdgeService` on a grpc.aio server; use inside a running event loop.

    server = Server(codecs, options); port = await server.start("127.0.0.1:0"); ...;
    await server.stop()
  """

  def __init__(self, codecs: Sequence[systems.Codec], options: ServeOptions = ServeOptions()):
    self.service = EdgeService(codecs, options)
    self._server = None
    self.port = None

  async def start(self, address: str = "127.0.0.1:0", *, warmup: bool | None = None) -> int:
    """Listens on `address` (host:port, or several comma-separated; port 0 picks a free one, the
    same for all), compiles (unless warmup=False)
    and turns ready. Health answers "not ready" while it compiles. Returns the port."""
    limit = self.service.max_request_bytes
    self._server = grpc.aio.server(
        concurrent.futures.ThreadPoolExecutor(self.service.options.grpc_workers),
        options=[("grpc.max_receive_message_length", limit),
                 ("grpc.max_send_message_length", 1 << 20),
                 ("grpc.so_reuseport", 0)])
    self._server.add_generic_rpc_handlers((_handlers(self.service),))
    port = None
    for one in address.split(","):  # several host:port (e.g. loopback and a namespace link)
      if port is not None and one.endswith(":0"):
        one = f"{one.rsplit(':', 1)[0]}:{port}"  # the same free port on every host
      bound = self._server.add_insecure_port(one)
      if not bound:
        raise OSError(f"cannot listen on {one}: the address is in use or not this machine's")
      port = bound if port is None else port
    self.port = port
    await self._server.start()
    warm = self.service.options.warmup if warmup is None else warmup
    if warm:
      loop = asyncio.get_running_loop()
      compiles = await loop.run_in_executor(None, self.service.warm_up)
      logging.info("warm-up: %d compiles", compiles)
    self.service.ready = True
    return self.port

  async def stop(self, grace_seconds: float = 30.0) -> None:
    """Graceful: no new requests, every accepted one answered (within `grace_seconds`), stop."""
    try:
      await asyncio.wait_for(self.service.drain(), grace_seconds)
    except asyncio.TimeoutError:
      logging.warning("shutdown: requests still unanswered after %.0f s", grace_seconds)
    await self._server.stop(1.0)
    self.service.close()

  async def wait(self) -> None:
    await self._server.wait_for_termination()


class BackgroundServer:
  """A `Server` on its own event loop in a daemon thread (for tests and benchmarks in-process).

    with BackgroundServer(codecs, options) as server: ... server.address ...
  """

  def __init__(self, codecs: Sequence[systems.Codec], options: ServeOptions = ServeOptions(),
               address: str = "127.0.0.1:0"):
    self.server = Server(codecs, options)
    self.service = self.server.service
    self._address = address
    self._loop = asyncio.new_event_loop()
    self._thread = threading.Thread(target=self._loop.run_forever, name="edge-server", daemon=True)
    self.address = None

  def call(self, coroutine, timeout: float | None = None):
    """Runs `coroutine` on the server's loop and returns its result."""
    return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

  def start(self) -> "BackgroundServer":
    self._thread.start()
    port = self.call(self.server.start(self._address))
    self.address = f"{self._address.rsplit(':', 1)[0]}:{port}"
    return self

  def stop(self, grace_seconds: float = 30.0) -> None:
    if self._thread.is_alive():
      self.call(self.server.stop(grace_seconds))
      self._loop.call_soon_threadsafe(self._loop.stop)
      self._thread.join(10.0)

  def __enter__(self):
    return self.start()

  def __exit__(self, *exc):
    self.stop()
