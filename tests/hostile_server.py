"""An edge server in a child process, for tests that measure its memory: H.264 at one small point
(16 frames of 16x16 at CRF 51, for 16x64x64 clips) and raw offloading, scored by a fixed
classifier (a clip's mean colour as three logits), with /metrics over HTTP.

  python tests/hostile_server.py    # prints "ready <grpc port> <metrics port>"; SIGTERM stops it

Run by tests/test_serving_hostile.py, which reads the child's peak memory (VmHWM) from /proc.
"""

from __future__ import annotations

import asyncio
import pathlib
import signal
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: import this checkout, not an installed copy
  sys.path.insert(0, str(REPO))

import numpy as np  # pylint: disable=wrong-import-position
import prometheus_client  # pylint: disable=wrong-import-position

from stae_jax.serving import server as server_lib  # pylint: disable=wrong-import-position
from stae_jax.systems import base, h264, raw  # pylint: disable=wrong-import-position

CLIP_SHAPE = (16, 64, 64, 3)
H264_OPTIONS = dict(frames=(16,), scales=(4,), crfs=(51,))
OPTIONS = server_lib.ServeOptions(max_batch=2, batch_sizes=(1, 2), max_wait_seconds=0.005,
                                  grpc_workers=2)


def mean_colour(clips) -> np.ndarray:
  """[B,T,H,W,3] -> [B,3]: a classifier with no model, so the child stays small."""
  return np.asarray(clips, np.float32).mean(axis=(1, 2, 3))


def codecs() -> list[base.Codec]:
  context = base.BaselineContext(CLIP_SHAPE, mean_colour, dict(h264=H264_OPTIONS))
  return [h264.H264Codec(context), raw.RawCodec(context)]


async def serve() -> None:
  server = server_lib.Server(codecs(), OPTIONS)
  port = await server.start("127.0.0.1:0")
  httpd, _ = prometheus_client.start_http_server(0, addr="127.0.0.1",
                                                 registry=server.service.metrics.registry)
  stop = asyncio.Event()
  asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
  print(f"ready {port} {httpd.server_port}", flush=True)
  await stop.wait()
  await server.stop(10.0)
  httpd.shutdown()


if __name__ == "__main__":
  asyncio.run(serve())
