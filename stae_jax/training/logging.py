"""What a user sees: a progress bar per stage, JSON-lines metrics, optional TensorBoard.

Only process 0 writes; the other processes get writers that do nothing, so the trainer never
branches on the process index. Throughput (clips/s) leaves out the first step, which compiles.
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import time

import jax
import numpy as np


def _jsonable(value):
  if isinstance(value, (np.generic, jax.Array, np.ndarray)):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()
  return value


class MetricWriter:
  """Appends `{"stage", "step", "time", ...metrics}` lines to `<dir>/metrics.jsonl` (process 0)."""

  def __init__(self, directory: str | pathlib.Path, stage: str, *, tensorboard: bool = False):
    self.stage = stage
    self.active = jax.process_index() == 0
    self.path = pathlib.Path(directory) / "metrics.jsonl"
    self._tb = None
    if self.active:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      self._file = open(self.path, "a", encoding="utf-8")
      if tensorboard:
        from tensorboardX import SummaryWriter  # optional: imported only when asked for
        self._tb = SummaryWriter(str(pathlib.Path(directory) / "tensorboard"))

  def write(self, step: int, metrics: dict) -> None:
    if not self.active:
      return
    record = {"stage": self.stage, "step": int(step), "time": round(time.time(), 3)}
    record.update({k: _jsonable(v) for k, v in metrics.items()})
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      for key, value in record.items():
        if isinstance(value, (int, float)) and key not in ("step", "time"):
          self._tb.add_scalar(f"{self.stage}/{key}", value, step)

  def close(self) -> None:
    if self.active:
      self._file.close()
      if self._tb is not None:
        self._tb.close()



class Throughput:
  """clips/s over the steps after the first (compile) one, and the ETA it implies."""

  def __init__(self, batch_size: int, total_steps: int):
    self.batch_size = batch_size
    self.total_steps = total_steps
    self._t0 = None
    self._steps = 0

  def update(self, step: int) -> None:
    """Call after step `step` finished (its result was read back)."""
    if self._t0 is None:
      self._t0, self._first = time.perf_counter(), step
      return
    self._steps = step - self._first

  @property
  def steps_per_second(self) -> float:
    if self._t0 is None or self._steps == 0:
      return math.nan
    return self._steps / (time.perf_counter() - self._t0)

  @property
  def clips_per_second(self) -> float:
    return self.steps_per_second * self.batch_size

  def eta_seconds(self, step: int) -> float:
    rate = self.steps_per_second
    return (self.total_steps - step) / rate if rate == rate and rate > 0 else math.nan


class ProgressBar:
  """A tqdm bar for one stage showing loss, clips/s and ETA; silent on processes other than 0."""

  def __init__(self, stage: str, total: int, initial: int, enabled: bool = True):
    self._bar = None
    if enabled and jax.process_index() == 0:
      from tqdm import tqdm
      self._bar = tqdm(total=total, initial=initial, desc=stage, unit="step", file=sys.stderr,
                       dynamic_ncols=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n}/{total} "
                       "[{elapsed}{postfix}]")

  def update(self, step: int, loss: float, clips_per_second: float, eta: float) -> None:
    if self._bar is None:
      return
    self._bar.n = step
    eta_text = "?" if eta != eta else time.strftime("%H:%M:%S", time.gmtime(eta))
    cps = "?" if clips_per_second != clips_per_second else f"{clips_per_second:.1f}"
    self._bar.set_postfix_str(f"loss={loss:.4f}, clips/s={cps}, ETA {eta_text}", refresh=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
