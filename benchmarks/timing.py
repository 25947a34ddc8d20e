"""Timing shared by the benchmark scripts (imported as `timing`: scripts run from benchmarks/)."""

import time

import jax
import numpy as np


def median_ms_per_clip(fn, *args, batch: int, repeats: int) -> float:
  """Median wall time of `fn(*args)` over `repeats` calls, per clip of the batch, in ms.

  The first call (the compile) is not timed; every call ends in `block_until_ready`.
  """
  jax.block_until_ready(fn(*args))  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times)) / batch
