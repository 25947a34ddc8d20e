r"""Throughput of the grain train and eval loaders (clips/s), for BENCHMARKS.md "Input pipeline".

  python benchmarks/input_pipeline.py [--runs=5] [--batches=4] [--workers=0,2]

Measures, per dataset, loader (train: random window, random resized crop; eval: centre window and
crop) and worker count: one warm-up pass (worker start-up, first reads), then `runs` timed passes
of `batches` batches each; prints the median clips/s and the spread.

- synthetic: the default configs/synthetic.py dataset (16x64x64 PNG frames), built under its
  configured data_dir if it is not yet (that takes a while once).
- hmdb51: the paper's setting (16 frames at stride 2, 224x224 from JPEG frames stored at short
  side 256), built from the two real HMDB51 clips of shared/data/real into a temporary directory
  (allow_incomplete); the loaders loop over those two clips, so reading is from a hot cache and
  the figure is the cost of decoding, cropping and batching. Batch size 8 (clips/s hardly depends
  on it and 64 would take long on two cores).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags
import ml_collections

from stae_jax import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))  # configs/ is a folder of the checkout, not an installed package
from configs import hmdb51 as hmdb51_config  # pylint: disable=g-import-not-at-top
from configs import synthetic as synthetic_config  # pylint: disable=g-import-not-at-top
from stae_jax.data import datasets
from stae_jax.data import pipeline
from stae_jax.data import real_data_dir

_RUNS = flags.DEFINE_integer("runs", 5, "Timed passes per measurement (the median is printed).")
_BATCHES = flags.DEFINE_integer("batches", 4, "Batches per timed pass.")
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "grain worker counts to measure.")
_DATASETS = flags.DEFINE_list("datasets", ["synthetic", "hmdb51"], "Which datasets to measure.")
_HMDB51_BATCH = flags.DEFINE_integer("hmdb51_batch_size", 8, "Batch size for the hmdb51 loaders.")


class LoopedSource:
  """`length` records that cycle over a few real ones (the two real HMDB51 clips)."""

  def __init__(self, sources, length: int):
    self._refs = [(source, i) for source in sources for i in range(len(source))]
    self._length = length

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int):
    source, i = self._refs[index % len(self._refs)]
    return source[i]


def clips_per_second(loader, batch_size: int) -> tuple[float, list[float]]:
  """Median clips/s over `runs` passes of `batches` batches, after one warm-up pass."""
  iterator = iter(loader)
  for _ in range(_BATCHES.value):
    next(iterator)
  rates = []
  for _ in range(_RUNS.value):
    start = time.perf_counter()
    for _ in range(_BATCHES.value):
      next(iterator)
    rates.append(_BATCHES.value * batch_size / (time.perf_counter() - start))
  return statistics.median(rates), rates


def measure(name: str, data_config: ml_collections.ConfigDict, sources: dict):
  for workers in (int(w) for w in _WORKERS.value):
    data_config.workers = workers
    for kind, train in (("train", True), ("eval", False)):
      loader = pipeline.loader_from_source(sources[kind], data_config, seed=0, train=train,
                                           shard=False)
      batch_size = data_config.batch_size if train else data_config.eval_batch_size
      median, rates = clips_per_second(loader, batch_size)
      shape = f"{data_config.frames}x{data_config.resolution}x{data_config.resolution}"
      print(f"{name:10s} {kind:5s} {shape:11s} batch {batch_size:3d} workers {workers}: "
            f"{median:7.1f} clips/s (runs: {', '.join(f'{r:.1f}' for r in rates)})", flush=True)


def main(argv):
  del argv
  if "synthetic" in _DATASETS.value:
    data_config = synthetic_config.get_config().data
    builder = datasets.ensure_built(data_config)
    sources = {"train": builder.as_data_source(split="train"),
               "eval": builder.as_data_source(split="test")}
    measure("synthetic", data_config, sources)

  if "hmdb51" in _DATASETS.value:
    with tempfile.TemporaryDirectory() as tmp:
      data_config = hmdb51_config.get_config().data
      data_config.data_dir = tmp
      data_config.manual_dir = str(real_data_dir() / "hmdb51")
      data_config.builder_kwargs.allow_incomplete = True
      data_config.batch_size = data_config.eval_batch_size = _HMDB51_BATCH.value
      builder = datasets.ensure_built(data_config)
      real = [builder.as_data_source(split=s) for s in ("train", "test")]
      looped = LoopedSource(real, length=4096)
      measure("hmdb51", data_config, {"train": looped, "eval": looped})


if __name__ == "__main__":
  app.run(main)
