"""The edge server and the device client on loopback, with the tiny trained workdir.

One server (every method of the workdir, H.264 at two CRFs) serves the whole module; each test
talks to it over gRPC as a client would.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import grpc
import numpy as np
import pytest

import evaluate_helpers
from stae_jax import channel as channel_lib
from stae_jax.coding import bitstream
from stae_jax.serving import client as client_lib
from stae_jax.serving import protocol
from stae_jax.serving import server as server_lib
from stae_jax.serving import sources
from stae_jax.systems import loading

pytestmark = pytest.mark.slow  # the module's server restores and compiles every method once

MAX_BATCH = 4
OPTIONS = server_lib.ServeOptions(max_batch=MAX_BATCH, max_wait_seconds=0.02,
                                  batch_sizes=(1, MAX_BATCH), grpc_workers=2)
BASELINES = dict(h264=dict(crfs=(23.0, 41.0)))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  workdir = evaluate_helpers.tiny_workdir(tmp_path_factory)
  config = evaluate_helpers.tiny_config()
  codecs = loading.load_codecs(workdir, baselines=BASELINES)
  server = server_lib.BackgroundServer(codecs, OPTIONS).start()
  channel = client_lib.channel_for(server.address)
  stub = protocol.Stub(channel)
  clips = sources.test_clips(config, max_clips=MAX_BATCH + 2,
                             loader_fn=evaluate_helpers.memory_loader)
  # Each clip's stream at every point, made at batch 1 (the shape the warm-up compiled).
  streams = {(c.tag, p): [c.device(clip[None], p).streams[0] for clip, _ in clips]
             for c in codecs for p in c.points}
  yield dict(server=server, stub=stub, codecs={c.tag: c for c in codecs}, clips=clips,
             streams=streams, workdir=workdir, config=config)
  channel.close()
  server.stop()


def _request(codec, clip, point, rid, deadline=0.0):
  stream = codec.device(clip[None], point).streams[0]
  return protocol.ClassifyRequest(method=codec.tag, point=point.name, request_id=rid,
                                  stream=stream, deadline_unix_seconds=deadline,
                                  fingerprint=codec.fingerprint() or "")


def _counter(text: str, name: str, **labels) -> float:
  """The value of one sample of a Prometheus text exposition (0 if absent)."""
  want = ",".join(f'{k}="{v}"' for k, v in labels.items())
  for line in text.splitlines():
    if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
      return float(line.rsplit(" ", 1)[1])
  return 0.0


def test_health_lists_every_method_and_points(served):
  health = served["stub"].Health(protocol.HealthRequest(), timeout=5)
  assert health.live and health.ready and not health.draining
  assert {m.method: list(m.points) for m in health.methods} == {
      tag: [p.name for p in c.points] for tag, c in served["codecs"].items()}
  assert {"stae", "deepisc", "h264", "raw"} <= {m.method for m in health.methods}


def test_cameras_on_loopback_get_evaluates_labels(served):
  """Camera clients (device half, fixed capture rate) -> server -> the labels evaluate.py gives the
  same clips (its round_trip: device half, server half, classifier, in one batch)."""
  from stae_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  clips = served["clips"][:4]
  video = np.stack([c for c, _ in clips])
  options = client_lib.ClientOptions(fps=200.0, deadline_seconds=30.0, max_clips=len(clips))
  warm = evaluate._Warm()  # pylint: disable=protected-access
  cameras, expected = [], {}
  for tag in ("stae", "deepisc", "h264"):
    codec = served["codecs"][tag]
    point = codec.points[-1]
    expected[tag] = evaluate.round_trip(codec, video, point, warm).logits
    cameras.append(client_lib.Camera(
        codec, served["stub"], dataclasses.replace(options, policy=f"fixed:{point.name}"),
        name=f"cam-{tag}"))
  results = {}
  threads = [threading.Thread(target=lambda c=c: results.__setitem__(c.codec.tag, c.run(clips)))
             for c in cameras]
  for t in threads:
    t.start()
  for t in threads:
    t.join(60)
  for tag, records in results.items():
    assert [r.status for r in records] == ["ok"] * len(clips), [r.error for r in records]
    labels = [r.label for r in records]
    assert labels == expected[tag].argmax(-1).tolist(), tag
    for r in records:
      assert r.capture_unix <= r.send_start_unix <= r.answer_unix and r.bytes > 0
      assert r.deadline_met and r.true_label == clips[r.index][1]
  assert set(results) == {"stae", "deepisc", "h264"}


def _huge_clip_header(tables) -> bytes:
  """A well-formed STAE header (valid CRC) claiming 16 x 16 kept blocks of 1000 x 1000 latents."""
  flags = 1 | 2 | (2 << 2)
  version = bitstream.CONTEXT_VERSION if tables.conditional else bitstream.VERSION
  body = (bytes([bitstream.MAGIC | version, flags])
          + bytes.fromhex(tables.table_hash)[:2]
          + b"".join(bitstream._varint(v) for v in (16, 16, 16, 16, 1000, 1000)))  # pylint: disable=protected-access
  body += b"\0" * ((-len(body)) % 4)
  return body + struct.pack("<I", zlib.crc32(body, bitstream._crc_seed(tables)))  # pylint: disable=protected-access


def test_faults_beside_good_clients(served):
  """A fuzzing client sends every kind of bad request while cameras send good ones: each bad one
  gets an error naming its problem, the good ones all get their right answer."""
  stub, codecs, clips = served["stub"], served["codecs"], served["clips"]
  stae, deepisc, h264 = codecs["stae"], codecs["deepisc"], codecs["h264"]
  good_stream = _request(stae, clips[0][0], stae.points[0], "x").stream
  rng = np.random.default_rng(0)
  max_bytes = stae.max_stream_bytes(stae.points[0])
  bad = {
      "random": (dict(method="stae", point=stae.points[0].name,
                      stream=rng.integers(0, 256, 200, np.uint8).tobytes()), "does not decode"),
      "truncated": (dict(method="stae", point=stae.points[0].name, stream=good_stream[:-7]),
                    "does not decode"),
      "other_model": (dict(method="deepisc", point=deepisc.points[0].name, stream=good_stream),
                      "other tables"),
      "foreign_fingerprint": (dict(method="stae", point=stae.points[0].name, stream=good_stream,
                                   fingerprint="ab" * 32), "another model"),
      "huge_clip": (dict(method="stae", point=stae.points[0].name,
                         stream=_huge_clip_header(stae.tables)), "header claims"),
      "unknown_method": (dict(method="mpeg9", point="x", stream=b"abc"), "unknown method"),
      "unknown_point": (dict(method="stae", point="keep=9x9", stream=good_stream),
                        "is not one 'stae'"),
      "too_long_for_point": (dict(method="stae", point=stae.points[0].name,
                                  stream=bytes(max_bytes + 1)), "never needs more than"),
      "h264_garbage": (dict(method="h264", point=h264.points[0].name,
                            stream=b"\0\0\1" + bytes(300)), "does not decode"),
      "empty": (dict(method="raw", point="uint8", stream=b""), "empty stream"),
  }
  errors = {}

  def fuzz():
    for round_ in range(3):
      for name, (fields, _) in bad.items():
        reply = stub.Classify(protocol.ClassifyRequest(request_id=f"fuzz-{round_}-{name}",
                                                       **fields), timeout=30)
        errors.setdefault(name, []).append((reply.status, reply.error))
      try:  # bigger than any request the server accepts: refused by gRPC itself
        huge = bytes(served["server"].service.max_request_bytes + 1)
        stub.Classify(protocol.ClassifyRequest(method="raw", point="uint8",
                                               request_id=f"fuzz-{round_}-oversized", stream=huge),
                      timeout=30)
        errors.setdefault("oversized", []).append((None, "accepted"))
      except grpc.RpcError as error:
        errors.setdefault("oversized", []).append((error.code(), error.details()))

  options = client_lib.ClientOptions(fps=400.0, deadline_seconds=30.0, max_clips=len(clips))
  cameras = [client_lib.Camera(c, stub, dataclasses.replace(options,
                                                             policy=f"fixed:{c.points[0].name}"),
                               name=f"good-{c.tag}") for c in (stae, deepisc, h264)]
  records = {}
  threads = [threading.Thread(target=fuzz)] + [
      threading.Thread(target=lambda c=c: records.__setitem__(c.name, c.run(clips)))
      for c in cameras]
  for t in threads:
    t.start()
  for t in threads:
    t.join(90)
  for name, (_, needle) in bad.items():
    assert [s for s, _ in errors[name]] == [protocol.ERROR] * 3, (name, errors[name])
    assert all(needle in e for _, e in errors[name]), (name, errors[name])
  assert all(code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details
             for code, details in errors["oversized"]), errors["oversized"]
  for camera in cameras:  # zero dropped, zero wrong: each equals its server half alone
    mine = records[camera.name]
    assert len(mine) == len(clips) and all(r.status == "ok" for r in mine), mine
    point = camera.codec.points[0]
    want = [int(camera.codec.classify(camera.codec.server([s], point)).argmax())
            for s in served["streams"][camera.codec.tag, point]]
    assert [r.label for r in mine] == want, camera.name
  assert served["stub"].Health(protocol.HealthRequest(), timeout=5).ready


def test_idempotent_retry_is_answered_once_and_counted_once(served):
  stub, stae = served["stub"], served["codecs"]["stae"]
  request = _request(stae, served["clips"][1][0], stae.points[0], "retry-1")
  metrics = lambda: stub.Metrics(protocol.MetricsRequest(), timeout=5).text  # pylint: disable=unnecessary-lambda-assignment
  before = metrics()
  first = [stub.Classify.future(request, timeout=30) for _ in range(3)]  # concurrent retries
  replies = [f.result() for f in first] + [stub.Classify(request, timeout=30)]  # a later retry
  assert all(r == replies[0] for r in replies) and replies[0].status == protocol.OK
  after = metrics()
  labels = dict(method="stae", point=stae.points[0].name, status="ok")
  assert (_counter(after, "stae_serving_requests_total", **labels)
          - _counter(before, "stae_serving_requests_total", **labels)) == 1
  assert (_counter(after, "stae_serving_retries_total", method="stae")
          - _counter(before, "stae_serving_retries_total", method="stae")) == 3
  other = protocol.ClassifyRequest()
  other.CopyFrom(request)
  other.stream = _request(stae, served["clips"][2][0], stae.points[0], "x").stream
  reused = stub.Classify(other, timeout=30)
  assert reused.status == protocol.ERROR and "already used for another request" in reused.error


def test_nothing_compiles_under_load(served):
  """Batches of every size from 1 to beyond max_batch, every method and point: no new compile."""
  stub, codecs, clips = served["stub"], served["codecs"], served["clips"]
  requests = []
  for tag, codec in codecs.items():
    for point in codec.points:
      streams = served["streams"][tag, point]
      for n in (1, 2, 3, len(streams)):  # bursts of n: batches of 1..max_batch, and a rest
        requests.append([protocol.ClassifyRequest(
            method=tag, point=point.name, request_id=f"compile-{tag}-{point.name}-{n}-{i}",
            stream=s) for i, s in enumerate(streams[:n])])
  before = server_lib.compile_count()
  sizes = set()
  for burst in requests:
    replies = [f.result() for f in [stub.Classify.future(r, timeout=60) for r in burst]]
    assert all(r.status == protocol.OK for r in replies), [r.error for r in replies]
    sizes |= {(r.batch_size, r.padded_size) for r in replies}
  assert server_lib.compile_count() == before
  assert {p for _, p in sizes} == {1, MAX_BATCH} and max(b for b, _ in sizes) > 1


def test_late_requests_are_answered_late_without_compute(served):
  stub, stae = served["stub"], served["codecs"]["stae"]
  request = _request(stae, served["clips"][0][0], stae.points[0], "late-1",
                     deadline=time.time() - 0.01)
  reply = stub.Classify(request, timeout=10)
  assert reply.status == protocol.LATE and "deadline" in reply.error and not reply.logits
  assert reply.batch_size == 0  # never batched, never decoded


def test_stalled_clients_hold_no_worker(served):
  """Connections that open a Classify call and never finish its message (more of them than the
  server has threads) do not delay a well-behaved request."""
  host, port = served["server"].address.rsplit(":", 1)
  stalled = []
  for _ in range(2 * OPTIONS.grpc_workers + 2):
    sock = socket.create_connection((host, int(port)), timeout=5)
    # HTTP/2 preface, an empty SETTINGS frame, then a gRPC message prefix promising 1000 bytes on
    # a stream that was never opened properly: the server must wait or reset, holding no thread.
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0\0\0\x04\0\0\0\0\0")
    stalled.append(sock)
  stalled_calls = []
  channel = client_lib.channel_for(served["server"].address)
  stub = protocol.Stub(channel)
  release = threading.Event()

  def never_finishing():  # a real gRPC call whose request message never arrives
    release.wait(30)
    yield protocol.ClassifyRequest(request_id="never").SerializeToString()

  call = channel.stream_unary(protocol.path("Classify"), request_serializer=lambda b: b,
                              response_deserializer=protocol.ClassifyReply.FromString)
  for _ in range(2 * OPTIONS.grpc_workers + 2):
    stalled_calls.append(call.future(never_finishing(), timeout=40))
  time.sleep(0.3)
  stae = served["codecs"]["stae"]
  started = time.monotonic()
  reply = served["stub"].Classify(_request(stae, served["clips"][0][0], stae.points[0],
                                           "after-stall"), timeout=10)
  assert reply.status == protocol.OK and time.monotonic() - started < 5
  release.set()
  for sock in stalled:
    sock.close()
  for f in stalled_calls:
    f.cancel()
  channel.close()


def test_graceful_shutdown_answers_every_accepted_request(served):
  stae = served["codecs"]["stae"]
  server = server_lib.BackgroundServer(list(served["codecs"].values()),
                                       server_lib.ServeOptions(max_batch=MAX_BATCH,
                                                               max_wait_seconds=0.2,
                                                               batch_sizes=(1, MAX_BATCH),
                                                               warmup=False)).start()
  channel = client_lib.channel_for(server.address)
  stub = protocol.Stub(channel)
  streams = served["streams"]["stae", stae.points[0]]
  futures = [stub.Classify.future(protocol.ClassifyRequest(
      method="stae", point=stae.points[0].name, request_id=f"drain-{i}", stream=s), timeout=30)
             for i, s in enumerate(streams)]
  time.sleep(0.05)  # accepted, still waiting for their batch (max_wait 0.2 s)
  stopper = threading.Thread(target=server.stop)
  stopper.start()
  replies = [f.result() for f in futures]
  stopper.join(30)
  assert [r.status for r in replies] == [protocol.OK] * len(streams)
  with pytest.raises(grpc.RpcError) as refused:
    stub.Classify(protocol.ClassifyRequest(method="stae", point=stae.points[0].name,
                                           request_id="after", stream=streams[0]), timeout=5)
  assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
  channel.close()


def test_metrics_are_prometheus_text_per_method(served):
  text = served["stub"].Metrics(protocol.MetricsRequest(), timeout=5).text
  for name in ("stae_serving_batch_size_bucket", "stae_serving_queue_seconds_count",
               "stae_serving_decode_seconds_sum", "stae_serving_classify_seconds_count"):
    assert any(line.startswith(name + '{') and 'method="stae"' in line
               for line in text.splitlines()), name
  assert "# TYPE stae_serving_requests_total counter" in text
  assert _counter(text, "stae_serving_compiles") >= 0


def test_adaptive_camera_picks_what_the_channel_policy_picks(served):
  """The camera's choice is channel.adaptive_choices' for the same trace and capture times."""
  stae = served["codecs"]["stae"]
  planned = [channel_lib.OperatingPoint(name=p.name, bits=800.0 * (i + 1),
                                        expected_accuracy=0.5 + 0.1 * i, encode_seconds=0.01)
             for i, p in enumerate(stae.points)]
  trace = channel_lib.ChannelTrace.generate(5.0, channel_lib.ChannelConfig(
      bandwidth_hz=2e4, mean_snr_db=10.0), seed=3)
  options = client_lib.ClientOptions(deadline_seconds=0.2, policy="adaptive")
  camera = client_lib.Camera(stae, served["stub"], options, planned=planned, trace=trace)
  times = np.arange(30) * 0.13
  chosen = [stae.points.index(camera.choose(camera.rate_estimate(t))) for t in times]
  want = channel_lib.adaptive_choices(trace, planned, arrival_seconds=times,
                                      deadline_seconds=0.2, rate_margin=options.rate_margin)
  assert chosen == want.tolist() and len(set(chosen)) > 1
  with pytest.raises(ValueError, match="results.json"):
    client_lib.Camera(stae, served["stub"], options, planned=None)


def test_camera_retries_with_the_same_ids_until_the_server_takes_them(served):
  """While the server refuses (UNAVAILABLE: not ready, as after a restart) the camera retries
  each clip with its request id; every clip is answered once and counted once."""
  service, stae = served["server"].service, served["codecs"]["stae"]
  point = stae.points[0]
  text = lambda: served["stub"].Metrics(protocol.MetricsRequest(), timeout=5).text  # pylint: disable=unnecessary-lambda-assignment
  labels = dict(method="stae", point=point.name, status="ok")
  before = _counter(text(), "stae_serving_requests_total", **labels)
  service.ready = False
  threading.Timer(0.6, lambda: setattr(service, "ready", True)).start()
  options = client_lib.ClientOptions(fps=200.0, deadline_seconds=30.0, max_clips=3,
                                     policy=f"fixed:{point.name}", retry_backoff_seconds=0.2)
  records = client_lib.Camera(stae, served["stub"], options, name="retrying").run(
      served["clips"][:3])
  assert [r.status for r in records] == ["ok"] * 3 and all(r.attempts > 1 for r in records)
  assert _counter(text(), "stae_serving_requests_total", **labels) - before == 3


@pytest.mark.real_data
def test_video_files_become_clips_of_the_model_shape(served, real_data):
  clips = sources.video_clips(
      [real_data / "hmdb51/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi"],
      served["config"].data)
  assert [(c.shape, c.dtype, label) for c, label in clips] == [
      (tuple(served["codecs"]["stae"].clip_shape), np.uint8, -1)]
  with pytest.raises(ValueError):
    sources.video_clips([real_data / "no_such_video.avi"], served["config"].data)


def test_policies_are_per_method_and_options_finite():
  tags = ["stae", "h264"]
  assert client_lib.policies_for(["adaptive"], tags) == dict(stae="adaptive", h264="adaptive")
  assert client_lib.policies_for(
      ["stae:fixed:keep=1x0.25", "h264:fixed:frames=16,side=64,crf=35"], tags) == dict(
          stae="fixed:keep=1x0.25", h264="fixed:frames=16,side=64,crf=35")
  assert client_lib.policies_for(["stae:fixed:keep=1x1"], tags) == dict(
      stae="fixed:keep=1x1", h264="adaptive")
  assert client_lib.policies_for(["fixed:keep=1x1"], ["stae"]) == dict(stae="fixed:keep=1x1")
  with pytest.raises(ValueError, match="one point name to 2 methods.*--policy=h264:fixed"):
    client_lib.policies_for(["fixed:keep=1x1"], tags)
  with pytest.raises(ValueError, match="'deepisc' is not one of the methods sent"):
    client_lib.policies_for(["deepisc:adaptive"], tags)
  with pytest.raises(ValueError, match="after 'stae:'"):
    client_lib.policies_for(["stae:fixed:"], tags)
  for bad in (float("nan"), float("inf"), -1.0):
    with pytest.raises(ValueError, match="finite number > 0"):
      client_lib.ClientOptions(deadline_seconds=bad)


def test_tools_keep_their_compiles_in_the_workdir(tmp_path):
  """`use_compile_cache`: what a tool compiles lands under <workdir>/compile_cache, and the next
  process loads it from there (serve.py's second start; BENCHMARKS.md "Serving start-up")."""
  script = (
      "import sys, jax, jax.numpy as jnp\n"
      "from stae_jax.systems import loading\n"
      "assert loading.use_compile_cache(sys.argv[1] + '/missing') is None\n"
      "print(loading.use_compile_cache(sys.argv[1]))\n"
      "jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()\n")
  out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                       text=True, timeout=120, check=True)
  assert out.stdout.strip() == str(tmp_path / "compile_cache")
  entries = sorted(p.name for p in (tmp_path / "compile_cache").iterdir())
  assert any(name.startswith("jit_") for name in entries), entries
  assert not (tmp_path / "missing").exists()


def test_serving_loads_a_run_without_evaluation_or_training(served):
  """serve.py's and client.py's path (issue 29, item 5): importing the serving package and loading
  every codec of a workdir (`loading.load_codecs`: classifier, trained systems, baselines with
  results.json's grid; and the device halves only, as client.py loads them) imports nothing of
  `stae_jax.evaluation` or `stae_jax.training`."""
  script = (
      "import sys\n"
      "from stae_jax.serving import client, clip_tools, link, protocol, server, sources\n"
      "from stae_jax.systems import loading\n"
      "codecs = loading.load_codecs(sys.argv[1], baselines={'h264': {'crfs': (41.0,)}})\n"
      "device = loading.load_codecs(sys.argv[1], ['stae', 'h264'], device_only=True)\n"
      "assert [c.tag for c in device] == ['stae', 'h264'], device\n"
      "client.planned_points(sys.argv[1], 'stae')  # results.json, where evaluate.py wrote one\n"
      "print(sorted({c.tag for c in codecs}))\n"
      "print(sorted(m for m in sys.modules if m.startswith(('stae_jax.evaluation', "
      "'stae_jax.training'))))\n")
  out = subprocess.run([sys.executable, "-c", script, str(served["workdir"])],
                       capture_output=True, text=True, timeout=300, check=True)
  tags, imported = out.stdout.strip().splitlines()[-2:]
  assert tags == str(sorted(served["codecs"])), (tags, sorted(served["codecs"]))
  assert imported == "[]", imported
