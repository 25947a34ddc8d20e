"""A real shaped link: a network namespace pair whose uplink rate follows a channel trace.

`ShapedLink` creates a namespace (the device side) joined to the root namespace (the edge server's
side) by a veth pair, `10.<a>.<b>.2` in the namespace and `10.<a>.<b>.1` outside. The device
side's egress, the uplink that carries the clips, gets a `tbf` qdisc; `replay` changes its rate
every `update_seconds` to the mean rate of the trace (`stae_jax.channel.ChannelTrace`) over that
interval, through one long-running `tc -batch` process, so every method replays the same trace.
The client runs inside the namespace (`device_command`); the server listens on the outer address.

What it models: the time-varying rate of the trace (bits conserved per update interval) and the
queueing delay that a slower link builds up (tbf's queue is large, `limit_bytes`, so nothing is
dropped: TCP sees a slow link, not a lossy one). What it does not: fading-induced loss, the
trace's 1 ms slot detail below `update_seconds`, propagation delay, the downlink (answers are
small and go unshaped), or a radio's MAC (retransmissions, scheduling). `netem` would add delay and
loss but does not work on these machines; tbf and htb do.

Needs root (CAP_NET_ADMIN) and the `ip` and `tc` tools; `unavailable()` says why not, and callers
fall back to pacing in the client (`ClientOptions.pacing`), reported as such.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time

import numpy as np

from stae_jax import channel as channel_lib


def unavailable() -> str | None:
  """None where a namespace link can be made here, else why not (for a skip or a fallback)."""
  if os.geteuid() != 0:
    return "network namespaces need root (CAP_NET_ADMIN); not root here"
  for tool in ("ip", "tc"):
    if shutil.which(tool) is None:
      return f"the {tool!r} tool (iproute2) is not installed"
  probe = f"staeprobe{os.getpid()}"
  made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
  if made.returncode != 0:
    return f"`ip netns add` failed: {made.stderr.strip()}"
  subprocess.run(["ip", "netns", "del", probe], capture_output=True)
  return None


def _run(*argv: str) -> None:
  done = subprocess.run(list(argv), capture_output=True, text=True)
  if done.returncode != 0:
    raise OSError(f"`{' '.join(argv)}` failed: {done.stderr.strip()}")


class ShapedLink:
  """The namespace pair (module doc). Use as a context manager; `index` (0..65535) keeps the
  names and subnet of concurrent links apart."""

  def __init__(self, index: int | None = None, *, limit_bytes: int = 8 << 20):
    index = os.getpid() % 60000 if index is None else int(index)
    if not 0 <= index < 65536:
      raise ValueError(f"link index {index}: expected 0..65535")
    self.namespace = f"stae{index}"
    self._outer, self._inner = f"stae{index}o", f"stae{index}i"
    a, b = 100 + index // 256 % 100, index % 256
    self.server_address, self.device_address = f"10.{a}.{b}.1", f"10.{a}.{b}.2"
    self.limit_bytes = int(limit_bytes)
    self._tc = None
    self._replayer = None
    self._stop = threading.Event()
    self.updates = 0

  def create(self, rate_bps: float = 1e6) -> "ShapedLink":
    reason = unavailable()
    if reason:
      raise OSError(f"cannot shape a link here: {reason}; use client pacing instead")
    _run("ip", "netns", "add", self.namespace)
    try:
      _run("ip", "link", "add", self._outer, "type", "veth", "peer", "name", self._inner)
      _run("ip", "link", "set", self._inner, "netns", self.namespace)
      _run("ip", "addr", "add", f"{self.server_address}/30", "dev", self._outer)
      _run("ip", "link", "set", self._outer, "up")
      inside = ("ip", "netns", "exec", self.namespace)
      _run(*inside, "ip", "addr", "add", f"{self.device_address}/30", "dev", self._inner)
      _run(*inside, "ip", "link", "set", self._inner, "up")
      _run(*inside, "ip", "link", "set", "lo", "up")
      _run(*inside, "tc", "qdisc", "add", "dev", self._inner, "root", *self._tbf(rate_bps))
      self._tc = subprocess.Popen([*inside, "tc", "-force", "-batch", "-"], stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except OSError:
      self.delete()
      raise
    return self

  def _tbf(self, rate_bps: float) -> tuple[str, ...]:
    rate = max(int(rate_bps), 8000)  # tbf needs a positive rate; 8 kbit/s is a dead link here
    burst = max(3028, int(rate / 8 * 0.002))  # two MTUs or 2 ms of tokens
    return ("tbf", "rate", f"{rate}bit", "burst", str(burst), "limit", str(self.limit_bytes))

  def set_rate(self, rate_bps: float) -> None:
    """Changes the uplink's rate now."""
    self._tc.stdin.write(f"qdisc change dev {self._inner} root {' '.join(self._tbf(rate_bps))}\n")
    self._tc.stdin.flush()
    self.updates += 1

  def rate_bps(self) -> str:
    """The tbf line as `tc qdisc show` reports it (what the kernel is doing)."""
    return subprocess.run(["ip", "netns", "exec", self.namespace, "tc", "qdisc", "show", "dev",
                           self._inner], capture_output=True, text=True).stdout.strip()

  def replay(self, trace: channel_lib.ChannelTrace, *, start_unix: float,
             update_seconds: float = 0.01, duration_seconds: float | None = None) -> None:
    """Starts a thread that sets the rate each `update_seconds` from `start_unix` to the trace's
    mean over that interval, until `stop` or the end of the trace (or `duration_seconds`)."""
    slots = max(1, round(update_seconds / trace.config.slot_seconds))
    rates = trace.rates_bps
    usable = rates.size // slots * slots
    means = rates[:usable].reshape(-1, slots).mean(axis=1) if usable else rates[:1]
    step = slots * trace.config.slot_seconds
    if duration_seconds is not None:
      means = means[:max(1, int(np.ceil(duration_seconds / step)))]

    def loop():
      for k, rate in enumerate(means):
        delay = start_unix + k * step - time.time()
        if delay > 0 and self._stop.wait(delay):
          return
        if self._stop.is_set():
          return
        self.set_rate(float(rate))

    self._replayer = threading.Thread(target=loop, name="link-replay", daemon=True)
    self._replayer.start()

  def resume(self) -> None:
    """Allows `replay` again after `stop`."""
    self._stop.clear()

  def device_command(self, argv) -> list[str]:
    """`argv` run inside the device namespace."""
    return ["ip", "netns", "exec", self.namespace, *argv]

  def stop(self) -> None:
    self._stop.set()
    if self._replayer is not None:
      self._replayer.join(5)

  def delete(self) -> None:
    self.stop()
    if self._tc is not None:
      try:
        self._tc.stdin.close()
      except OSError:
        pass
      self._tc.wait(5)
      self._tc = None
    subprocess.run(["ip", "link", "del", self._outer], capture_output=True)
    subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)

  def __enter__(self):
    return self.create()

  def __exit__(self, *exc):
    self.delete()
