r"""The device client: cameras that compress clips on the device and offload them to serve.py.

  python client.py --config=configs/synthetic.py --workdir=runs/synthetic \
      --server=127.0.0.1:50051 --methods=stae,h264 --max_clips=20 [--inputs=a.avi,b.avi]
      [--policy=adaptive|fixed:<point>|<method>:fixed:<point> ...] [--deadline=0.5] [--snr_db=10 --trace_seed=0 --pacing]
      [--cameras=1] [--output=records.jsonl]

One camera per method (times --cameras) captures clips at the fixed rate of --fps frames per second
(a clip of T frames every T/fps s) from the test split (or --inputs, video files), compresses each
with the method's device half at the operating point the policy picks, sends it, and records when
it was captured, its bytes, when it was sent and answered, the label and whether the deadline was
met. Models are restored and compiled once at start. --snr_db replays a channel trace
(stae_jax.channel, seeded by --trace_seed) for the adaptive policy's rate estimate; --pacing also
holds each request for its transmission time on that trace (the fallback where no network
namespace shapes the link; see stae_jax/serving/link.py). Details: stae_jax/serving/client.py.
"""

import dataclasses
import json
import threading
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from stae_jax import REPO_ROOT

_CONFIG = config_flags.DEFINE_config_file("config", str(REPO_ROOT / "configs" / "synthetic.py"),
                                          "Experiment config (file.py:switches).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir; default runs/<config.name>.")
_SERVER = flags.DEFINE_list("server", ["127.0.0.1:50051"],
                            "Server address(es); several: gRPC round robin over them.")
_METHODS = flags.DEFINE_list("methods", ["stae"], "Methods to send (one camera each).")
_CAMERAS = flags.DEFINE_integer("cameras", 1, "Cameras per method.")
_INPUTS = flags.DEFINE_list("inputs", None, "Video files to send (default: the test split).")
_MAX_CLIPS = flags.DEFINE_integer("max_clips", 20, "Clips per camera (0: all).")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 300.0, "Stop capturing after this long.")
_FPS = flags.DEFINE_float("fps", 30.0, "Capture frame rate.")
_DEADLINE = flags.DEFINE_float("deadline", 0.5, "Deadline per clip, capture to answer (s).")
_POLICY = flags.DEFINE_multi_string(
    "policy", ["adaptive"], "adaptive or fixed:<point name> (one method), or per method, "
    "repeated: <method>:adaptive, <method>:fixed:<point name>.")
_MARGIN = flags.DEFINE_float("rate_margin", 0.7, "Plan for this fraction of the estimated rate.")
_RATE = flags.DEFINE_float("rate_bps", 2.9e6, "Link-rate estimate without a trace (bits/s).")
_SNR = flags.DEFINE_float("snr_db", None, "Replay a channel trace of this mean SNR (dB).")
_TRACE_SEED = flags.DEFINE_integer("trace_seed", 0, "Seed of the replayed trace.")
_TRACE = flags.DEFINE_string("trace", None, "A saved channel trace (.json/.npz) to replay.")
_PACING = flags.DEFINE_bool("pacing", False, "Hold each request for its transmission time on "
                            "the trace (no network namespace).")
_START = flags.DEFINE_float("start_unix", 0.0, "Capture start (time.time(); 0: now), to line up "
                            "with a link shaper replaying the same trace.")
_CRFS = flags.DEFINE_list("crfs", None, "x264 CRFs (default: the H.264 grid evaluate.py measured, "
                          "from the workdir's results.json; without one, H.264's defaults).")
_PRESET = flags.DEFINE_string("h264_preset", None, "x264 preset (default: results.json's).")
_OUTPUT = flags.DEFINE_string("output", None, "Write one JSON record per clip here.")


def main(argv):
  from stae_jax.library_logs import quiet_library_logs  # pylint: disable=g-import-not-at-top
  quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from stae_jax import channel as channel_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.serving import client as client_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.serving import protocol  # pylint: disable=g-import-not-at-top
  from stae_jax.serving import sources  # pylint: disable=g-import-not-at-top
  from stae_jax.systems import loading  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  workdir = loading.resolve(_WORKDIR.value, config)
  loading.use_compile_cache(workdir)  # later starts reuse the compiles
  try:
    options = client_lib.ClientOptions(
        fps=_FPS.value, deadline_seconds=_DEADLINE.value,
        rate_margin=_MARGIN.value, rate_bps=_RATE.value, pacing=_PACING.value,
        max_clips=_MAX_CLIPS.value, max_seconds=_MAX_SECONDS.value)
    trace = None
    if _TRACE.value:
      trace = channel_lib.ChannelTrace.load(_TRACE.value)
    elif _SNR.value is not None:
      trace = channel_lib.ChannelTrace.generate(
          _MAX_SECONDS.value + 60.0, channel_lib.ChannelConfig(mean_snr_db=_SNR.value),
          seed=_TRACE_SEED.value)
    if _PACING.value and trace is None:
      raise ValueError("--pacing needs a trace to pace by: pass --snr_db or --trace")
    policies = client_lib.policies_for(_POLICY.value, _METHODS.value)
    codecs = loading.load_codecs(
        workdir, _METHODS.value, device_only=True, clip_shape=loading.clip_shape_of(config.data),
        baselines=loading.measured_baselines(workdir, crfs=_CRFS.value, preset=_PRESET.value))
    skipped = [f"{c.tag} ({c.skipped})" for c in codecs if c.skipped]
    if skipped:
      raise ValueError(f"--methods names {', '.join(skipped)}, which cannot run here")
    if _INPUTS.value:
      clips = sources.video_clips(_INPUTS.value, loading.trained_data(workdir))
    else:
      clips = sources.test_clips(config, max_clips=_MAX_CLIPS.value)
  except (ValueError, OSError, loading.WorkdirError) as error:
    raise SystemExit(f"client.py: error: {error}") from None
  channel = client_lib.channel_for(_SERVER.value)
  stub = protocol.Stub(channel)
  health = client_lib.wait_ready(stub)
  served = {m.method: m for m in health.methods}
  cameras = []
  for codec in codecs:
    if codec.tag not in served:
      raise SystemExit(f"client.py: error: the server does not serve {codec.tag} (it serves "
                       f"{', '.join(served)})")
    encoder = client_lib.Encoder(codec)
    encoder.warm_up()
    planned = client_lib.planned_points(workdir, codec.tag)
    for i in range(_CAMERAS.value):
      own = dataclasses.replace(options, policy=policies[codec.tag])
      cameras.append(client_lib.Camera(codec, stub, own, planned=planned, trace=trace,
                                       name=f"{codec.tag}{i}", encoder=encoder))
  start = _START.value or time.time() + 1.0
  print(f"client.py: capture starts at {start:.6f}", flush=True)  # for a link shaper to line up
  results = {}
  threads = [threading.Thread(target=lambda c=c: results.__setitem__(
      c.name, c.run(clips, start_unix=start))) for c in cameras]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  records = [r for c in cameras for r in results.get(c.name, [])]
  if _OUTPUT.value:
    client_lib.write_records(records, _OUTPUT.value)
  link = "pacing on the trace" if _PACING.value else "as the network gives it (loopback/namespace)"
  print(f"client.py: link {link}")
  for codec in codecs:
    mine = [r for r in records if r.method == codec.tag]
    print(f"{codec.tag}: {json.dumps(client_lib.summarize(mine))}")
  channel.close()


if __name__ == "__main__":
  app.run(main)
