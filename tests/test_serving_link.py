"""The namespace-shaped link: its tbf rate follows a replayed channel trace (needs root)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from stae_jax import channel as channel_lib
from stae_jax.serving import link as link_lib

REASON = link_lib.unavailable()
needs_namespaces = pytest.mark.skipif(REASON is not None, reason=f"namespace link: {REASON}")

_SENDER = ("import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])));"
           "s.sendall(b'x' * int(sys.argv[3])); s.close()")


def _timed_upload(link, num_bytes: int) -> float:
  """Seconds for the device namespace to push `num_bytes` to a receiver outside it."""
  server = socket.create_server((link.server_address, 0))
  port = server.getsockname()[1]
  got = []

  def receive():
    conn, _ = server.accept()
    total = 0
    while chunk := conn.recv(1 << 16):
      total += len(chunk)
    got.append((total, time.monotonic()))
    conn.close()

  receiver = threading.Thread(target=receive)
  receiver.start()
  started = time.monotonic()
  subprocess.run(link.device_command([sys.executable, "-c", _SENDER, link.server_address,
                                      str(port), str(num_bytes)]), check=True, timeout=30)
  receiver.join(30)
  server.close()
  assert got and got[0][0] == num_bytes
  return got[0][1] - started


def _two_rate_trace(low_bps, high_bps, seconds_each, slot=1e-3):
  """A trace at exactly `low_bps` for `seconds_each`, then `high_bps` (gains solved for)."""
  config = channel_lib.ChannelConfig(bandwidth_hz=1e6, mean_snr_db=10.0, slot_seconds=slot)
  n = int(round(seconds_each / slot))
  rates = np.concatenate([np.full(n, low_bps), np.full(3 * n, high_bps)])
  power = (2.0 ** (rates / config.bandwidth_hz) - 1.0) / config.mean_snr
  return channel_lib.ChannelTrace(gains=np.sqrt(power).astype(np.complex128), config=config)


def test_a_link_that_cannot_be_made_says_why_and_names_the_fallback():
  """Where namespaces work this is the same check in reverse: creating succeeds. Never skipped,
  so a CI runner without root still tests what a user there would see."""
  link = link_lib.ShapedLink(index=30000 + np.random.default_rng().integers(0, 9000))
  if REASON is None:
    link.create(1e6)
    try:
      assert "tbf" in link.rate_bps()
    finally:
      link.delete()
  else:
    with pytest.raises(OSError, match="client pacing"):
      link.create(1e6)


@needs_namespaces
def test_tbf_rate_follows_the_replayed_trace():
  trace = _two_rate_trace(1e6, 4e6, 1.0)
  with link_lib.ShapedLink(index=40000 + np.random.default_rng().integers(0, 20000)) as link:
    link.set_rate(2e6)
    for _ in range(50):  # tc -batch applies it within milliseconds
      if "rate 2Mbit" in link.rate_bps():
        break
      time.sleep(0.02)
    assert "rate 2Mbit" in link.rate_bps()
    constant = _timed_upload(link, 250_000)  # 2 Mbit at 2 Mbit/s: ~1 s
    # Shaped: never faster than the rate (the upper bound is loose: a loaded machine is slower).
    assert 0.8 < constant < 10, constant
    start = time.time() + 0.2
    link.replay(trace, start_unix=start, update_seconds=0.01)
    time.sleep(0.2)
    replayed = _timed_upload(link, 250_000)
    predicted = trace.transmission_seconds(2e6, 0.0)  # 1 Mbit in the first second, then 4 Mbit/s
    # Lower bound: the first second's 1 Mbit/s held it back; upper: loose, for a loaded machine.
    assert 0.65 * predicted < replayed < predicted + 5, (replayed, predicted)
    assert link.updates > 100 and "rate 4Mbit" in link.rate_bps()
