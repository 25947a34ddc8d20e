"""Real compression by every method, measured on this machine -> `results.json`.

Two passes, each batch through every method at every operating point, so every method sees the
very same clips:

  validation  the first `validation_clips` clips of the validation split (carved from the training
              split, or stored by the dataset: `stae_jax.data.pipeline`), frozen reference ViT
              only: what anything chosen from results is chosen on (envelopes, the channel
              policy's expectations, best fixed points, and the cells where a baseline's ViT is
              tuned)
  test        the whole test split (or `max_clips`): every number of the report. With
              `test_points="envelope"` (the default) and a validation pass, a method with more
              points than the report lists one by one (`report.MAX_TABLE_POINTS`: H.264's grid)
              is measured here only at what the validation pass chose: its points on the upper
              envelope (`curves.frontier`, the report's envelope) and the cells its ViT is tuned
              at. Its other points keep their validation numbers in results.json
              (`validation_only`); `test_points="all"` measures every point on both passes

  reference  the stage-1 ViT on the uncompressed clips (accuracy loss is measured against it)
  learned    every system trained in the workdir (STAE, its ablations, DeepISC)
  baselines  every baseline of `stae_jax.systems` (H.264 over its grid, raw offloading, ...); one
             that cannot run here (no libx264) is reported as skipped

Every method is a `stae_jax.systems.Codec`, measured by one function (`round_trip`): the device
half makes real bitstreams, the server half decodes them, and the frozen reference ViT scores what
it rebuilt (the headline's column, the same classifier for all). The "tuned" column scores the
same test reconstructions with a ViT tuned for the method's output: a learned system's own
(`codec.classify`), and for a headline baseline the reference fine-tuned with the main learned
system's last-stage budget at its envelope points near the target (`stae_jax.evaluation.tuned`).
Bits per clip are the lengths of the streams the codec returned.

Times. Batched times are amortised over an evaluation batch (throughput). The per-step times the
tables show are single-clip wall medians (`latency_clips` test clips at batch 1, each run
`latency_repeats` times in a row): a device encodes one clip when it has one. The same runs give
the device profile the channel study uses (results.json `device_profile`,
`stae_jax.evaluation.device_profile`): medians of the processor seconds each step spent, which,
unlike wall seconds, do not grow when other programs hold the cores; the load average before and
after is recorded with it. Every model step is timed after `block_until_ready`, and the first call
of each step per batch shape is a warm-up (the compile), never timed. results.json's
`profile` sums the same step times per method and pass, beside the warm-ups' wall seconds, the
tuned ViT's scoring and the loader's: where an evaluation's time went.

Why only the envelope: the headline's curves and the tuned column read a method on the test split
at its envelope points only, which are chosen on validation, so the points off it change none of
their numbers (only their own rows) but cost the most (H.264's 75 cells were two thirds of an evaluation's
time, most of it the reference ViT classifying their rebuilt clips). The channel comparison's
policies choose among the points measured on test (`stae_jax.evaluation.deadlines`). A measured
point's numbers are the same whichever points are measured beside it.

Settings: `config.eval` (configs/common.py `eval_settings`) over `default_settings()`, evaluate.py's
flags over both (`options_from_config`).
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
from stae_jax.evaluation import curves
from stae_jax.evaluation import deadlines
from stae_jax.evaluation import device_profile
from stae_jax.evaluation import metrics
from stae_jax.evaluation import report
from stae_jax.systems import h264
from stae_jax.systems import loading

STEPS = report.STEPS
#: `EvalOptions.test_points`: what the test pass measures of a method with many points.
TEST_POINTS = ("envelope", "all")


@dataclasses.dataclass
class EvalOptions:
  """What evaluate.py measures besides the trained systems. evaluate.py builds it from
  `config.eval` and its flags (`options_from_config`); the defaults here are the library's, which
  `default_settings` hands to the configs."""
  max_clips: int = 0             # 0: the whole test split
  #: Validation clips measured (the first ones of the split; 0: none, and then envelopes and
  #: policies are chosen on the test clips and no baseline is tuned). The embedded default's
  #: validation split has 300; 200 (a 95% interval of about +-7 points at 45%) keeps this pass at
  #: a third of the test pass's cost.
  validation_clips: int = 200
  latency_clips: int = 4         # clips timed one at a time per operating point (0: batched only)
  #: Runs of each of those clips in a row per point (after the warm-up): the device profile's
  #: medians are over latency_clips x latency_repeats runs (`stae_jax.evaluation.device_profile`).
  latency_repeats: int = 5
  num_pictures: int = 3          # clips drawn as overlays and reconstructions
  systems: Sequence[str] | None = None  # system tags to evaluate (None: every one in the workdir)
  #: Baselines to measure (names of `stae_jax.systems.baselines()`; None: all of them).
  baseline_methods: Sequence[str] | None = None
  #: Per-baseline options, {name: {...}} (e.g. {"h264": {"frames": (16, 2), "scales": (1, 2),
  #: "crfs": (...), "preset": "veryfast"}}); a baseline not named here runs with its defaults.
  baselines: dict = dataclasses.field(default_factory=dict)
  #: Tune the reference ViT for each headline baseline at its envelope points near the target
  #: (the "tuned" column); `tuned_cells` = (points below the first reaching it, points from it).
  tune_baselines: bool = True
  tuned_cells: tuple[int, int] = (2, 2)
  #: What the test pass measures of a method with more than `report.MAX_TABLE_POINTS` points (the
  #: module doc): "envelope", its validation envelope and tuned cells; "all", every point. Without
  #: a validation pass every point is measured either way.
  test_points: str = "envelope"
  progress: bool = True

  def __post_init__(self):
    if self.test_points not in TEST_POINTS:
      raise ValueError(f"test_points={self.test_points!r}: expected one of "
                       f"{', '.join(map(repr, TEST_POINTS))} (evaluate.py --test_points, "
                       "config.eval.test_points).")
    if self.latency_repeats < 1:
      raise ValueError(f"latency_repeats={self.latency_repeats}: each clip is timed at least once "
                       "(evaluate.py --latency_repeats, config.eval.latency_repeats).")


# ------------------------------------------------------------------------------------------------
# Settings: config.eval, evaluate.py's flags
# ------------------------------------------------------------------------------------------------

def default_settings() -> dict:
  """The keys of `config.eval` with their defaults, each read from the one place it is written
  (`EvalOptions`, `deadlines.ChannelOptions`, `stae_jax.systems.h264`'s grid defaults), so that a
  config (configs/common.py `eval_settings`), a config without an `eval` section and evaluate.py's
  flags can never disagree on a default. evaluate.py's flags carry the same names.

  validation_clips, latency_clips, latency_repeats, num_pictures, tune_baselines, test_points:
  `EvalOptions`'s fields;
  h264_grid: `h264.parse_grid`'s spec ("full", "single" or "frames=16+2,scales=1+2"); crfs,
  h264_preset: the grid's CRF axis and x264 preset; deadlines (seconds), snrs (mean dB) and
  channel_seeds (traces per SNR, seeds 0..n-1): the channel comparison's."""
  options, channel = EvalOptions(), deadlines.ChannelOptions()
  seeds = tuple(channel.seeds)
  if seeds != tuple(range(len(seeds))):
    raise ValueError(f"ChannelOptions.seeds={seeds}: config.eval.channel_seeds counts traces "
                     "(seeds 0..n-1); keep the default seeds a range.")
  return dict(
      validation_clips=options.validation_clips, latency_clips=options.latency_clips,
      latency_repeats=options.latency_repeats, num_pictures=options.num_pictures,
      tune_baselines=options.tune_baselines,
      test_points=options.test_points, h264_grid=h264.DEFAULT_GRID, crfs=tuple(h264.DEFAULT_CRFS),
      h264_preset=h264.DEFAULT_PRESET, deadlines=tuple(channel.deadlines_seconds),
      snrs=tuple(channel.mean_snrs_db), channel_seeds=len(seeds))


def _known(values: dict, source: str, known: dict) -> dict:
  unknown = sorted(set(values) - set(known))
  if unknown:
    raise ValueError(f"{source}: unknown evaluation setting(s) {', '.join(unknown)}; the known "
                     f"ones are {', '.join(known)} (configs/common.py eval_settings).")
  return values


def options_from_config(config, *, max_clips: int = 0, systems_to_run: Sequence[str] | None = None,
                        progress: bool = True, **overrides
                        ) -> tuple[EvalOptions, deadlines.ChannelOptions]:
  """evaluate.py's (EvalOptions, ChannelOptions): `default_settings()`, replaced by what
  `config.eval` sets, replaced by `overrides` that are not None (evaluate.py's flags of the same
  names, left None when not given). A config without an `eval` section (one saved by an older
  stae-jax, a test's) evaluates with the defaults.

  max_clips, systems_to_run, progress: run-time choices that no config records (test clips, system
  tags, the progress bar)."""
  settings = default_settings()
  section = config.get("eval") if hasattr(config, "get") else None
  if section is not None:
    given = section.to_dict() if hasattr(section, "to_dict") else dict(section)
    settings.update(_known(given, "config.eval", settings))
  settings.update(_known({k: v for k, v in overrides.items() if v is not None},
                         "evaluate.py flags", settings))
  grid = h264.parse_grid(str(settings["h264_grid"]), int(config.data.frames))
  options = EvalOptions(
      max_clips=int(max_clips), validation_clips=int(settings["validation_clips"]),
      latency_clips=int(settings["latency_clips"]),
      latency_repeats=int(settings["latency_repeats"]), num_pictures=int(settings["num_pictures"]),
      systems=None if systems_to_run is None else tuple(systems_to_run), progress=bool(progress),
      tune_baselines=bool(settings["tune_baselines"]), test_points=str(settings["test_points"]),
      baselines=dict(h264=dict(grid, crfs=tuple(float(c) for c in settings["crfs"]),
                               preset=str(settings["h264_preset"]))))
  channel = deadlines.ChannelOptions(
      deadlines_seconds=tuple(float(d) for d in settings["deadlines"]),
      mean_snrs_db=tuple(float(s) for s in settings["snrs"]),
      seeds=tuple(range(int(settings["channel_seeds"]))))
  return options, channel


# ------------------------------------------------------------------------------------------------
# Measuring one method
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class RoundTrip:
  """One batch through a codec at one point: what was sent, rebuilt and predicted (by the frozen
  reference ViT), and the time of each step (seconds for the whole batch: wall, and the processor
  seconds of the process, `_Warm`)."""
  streams: list[bytes]
  estimated_bits: np.ndarray | None
  received: Any
  rebuilt: Any
  logits: np.ndarray
  seconds: dict[str, float]
  processor_seconds: dict[str, float]


class _Warm:
  """Calls a step once untimed the first time it is seen with a key (the compile), then times it.

  The untimed first calls are not free (a compile can cost more than the batches after it), so
  their wall seconds are summed per `owner` (a method's tag, "reference") for the profile. Returns
  the wall seconds of the timed call; the processor seconds the process spent in it (every thread,
  `time.process_time`) are left in `last_processor_seconds` (the device profile's measure)."""

  def __init__(self):
    self._seen = set()
    self.warm_up_seconds: dict[str, float] = {}
    self.last_processor_seconds = 0.0

  def __call__(self, key, fn, *args, owner: str = "other"):
    if key not in self._seen:
      self._seen.add(key)
      started = time.perf_counter()
      fn(*args)
      self.warm_up_seconds[owner] = (self.warm_up_seconds.get(owner, 0.0)
                                     + time.perf_counter() - started)
    processor = time.process_time()
    started = time.perf_counter()
    out = fn(*args)
    wall = time.perf_counter() - started
    self.last_processor_seconds = time.process_time() - processor
    return out, wall


def round_trip(codec: systems.Codec, clips: np.ndarray, point: systems.Point, warm: _Warm,
               classify: Callable | None = None) -> RoundTrip:
  """Device half, server half and a classifier (`classify`, default the codec's) on `clips`, each
  step timed."""
  key = (codec.tag, point, len(clips))
  classify = classify or codec.classify
  owner = codec.tag
  processor = {}
  encoded, t_encode = warm(key + ("encode",), codec.encode, clips, point, owner=owner)
  processor["encode"] = warm.last_processor_seconds
  coded, t_code = warm(key + ("entropy_encode",), codec.entropy_encode, encoded, point,
                       owner=owner)
  processor["entropy_encode"] = warm.last_processor_seconds
  received, t_uncode = warm(key + ("entropy_decode",), codec.entropy_decode, coded.streams, point,
                            owner=owner)
  processor["entropy_decode"] = warm.last_processor_seconds
  rebuilt, t_decode = warm(key + ("decode",), codec.decode, received, point, owner=owner)
  processor["decode"] = warm.last_processor_seconds
  logits, t_classify = warm(_classify_key(classify, rebuilt), classify, rebuilt, owner=owner)
  processor["classify"] = warm.last_processor_seconds
  return RoundTrip(streams=coded.streams, estimated_bits=coded.estimated_bits, received=received,
                   rebuilt=rebuilt, logits=np.asarray(logits), seconds=dict(zip(STEPS, (
                       t_encode, t_code, t_uncode, t_decode, t_classify))),
                   processor_seconds=processor)


def _classify_key(classify, clips) -> tuple:
  """A classifier compiles once per input shape and dtype: its warm-up key."""
  return ("classify", id(classify), tuple(np.shape(clips)), str(getattr(clips, "dtype", "")))


class _Accumulator:
  """One operating point's per-clip results over batches (one split)."""

  def __init__(self, point: systems.Point):
    self.point = point
    self.correct: list[bool] = []
    self.tuned_correct: list[bool] = []
    self.num_bytes: list[int] = []
    self.estimated_bits: list[float] = []
    self.batched = {step: 0.0 for step in STEPS}
    self.batched_clips = 0
    self.single: dict[str, list[float]] = {step: [] for step in STEPS}
    self.single_processor: dict[str, list[float]] = {step: [] for step in STEPS}
    self.tuned_seconds = 0.0  # the tuned ViT's scoring, compiles included (profile only)

  def add(self, trip: RoundTrip, labels, valid, tuned_logits=None):
    self.correct.extend(bool(c) for c in (trip.logits.argmax(-1) == labels)[valid])
    if tuned_logits is not None:
      self.tuned_correct.extend(bool(c) for c in (np.asarray(tuned_logits).argmax(-1)
                                                  == labels)[valid])
    self.num_bytes.extend(len(s) for s, v in zip(trip.streams, valid) if v)
    if trip.estimated_bits is not None:
      self.estimated_bits.extend(float(b) for b in np.asarray(trip.estimated_bits)[valid])
    for step, value in trip.seconds.items():
      self.batched[step] += value
    self.batched_clips += len(valid)

  def top1(self) -> float:
    return float(np.mean(self.correct))

  def bits(self) -> float:
    return metrics.bits_per_clip(float(np.mean(self.num_bytes)))

  def validation_record(self) -> dict:
    return dict(num_clips=len(self.correct), top1=self.top1(),
                top1_interval=curves.top1_interval(self.correct), bits_per_clip=self.bits(),
                per_clip=dict(correct=[int(c) for c in self.correct],
                              bits=[8 * b for b in self.num_bytes]))

  def record(self, clip_shape, reference_top1: float, validation: "_Accumulator | None" = None,
             tuned_classifier: str | None = None) -> report.PointResult:
    mean_bytes = float(np.mean(self.num_bytes))
    top1 = self.top1()
    batched = {step: self.batched[step] / max(self.batched_clips, 1) for step in STEPS}
    single = {step: float(np.median(v)) for step, v in self.single.items() if v}
    seconds = {step: single.get(step, batched[step]) for step in STEPS}
    estimated = float(np.mean(self.estimated_bits)) if self.estimated_bits else None
    bits = metrics.bits_per_clip(mean_bytes)
    tuned = None
    if self.tuned_correct:
      tuned_top1 = float(np.mean(self.tuned_correct))
      tuned = dict(classifier=tuned_classifier, top1=tuned_top1,
                   top1_interval=curves.top1_interval(self.tuned_correct),
                   accuracy_loss_points=metrics.accuracy_loss_points(reference_top1, tuned_top1),
                   per_clip=dict(correct=[int(c) for c in self.tuned_correct]))
    return report.PointResult(
        name=self.point.name, setting=self.point.as_dict(), num_clips=len(self.correct), top1=top1,
        top1_interval=curves.top1_interval(self.correct),
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
                      bits=[8 * b for b in self.num_bytes]),
        validation=None if validation is None else validation.validation_record(),
        tuned=tuned)


# ------------------------------------------------------------------------------------------------
# Every method on a split
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


def _load_codecs(config, workdir: pathlib.Path, options: EvalOptions, classify) -> list:
  """The learned systems of `workdir` (all, or `options.systems`), then the baselines
  (`options.baseline_methods`, None: all) with `options.baselines`' options, scored by `classify`
  (`loading.load_codecs`, which serving and the single-clip tools load a run with too)."""
  tags = (list(options.systems) if options.systems is not None
          else loading.discover_systems(workdir))
  if not tags:
    logging.warning("no trained compression system in %s/systems: only the baselines are measured",
                    workdir)
  names = systems.baselines() if options.baseline_methods is None else list(
      options.baseline_methods)
  for name in names:
    if name not in systems.baselines():
      raise ValueError(f"{name!r} is not a baseline; stae_jax.systems has: "
                       f"{', '.join(systems.baselines())}")
  return loading.load_codecs(workdir, tags + names, classify=classify,
                             baselines=dict(options.baselines),
                             clip_shape=loading.clip_shape_of(config.data))


@dataclasses.dataclass
class _Split:
  """What one pass over a split measured: the reference's and every point's accumulators, and the
  wall seconds spent waiting for the loader's batches."""
  reference: _Accumulator
  points: dict[str, dict[systems.Point, _Accumulator]]
  clip_shape: tuple | None = None
  loading_seconds: float = 0.0


def _timed_batches(loader, measured: _Split):
  """`loader`'s batches, the wall time of fetching each added to `measured.loading_seconds`."""
  batches = iter(loader)
  while True:
    started = time.perf_counter()
    try:
      batch = next(batches)
    except StopIteration:
      return
    finally:
      measured.loading_seconds += time.perf_counter() - started
    yield batch


def _measure(split: str, config, codecs, reference, loader_fn, *, max_clips: int, warm: _Warm,
             progress: bool, tuned: dict | None = None, pictures: dict | None = None,
             num_pictures: int = 0, single_clips: list | None = None,
             latency_clips: int = 0, points: dict | None = None) -> _Split:
  """One pass over `split`: every codec at every point (or at `points[tag]`, where given) on the
  same clips, scored by the reference ViT, and by `tuned[(tag, point)]` where that is given.
  Collects pictures and the clips timed alone where asked."""
  points = points or {}
  measured = _Split(reference=_Accumulator(systems.Point.of("clean")),
                    points={c.tag: {p: _Accumulator(p) for p in points.get(c.tag, c.points)}
                            for c in codecs})
  loader = loader_fn(config.data, split, seed=int(config.seed), train=False, num_epochs=1)
  try:
    total_batches = math.ceil(len(loader._data_source) / config.data.eval_batch_size)  # pylint: disable=protected-access
  except (AttributeError, TypeError):
    total_batches = None
  if max_clips:
    total_batches = min(total_batches or math.inf, math.ceil(max_clips / config.data.eval_batch_size))
  seen = 0
  for batch in _progress(_timed_batches(loader, measured), total_batches, progress, split):
    video = np.asarray(batch["video"])
    labels = np.asarray(batch["label"])
    valid = np.asarray(batch.get("mask", np.ones(len(labels), bool)), bool)
    if max_clips:
      valid &= np.arange(len(valid)) + seen < max_clips
    if not valid.any():
      break
    seen += int(valid.sum())
    measured.clip_shape = tuple(int(d) for d in video.shape[1:])
    if single_clips is not None and len(single_clips) < latency_clips:
      single_clips.extend(video[valid][:latency_clips - len(single_clips)])
    if pictures is not None and pictures["videos"] is None:
      keep = np.flatnonzero(valid)[:num_pictures]
      pictures.update(videos=video[keep], labels=labels[keep])

    logits, seconds = warm(_classify_key(reference, video), reference, video, owner="reference")
    ref = measured.reference
    ref.correct.extend(bool(c) for c in (logits.argmax(-1) == labels)[valid])
    ref.batched["classify"] += seconds
    ref.batched_clips += len(video)
    for codec in codecs:
      for point, acc in measured.points[codec.tag].items():
        trip = round_trip(codec, video, point, warm, reference)
        tuned_classify = (tuned or {}).get((codec.tag, point))
        tuned_logits = None
        if tuned_classify is not None:
          started = time.perf_counter()
          tuned_logits = np.asarray(tuned_classify(trip.rebuilt))
          acc.tuned_seconds += time.perf_counter() - started
        acc.add(trip, labels, valid, tuned_logits)
        if pictures is None:
          continue
        kept = codec.kept(trip.received)
        shown = pictures["systems"].setdefault(codec.tag, dict(block_size=codec.block_size,
                                                               points={}))
        if kept is not None and point.name not in shown["points"]:
          keep = np.flatnonzero(valid)[:num_pictures]
          shown["points"][point.name] = dict(
              reconstruction=np.asarray(trip.rebuilt)[keep],
              frame_mask=[kept[i][0] for i in keep], block_masks=[kept[i][1] for i in keep])
    if max_clips and seen >= max_clips:
      break
  if measured.clip_shape is None:
    raise ValueError(f"the {split} split gave no clips to evaluate; check config.data and the "
                     "dataset.")
  return measured


def _step_sums(accumulators, *, single: bool = False) -> dict[str, float]:
  """Wall seconds of each step summed over `accumulators` (points) and their batches, or over the
  clips they timed one at a time (`single`)."""
  sums = {step: 0.0 for step in STEPS}
  for acc in accumulators:
    for step in STEPS:
      sums[step] += float(sum(acc.single[step])) if single else float(acc.batched[step])
  return sums


def _profile(running, validation: _Split | None, test: _Split, warm: _Warm) -> dict:
  """results.json's `profile` (its shape: `stae_jax.evaluation.report`): where a run's measuring
  time went, per method and step, from the times the tables are made of plus what they leave out
  (warm-up calls, the tuned ViT's scoring, loading). It only sums; no measured number changes."""

  def entry(pick, tuned_seconds: float, owner: str) -> dict:
    passes = dict(validation=None if validation is None else _step_sums(pick(validation)),
                  test=_step_sums(pick(test)), single_clip=_step_sums(pick(test), single=True))
    warm_up = warm.warm_up_seconds.get(owner, 0.0)
    total = sum(sum(p.values()) for p in passes.values() if p) + tuned_seconds + warm_up
    return dict(passes, tuned_classify=tuned_seconds, warm_up=warm_up, total=total)

  methods = {}
  for codec in running:
    methods[codec.tag] = entry(lambda split, tag=codec.tag: split.points[tag].values(),
                               sum(acc.tuned_seconds for acc in test.points[codec.tag].values()),
                               codec.tag)
  return dict(steps=list(STEPS),
              loading_seconds=dict(validation=None if validation is None
                                   else validation.loading_seconds, test=test.loading_seconds),
              reference=entry(lambda split: [split.reference], 0.0, "reference"),
              methods=methods)


def validation_envelope(validation: dict) -> list[str]:
  """Names of the points on the upper envelope chosen on the validation split, from
  {point name: validation record}: `curves.frontier` as the report chooses it on results.json's
  points (`report.describe_envelope`), so the two cannot disagree."""
  return [p["name"] for p in curves.frontier([
      dict(name=name, top1=record["top1"], bits_per_clip=record["bits_per_clip"],
           validation=record) for name, record in validation.items()])]


def _test_points(running, validation: _Split | None, tuned_cells: set,
                 options: EvalOptions) -> dict[str, tuple]:
  """{tag: points the test pass measures} for the methods measured at fewer than all their points
  (`EvalOptions.test_points`): a method with more than `report.MAX_TABLE_POINTS` points, under
  "envelope" and with a validation pass, at its validation envelope plus the cells the baseline
  tuning picked (`tuned_cells`, (tag, point); on that envelope already, `tuned.cells_to_tune`), in
  its own order. A learned system's own ViT scores every point it is measured at, so it adds
  none."""
  if options.test_points == "all" or validation is None:
    return {}
  chosen = {}
  for codec in running:
    if len(codec.points) <= report.MAX_TABLE_POINTS:
      continue
    keep = set(validation_envelope({p.name: acc.validation_record()
                                    for p, acc in validation.points[codec.tag].items()}))
    keep |= {p.name for p in codec.points if (codec.tag, p) in tuned_cells}
    chosen[codec.tag] = tuple(p for p in codec.points if p.name in keep)
    logging.info("%s: the test pass measures %d of its %d points (its validation envelope and "
                 "tuned cells; --test_points=all: every one)", codec.label, len(keep),
                 len(codec.points))
  return chosen


def evaluate_workdir(config, workdir: str | pathlib.Path, options: EvalOptions = EvalOptions(), *,
                     loader_fn: Callable | None = None) -> tuple[dict, dict]:
  """Measures every method on the validation and test splits; returns (results dict, pictures).

  `loader_fn(data_config, split, *, seed, train, num_epochs)` gives the batches (default: the
  dataset's grain pipeline). The pictures data (first clips, what was kept, the reconstructions) is
  for `stae_jax.evaluation.pictures`.
  """
  from stae_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import tuned as tuned_lib  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir).absolute()
  loader_fn = loader_fn or pipeline.make_loader
  started = time.perf_counter()
  reference = loading.load_classifier(config, workdir)
  codecs = _load_codecs(config, workdir, options, reference)
  running = [c for c in codecs if not c.skipped]
  warm = _Warm()
  phases = {}

  def phase(name):
    phases[name] = time.perf_counter() - started - sum(phases.values())
    logging.info("evaluate: %s took %.1f s", name, phases[name])

  phase("set_up")
  validation = None
  if options.validation_clips:
    validation = _measure("validation", config, running, reference, loader_fn,
                          max_clips=options.validation_clips, warm=warm, progress=options.progress)
  phase("validation")

  # The tuned column: a learned system's own ViT at every point; a headline baseline's, the
  # reference fine-tuned at its envelope points near the target (chosen on validation).
  tuned = {(c.tag, p): c.classify for c in running if c.tuned_classifier for p in c.points}
  tuned_what = {c.tag: c.tuned_classifier for c in running if c.tuned_classifier}
  budget_from = next((c.tag for c in running if c.tuned_classifier and c.headline), None)
  baselines = [c for c in running if c.headline and not c.tuned_classifier]
  tuned_cells = set()
  if options.tune_baselines and validation is not None and budget_from and baselines:
    made = tuned_lib.tune_baselines(
        config, workdir, baselines, reference, validation, loader_fn=loader_fn,
        budget_from=budget_from, cells=options.tuned_cells, progress=options.progress)
    tuned.update(made.classifiers)
    tuned_what.update(made.descriptions)
    tuned_cells = set(made.classifiers)
  phase("tuning")

  pictures = dict(videos=None, labels=None, systems={})
  single_clips: list[np.ndarray] = []
  test_points = _test_points(running, validation, tuned_cells, options)
  test = _measure("test", config, running, reference, loader_fn, max_clips=options.max_clips,
                  warm=warm, progress=options.progress, tuned=tuned, pictures=pictures,
                  num_pictures=options.num_pictures, single_clips=single_clips,
                  latency_clips=options.latency_clips, points=test_points)
  clip_shape = test.clip_shape
  phase("test")

  # Single-clip latencies, what one device and one server spend on one clip, and the device
  # profile the channel study uses: each clip alone, `latency_repeats` runs in a row per point.
  ref_point = test.reference
  load_before = os.getloadavg()
  for clip in single_clips:
    one = clip[None]
    for _ in range(options.latency_repeats):
      _, seconds = warm(_classify_key(reference, one), reference, one, owner="reference")
      ref_point.single["classify"].append(seconds)
  for codec in running:
    for point, acc in test.points[codec.tag].items():
      for clip in single_clips:
        for _ in range(options.latency_repeats):
          trip = round_trip(codec, clip[None], point, warm, reference)
          for step in STEPS:
            acc.single[step].append(trip.seconds[step])
            acc.single_processor[step].append(trip.processor_seconds[step])
  load_after = os.getloadavg()
  for step in STEPS:
    ref_point.single[step] = ref_point.single[step] or [0.0]
  profile = None
  if single_clips:
    profile = device_profile.measured(
        {c.tag: {p.name: acc.single_processor for p, acc in test.points[c.tag].items()}
         for c in running},
        {c.tag: {p.name: acc.single for p, acc in test.points[c.tag].items()} for c in running},
        clips=len(single_clips), repeats=options.latency_repeats, load_before=load_before,
        load_after=load_after)
  ref_point.num_bytes = [metrics.raw_clip_bytes(clip_shape)] * len(ref_point.correct)
  phase("single_clip_latency")

  reference_top1 = ref_point.top1()
  methods = {}
  for codec in codecs:
    points = [] if codec.skipped else [
        acc.record(clip_shape, reference_top1,
                   None if validation is None else validation.points[codec.tag][point],
                   tuned_what.get(codec.tag))
        for point, acc in test.points[codec.tag].items()]
    # The points the test pass left out (`_test_points`): their validation numbers only.
    validation_only = [] if codec.skipped or validation is None else [
        dict(name=point.name, setting=point.as_dict(), validation=acc.validation_record())
        for point, acc in validation.points[codec.tag].items()
        if point not in test.points[codec.tag]]
    methods[codec.tag] = report.MethodResult(
        kind=codec.kind, label=codec.label, skipped=codec.skipped, variant_of=codec.variant_of,
        headline=codec.headline, config=codec.summary(), points=points,
        tuned_classifier=tuned_what.get(codec.tag), validation_only=validation_only,
        **report.describe_envelope([dataclasses.asdict(p) for p in points]))
  ref_record = ref_point.record(clip_shape, reference_top1)
  results = report.Results(
      config_name=config.name, workdir=str(workdir), dataset=config.data.name, split="test",
      num_clips=len(ref_point.correct), clip_shape=list(clip_shape),
      raw_clip_bytes=metrics.raw_clip_bytes(clip_shape), machine=_machine(),
      reference=dict(top1=reference_top1, top1_interval=ref_record.top1_interval,
                     seconds=ref_record.seconds, per_clip=ref_record.per_clip,
                     validation=None if validation is None else dict(
                         num_clips=len(validation.reference.correct),
                         top1=validation.reference.top1(),
                         top1_interval=curves.top1_interval(validation.reference.correct))),
      methods=methods, evaluate_seconds=time.perf_counter() - started, phase_seconds=phases,
      test_points=options.test_points,
      profile=_profile(running, validation, test, warm), device_profile=profile,
      validation=None if validation is None else dict(
          split="validation", num_clips=len(validation.reference.correct),
          rule=pipeline.validation_rule(config.data)))
  return results.to_json(), pictures


def declare_profile(results: dict, profile: dict) -> None:
  """Makes `profile` (`device_profile.load`) the one results' channel study uses; a measured
  profile it replaces is kept as `measured_device_profile`."""
  device_profile.check(profile, results)
  current = results.get("device_profile")
  if current and current.get("source") == "measured":
    results["measured_device_profile"] = current
  results["device_profile"] = profile


def finish(results: dict, workdir: pathlib.Path, channel_options, pictures: dict | None = None,
           class_names: list[str] | None = None,
           declared_profile: dict | None = None) -> dict[str, pathlib.Path]:
  """Channel comparison (with `declared_profile` where given, else results' own device profile),
  headline, ablations, then results.json, plots, pictures and report.md."""
  from stae_jax.evaluation import pictures as pictures_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import plots  # pylint: disable=g-import-not-at-top
  started = time.perf_counter()
  if declared_profile is not None:
    declare_profile(results, declared_profile)
  results["channel"] = deadlines.channel_comparison(results, channel_options)
  results["headline"] = report.headline(results)
  results["ablations"] = report.ablations(results)
  plot_paths = plots.write_plots(results, workdir / "plots")
  picture_paths = []
  if pictures is not None:
    picture_paths = pictures_lib.write_pictures(pictures, workdir / "pictures",
                                                class_names=class_names)
  elif (workdir / "pictures").is_dir():
    picture_paths = sorted(str(p.relative_to(workdir)) for p in (workdir / "pictures").glob("*.png"))
  results.setdefault("phase_seconds", {})["channel_and_report"] = time.perf_counter() - started
  paths = dict(results=report.write_results(results, workdir / "results.json"))
  report_path = workdir / "report.md"
  report_path.write_text(report.markdown(results, plots=plot_paths, pictures=picture_paths))
  paths.update(report=report_path, plots=workdir / "plots", pictures=workdir / "pictures")
  logging.info("headline: %s", results["headline"]["text"])
  return paths


def run(config, workdir, options: EvalOptions = EvalOptions(), channel_options=None, *,
        reuse_results: bool = False, loader_fn: Callable | None = None,
        declared_profile: str | pathlib.Path | None = None) -> dict[str, pathlib.Path]:
  """evaluate.py's work: measure (or reuse results.json), then write everything into `workdir`.
  `declared_profile`: a device profile file (`device_profile.load`) the channel study uses instead
  of the measured one."""
  from stae_jax.data import datasets  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir).absolute()
  channel_options = channel_options or deadlines.ChannelOptions()
  declared = None if declared_profile is None else device_profile.load(declared_profile)
  if reuse_results:
    path = workdir / "results.json"
    if not path.is_file():
      raise FileNotFoundError(f"--reuse_results: no {path}; run evaluate.py without it first.")
    return finish(loading.load_results(path), workdir, channel_options, declared_profile=declared)
  results, pictures = evaluate_workdir(config, workdir, options, loader_fn=loader_fn)
  return finish(results, workdir, channel_options, pictures, datasets.class_names_of(config.data),
                declared_profile=declared)
