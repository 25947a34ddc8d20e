r"""The edge server under load, and offloading over a shaped link, for BENCHMARKS.md "Serving load".

  python benchmarks/serve_load.py --config=configs/synthetic.py --workdir=/tmp/after_job \
      [--methods=stae,deepisc,h264] [--cameras=1,4,16,64] [--seconds=8] [--deadline=0.5] \
      [--replicas_method=stae] [--shaped_clips=40] [--output=serve_load.json]

1. Load on loopback. serve.py runs as its own process (every method of the workdir listed in
   --methods). For each method and each camera count N, N cameras (threads of this process) each
   capture a clip every T/fps s for --seconds, pick the operating point with the adaptive policy
   (rate estimate from their own channel trace: camera i replays seed i at --snr_db, the same
   traces for every method) and send it. The device half is replayed (`client.ReplayEncoder`):
   each test clip was encoded once per point, and a camera sends a clip its measured encode time
   after capture, so the cameras' compute does not run on the server's two cores. Reported per
   run: offered and served clips/s, end-to-end latency (capture -> answer) p50/p95/p99, deadline
   hit rate, accuracy within the deadline, and the server's batch-size histogram (its metrics).
   A method saturates at the first N whose served rate is under 90% of the offered rate or whose
   deadline hit rate is under 90%.
2. Two replicas: --replicas_method runs again at every N against two serve.py processes behind
   gRPC's client-side round robin (the same machine: they share its cores). Failover: then
   --failover_cameras cameras run against both and replica 2 is SIGKILLed 2 s in; its requests
   fail, the cameras retry them with the same request ids and round robin takes them to replica
   1. Reported: clips, distinct request ids (one record per id), answered, retried, late.
3. The shaped link: one camera per method runs client.py inside a network namespace whose tbf
   uplink replays one channel trace (stae_jax/serving/link.py; every method the same trace), for
   --shaped_clips clips; where namespaces are not available (not root) the client paces instead,
   and the output says so. Its measured deadline accuracy is set beside what evaluate.py's channel
   model predicts for the same clips, trace, policy and deadline (from the workdir's results.json).

--phases picks among load, replicas, failover, shaped. Every loop is bounded: runs by --seconds of capture and a fixed drain timeout, servers by a start
timeout. Prints one JSON document (and writes it to --output) plus markdown tables.
"""

from __future__ import annotations

import json
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from stae_jax import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))  # configs/ is a folder of the checkout, not an installed package

_CONFIG = config_flags.DEFINE_config_file("config", str(REPO_ROOT / "configs" / "synthetic.py"),
                                          "Experiment config (file.py:switches).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "A trained and evaluated workdir.", required=True)
_METHODS = flags.DEFINE_list("methods", ["stae", "deepisc", "h264"], "Methods to load.")
_CAMERAS = flags.DEFINE_list("cameras", ["1", "4", "16", "64"], "Concurrent camera counts.")
_SECONDS = flags.DEFINE_float("seconds", 8.0, "Capture time per run (s).")
_FPS = flags.DEFINE_float("fps", 30.0, "Capture frame rate (a clip every T/fps s).")
_DEADLINE = flags.DEFINE_float("deadline", 0.5, "Deadline, capture to answer (s).")
_SNR = flags.DEFINE_float("snr_db", 10.0, "Mean SNR of the channel traces (dB).")
_CLIPS = flags.DEFINE_integer("clips", 32, "Distinct test clips the cameras cycle through.")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 8, "Server max batch.")
_MAX_WAIT = flags.DEFINE_float("max_wait_ms", 10.0, "Server max wait (ms).")
_REPLICAS_METHOD = flags.DEFINE_string("replicas_method", "stae",
                                       "Run this method once more on two replicas ('' : skip).")
_SHAPED = flags.DEFINE_integer("shaped_clips", 40,
                               "Clips per method over the shaped link (0: skip).")
_SHAPED_DEADLINE = flags.DEFINE_float("shaped_deadline", 0.1,
                                      "Deadline of the shaped-link runs (s).")
_SHAPED_SNR = flags.DEFINE_float("shaped_snr_db", 0.0, "Mean SNR of the shaped link's trace (dB).")
_PHASES = flags.DEFINE_list("phases", ["load", "replicas", "failover", "shaped"],
                            "What to run (module doc).")
_FAILOVER_CAMERAS = flags.DEFINE_integer("failover_cameras", 16,
                                         "Cameras of the failover run (two replicas, one killed).")
_START_TIMEOUT = flags.DEFINE_float("start_timeout", 900.0, "Longest a server may take to start.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the JSON here.")

DRAIN_SECONDS = 60.0


def _config_arg() -> str:
  for arg in sys.argv[1:]:
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
  return str(REPO_ROOT / "configs" / "synthetic.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start_server(addresses: str, methods, log_path) -> subprocess.Popen:
  argv = [sys.executable, str(REPO_ROOT / "serve.py"), f"--config={_config_arg()}",
          f"--workdir={_WORKDIR.value}", f"--address={addresses}",
          f"--methods={','.join(methods)}", f"--max_batch={_MAX_BATCH.value}",
          f"--max_wait_ms={_MAX_WAIT.value}"]
  return subprocess.Popen(argv, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)


def _wait_ready(address: str, process: subprocess.Popen):
  from stae_jax.serving import client as client_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.serving import protocol  # pylint: disable=g-import-not-at-top
  channel = client_lib.channel_for(address)
  try:
    stop = time.monotonic() + _START_TIMEOUT.value
    while time.monotonic() < stop:
      if process.poll() is not None:
        raise RuntimeError(f"serve.py exited with {process.returncode} before it was ready")
      try:
        return client_lib.wait_ready(protocol.Stub(channel), timeout_seconds=10.0)
      except TimeoutError:
        continue
    raise TimeoutError(f"serve.py at {address} not ready within {_START_TIMEOUT.value:.0f} s")
  finally:
    channel.close()


def _stop(process: subprocess.Popen) -> None:
  if process.poll() is None:
    process.terminate()  # SIGTERM: graceful
    try:
      process.wait(60)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait(10)


def _batch_histogram(text: str, method: str) -> dict[int, float]:
  """Cumulative `stae_serving_batch_size_bucket` counts of one method -> {size: batches}."""
  cumulative = {}
  for line in text.splitlines():
    m = re.match(r'stae_serving_batch_size_bucket\{le="([^"]+)",method="([^"]+)"\} (\S+)', line)
    if m and m.group(2) == method and m.group(1) != "+Inf":
      cumulative[int(float(m.group(1)))] = float(m.group(3))
  sizes = sorted(cumulative)
  return {s: cumulative[s] - (cumulative[sizes[i - 1]] if i else 0.0) for i, s in enumerate(sizes)}


def _histograms(stubs, method: str) -> dict[int, float]:
  """The batch-size histogram of `method` summed over the replicas (each scraped directly)."""
  from stae_jax.serving import protocol  # pylint: disable=g-import-not-at-top
  total: dict[int, float] = {}
  for stub in stubs:
    for size, count in _batch_histogram(stub.Metrics(protocol.MetricsRequest(), timeout=10).text,
                                        method).items():
      total[size] = total.get(size, 0.0) + count
  return total


def _run_load(stub, replica_stubs, codec, encoder, planned, clips, traces, cameras: int, *,
              kill=None) -> dict:
  """`cameras` cameras of one method for --seconds; `kill=(process, seconds)` SIGKILLs that
  server process that long after the first capture (the failover run)."""
  from stae_jax.serving import client as client_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.serving import protocol  # pylint: disable=g-import-not-at-top
  interval = codec.clip_shape[0] / _FPS.value
  per_camera = max(1, int(_SECONDS.value / interval))
  options = client_lib.ClientOptions(
      fps=_FPS.value, deadline_seconds=_DEADLINE.value, policy="adaptive",
      max_clips=per_camera, max_seconds=_SECONDS.value, answer_timeout_seconds=DRAIN_SECONDS)
  hist_before = _histograms(replica_stubs, codec.tag)
  start = time.time() + 0.5
  records = {}
  threads = []
  for i in range(cameras):
    ids = [((i * 7 + k) % len(clips), clips[(i * 7 + k) % len(clips)][1])
           for k in range(per_camera)]
    camera = client_lib.Camera(codec, stub, options, planned=planned, trace=traces[i],
                               name=f"{codec.tag}{i}", encoder=encoder)
    phase = start + interval * i / cameras  # cameras are not in step: spread over one interval
    threads.append(threading.Thread(target=lambda c=camera, ids=ids, s=phase: records.__setitem__(
        c.name, c.run(ids, start_unix=s))))
  for t in threads:
    t.start()
  killer = None
  if kill is not None:
    killer = threading.Timer(max(0.0, start + kill[1] - time.time()), kill[0].kill)
    killer.start()
  for t in threads:
    t.join(_SECONDS.value + DRAIN_SECONDS + 30)
  if killer is not None:
    killer.cancel()
  hist_after = _histograms(replica_stubs, codec.tag)
  flat = [r for rs in records.values() for r in rs]
  summary = client_lib.summarize(flat)
  answered = [r for r in flat if r.status == "ok"]
  # served rate: answers over the time from the first capture to the last answer (at least the
  # capture window, so that a run's tail does not read as more than was offered)
  span = (max(max(r.answer_unix for r in answered) - start, per_camera * interval) if answered
          else 1.0)
  summary.update(
      method=codec.tag, cameras=cameras, offered_clips_per_second=cameras / interval,
      capture_seconds=per_camera * interval,
      served_clips_per_second=len(answered) / span if answered else 0.0,
      batch_histogram={s: int(hist_after.get(s, 0) - hist_before.get(s, 0)) for s in hist_after},
      points={p: sum(r.point == p for r in flat) for p in {r.point for r in flat}},
      retried=sum(r.attempts > 1 for r in flat),
      request_ids=len({r.request_id for r in flat}))
  summary["saturated"] = bool(summary["served_clips_per_second"]
                              < 0.9 * summary["offered_clips_per_second"]
                              or summary["deadline_hit_rate"] < 0.9)
  return summary


def _predicted(results: dict, tag: str, trace, num_clips: int, interval: float) -> dict:
  """evaluate.py's channel model for these clips, this trace, the adaptive policy, the deadline."""
  from stae_jax import channel as channel_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import deadlines  # pylint: disable=g-import-not-at-top
  from stae_jax.systems import loading  # pylint: disable=g-import-not-at-top
  method = results["methods"][tag]
  points = loading.operating_points(method)
  arrivals = np.arange(num_clips) * interval
  correct = np.array([p["per_clip"]["correct"][:num_clips] for p in method["points"]], bool).T
  bits = np.array([p["per_clip"]["bits"][:num_clips] for p in method["points"]], np.float64).T
  choices = channel_lib.adaptive_choices(trace, points, arrival_seconds=arrivals,
                                         deadline_seconds=_SHAPED_DEADLINE.value,
                                         rate_margin=deadlines.ChannelOptions().rate_margin)
  reports, latencies = channel_lib.simulate_choices(
      trace, points, choices, arrival_seconds=arrivals, deadlines_seconds=[_SHAPED_DEADLINE.value],
      correct_by_point=correct, bits_by_point=bits, queue=True)
  totals = np.array([lat.total_seconds for lat in latencies])
  return dict(accuracy_within_deadline=reports[0].accuracy,
              deadline_hit_rate=reports[0].on_time_fraction,
              latency_p50_seconds=float(np.percentile(totals, 50)),
              latency_p95_seconds=float(np.percentile(totals, 95)),
              choices=[points[i].name for i in choices])


def _run_shaped(tmp: pathlib.Path, methods, results: dict, clip_frames: int, link, port: int,
                trace, trace_path, reason) -> dict:
  """One camera per method over the namespace link (or pacing), measured vs predicted."""
  interval = clip_frames / _FPS.value
  seconds = _SHAPED.value * interval
  mode = "namespace (veth + tbf replaying the trace every 10 ms)" if link else (
      f"client pacing on the trace ({reason})")
  out = dict(link=mode, trace=dict(mean_snr_db=_SHAPED_SNR.value, seed=0,
                                   mean_rate_bps=float(trace.rates_bps.mean())),
             clips=_SHAPED.value, deadline_seconds=_SHAPED_DEADLINE.value, methods={})
  for tag in methods:
    records_path = tmp / f"shaped_{tag}.jsonl"
    target = f"{link.server_address}:{port}" if link else f"127.0.0.1:{port}"
    argv = [sys.executable, str(REPO_ROOT / "client.py"), f"--config={_config_arg()}",
            f"--workdir={_WORKDIR.value}", f"--server={target}", f"--methods={tag}",
            f"--max_clips={_SHAPED.value}", f"--deadline={_SHAPED_DEADLINE.value}",
            f"--trace={trace_path}", f"--fps={_FPS.value}", f"--output={records_path}",
            f"--max_seconds={seconds + 5}"] + ([] if link else ["--pacing"])
    if link:
      argv = link.device_command(argv)
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    killer = threading.Timer(_START_TIMEOUT.value + seconds + DRAIN_SECONDS, client.kill)
    killer.start()
    for line in client.stdout:
      lines.append(line)
      m = re.match(r"client.py: capture starts at (\S+)", line)
      if m and link:
        link.stop()
        link.resume()
        link.replay(trace, start_unix=float(m.group(1)), update_seconds=0.01,
                    duration_seconds=seconds + DRAIN_SECONDS)
    client.wait(30)
    killer.cancel()
    if link:
      link.stop()
    if client.returncode != 0:
      raise RuntimeError(f"client.py for {tag} failed:\n{''.join(lines[-20:])}")
    records = [json.loads(l) for l in records_path.read_text().splitlines()]
    latencies = np.array([r["latency_seconds"] for r in records
                          if r["latency_seconds"] is not None])
    measured = dict(
        accuracy_within_deadline=float(np.mean([r["deadline_met"] and r["correct"]
                                                for r in records])),
        deadline_hit_rate=float(np.mean([r["deadline_met"] for r in records])),
        latency_p50_seconds=float(np.percentile(latencies, 50)) if latencies.size else None,
        latency_p95_seconds=float(np.percentile(latencies, 95)) if latencies.size else None,
        mean_encode_seconds=float(np.mean([r["encode_seconds"] for r in records])),
        statuses={s: sum(r["status"] == s for r in records)
                  for s in {r["status"] for r in records}},
        choices=[r["point"] for r in records])
    predicted = _predicted(results, tag, trace, len(records), interval)
    same = float(np.mean([a == b for a, b in zip(measured["choices"], predicted["choices"])]))
    out["methods"][tag] = dict(measured={k: v for k, v in measured.items() if k != "choices"},
                               predicted={k: v for k, v in predicted.items() if k != "choices"},
                               same_choice_fraction=same)
  return out


def _table(rows) -> str:
  head = ("| method | cameras | replicas | offered clips/s | served clips/s | p50 s | p95 s "
          "| p99 s "
          "| deadline hit | acc. in deadline | batch sizes (count) |")
  lines = [head, "|" + "---|" * 11]
  for r in rows:
    hist = " ".join(f"{s}:{n}" for s, n in sorted(r["batch_histogram"].items()) if n)
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # pylint: disable=unnecessary-lambda-assignment
    lines.append(f"| {r['method']} | {r['cameras']} | {r['replicas']} | "
                 f"{r['offered_clips_per_second']:.1f} | {r['served_clips_per_second']:.1f} | "
                 f"{fmt(r['latency_p50_seconds'])} | {fmt(r['latency_p95_seconds'])} | "
                 f"{fmt(r['latency_p99_seconds'])} | {r['deadline_hit_rate']:.2f} | "
                 f"{fmt(r['accuracy_within_deadline'])} | {hist} |")
  return "\n".join(lines)


def main(argv):
  del argv
  from absl import logging  # pylint: disable=g-import-not-at-top
  from stae_jax import channel as channel_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  from stae_jax.serving import client as client_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.serving import link as link_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.serving import protocol  # pylint: disable=g-import-not-at-top
  from stae_jax.serving import sources  # pylint: disable=g-import-not-at-top
  from stae_jax.systems import loading  # pylint: disable=g-import-not-at-top
  from stae_jax.library_logs import quiet_library_logs  # pylint: disable=g-import-not-at-top
  quiet_library_logs()
  config = _CONFIG.value
  workdir = pathlib.Path(_WORKDIR.value).absolute()
  results_path = workdir / "results.json"
  if not results_path.is_file():
    raise SystemExit(f"serve_load.py: {results_path} is missing; run evaluate.py on the workdir "
                     "first (the adaptive policy and the prediction use its measurements)")
  results = loading.load_results(results_path)
  methods = list(_METHODS.value)
  counts = [int(c) for c in _CAMERAS.value]
  started = time.time()
  machine = evaluate._machine()  # pylint: disable=protected-access
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="serve_load_"))
  codecs = loading.load_codecs(workdir, methods, device_only=True,
                                clip_shape=loading.clip_shape_of(config.data))
  clips = sources.test_clips(config, max_clips=_CLIPS.value)
  encoders = {c.tag: client_lib.ReplayEncoder(c, [clip for clip, _ in clips]) for c in codecs}
  planned = {c.tag: client_lib.planned_points(workdir, c.tag) for c in codecs}
  replay_ids = [(i, label) for i, (_, label) in enumerate(clips)]
  duration = _SECONDS.value + DRAIN_SECONDS + 10
  traces = [channel_lib.ChannelTrace.generate(duration, channel_lib.ChannelConfig(
      mean_snr_db=_SNR.value), seed=i) for i in range(max(counts + [_FAILOVER_CAMERAS.value]))]
  rows = []
  ports = [_free_port(), _free_port()]
  phases = set(_PHASES.value)
  reason = link_lib.unavailable() if _SHAPED.value and "shaped" in phases else "not run"
  link = link_lib.ShapedLink().create() if reason is None else None
  shaped_trace = channel_lib.ChannelTrace.generate(
      _SHAPED.value * codecs[0].clip_shape[0] / _FPS.value + 120.0,
      channel_lib.ChannelConfig(mean_snr_db=_SHAPED_SNR.value), seed=0)
  shaped_trace_path = shaped_trace.save(tmp / "trace.npz")
  address = f"127.0.0.1:{ports[0]}" + (f",{link.server_address}:{ports[0]}" if link else "")
  servers = [_start_server(address, methods, tmp / "server0.log")]
  two = bool(_REPLICAS_METHOD.value) and bool(phases & {"replicas", "failover"})
  if two:  # the second replica starts alongside the first
    servers.append(_start_server(f"127.0.0.1:{ports[1]}", methods, tmp / "server1.log"))
  shaped = None
  failover = None
  try:
    server_started = time.monotonic()
    health = _wait_ready(f"127.0.0.1:{ports[0]}", servers[0])
    server_start_seconds = time.monotonic() - server_started
    logging.info("server ready in %.0f s: %s", server_start_seconds,
                 [m.method for m in health.methods])
    channel = client_lib.channel_for(f"127.0.0.1:{ports[0]}")
    stub = protocol.Stub(channel)
    for codec in codecs if "load" in phases else ():
      for n in counts:
        row = _run_load(stub, [stub], codec, encoders[codec.tag], planned[codec.tag], replay_ids,
                        traces, n)
        row["replicas"] = 1
        rows.append(row)
        print(json.dumps(row), flush=True)
    channel.close()
    if two:
      _wait_ready(f"127.0.0.1:{ports[1]}", servers[1])
      channel = client_lib.channel_for([f"127.0.0.1:{p}" for p in ports])
      stub = protocol.Stub(channel)
      singles = [client_lib.channel_for(f"127.0.0.1:{p}") for p in ports]
      codec = next(c for c in codecs if c.tag == _REPLICAS_METHOD.value)
      for n in counts if "replicas" in phases else ():
        row = _run_load(stub, [protocol.Stub(c) for c in singles], codec, encoders[codec.tag],
                        planned[codec.tag], replay_ids, traces, n)
        row["replicas"] = 2
        rows.append(row)
        print(json.dumps(row), flush=True)
      if "failover" in phases:
        failover = _run_load(stub, [protocol.Stub(singles[0])], codec, encoders[codec.tag],
                             planned[codec.tag], replay_ids, traces, _FAILOVER_CAMERAS.value,
                             kill=(servers[1], 2.0))
        failover.update(replicas=2, killed="replica 2, SIGKILL 2 s after the first capture")
        print(json.dumps(failover), flush=True)
      for c in singles:
        c.close()
      channel.close()
      _stop(servers.pop())
    if _SHAPED.value and "shaped" in phases:
      shaped = _run_shaped(tmp, methods, results, codecs[0].clip_shape[0], link, ports[0],
                           shaped_trace, shaped_trace_path, reason)
  finally:
    for server in servers:
      _stop(server)
    if link:
      link.delete()
  saturation = {}
  for r in rows:
    key = f"{r['method']} x{r['replicas']}"
    if r["saturated"] and key not in saturation:
      saturation[key] = r["cameras"]
  for r in rows:
    saturation.setdefault(f"{r['method']} x{r['replicas']}", f"not within {max(counts)} cameras")
  out = dict(machine=machine, workdir=str(workdir), config=_config_arg(),
             settings=dict(seconds=_SECONDS.value, fps=_FPS.value, deadline=_DEADLINE.value,
                           snr_db=_SNR.value, max_batch=_MAX_BATCH.value,
                           max_wait_ms=_MAX_WAIT.value, clips=len(clips)),
             server_start_seconds=server_start_seconds, load=rows,
             saturation_cameras=saturation, failover=failover, shaped=shaped,
             benchmark_seconds=time.time() - started)
  text = json.dumps(out, indent=1)
  if _OUTPUT.value:
    pathlib.Path(_OUTPUT.value).write_text(text)
  print(text)
  print()
  print(_table(rows))
  print()
  print("saturation (first camera count served < 90% of offered or < 90% on time):",
        json.dumps(saturation))
  if failover:
    print(f"\nfailover ({failover['killed']}), {failover['cameras']} cameras of "
          f"{failover['method']}: {failover['clips']} clips, {failover['request_ids']} request ids, "
          f"{failover['ok']} ok, {failover['late']} late, {failover['failed']} without answer, "
          f"{failover['retried']} retried; deadline hit {failover['deadline_hit_rate']:.2f}")
  if shaped:
    print(f"\nshaped link: {shaped['link']}; trace at {shaped['trace']['mean_snr_db']:g} dB, mean "
          f"rate {shaped['trace']['mean_rate_bps'] / 1e6:.2f} Mbit/s; {shaped['clips']} clips; "
          f"deadline {shaped['deadline_seconds']} s")
    print("| method | measured acc. in deadline | predicted | measured on time | predicted "
          "| measured p50 s | predicted p50 s | same point chosen |")
    print("|---|---|---|---|---|---|---|---|")
    for tag, m in shaped["methods"].items():
      me, pr = m["measured"], m["predicted"]
      print(f"| {tag} | {me['accuracy_within_deadline']:.3f} | {pr['accuracy_within_deadline']:.3f}"
            f" | {me['deadline_hit_rate']:.2f} | {pr['deadline_hit_rate']:.2f} | "
            f"{me['latency_p50_seconds']:.3f} | {pr['latency_p50_seconds']:.3f} | "
            f"{m['same_choice_fraction']:.2f} |")


if __name__ == "__main__":
  app.run(main)
