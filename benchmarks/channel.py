"""The default fading channel: its statistics, the cost of the accounting, and what H.264 clips see.

  python benchmarks/channel.py

Generates a one-hour trace with ChannelConfig() defaults (seed 0) and prints the Jakes correlation,
the rate distribution, how long generation and one `transmission_seconds` call take (medians over
repeats; the machine is shared), and the transmission time of payloads the size of the H.264
baseline's median 16x112x112 and 16x224x224 clips (benchmarks/x264.py) sent from 2000 random
start times, with the share that would exceed 50 and 100 ms of link time.
"""

import time

from absl import app
import numpy as np

from stae_jax.channel import ChannelConfig
from stae_jax.channel import ChannelTrace

# Median H.264 stream bytes at CRF 23 and 35 (SEI dropped), from benchmarks/x264.py.
_PAYLOAD_BYTES = {"16x112x112 CRF 23": 8790, "16x112x112 CRF 35": 2516,
                  "16x224x224 CRF 23": 23940, "16x224x224 CRF 35": 6762}


def _median_seconds(fn, repeats):
  times = []
  for _ in range(repeats):
    started = time.perf_counter()
    fn()
    times.append(time.perf_counter() - started)
  return float(np.median(times))


def main(argv):
  del argv
  config = ChannelConfig()
  generate_s = _median_seconds(lambda: ChannelTrace.generate(3600.0, config, seed=0), 3)
  trace = ChannelTrace.generate(3600.0, config, seed=0)
  rates = trace.rates_bps
  print(f"config: {config}")
  print(f"f_D {config.max_doppler_hz:.2f} Hz, rho {config.correlation:.6f}, "
        f"coherence ~{0.423 / config.max_doppler_hz * 1e3:.0f} ms")
  print(f"1 h trace: {trace.num_slots} slots, generated in {generate_s:.2f} s; E|h|^2 "
        f"{trace.power_gains.mean():.4f}")
  print(f"rate Mbit/s: mean {rates.mean() / 1e6:.3f}, median {np.median(rates) / 1e6:.3f}, "
        f"5th pct {np.percentile(rates, 5) / 1e6:.3f}, 1st pct {np.percentile(rates, 1) / 1e6:.3f}")
  starts = np.random.default_rng(1).uniform(0, 3500.0, 2000)
  call_s = _median_seconds(lambda: [trace.transmission_seconds(70_000, t) for t in starts], 3)
  print(f"transmission_seconds: {call_s / starts.size * 1e6:.1f} us per call (70 kbit payload)")
  for name, num_bytes in _PAYLOAD_BYTES.items():
    seconds = np.array([trace.transmission_seconds(8 * num_bytes, t) for t in starts])
    print(f"{name} ({num_bytes} B): transmit ms median {np.median(seconds) * 1e3:.1f}, "
          f"95th pct {np.percentile(seconds, 95) * 1e3:.1f}; > 50 ms {np.mean(seconds > 0.05):.1%}, "
          f"> 100 ms {np.mean(seconds > 0.1):.1%}")


if __name__ == "__main__":
  app.run(main)
