r"""The edge server: serves classification of compressed clips for every method of a workdir (gRPC).

  python serve.py --config=configs/synthetic.py --workdir=runs/synthetic [--address=127.0.0.1:50051]
                  [--max_batch=8] [--max_wait_ms=10] [--methods=stae,h264] [--metrics_port=9100]

Loads the ViT and every trained method (STAE, DeepISC, ...) plus the baselines (H.264, raw), as
evaluate.py builds them, compiles every (method, operating point, batch size) and then says ready
(the Health rpc). Ctrl-C or SIGTERM shuts down gracefully: new requests are refused, every accepted
one is answered. Metrics (Prometheus text) come from the Metrics rpc and, with --metrics_port,
from http://127.0.0.1:<port>/metrics. The protocol and batching are described in
stae_jax/serving/server.py; the device side is client.py.
"""

import asyncio
import signal

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from stae_jax import REPO_ROOT

_CONFIG = config_flags.DEFINE_config_file("config", str(REPO_ROOT / "configs" / "synthetic.py"),
                                          "Experiment config (file.py:switches).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir; default runs/<config.name>.")
_ADDRESS = flags.DEFINE_string("address", "127.0.0.1:50051", "host:port to listen on (several: "
                               "comma-separated, e.g. loopback and a namespace link's address).")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 8, "Most requests per batch.")
_MAX_WAIT = flags.DEFINE_float("max_wait_ms", 10.0, "Longest a batch waits to fill (ms).")
_SIZES = flags.DEFINE_list("batch_sizes", None, "Padded batch shapes (default 1,2,4,.. max_batch).")
_METHODS = flags.DEFINE_list("methods", None, "Method tags to serve (default: every one).")
_CRFS = flags.DEFINE_list("crfs", None, "x264 CRFs served (default: the H.264 grid evaluate.py "
                          "measured, from the workdir's results.json; without one, H.264's "
                          "defaults).")
_PRESET = flags.DEFINE_string("h264_preset", None, "x264 preset (default: results.json's).")
_METRICS_PORT = flags.DEFINE_integer("metrics_port", 0, "Also serve /metrics over HTTP on "
                                     "127.0.0.1:<port> (0: only the Metrics rpc).")
_GRACE = flags.DEFINE_float("grace_seconds", 30.0, "Longest shutdown waits for accepted requests.")


async def _serve(codecs, options):
  from stae_jax.serving import server as server_lib  # pylint: disable=g-import-not-at-top
  server = server_lib.Server(codecs, options)
  stop = asyncio.Event()
  loop = asyncio.get_running_loop()
  for sig in (signal.SIGINT, signal.SIGTERM):
    loop.add_signal_handler(sig, stop.set)
  port = await server.start(_ADDRESS.value)
  if _METRICS_PORT.value:
    import prometheus_client  # pylint: disable=g-import-not-at-top
    prometheus_client.start_http_server(_METRICS_PORT.value, addr="127.0.0.1",
                                        registry=server.service.metrics.registry)
  hosts = ",".join(f"{a.rsplit(':', 1)[0]}:{port}" for a in _ADDRESS.value.split(","))
  print(f"serve.py: ready on {hosts}: "
        + ", ".join(f"{c.tag} ({len(c.points)} points)" for c in codecs), flush=True)
  await stop.wait()
  print("serve.py: shutting down (answering every accepted request)", flush=True)
  await server.stop(_GRACE.value)
  print("serve.py: stopped", flush=True)


def main(argv):
  from stae_jax.library_logs import quiet_library_logs  # pylint: disable=g-import-not-at-top
  quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from stae_jax.serving import server as server_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.systems import loading  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  workdir = loading.resolve(_WORKDIR.value, config)
  loading.use_compile_cache(workdir)  # later starts reuse the compiles
  try:
    options = server_lib.ServeOptions(
        max_batch=_MAX_BATCH.value, max_wait_seconds=_MAX_WAIT.value / 1000.0,
        batch_sizes=None if _SIZES.value is None else tuple(int(s) for s in _SIZES.value))
    codecs = loading.load_codecs(
        workdir, _METHODS.value, clip_shape=loading.clip_shape_of(config.data),
        baselines=loading.measured_baselines(workdir, crfs=_CRFS.value, preset=_PRESET.value))
    skipped = [f"{c.tag} ({c.skipped})" for c in codecs if c.skipped and _METHODS.value]
    if skipped:
      raise ValueError(f"--methods names {', '.join(skipped)}, which cannot run here")
  except (ValueError, loading.WorkdirError) as error:
    raise SystemExit(f"serve.py: error: {error}") from None
  logging.info("serving %s", [c.tag for c in codecs])
  asyncio.run(_serve(codecs, options))


if __name__ == "__main__":
  app.run(main)
