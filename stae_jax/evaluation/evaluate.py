"""Real compression of the test split by every method, measured on this machine -> `results.json`.

One pass over the test split; each batch goes through every method at every operating point, so the
split is read and decoded once and every method sees the very same clips:

  reference  the stage-1 ViT on the uncompressed clips (accuracy loss is measured against it)
  raw        offloading the uint8 clip as it is (T*H*W*3 bytes, the reference's accuracy)
  <system>   every compression system trained in the workdir (STAE, its ablations, DeepISC): the
             device half (encoder, range coder) makes real bitstreams, the server half decodes them
             and the system's ViT classifies the reconstruction (`stae_jax.evaluation.codec`)
  h264       libx264 through PyAV at each CRF (low-delay settings, `stae_jax.evaluation.x264`),
             decoded and classified by the reference ViT; skipped with a message without libx264

Times. Batched times are amortised over an evaluation batch (throughput). The per-step times the
tables and the channel use are single-clip medians (`latency_clips` clips at batch 1): a device
encodes one clip when it has one, and x264 is timed one clip at a time as well. Every model step is
timed after `block_until_ready`, and the first call of each compiled step is a warm-up, never timed.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import platform
import time
from typing import Callable, Sequence

from absl import logging
import jax
import numpy as np

from stae_jax.evaluation import codec as codec_lib
from stae_jax.evaluation import loading
from stae_jax.evaluation import metrics
from stae_jax.evaluation import x264

STEPS = ("encode", "entropy_encode", "entropy_decode", "decode", "classify")


@dataclasses.dataclass
class EvalOptions:
  """What evaluate.py measures besides the trained systems (flags of evaluate.py)."""
  crfs: Sequence[float] = (23, 29, 35, 41, 47, 51)
  h264_preset: str = "veryfast"
  max_clips: int = 0             # 0: the whole test split
  latency_clips: int = 4         # clips timed one at a time per operating point (0: batched only)
  num_pictures: int = 3          # clips drawn as overlays and reconstructions
  systems: Sequence[str] | None = None  # system tags to evaluate (None: every one in the workdir)
  progress: bool = True


class _Point:
  """Accumulates one operating point's per-clip results over batches."""

  def __init__(self, name: str, setting: dict):
    self.name, self.setting = name, setting
    self.correct: list[bool] = []
    self.num_bytes: list[int] = []
    self.estimated_bits: list[float] = []
    self.batched = {step: 0.0 for step in STEPS}
    self.batched_clips = 0
    self.single: dict[str, list[float]] = {step: [] for step in STEPS}

  def add(self, correct, num_bytes, estimated_bits=None):
    self.correct.extend(bool(c) for c in correct)
    self.num_bytes.extend(int(b) for b in num_bytes)
    if estimated_bits is not None:
      self.estimated_bits.extend(float(b) for b in estimated_bits)

  def add_batched(self, seconds: dict, clips: int):
    for step, value in seconds.items():
      self.batched[step] += value
    self.batched_clips += clips


def _timed(fn: Callable, *args):
  started = time.perf_counter()
  out = fn(*args)
  return out, time.perf_counter() - started


class _Warm:
  """Calls a compiled step once untimed the first time it is seen with a key (the compile)."""

  def __init__(self):
    self._seen = set()

  def __call__(self, key, fn, *args):
    if key not in self._seen:
      self._seen.add(key)
      fn(*args)
    return _timed(fn, *args)


def _progress(iterable, total, enabled, description):
  if not enabled:
    return iterable
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(iterable, total=total, desc=description, unit="batch", dynamic_ncols=True)


def _point_record(point: _Point, clip_shape, reference_top1: float) -> dict:
  """The results.json record of one operating point (see stae_jax/evaluation/report.py)."""
  mean_bytes = float(np.mean(point.num_bytes))
  top1 = float(np.mean(point.correct))
  batched = {step: point.batched[step] / max(point.batched_clips, 1) for step in STEPS}
  single = {step: float(np.median(v)) for step, v in point.single.items() if v}
  seconds = {step: single.get(step, batched[step]) for step in STEPS}
  record = dict(
      name=point.name, setting=point.setting, num_clips=len(point.correct), top1=top1,
      accuracy_loss_points=metrics.accuracy_loss_points(reference_top1, top1),
      bytes_per_clip=mean_bytes, bits_per_clip=metrics.bits_per_clip(mean_bytes),
      compression_ratio=metrics.compression_ratio(clip_shape, mean_bytes),
      bits_per_pixel=metrics.bits_per_pixel(clip_shape, mean_bytes),
      estimated_bits_per_clip=None, rate_gap_bits=None, rate_gap_relative=None,
      seconds=seconds, seconds_source="single_clip" if single else "batched",
      batched_seconds=batched,
      device_seconds=seconds["encode"] + seconds["entropy_encode"],
      server_seconds=seconds["entropy_decode"] + seconds["decode"] + seconds["classify"],
      per_clip=dict(correct=[int(c) for c in point.correct], bits=[8 * b for b in point.num_bytes]))
  if point.estimated_bits:
    estimated = float(np.mean(point.estimated_bits))
    record.update(estimated_bits_per_clip=estimated,
                  rate_gap_bits=record["bits_per_clip"] - estimated,
                  rate_gap_relative=(record["bits_per_clip"] - estimated) / estimated
                  if estimated > 0 else None)
  return record


def _machine() -> dict:
  import os  # pylint: disable=g-import-not-at-top
  return dict(platform=platform.platform(), processor=platform.processor() or platform.machine(),
              cpu_count=os.cpu_count(), jax_backend=jax.default_backend(),
              devices=[str(d) for d in jax.devices()], jax=jax.__version__)


def evaluate_workdir(config, workdir: str | pathlib.Path, options: EvalOptions = EvalOptions(), *,
                     loader_fn: Callable | None = None) -> tuple[dict, dict]:
  """Measures every method on the test split; returns (results dict, pictures data).

  `loader_fn(data_config, split, *, seed, train, num_epochs)` gives the test batches (default: the
  dataset's grain pipeline). The pictures data (first clips, their masks and reconstructions) is for
  `stae_jax.evaluation.pictures`.
  """
  workdir = pathlib.Path(workdir).absolute()
  if loader_fn is None:
    from stae_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    loader_fn = pipeline.make_loader
  started = time.perf_counter()
  reference = codec_lib.Classifier(loading.load_classifier(config, workdir))
  tags = list(options.systems) if options.systems is not None else loading.discover_systems(workdir)
  if not tags:
    logging.warning("no trained compression system in %s/systems: only the baselines are measured",
                    workdir)
  codecs = {tag: codec_lib.SystemCodec(loading.load_system(workdir, tag)) for tag in tags}
  for tag, codec in codecs.items():
    if codec.trained.config.data.resolution != config.data.resolution or \
        codec.trained.config.data.frames != config.data.frames:
      raise loading.WorkdirError(
          f"system {tag!r} was trained on {codec.trained.config.data.frames} frames at "
          f"{codec.trained.config.data.resolution}px, the config asks for {config.data.frames} at "
          f"{config.data.resolution}px: evaluate with the config it was trained with.")

  h264_skipped = None
  try:
    x264.check_x264()
  except x264.X264Unavailable as error:
    h264_skipped = str(error)
    logging.warning("H.264 baseline skipped: %s", error)

  ref_point = _Point("clean", {})
  raw_point = _Point("uint8", {})
  system_points = {tag: {p: _Point(codec_lib.point_name(c.system, p), _setting(c.system, p))
                         for p in c.points} for tag, c in codecs.items()}
  h264_points = {} if h264_skipped else {
      float(crf): _Point(f"crf={crf:g}", dict(crf=float(crf), preset=options.h264_preset))
      for crf in options.crfs}
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
    size = len(labels)
    clip_shape = tuple(int(d) for d in video.shape[1:])
    raw_bytes = metrics.raw_clip_bytes(clip_shape)
    if len(single_clips) < options.latency_clips:
      single_clips.extend(video[valid][:options.latency_clips - len(single_clips)])
    if pictures["videos"] is None:
      keep = np.flatnonzero(valid)[:options.num_pictures]
      pictures.update(videos=video[keep], labels=labels[keep])

    logits, seconds = warm(("reference", size), reference.classify, video)
    correct = (logits.argmax(-1) == labels)[valid]
    ref_point.add(correct, [raw_bytes] * len(correct))
    ref_point.add_batched(dict(classify=seconds), size)
    raw_point.add(correct, [raw_bytes] * len(correct))
    raw_point.add_batched(dict(classify=seconds), size)

    for tag, codec in codecs.items():
      for point, acc in system_points[tag].items():
        encoded, t_encode = warm((tag, point, "encode", size), codec.encode, video, point)
        (streams, stats), t_code = _timed(codec.to_bitstreams, encoded)
        payloads, t_uncode = _timed(codec.from_bitstreams, streams)
        recon, t_decode = warm((tag, point, "decode", size), codec.decode, payloads, point,
                               clip_shape)
        logits, t_classify = warm((tag, point, "classify", size), codec.classify, recon)
        acc.add((logits.argmax(-1) == labels)[valid], stats["num_bytes"][valid],
                encoded["estimated_bits"][valid])
        acc.add_batched(dict(encode=t_encode, entropy_encode=t_code, entropy_decode=t_uncode,
                             decode=t_decode, classify=t_classify), size)
        if point not in pictures["systems"].setdefault(tag, {}):
          keep = np.flatnonzero(valid)[:options.num_pictures]
          pictures["systems"][tag][point] = dict(
              name=acc.name, reconstruction=np.asarray(recon)[keep],
              frame_mask=[payloads[i].frame_mask for i in keep],
              block_masks=[payloads[i].block_masks for i in keep])

    for crf, acc in h264_points.items():
      decoded = video.copy()
      encode_s, decode_s, sizes = [], [], []
      for i in np.flatnonzero(valid):
        result = x264.h264_roundtrip(video[i], crf, preset=options.h264_preset)
        decoded[i] = result.decoded
        encode_s.append(result.encode_seconds)
        decode_s.append(result.decode_seconds)
        sizes.append(result.num_bytes)
      logits, t_classify = warm(("reference", size), reference.classify, decoded)
      acc.add((logits.argmax(-1) == labels)[valid], sizes)
      acc.add_batched(dict(encode=sum(encode_s), decode=sum(decode_s)), len(sizes))
      acc.single["encode"].extend(encode_s)
      acc.single["decode"].extend(decode_s)
      acc.batched["classify"] += t_classify * len(sizes) / size
    if options.max_clips and seen >= options.max_clips:
      break
  if clip_shape is None:
    raise ValueError("the test split gave no clips to evaluate; check config.data and the dataset.")

  # Single-clip latencies: what one device and one server spend on one clip.
  for clip in single_clips:
    one = clip[None]
    _, seconds = warm(("reference", 1), reference.classify, one)
    for point in (ref_point, raw_point):
      point.single["classify"].append(seconds)
    for acc in h264_points.values():
      acc.single["classify"].append(seconds)
    for tag, codec in codecs.items():
      for point, acc in system_points[tag].items():
        encoded, t_encode = warm((tag, point, "encode", 1), codec.encode, one, point)
        (streams, _), t_code = _timed(codec.to_bitstreams, encoded)
        payloads, t_uncode = _timed(codec.from_bitstreams, streams)
        recon, t_decode = warm((tag, point, "decode", 1), codec.decode, payloads, point, clip_shape)
        _, t_classify = warm((tag, point, "classify", 1), codec.classify, recon)
        for step, value in zip(STEPS, (t_encode, t_code, t_uncode, t_decode, t_classify)):
          acc.single[step].append(value)
  for acc in [raw_point, ref_point, *h264_points.values()]:
    for step in ("entropy_encode", "entropy_decode") + (("encode", "decode") if acc in (
        raw_point, ref_point) else ()):
      acc.single[step] = acc.single[step] or [0.0]

  reference_top1 = float(np.mean(ref_point.correct))
  methods = {}
  for tag, codec in codecs.items():
    methods[tag] = dict(kind=codec.system, label=_label(tag), skipped=None,
                        config=_system_summary(codec.trained.config), points=[
                            _point_record(acc, clip_shape, reference_top1)
                            for acc in system_points[tag].values()])
  methods["h264"] = dict(
      kind="h264", label="H.264 (libx264, low delay)", skipped=h264_skipped,
      config=dict(preset=options.h264_preset, tune="zerolatency", bframes=0, gop="one per clip"),
      points=[_point_record(acc, clip_shape, reference_top1) for acc in h264_points.values()])
  methods["raw"] = dict(kind="raw", label="raw offloading (uint8)", skipped=None, config={},
                        points=[_point_record(raw_point, clip_shape, reference_top1)])
  ref_record = _point_record(ref_point, clip_shape, reference_top1)
  results = dict(
      format=RESULTS_FORMAT, config_name=config.name, workdir=str(workdir),
      dataset=config.data.name, split="test", num_clips=len(ref_point.correct),
      clip_shape=list(clip_shape), raw_clip_bytes=metrics.raw_clip_bytes(clip_shape),
      machine=_machine(), reference=dict(top1=reference_top1, seconds=ref_record["seconds"],
                                         per_clip=ref_record["per_clip"]),
      methods=methods, evaluate_seconds=None)
  results["evaluate_seconds"] = time.perf_counter() - started
  return results, pictures


RESULTS_FORMAT = "stae_jax.results/1"


def _setting(system: str, point) -> dict:
  if system == "stae":
    return dict(frame_keep=float(point[0]), block_keep=float(point[1]))
  return dict(tokens_per_frame=int(point))


def _label(tag: str) -> str:
  if tag == "stae":
    return "STAE"
  if tag == "deepisc":
    return "DeepISC"
  return tag.replace("stae_", "STAE ").replace("_", ", ").replace("-", " ")


def _system_summary(config) -> dict:
  if config.system == "stae":
    s = config.model.stae
    return dict(system="stae", frame_attention=bool(s.frame_attention),
                spatial_attention=bool(s.spatial_attention), selection=s.selection,
                block_size=int(s.block_size), latent_channels=int(s.latent_channels), mode=s.mode)
  d = config.model.deepisc
  return dict(system=config.system, patch=int(d.patch), channels=int(d.channels),
              max_tokens=int(d.max_tokens))


def finish(results: dict, workdir: pathlib.Path, channel_options, pictures: dict | None = None,
           class_names: list[str] | None = None) -> dict[str, pathlib.Path]:
  """Channel comparison, headline, ablations, then results.json, plots, pictures and report.md."""
  from stae_jax.evaluation import deadlines  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import pictures as pictures_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import plots  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import report  # pylint: disable=g-import-not-at-top
  results["channel"] = deadlines.channel_comparison(results, channel_options)
  results["headline"] = report.headline(results)
  results["ablations"] = report.ablations(results)
  paths = dict(results=report.write_results(results, workdir / "results.json"))
  plot_paths = plots.write_plots(results, workdir / "plots")
  picture_paths = []
  if pictures is not None:
    block_sizes = {tag: m["config"]["block_size"] for tag, m in results["methods"].items()
                   if m["kind"] == "stae"}
    picture_paths = pictures_lib.write_pictures(pictures, workdir / "pictures",
                                                block_sizes=block_sizes, class_names=class_names)
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
  from stae_jax.evaluation import deadlines  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import report  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir).absolute()
  channel_options = channel_options or deadlines.ChannelOptions()
  if reuse_results:
    path = workdir / "results.json"
    if not path.is_file():
      raise FileNotFoundError(f"--reuse_results: no {path}; run evaluate.py without it first.")
    return finish(report.load_results(path), workdir, channel_options)
  results, pictures = evaluate_workdir(config, workdir, options, loader_fn=loader_fn)
  return finish(results, workdir, channel_options, pictures, loading.class_names(config))
