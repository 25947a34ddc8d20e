"""`results.json` (its one documented shape), the headline computed from the curves, and `report.md`.

results.json, format "stae_jax.results/2" (keys always present; null where a value does not apply):

  format, config_name, workdir, dataset, split ("test"), num_clips, clip_shape [T,H,W,3],
  raw_clip_bytes (T*H*W*3), machine {platform, processor, cpu_count, jax_backend, devices, jax},
  evaluate_seconds (measuring, before the channel, report and plots), phase_seconds {set_up,
  validation, tuning, test, single_clip_latency} (of those; finish adds channel_and_report),
  test_points ("envelope" | "all": what the test pass measured of a method with more than
  MAX_TABLE_POINTS points; absent in results written before it, where it was "all"),
  profile {} | {steps [encode, entropy_encode, entropy_decode, decode, classify],
           loading_seconds {validation null | s, test}   waiting for the loader's batches,
           reference PROFILE, methods {<name>: PROFILE}}   where measuring went, per method
           (those not skipped); {} in results written before it was recorded
  PROFILE {validation null | {<step>: s}, test {<step>: s}, single_clip {<step>: s},
           tuned_classify, warm_up, total}   wall seconds summed over the method's points and
           every batch of a pass (single_clip: the clips timed one at a time), each step as timed
           for POINT's seconds; tuned_classify: the tuned ViT scoring the test reconstructions
           (compiles included); warm_up: the untimed first call of each step per batch shape
           (the compiles; a classifier compiled for one method is not compiled again for the
           next); total: all of these. H.264's encode is x264 (its entropy coding included), its
           decode PyAV's decoder plus the receiver's fill and upsampling
  device_profile null | PROFILE of stae_jax.evaluation.device_profile   the seconds per clip of
             each step per method and point that the channel study uses (measured: medians of
             processor seconds of single clips run alone, with the load average; or declared with
             evaluate.py --device_profile); null where no clip was timed alone (latency_clips=0;
             absent in results written before it): the channel then reads each point's seconds
  measured_device_profile   only where a declared profile replaced a measured one: that one
  validation null | {split, num_clips, rule}   the clips anything chosen from results is chosen on
             (envelopes, the channel policy's expected accuracies, best fixed points, the cells
             H.264's classifier is tuned at): carved from the training split
             (`stae_jax.data.pipeline.VALIDATION_RULE`) or stored by the dataset (rule says
             which: `stae_jax.data.pipeline.validation_rule`), the same clips for every method
  reference {top1, top1_interval, seconds {encode, entropy_encode, entropy_decode, decode, classify},
             per_clip {correct [0/1...], bits [...]}, validation null | {num_clips, top1,
             top1_interval}}   the stage-1 ViT on uncompressed clips
  methods {<name>: {kind (its stae_jax.systems name: "stae", "deepisc", "h264", "raw", ...),
                    label, skipped: null | why, variant_of: null | the method an ablation varies,
                    headline: whether the headline compares it, config {...},
                    tuned_classifier: null | what scores its points' "tuned" column,
                    envelope [names of the points on its upper envelope, cheapest first],
                    envelope_split ("validation" | "test": where the envelope was chosen),
                    points: [POINT, ...]   the points measured on the test split
                    validation_only: [{name, setting, validation {as POINT's}}, ...]   the
                      points measured on the validation split only (test_points "envelope": a
                      method with more than MAX_TABLE_POINTS points is measured on test at its
                      envelope and tuned cells only); [] where every point was measured on test
                      (absent in results written before it)}}
     names: every system tag trained in the workdir ("stae", "deepisc",
     "stae_no-frame-attention", ...), then every baseline ("h264", "raw")
  POINT {name ("keep=0.5x0.25", "tokens=4", "frames=2,side=32,crf=51", "uint8"), setting {...},
         num_clips, top1 (the frozen reference ViT's, for every method), top1_interval [lo, hi]
         (95% bootstrap over the test clips, seeded: `curves.top1_interval`),
         accuracy_loss_points, bytes_per_clip, bits_per_clip, compression_ratio, bits_per_pixel
         (means over clips of the real bitstream, header included; ratio = raw_clip_bytes /
         mean bytes), estimated_bits_per_clip, rate_gap_bits, rate_gap_relative (learned rate
         vs real; null for H.264 and raw), seconds {encode, entropy_encode, entropy_decode,
         decode, classify} per clip (seconds_source "single_clip": wall medians at batch 1 of
         the device profile's runs, or "batched"), batched_seconds {...} (amortised over a batch), device_seconds (encode +
         entropy_encode), server_seconds (the rest), per_clip {correct, bits},
         validation null | {num_clips, top1, top1_interval, bits_per_clip, per_clip {correct,
         bits}} (the same point on the validation clips, frozen reference ViT),
         tuned null | {classifier, top1, top1_interval, accuracy_loss_points, per_clip {correct}}
         (the test clips scored by a ViT tuned for this method's output)}
  channel {options {...}, clip_interval_seconds, num_clips, validation_clips, mean_rates_bps
           {<snr>: mean link rate over its traces}, device_profile {source, path} (the profile
           its step times came from; absent in results written before it),
           rows [{method, policy ("fixed:<point>" | "adaptive"), split ("test" | "validation"),
                  mean_snr_db, deadline_seconds, accuracy, accuracy_interval, on_time_fraction,
                  saturated}]}       (stae_jax.evaluation.deadlines)
  headline {target_loss_points, target_top1, resamples, seed, main,
            columns {"frozen" | "tuned": {methods {<name>: {label, reached, bound, bits_per_clip,
                     bits_interval, compression_ratio, compression_ratio_interval,
                     best_loss_points, best_compression_ratio, envelope_points}},
                     comparisons [{method, baseline, ratio, ratio_interval,
                                   log2_difference_interval, fewer_bits}]}},
            text, tuned_text}
  ablations {reference_method, rows [{method, point, bits_per_clip, top1, same_point_top1,
             same_point_bits_per_clip}]}   per variant of the reference method (the first method
             that has variants) and per point of the reference: its curve
             read at the main point's bits (null outside its range) and its own point of the
             same name (same keep ratios; null where it has none)

Curves (`stae_jax.evaluation.curves`): a method's accuracy-vs-bits curve runs through the points on
its upper envelope, chosen on the validation split, read on the test split (best top-1 at no more
than these bits), interpolated linearly in top-1 against log(bits). The headline's rate of a method
at a target accuracy is where that curve reaches it; its interval and every comparison between
methods come from the same bootstrap resamples of the test clips (paired). Nothing is typed in.

Columns: "frozen" (the headline's): every method scored by the frozen reference ViT. "tuned": each
method scored by a ViT tuned for its output: a learned system's own (its joint stage's), H.264's the
reference fine-tuned with the same budget on its decoded clips at the envelope cells near the target.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

import numpy as np

from stae_jax.evaluation import curves
from stae_jax.evaluation import deadlines as deadlines_lib
from stae_jax.evaluation import device_profile
from stae_jax.evaluation.curves import accuracy_at_bits, bits_at_accuracy, top1_interval
from stae_jax.systems.loading import RESULTS_FORMAT  # written here, read by loading.load_results

__all__ = ["RESULTS_FORMAT", "STEPS", "TARGET_LOSS_POINTS", "top1_interval", "bits_at_accuracy",
           "accuracy_at_bits", "PointResult", "MethodResult", "Results", "headline", "ablations",
           "write_results", "markdown"]

#: The per-clip steps every method is timed in (`stae_jax.systems.base.Codec`).
STEPS = device_profile.STEPS
TARGET_LOSS_POINTS = 5.0
COLUMN_TITLES = {"frozen": "frozen reference ViT for every method",
                 "tuned": "each method's tuned ViT"}


@dataclasses.dataclass
class PointResult:
  """One operating point of a method (POINT above)."""
  name: str
  setting: dict
  num_clips: int
  top1: float
  top1_interval: list
  accuracy_loss_points: float
  bytes_per_clip: float
  bits_per_clip: float
  compression_ratio: float
  bits_per_pixel: float
  estimated_bits_per_clip: float | None
  rate_gap_bits: float | None
  rate_gap_relative: float | None
  seconds: dict
  seconds_source: str
  batched_seconds: dict
  device_seconds: float
  server_seconds: float
  per_clip: dict
  validation: dict | None = None
  tuned: dict | None = None


@dataclasses.dataclass
class MethodResult:
  kind: str
  label: str
  skipped: str | None
  variant_of: str | None
  headline: bool
  config: dict
  points: list[PointResult]
  tuned_classifier: str | None = None
  envelope: list[str] = dataclasses.field(default_factory=list)
  envelope_split: str = "test"
  #: Points measured on the validation split only: {name, setting, validation} (module doc).
  validation_only: list[dict] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Results:
  """What evaluation measured; `to_json()` is the results.json dict before the channel, headline
  and ablations sections are added from it."""
  config_name: str
  workdir: str
  dataset: str
  split: str
  num_clips: int
  clip_shape: list
  raw_clip_bytes: int
  machine: dict
  reference: dict
  methods: dict[str, MethodResult]
  evaluate_seconds: float
  validation: dict | None = None
  phase_seconds: dict = dataclasses.field(default_factory=dict)
  profile: dict = dataclasses.field(default_factory=dict)
  test_points: str = "all"
  #: The step times the channel study uses (`stae_jax.evaluation.device_profile`); None: no clip
  #: was timed alone (latency_clips=0), and the channel reads each point's batched seconds.
  device_profile: dict | None = None

  def to_json(self) -> dict:
    return dict(format=RESULTS_FORMAT, **dataclasses.asdict(self))


def describe_envelope(points: list[dict]) -> dict:
  """A method's envelope fields for results.json: its frontier point names and where chosen."""
  return dict(envelope=[p["name"] for p in curves.frontier(points)],
              envelope_split=curves.frontier_split(points))


def _column_summary(results: dict, column: str, target: float, samples: dict) -> dict:
  raw_bits = 8.0 * results["raw_clip_bytes"]
  summary = {}
  for name, method in results["methods"].items():
    if not method["headline"] or method["skipped"] or name not in samples:
      continue
    points = method["points"]
    bits, bound = bits_at_accuracy(points, target, column)
    scored = [p for p in points if curves.column(p, column) is not None]
    best = max(scored, key=lambda p: curves.column(p, column)["top1"])
    lo, hi = curves.interval(samples[name])
    summary[name] = dict(
        label=method["label"], reached=bits is not None, bound=bound, bits_per_clip=bits,
        bits_interval=[lo, hi], compression_ratio=raw_bits / bits if bits else None,
        compression_ratio_interval=[raw_bits / hi if hi else None, raw_bits / lo if lo else None],
        best_loss_points=100 * (results["reference"]["top1"]
                                - curves.column(best, column)["top1"]),
        best_compression_ratio=best["compression_ratio"],
        envelope_points=len(curves.frontier(points, column)))
  return summary


def headline(results: dict, target_loss_points: float = TARGET_LOSS_POINTS, *,
             resamples: int = curves.RESAMPLES, seed: int = 0) -> dict:
  """Per column, each headline method's bits at reference - target points with its bootstrap
  interval, and the main method (the first headline method, the project's own) against each other
  one, paired over the same resamples of the test clips."""
  target = results["reference"]["top1"] - target_loss_points / 100.0
  reference_correct = results["reference"]["per_clip"].get("correct")
  columns, skipped, main = {}, [], None
  for name, method in results["methods"].items():
    if method["headline"] and method["skipped"]:
      skipped.append(f"{method['label']} skipped ({method['skipped'].split(';')[0]})")
    elif method["headline"] and main is None:
      main = name
  for column in curves.COLUMNS:
    scored = {name: m["points"] for name, m in results["methods"].items()
              if m["headline"] and not m["skipped"]
              and any(curves.column(p, column) is not None for p in m["points"])}
    if reference_correct:
      samples = curves.bootstrap_bits(scored, reference_correct,
                                      target_loss_points=target_loss_points, name=column,
                                      resamples=resamples, seed=seed)
    else:  # hand-made results without per-clip data: point estimates only
      samples = {name: np.full(1, np.nan) for name in scored}
    summary = _column_summary(results, column, target, samples)
    comparisons = []
    if main in summary:
      for other in summary:
        if other == main:
          continue
        a, b = summary[main]["bits_per_clip"], summary[other]["bits_per_clip"]
        comparisons.append(dict(method=main, baseline=other,
                                ratio=a / b if a and b else None,
                                **curves.compare(samples[main], samples[other])))
    columns[column] = dict(methods=summary, comparisons=comparisons)
  head = dict(target_loss_points=target_loss_points, target_top1=target, resamples=resamples,
              seed=seed, main=main, columns=columns)
  head["text"] = _headline_text(results, head, "frozen", skipped)
  head["tuned_text"] = _headline_text(results, head, "tuned", [])
  return head


def _kbit(bits: float | None) -> str:
  return "-" if bits is None else f"{bits / 1000:.1f}"


def _ratio_text(entry: dict) -> str:
  if not entry["reached"]:
    return (f"{entry['label']} does not get that close at any measured rate (its best: "
            f"{entry['best_loss_points']:.1f} points lost at {entry['best_compression_ratio']:.0f}x)")
  bound = " or more" if entry["bound"] == "at most" else ""
  lo, hi = entry["bits_interval"]
  spread = "" if lo is None and hi is None else f" [{_kbit(lo)}, {_kbit(hi) if hi else 'not reached'}]"
  return (f"{entry['label']} {entry['compression_ratio']:.0f}x{bound} "
          f"({_kbit(entry['bits_per_clip'])}{spread} kbit per clip)")


def _comparison_text(results: dict, comparison: dict) -> str:
  a = results["methods"][comparison["method"]]["label"]
  b = results["methods"][comparison["baseline"]]["label"]
  lo, hi = comparison["ratio_interval"]
  if comparison["ratio"] is None:
    return f"{a} against {b}: no ratio (one of them does not reach the target)"
  verdict = {True: f"{a} needs fewer bits (the interval excludes 1)",
             False: f"{b} needs fewer bits (the interval excludes 1)",
             None: "no difference the test clips can show (the interval holds 1)"}[
                 comparison["fewer_bits"]]
  # An end at 0 or infinity: in those resamples the baseline, or the method, missed the target.
  lo_text = f"0 ({b} unreached)" if lo == 0 else f"{lo:.2f}"
  hi_text = f"inf ({a} unreached)" if hi is None else f"{hi:.2f}"
  return f"{a} / {b} bits {comparison['ratio']:.2f} [{lo_text}, {hi_text}]: {verdict}"


def _headline_text(results: dict, head: dict, column: str, skipped: list[str]) -> str:
  ref = 100 * results["reference"]["top1"]
  interval = results["reference"].get("top1_interval")
  ref_text = f"{ref:.1f}%" + (f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
                              if interval else "")
  lead = (f"At <= {head['target_loss_points']:g} points of accuracy loss (reference top-1 "
          f"{ref_text}, {results['num_clips']} test clips of "
          f"{'x'.join(map(str, results['clip_shape'][:3]))}; column: "
          f"{COLUMN_TITLES[column]}), ")
  summary = head["columns"][column]["methods"]
  entries = list(summary.values())
  if not entries:
    return lead + "no method was evaluated" + (f" ({'; '.join(skipped)})" if skipped else "") + "."
  main, others = entries[0], [_ratio_text(e) for e in entries[1:]] + skipped
  if main["reached"]:
    lo, hi = main["bits_interval"]
    spread = "" if lo is None and hi is None else \
        f" [{_kbit(lo)}, {_kbit(hi) if hi else 'not reached'}]"
    lead += (f"{main['label']} compresses the clips {main['compression_ratio']:.0f}x"
             + (" or more" if main["bound"] == "at most" else "")
             + f" ({_kbit(main['bits_per_clip'])}{spread} kbit per clip)")
  else:
    lead += _ratio_text(main)
  text = lead + ("; at the same accuracy " + " and ".join(others) if others else "") + "."
  comparisons = head["columns"][column]["comparisons"]
  if comparisons and any(c["ratio"] is not None for c in comparisons):
    text += (" Paired bootstrap over the test clips (95%): "
             + "; ".join(_comparison_text(results, c) for c in comparisons) + ".")
  if any(entry["bound"] == "at most" for entry in entries):
    text += (" ('or more': the method's cheapest measured point already reaches the target, so "
             "its true rate there may be lower.)")
  return text


def ablations(results: dict) -> dict:
  """Every variant of the reference method (the first method that has variants) at the reference's
  operating points, two ways.

  `top1` reads the variant's curve at the reference point's bits (matched rates; None outside the
  variant's measured range, which happens when its cheapest point costs a few bits more).
  `same_point_top1` and `same_point_bits_per_clip` are the variant's own point of the same name,
  measured, so a reader sees both what it scores and what it costs there.
  """
  methods = results["methods"]
  varied = [m["variant_of"] for m in methods.values() if m["variant_of"] and not m["skipped"]]
  reference_method = next((name for name in methods if name in varied), None)
  rows = []
  if reference_method is None:
    return dict(reference_method=None, rows=rows)
  main = methods[reference_method]
  for name, method in methods.items():
    if method["skipped"] or reference_method not in (name, method["variant_of"]):
      continue
    own = {p["name"]: p for p in method["points"]}
    for point in sorted(main["points"], key=lambda p: p["bits_per_clip"]):
      same = own.get(point["name"])
      rows.append(dict(method=name, point=point["name"], bits_per_clip=point["bits_per_clip"],
                       top1=accuracy_at_bits(method["points"], point["bits_per_clip"]),
                       same_point_top1=None if same is None else same["top1"],
                       same_point_bits_per_clip=None if same is None else same["bits_per_clip"]))
  return dict(reference_method=reference_method, rows=rows)


def write_results(results: dict, path: str | pathlib.Path) -> pathlib.Path:
  path = pathlib.Path(path)
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
  tmp.replace(path)
  return path


# --- report.md ------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
  return "-" if seconds is None else f"{1000 * seconds:.2f}"


def _pct(value: float | None) -> str:
  return "-" if value is None else f"{100 * value:.1f}"


def _pct_interval(point: dict | None) -> str:
  """top-1 % with its interval where results.json has one ("-" for no value)."""
  if not point:
    return "-"
  interval = point.get("top1_interval")
  text = _pct(point["top1"])
  return text if interval is None else f"{text} [{_pct(interval[0])}, {_pct(interval[1])}]"


def _num(value: float | None, fmt: str) -> str:
  return "-" if value is None else format(value, fmt)


def _bits_interval(entry: dict) -> str:
  lo, hi = entry.get("bits_interval") or (None, None)
  if entry["bits_per_clip"] is None:
    return "not reached"
  spread = "" if lo is None and hi is None else \
      f" [{_num(lo, ',.0f')}, {_num(hi, ',.0f') if hi else 'not reached'}]"
  return f"{entry['bits_per_clip']:,.0f}{spread}"


def _total_seconds(results: dict) -> float:
  return results["evaluate_seconds"] + results.get("phase_seconds", {}).get("channel_and_report",
                                                                            0.0)


def _phases_text(results: dict) -> str:
  phases = results.get("phase_seconds") or {}
  return ", ".join(f"{name.replace('_', ' ')} {seconds:.0f} s" for name, seconds in phases.items()
                   ) or "no breakdown"


#: The "Where the time went" table's step columns: (heading, step of STEPS).
PROFILE_COLUMNS = (("encode (device)", "encode"), ("code", "entropy_encode"),
                   ("uncode", "entropy_decode"), ("decode (server)", "decode"),
                   ("reference ViT", "classify"))


def _profile_sentence(results: dict) -> str:
  """How the channel study's step times were obtained (results.json `device_profile`)."""
  profile = device_profile.of_results(results)
  if profile["source"] == "measured":
    load = profile["load_average"]
    return (f"Step times: the device profile measured here, per step the median processor seconds "
            f"of {profile['clips']} clips x {profile['repeats']} runs each at batch 1 (load "
            f"average {load['before'][0]:.2f} before, {load['after'][0]:.2f} after).")
  if profile["source"] == "declared":
    return f"Step times: the declared device profile {profile['path']}."
  return "Step times: each point's own single-clip seconds (no device profile in results.json)."


def _profile_lines(results: dict) -> list[str]:
  """report.md's "Where the time went" from results.json's `profile` (none: no section), so the
  step that dominates an evaluation is read off the report rather than guessed."""
  profile = results.get("profile")
  if not profile:
    return []
  measured = results["evaluate_seconds"]
  rows = [("reference (uncompressed clips)", profile["reference"])] + [
      (results["methods"][name]["label"] if name in results["methods"] else name, entry)
      for name, entry in profile["methods"].items()]
  loading = profile.get("loading_seconds") or {}
  phases = ", ".join(f"{name.replace('_', ' ')} {seconds:.0f} s"
                     for name, seconds in (results.get("phase_seconds") or {}).items()
                     if name != "channel_and_report")
  lines = ["## Where the time went", "",
           f"Measuring took {measured:.0f} s ({phases}). Per method, the wall "
           "seconds of each step summed over its points and every batch of the validation and "
           "test passes and over the clips timed one at a time; tuned ViT: scoring the test "
           "reconstructions with the tuned ViT (compiles included); warm-up: the untimed first "
           "call of each step per batch shape (the compiles). H.264's encode is x264 (its entropy "
           "coding included), its decode PyAV's decoder plus the fill and upsampling. Reading "
           f"the clips took {sum(v for v in loading.values() if v):.1f} s; training the tuned "
           "ViT is the tuning phase above.", "",
           "| method | " + " | ".join(title for title, _ in PROFILE_COLUMNS)
           + " | tuned ViT | warm-up | total s | share of measuring |",
           "|---|" + "---|" * (len(PROFILE_COLUMNS) + 4)]
  for label, entry in rows:
    passes = [entry[name] for name in ("validation", "test", "single_clip") if entry.get(name)]
    cells = [f"{sum(p[step] for p in passes):,.1f}" for _, step in PROFILE_COLUMNS]
    share = f"{100 * entry['total'] / measured:.0f}%" if measured else "-"
    lines.append(f"| {label} | " + " | ".join(cells) + f" | {entry['tuned_classify']:,.1f} | "
                 f"{entry['warm_up']:,.1f} | {entry['total']:,.1f} | {share} |")
  return lines + [""]


#: A method with more points than this shows its envelope points in the operating-point table and
#: all of them in a table of their own (H.264's grid); evaluate.py measures it on the test split
#: at its validation envelope only (`evaluate.EvalOptions.test_points`).
MAX_TABLE_POINTS = 12


def _every_point_lines(results: dict, method: dict) -> list[str]:
  """report.md's "Every point of <method>": the points measured on test, and those measured on
  the validation split only (results.json `validation_only`), with their validation top-1 and
  bits, marked so that no one reads them as test numbers."""
  on_envelope = set(method.get("envelope") or ())
  validation_only = method.get("validation_only") or []
  total = len(method["points"]) + len(validation_only)
  lines = [f"## Every point of {method['label']}", "",
           f"{total} points, {len(on_envelope)} on the envelope (*, chosen on the "
           f"{method.get('envelope_split', 'test')} split)."]
  if validation_only:
    lines[-1] += (
        f" {len(validation_only)} were measured on the validation split only (rows "
        "\"not measured on test\": off the envelope; their bits/clip and ratio are the "
        "validation clips'): the test pass measures a method with more than "
        f"{MAX_TABLE_POINTS} points at its envelope and tuned cells (what the headline's curves "
        "and the tuned column read; the channel's policies choose among them); "
        "`evaluate.py --test_points=all` measures every point on test.")
  lines += ["", "| point | top-1 % [95%] | tuned top-1 % | validation top-1 % | bits/clip | "
            "ratio | encode ms | decode ms |", "|---|---|---|---|---|---|---|---|"]
  raw_bits = 8.0 * results["raw_clip_bytes"]
  rows = [(p["bits_per_clip"], f"| {p['name']}{' *' if p['name'] in on_envelope else ''} | "
           f"{_pct_interval(p)} | {_pct_interval(p.get('tuned'))} | "
           f"{_pct_interval(p.get('validation'))} | {p['bits_per_clip']:,.0f} | "
           f"{p['compression_ratio']:.1f} | {_ms(p['seconds']['encode'])} | "
           f"{_ms(p['seconds']['decode'])} |") for p in method["points"]]
  for p in validation_only:
    bits = p["validation"]["bits_per_clip"]
    rows.append((bits, f"| {p['name']} | not measured on test | - | "
                       f"{_pct_interval(p['validation'])} | {bits:,.0f} (validation) | "
                       f"{raw_bits / bits:.1f} (validation) | - | - |"))
  return lines + [row for _, row in sorted(rows, key=lambda r: r[0])] + [""]


def markdown(results: dict, *, plots: dict[str, str] | None = None,
             pictures: list[str] | None = None) -> str:
  """The report: headline, the operating-point table, ablations, channel, where the time went,
  plots and pictures."""
  head = results.get("headline") or headline(results)
  lines = [f"# Evaluation: {results['config_name']}", ""]
  machine = results["machine"]
  validation = results.get("validation")
  chosen_on = (f"the validation split ({validation['num_clips']} clips {validation['rule']})"
               if validation else "the test split itself (this run had no validation split)")
  lines += [
      f"Test split of `{results['dataset']}`: {results['num_clips']} clips of "
      f"{'x'.join(map(str, results['clip_shape']))} uint8 ({results['raw_clip_bytes']} bytes). "
      f"Measured on {machine['cpu_count']} CPU core(s), JAX backend `{machine['jax_backend']}` "
      f"({machine['platform']}); evaluation took {_total_seconds(results):.0f} s "
      f"({_phases_text(results)}). "
      f"Everything chosen from results (envelopes, the channel policy's expected accuracies, best "
      f"fixed points, where H.264's classifier is tuned) is chosen on {chosen_on}.", "",
      "## Headline", "", head["text"], ""]
  frozen, tuned = head["columns"]["frozen"]["methods"], head["columns"]["tuned"]["methods"]
  lines += ["| method | bits per clip at the target [95%], frozen ViT | ratio | how | "
            "bits per clip at the target [95%], tuned ViT | ratio | how |",
            "|---|---|---|---|---|---|---|"]
  for name, entry in frozen.items():
    other = tuned.get(name)
    lines.append(
        f"| {entry['label']} | {_bits_interval(entry)} | "
        f"{_num(entry['compression_ratio'], '.1f')} | {entry['bound']} | "
        + (f"{_bits_interval(other)} | {_num(other['compression_ratio'], '.1f')} | "
           f"{other['bound']} |" if other else "not tuned | - | - |"))
  lines += ["", f"Target: reference top-1 minus {head['target_loss_points']:g} points = "
            f"{100 * head['target_top1']:.1f}%. Each method's rate there is read off its "
            "accuracy-vs-bits curve: the points on its upper envelope (chosen on "
            f"{'the validation split' if validation else 'the test split itself'}), read on the "
            "test split, linear in top-1 against log bits. Intervals: "
            f"{head['resamples']} bootstrap resamples of the test clips (seed {head['seed']}), the "
            "same resamples for every method and the reference, so comparisons are paired.", "",
            "Tuned column: " + head["tuned_text"], ""]

  lines += ["## Operating points", "",
            f"Reference (stage-1 ViT, uncompressed): top-1 {_pct_interval(results['reference'])}%"
            + (f" (validation: {_pct_interval(results['reference'].get('validation'))}%)"
               if results["reference"].get("validation") else "")
            + f", {_ms(results['reference']['seconds']['classify'])} ms per clip. top-1: the "
            "frozen reference ViT; tuned: the method's tuned ViT ('-': not tuned there); "
            "validation: the frozen ViT on the validation clips; * marks the envelope.", "",
            "| method | point | top-1 % [95%] | tuned top-1 % [95%] | validation top-1 % | "
            "loss (points) | ratio | bits/clip | bits/pixel | estimated bits | rate gap | "
            "encode ms | code ms | uncode ms | decode ms | classify ms |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  many = []
  for name, method in results["methods"].items():
    if method["skipped"]:
      lines.append(f"| {method['label']} | skipped: {method['skipped']} |" + " |" * 14)
      continue
    on_envelope = set(method.get("envelope") or ())
    shown = method["points"]
    if len(shown) + len(method.get("validation_only") or ()) > MAX_TABLE_POINTS:
      many.append(name)
      shown = [p for p in shown if p["name"] in on_envelope]
    for p in sorted(shown, key=lambda p: p["bits_per_clip"]):
      s = p["seconds"]
      gap = "-" if p["rate_gap_relative"] is None else f"{100 * p['rate_gap_relative']:+.1f}%"
      mark = " *" if p["name"] in on_envelope else ""
      lines.append(
          f"| {method['label']} | {p['name']}{mark} | {_pct_interval(p)} | "
          f"{_pct_interval(p.get('tuned'))} | {_pct_interval(p.get('validation'))} | "
          f"{p['accuracy_loss_points']:.1f} | {p['compression_ratio']:.1f} | "
          f"{p['bits_per_clip']:,.0f} | {p['bits_per_pixel']:.4f} | "
          f"{_num(p['estimated_bits_per_clip'], ',.0f')} | {gap} | {_ms(s['encode'])} | "
          f"{_ms(s['entropy_encode'])} | {_ms(s['entropy_decode'])} | {_ms(s['decode'])} | "
          f"{_ms(s['classify'])} |")
  if many:
    lines += ["", "Methods with more than " f"{MAX_TABLE_POINTS} points show their envelope "
              "points here; every point is in its own table below and in results.json."]
  lines += ["", "Times are per clip on this machine: wall medians of clips run one at a time "
            "(`seconds_source` in results.json), each model step after `block_until_ready`; the "
            "channel study reads the device profile instead (processor seconds, below). "
            "encode: the device's network (STAE attention + analysis, DeepISC encoder, x264 with "
            "its own entropy coding); code/uncode: range coding on the host; decode: synthesis + "
            "3D-2D decoder (STAE), DeepISC's decoder, or H.264 decoding (then holding or "
            "interpolating dropped frames and upsampling); classify: the ViT.", ""]
  for name in many:
    lines += _every_point_lines(results, results["methods"][name])

  abl = results.get("ablations") or ablations(results)
  methods = list(dict.fromkeys(r["method"] for r in abl["rows"]))
  if len(methods) > 1:
    points = list(dict.fromkeys(r["point"] for r in abl["rows"]))
    cells = {(r["method"], r["point"]): r for r in abl["rows"]}
    header = [f"| {results['methods'][abl['reference_method']]['label']} point (its bits per clip) | "
              + " | ".join(
        results["methods"][m]["label"] for m in methods) + " |", "|---|" + "---|" * len(methods)]

    def row_label(point):
      return f"| {point} ({cells[(methods[0], point)]['bits_per_clip']:,.0f}) | "

    def same_cell(r):
      if r is None or r.get("same_point_top1") is None:
        return "-"
      return f"{_pct(r['same_point_top1'])} ({r['same_point_bits_per_clip']:,.0f})"

    lines += ["## Ablations", "",
              "Frozen reference ViT for every variant. At the same keep ratios: each variant's "
              "measured top-1 % at the main STAE's operating points, with the bits per clip it "
              "spent there in brackets.", ""] + header
    lines += [row_label(p) + " | ".join(same_cell(cells.get((m, p))) for m in methods) + " |"
              for p in points]
    lines += ["", "At matched rates: each variant's curve (upper envelope of its points) read at "
              "the main STAE's bits per clip ('-': outside the variant's measured range, e.g. its "
              "cheapest point costs a few bits more).", ""] + header
    lines += [row_label(p) + " | ".join(
        _pct(cells[(m, p)]["top1"]) if (m, p) in cells else "-" for m in methods) + " |"
        for p in points]
    lines.append("")

  channel = results.get("channel")
  if channel:
    opts = channel["options"]
    chosen = ("on the validation clips "
              f"({channel['validation_clips']}, over their own traces), shown on the test clips"
              if channel.get("validation_clips") else "in hindsight on the test clips (this run "
              "had no validation split)")
    lines += ["## Time-varying channel", "",
              f"{channel['num_clips']} clips, one every {channel['clip_interval_seconds'] * 1000:.0f}"
              f" ms, queued on one Rayleigh-fading link ({opts['bandwidth_hz'] / 1e6:g} MHz, "
              f"Gauss-Markov fading), {len(opts['seeds'])} traces per mean SNR, the same traces "
              "for every method. A clip later than the deadline counts as wrong. Cells: accuracy "
              "% [95% interval over clips] of the adaptive policy (rate margin "
              f"{opts['rate_margin']:g}; each point's expected accuracy is its validation top-1; "
              "every point of a method measured on test is a choice, so H.264 picks its grid "
              "cell per clip among those) / of "
              f"the best fixed point, chosen {chosen}. Frozen reference ViT for every method. "
              + _profile_sentence(results), ""]
    names = [n for n in results["methods"] if any(r["method"] == n for r in channel["rows"])]

    def cell(row):
      if not row:
        return "-"
      interval = row.get("accuracy_interval")
      return _pct(row["accuracy"]) + (
          f" [{_pct(interval[0])}, {_pct(interval[1])}]" if interval else "")

    for snr in opts["mean_snrs_db"]:
      lines += [f"Mean SNR {snr:g} dB:", "",
                "| deadline ms | " + " | ".join(results["methods"][n]["label"] for n in names)
                + " |", "|---|" + "---|" * len(names)]
      for deadline in opts["deadlines_seconds"]:
        cells = []
        for n in names:
          a = deadlines_lib.adaptive(channel["rows"], n, snr, deadline)
          b = deadlines_lib.best_fixed(channel["rows"], n, snr, deadline)
          cells.append(f"{cell(a)} / {cell(b)}" + (f" ({b['policy'][6:]})" if b else ""))
        lines.append(f"| {deadline * 1000:g} | " + " | ".join(cells) + " |")
      lines.append("")

  lines += _profile_lines(results)
  if plots:
    lines += ["## Plots", ""] + [f"![{title}]({path})" for title, path in plots.items()] + [""]
  if pictures:
    lines += ["## Pictures", "",
              "Per clip: the original frames; then for each operating point of a method that sends "
              "masks the frames and "
              "blocks kept (dropped frames dark, dropped blocks dimmed) and the reconstruction the "
              "ViT saw.", ""] + [f"![clip]({path})" for path in pictures] + [""]
  tuned_by = "; ".join(f"{m['label']}: {m['tuned_classifier']}" for m in results["methods"].values()
                       if m.get("tuned_classifier"))
  lines += ["## Definitions", "",
            "Compression ratio = T*H*W*3 bytes of the sampled uint8 clip / mean bytes of the "
            "whole bitstream (header, masks and CRC included). Accuracy loss = reference top-1 "
            "minus the method's top-1, in percentage points, same clips. Every top-1 without "
            "another label is the frozen reference ViT's (the stage-1 ViT), for every method: "
            "the headline compares methods in that column. The tuned column scores the same "
            "reconstructions with a ViT tuned for the method's output"
            + (f" ({tuned_by})" if tuned_by else "") + ". Intervals are 95% bootstrap "
            "intervals over the test clips (seeded); a method needs fewer bits than another only "
            "where the paired interval of their ratio excludes 1. An H.264 point keeps `frames` "
            "evenly spaced frames (first and last included; the middle one alone), area-"
            "downscaled to `side` pixels, coded at `crf`; the server holds or linearly "
            "interpolates the missing frames (STAE's receiver rule) and upsamples bilinearly.", ""]
  return "\n".join(lines)
