"""Real compression of the test split by every method, measured on this machine -> `results.json`.

One pass over the test split; each batch goes through every method at every operating point, so the
split is read and decoded once and every method sees the very same clips:

  reference  the stage-1 ViT on the uncompressed clips (accuracy loss is measured against it)
  learned    every system trained in the workdir (STAE, its ablations, DeepISC)
  baselines  every baseline of `stae_jax.systems` (H.264, raw offloading, ...), scored by the
             reference ViT; one that cannot run here (no libx264) is reported as skipped

Every method is a `stae_jax.systems.Codec`, measured by one function (`round_trip`): the device
half makes real bitstreams, the server half decodes them, the method's classifier scores what it
rebuilt. Bits per clip are the lengths of the streams the codec returned.

Times. Batched times are amortised over an evaluation batch (throughput). The per-step times the
tables and the channel use are single-clip medians (`latency_clips` clips at batch 1): a device
encodes one clip when it has one. Every model step is timed after `block_until_ready`, and the
first call of each step per batch shape is a warm-up (the compile), never timed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import platform
import time
from typing import Any, Callable, Sequence

from absl import logging
import jax
import numpy as np

from stae_jax import systems
from stae_jax.evaluation import metrics
from stae_jax.evaluation import report
from stae_jax.training import workdir as workdir_lib

STEPS = report.STEPS


@dataclasses.dataclass
class EvalOptions:
  """What evaluate.py measures besides the trained systems (flags of evaluate.py)."""
  max_clips: int = 0             # 0: the whole test split
  latency_clips: int = 4         # clips timed one at a time per operating point (0: batched only)
  num_pictures: int = 3          # clips drawn as overlays and reconstructions
  systems: Sequence[str] | None = None  # system tags to evaluate (None: every one in the workdir)
  #: Per-baseline options, {name: {...}} (e.g. {"h264": {"crfs": (...), "preset": "veryfast"}});
  #: a baseline not named here runs with its module's defaults.
  baselines: dict = dataclasses.field(default_factory=dict)
  progress: bool = True


# ------------------------------------------------------------------------------------------------
# Measuring one method
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class RoundTrip:
  """One batch through a codec at one point: what was sent, rebuilt and predicted, and the time of
  each step (seconds for the whole batch)."""
  streams: list[bytes]
  estimated_bits: np.ndarray | None
  received: Any
  rebuilt: Any
  logits: np.ndarray
  seconds: dict[str, float]


class _Warm:
  """Calls a step once untimed the first time it is seen with a key (the compile), then times it."""

  def __init__(self):
    self._seen = set()

  def __call__(self, key, fn, *args):
    if key not in self._seen:
      self._seen.add(key)
      fn(*args)
    started = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - started


def round_trip(codec: systems.Codec, clips: np.ndarray, point: systems.Point,
               warm: _Warm) -> RoundTrip:
  """Device half, server half and classifier of `codec` on `clips`, each step timed."""
  key = (codec.tag, point, len(clips))
  encoded, t_encode = warm(key + ("encode",), codec.encode, clips, point)
  coded, t_code = warm(key + ("entropy_encode",), codec.entropy_encode, encoded, point)
  received, t_uncode = warm(key + ("entropy_decode",), codec.entropy_decode, coded.streams, point)
  rebuilt, t_decode = warm(key + ("decode",), codec.decode, received, point)
  logits, t_classify = warm(key + ("classify",), codec.classify, rebuilt)
  return RoundTrip(streams=coded.streams, estimated_bits=coded.estimated_bits, received=received,
                   rebuilt=rebuilt, logits=np.asarray(logits), seconds=dict(zip(STEPS, (
                       t_encode, t_code, t_uncode, t_decode, t_classify))))


class _Accumulator:
  """One operating point's per-clip results over batches."""

  def __init__(self, point: systems.Point):
    self.point = point
    self.correct: list[bool] = []
    self.num_bytes: list[int] = []
    self.estimated_bits: list[float] = []
    self.batched = {step: 0.0 for step in STEPS}
    self.batched_clips = 0
    self.single: dict[str, list[float]] = {step: [] for step in STEPS}

  def add(self, trip: RoundTrip, labels, valid):
    self.correct.extend(bool(c) for c in (trip.logits.argmax(-1) == labels)[valid])
    self.num_bytes.extend(len(s) for s, v in zip(trip.streams, valid) if v)
    if trip.estimated_bits is not None:
      self.estimated_bits.extend(float(b) for b in np.asarray(trip.estimated_bits)[valid])
    for step, value in trip.seconds.items():
      self.batched[step] += value
    self.batched_clips += len(valid)

  def record(self, clip_shape, reference_top1: float) -> report.PointResult:
    mean_bytes = float(np.mean(self.num_bytes))
    top1 = float(np.mean(self.correct))
    batched = {step: self.batched[step] / max(self.batched_clips, 1) for step in STEPS}
    single = {step: float(np.median(v)) for step, v in self.single.items() if v}
    seconds = {step: single.get(step, batched[step]) for step in STEPS}
    estimated = float(np.mean(self.estimated_bits)) if self.estimated_bits else None
    bits = metrics.bits_per_clip(mean_bytes)
    return report.PointResult(
        name=self.point.name, setting=self.point.as_dict(), num_clips=len(self.correct), top1=top1,
        top1_interval=report.top1_interval(self.correct),
        accuracy_loss_points=metrics.accuracy_loss_points(reference_top1, top1),
        bytes_per_clip=mean_bytes, bits_per_clip=bits,
        compression_ratio=metrics.compression_ratio(clip_shape, mean_bytes),
        bits_per_pixel=metrics.bits_per_pixel(clip_shape, mean_bytes),
        estimated_bits_per_clip=estimated,
        rate_gap_bits=None if estimated is None else bits - estimated,
        rate_gap_relative=(bits - estimated) / estimated if estimated else None,
        seconds=seconds, seconds_source="single_clip" if single else "batched",
        batched_seconds=batched,
        device_seconds=seconds["encode"] + seconds["entropy_encode"],
        server_seconds=seconds["entropy_decode"] + seconds["decode"] + seconds["classify"],
        per_clip=dict(correct=[int(c) for c in self.correct],
                      bits=[8 * b for b in self.num_bytes]))


# ------------------------------------------------------------------------------------------------
# Every method on the test split
# ------------------------------------------------------------------------------------------------

def _progress(iterable, total, enabled, description):
  if not enabled:
    return iterable
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(iterable, total=total, desc=description, unit="batch", dynamic_ncols=True)


def _machine() -> dict:
  return dict(platform=platform.platform(), processor=platform.processor() or platform.machine(),
              cpu_count=os.cpu_count(), jax_backend=jax.default_backend(),
              devices=[str(d) for d in jax.devices()], jax=jax.__version__)


def make_codecs(config, workdir: pathlib.Path, options: EvalOptions, classify) -> list:
  """The learned systems of `workdir` (all, or `options.systems`), then every baseline."""
  clip_shape = (int(config.data.frames), int(config.data.resolution),
                int(config.data.resolution), 3)
  tags = (list(options.systems) if options.systems is not None
          else workdir_lib.discover_systems(workdir))
  if not tags:
    logging.warning("no trained compression system in %s/systems: only the baselines are measured",
                    workdir)
  codecs = [workdir_lib.load_codec(workdir, tag) for tag in tags]
  for codec in codecs:
    if tuple(codec.clip_shape) != clip_shape:
      raise workdir_lib.WorkdirError(
          f"system {codec.tag!r} was trained on clips of {list(codec.clip_shape)}, the config asks "
          f"for {list(clip_shape)}: evaluate with the config it was trained with.")
  context = systems.BaselineContext(clip_shape=clip_shape, classify=classify,
                                    options=dict(options.baselines))
  for name in systems.baselines():
    codecs.extend(systems.get(name).codecs(context))
  for codec in codecs:
    if codec.skipped:
      logging.warning("%s skipped: %s", codec.label, codec.skipped)
  return codecs


def evaluate_workdir(config, workdir: str | pathlib.Path, options: EvalOptions = EvalOptions(), *,
                     loader_fn: Callable | None = None) -> tuple[dict, dict]:
  """Measures every method on the test split; returns (results dict, pictures data).

  `loader_fn(data_config, split, *, seed, train, num_epochs)` gives the test batches (default: the
  dataset's grain pipeline). The pictures data (first clips, what was kept, the reconstructions) is
  for `stae_jax.evaluation.pictures`.
  """
  workdir = pathlib.Path(workdir).absolute()
  if loader_fn is None:
    from stae_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    loader_fn = pipeline.make_loader
  started = time.perf_counter()
  reference = workdir_lib.load_classifier(config, workdir)
  codecs = make_codecs(config, workdir, options, reference)
  running = [c for c in codecs if not c.skipped]
  ref_point = _Accumulator(systems.Point.of("clean"))
  accumulators = {c.tag: {p: _Accumulator(p) for p in c.points} for c in running}
  pictures = dict(videos=None, labels=None, systems={})
  warm = _Warm()
  loader = loader_fn(config.data, "test", seed=int(config.seed), train=False, num_epochs=1)
  try:
    total_batches = math.ceil(len(loader._data_source) / config.data.eval_batch_size)  # pylint: disable=protected-access
  except (AttributeError, TypeError):
    total_batches = None
  if options.max_clips:
    total_batches = math.ceil(options.max_clips / config.data.eval_batch_size)
  clip_shape = None
  seen = 0
  single_clips: list[np.ndarray] = []
  for batch in _progress(loader, total_batches, options.progress, "evaluate"):
    video = np.asarray(batch["video"])
    labels = np.asarray(batch["label"])
    valid = np.asarray(batch.get("mask", np.ones(len(labels), bool)), bool)
    if options.max_clips:
      valid &= np.arange(len(valid)) + seen < options.max_clips
    if not valid.any():
      break
    seen += int(valid.sum())
    clip_shape = tuple(int(d) for d in video.shape[1:])
    if len(single_clips) < options.latency_clips:
      single_clips.extend(video[valid][:options.latency_clips - len(single_clips)])
    if pictures["videos"] is None:
      keep = np.flatnonzero(valid)[:options.num_pictures]
      pictures.update(videos=video[keep], labels=labels[keep])

    logits, seconds = warm(("reference", len(video)), reference, video)
    ref_point.correct.extend(bool(c) for c in (logits.argmax(-1) == labels)[valid])
    ref_point.batched["classify"] += seconds
    ref_point.batched_clips += len(video)
    for codec in running:
      for point, acc in accumulators[codec.tag].items():
        trip = round_trip(codec, video, point, warm)
        acc.add(trip, labels, valid)
        kept = codec.kept(trip.received)
        shown = pictures["systems"].setdefault(codec.tag, dict(block_size=codec.block_size,
                                                               points={}))
        if kept is not None and point.name not in shown["points"]:
          keep = np.flatnonzero(valid)[:options.num_pictures]
          shown["points"][point.name] = dict(
              reconstruction=np.asarray(trip.rebuilt)[keep],
              frame_mask=[kept[i][0] for i in keep], block_masks=[kept[i][1] for i in keep])
    if options.max_clips and seen >= options.max_clips:
      break
  if clip_shape is None:
    raise ValueError("the test split gave no clips to evaluate; check config.data and the dataset.")

  # Single-clip latencies: what one device and one server spend on one clip.
  for clip in single_clips:
    one = clip[None]
    _, seconds = warm(("reference", 1), reference, one)
    ref_point.single["classify"].append(seconds)
    for codec in running:
      for point, acc in accumulators[codec.tag].items():
        trip = round_trip(codec, one, point, warm)
        for step, value in trip.seconds.items():
          acc.single[step].append(value)
  for step in STEPS:
    ref_point.single[step] = ref_point.single[step] or [0.0]
  ref_point.num_bytes = [metrics.raw_clip_bytes(clip_shape)] * len(ref_point.correct)

  reference_top1 = float(np.mean(ref_point.correct))
  methods = {}
  for codec in codecs:
    methods[codec.tag] = report.MethodResult(
        kind=codec.kind, label=codec.label, skipped=codec.skipped, variant_of=codec.variant_of,
        headline=codec.headline, config=codec.summary(),
        points=[] if codec.skipped else [acc.record(clip_shape, reference_top1)
                                         for acc in accumulators[codec.tag].values()])
  ref_record = ref_point.record(clip_shape, reference_top1)
  results = report.Results(
      config_name=config.name, workdir=str(workdir), dataset=config.data.name, split="test",
      num_clips=len(ref_point.correct), clip_shape=list(clip_shape),
      raw_clip_bytes=metrics.raw_clip_bytes(clip_shape), machine=_machine(),
      reference=dict(top1=reference_top1, top1_interval=ref_record.top1_interval,
                     seconds=ref_record.seconds,
                     per_clip=ref_record.per_clip),
      methods=methods, evaluate_seconds=time.perf_counter() - started)
  return results.to_json(), pictures


def finish(results: dict, workdir: pathlib.Path, channel_options, pictures: dict | None = None,
           class_names: list[str] | None = None) -> dict[str, pathlib.Path]:
  """Channel comparison, headline, ablations, then results.json, plots, pictures and report.md."""
  from stae_jax.evaluation import deadlines  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import pictures as pictures_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import plots  # pylint: disable=g-import-not-at-top
  results["channel"] = deadlines.channel_comparison(results, channel_options)
  results["headline"] = report.headline(results)
  results["ablations"] = report.ablations(results)
  paths = dict(results=report.write_results(results, workdir / "results.json"))
  plot_paths = plots.write_plots(results, workdir / "plots")
  picture_paths = []
  if pictures is not None:
    picture_paths = pictures_lib.write_pictures(pictures, workdir / "pictures",
                                                class_names=class_names)
  elif (workdir / "pictures").is_dir():
    picture_paths = sorted(str(p.relative_to(workdir)) for p in (workdir / "pictures").glob("*.png"))
  report_path = workdir / "report.md"
  report_path.write_text(report.markdown(results, plots=plot_paths, pictures=picture_paths))
  paths.update(report=report_path, plots=workdir / "plots", pictures=workdir / "pictures")
  logging.info("headline: %s", results["headline"]["text"])
  return paths


def run(config, workdir, options: EvalOptions = EvalOptions(), channel_options=None, *,
        reuse_results: bool = False, loader_fn: Callable | None = None) -> dict[str, pathlib.Path]:
  """evaluate.py's work: measure (or reuse results.json), then write everything into `workdir`."""
  from stae_jax.data import datasets  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import deadlines  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir).absolute()
  channel_options = channel_options or deadlines.ChannelOptions()
  if reuse_results:
    path = workdir / "results.json"
    if not path.is_file():
      raise FileNotFoundError(f"--reuse_results: no {path}; run evaluate.py without it first.")
    return finish(report.load_results(path), workdir, channel_options)
  results, pictures = evaluate_workdir(config, workdir, options, loader_fn=loader_fn)
  return finish(results, workdir, channel_options, pictures, datasets.class_names_of(config.data))
