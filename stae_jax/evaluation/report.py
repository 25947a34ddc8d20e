"""`results.json` (its one documented shape), the headline computed from the curves, and `report.md`.

results.json, format "stae_jax.results/1" (keys always present; null where a value does not apply):

  format, config_name, workdir, dataset, split, num_clips, clip_shape [T,H,W,3],
  raw_clip_bytes (T*H*W*3), machine {platform, processor, cpu_count, jax_backend, devices, jax},
  evaluate_seconds,
  reference {top1, top1_interval, seconds {encode, entropy_encode, entropy_decode, decode, classify},
             per_clip {correct [0/1...], bits [...]}}   the stage-1 ViT on uncompressed clips
  methods {<name>: {kind (its stae_jax.systems name: "stae", "deepisc", "h264", "raw", ...),
                    label, skipped: null | why, variant_of: null | the method an ablation varies,
                    headline: whether the headline compares it, config {...},
                    points: [POINT, ...]}}
     names: every system tag trained in the workdir ("stae", "deepisc",
     "stae_no-frame-attention", ...), then every baseline ("h264", "raw")
  POINT {name ("keep=0.5x0.25", "tokens=4", "crf=35", "uint8"), setting {...}, num_clips, top1,
         top1_interval [lo, hi] (95% bootstrap over the test clips, seeded: `top1_interval`),
         accuracy_loss_points, bytes_per_clip, bits_per_clip, compression_ratio, bits_per_pixel
         (means over clips of the real bitstream, header included; ratio = raw_clip_bytes /
         mean bytes), estimated_bits_per_clip, rate_gap_bits, rate_gap_relative (learned rate
         vs real; null for H.264 and raw), seconds {encode, entropy_encode, entropy_decode,
         decode, classify} per clip (seconds_source "single_clip": medians at batch 1, or
         "batched"), batched_seconds {...} (amortised over a batch), device_seconds (encode +
         entropy_encode), server_seconds (the rest), per_clip {correct, bits}}
  channel {options {...}, clip_interval_seconds, num_clips, mean_rates_bps {<snr>: mean link rate
           over its traces},
           rows [{method, policy ("fixed:<point>" | "adaptive"), mean_snr_db, deadline_seconds,
                  accuracy, on_time_fraction, saturated}]}       (stae_jax.evaluation.deadlines)
  headline {target_loss_points, target_top1, methods {<name>: {bits_per_clip, compression_ratio,
            reached, bound}}, text}
  ablations {reference_method, rows [{method, point, bits_per_clip, top1, same_point_top1,
             same_point_bits_per_clip}]}   per variant of the reference method (the first method
             that has variants) and per point of the reference: its curve
             read at the main point's bits (null outside its range) and its own point of the
             same name (same keep ratios; null where it has none)

Curves: a method's accuracy-vs-bits curve is the upper envelope of its points (best top-1 at no
more than these bits), interpolated linearly in top-1 against log(bits). The headline's rate of a
method at a target accuracy is where that curve reaches it; nothing is typed in.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

import numpy as np

from stae_jax.evaluation import deadlines as deadlines_lib

RESULTS_FORMAT = "stae_jax.results/1"
#: The per-clip steps every method is timed in (`stae_jax.systems.base.Codec`).
STEPS = ("encode", "entropy_encode", "entropy_decode", "decode", "classify")
TARGET_LOSS_POINTS = 5.0


def top1_interval(correct, *, resamples: int = 1000, seed: int = 0) -> list[float]:
  """95% bootstrap interval [lo, hi] of a top-1 over clips (percentiles of `resamples` seeded
  resamples of the per-clip correctness): the one definition every accuracy's interval uses."""
  correct = np.asarray(correct, np.float64)
  if correct.size == 0:
    raise ValueError("a top-1 interval needs at least one clip")
  rng = np.random.default_rng(seed)
  means = correct[rng.integers(0, correct.size, size=(resamples, correct.size))].mean(axis=1)
  return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


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


@dataclasses.dataclass
class MethodResult:
  kind: str
  label: str
  skipped: str | None
  variant_of: str | None
  headline: bool
  config: dict
  points: list[PointResult]


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

  def to_json(self) -> dict:
    return dict(format=RESULTS_FORMAT, **dataclasses.asdict(self))


def envelope(points: list[dict]) -> tuple[np.ndarray, np.ndarray]:
  """(bits ascending, best top-1 at no more than those bits) of a method's points."""
  ordered = sorted(points, key=lambda p: p["bits_per_clip"])
  bits = np.array([p["bits_per_clip"] for p in ordered], np.float64)
  top1 = np.maximum.accumulate(np.array([p["top1"] for p in ordered], np.float64))
  return bits, top1


def bits_at_accuracy(points: list[dict], target_top1: float) -> tuple[float | None, str]:
  """Bits per clip at which a method's curve first reaches `target_top1`, and how it was found.

  The second value is "interpolated", "at most" (the cheapest measured point already reaches the
  target: the true rate may be lower) or "not reached".
  """
  if not points:
    return None, "not reached"
  bits, top1 = envelope(points)
  reached = np.flatnonzero(top1 >= target_top1 - 1e-12)
  if reached.size == 0:
    return None, "not reached"
  i = int(reached[0])
  if i == 0:
    return float(bits[0]), "at most"
  t = (target_top1 - top1[i - 1]) / (top1[i] - top1[i - 1])
  return float(math.exp(math.log(bits[i - 1]) + t * (math.log(bits[i]) - math.log(bits[i - 1])))), \
      "interpolated"


def accuracy_at_bits(points: list[dict], bits_per_clip: float) -> float | None:
  """A method's curve read at `bits_per_clip` (None outside its measured range)."""
  if not points:
    return None
  bits, top1 = envelope(points)
  if bits_per_clip < bits[0] * (1 - 1e-9) or bits_per_clip > bits[-1] * (1 + 1e-9):
    return None
  return float(np.interp(math.log(bits_per_clip), np.log(bits), top1))


def headline(results: dict, target_loss_points: float = TARGET_LOSS_POINTS) -> dict:
  """Compression ratio of each headline method where its curve reaches reference - target points;
  methods in results order (the project's own first)."""
  target = results["reference"]["top1"] - target_loss_points / 100.0
  raw_bits = 8.0 * results["raw_clip_bytes"]
  summary, skipped = {}, []
  for name, method in results["methods"].items():
    if not method["headline"]:
      continue
    if method["skipped"]:
      skipped.append(f"{method['label']} skipped ({method['skipped'].split(';')[0]})")
      continue
    bits, bound = bits_at_accuracy(method["points"], target)
    best = max(method["points"], key=lambda p: p["top1"])
    summary[name] = dict(label=method["label"], reached=bits is not None,
                         bound=bound, bits_per_clip=bits,
                         compression_ratio=raw_bits / bits if bits else None,
                         best_loss_points=best["accuracy_loss_points"],
                         best_compression_ratio=best["compression_ratio"])
  return dict(target_loss_points=target_loss_points, target_top1=target, methods=summary,
              text=_headline_text(results, summary, skipped, target_loss_points))


def _ratio_text(entry: dict) -> str:
  if not entry["reached"]:
    return (f"{entry['label']} does not get that close at any measured rate (its best: "
            f"{entry['best_loss_points']:.1f} points lost at {entry['best_compression_ratio']:.0f}x)")
  bound = " or more" if entry["bound"] == "at most" else ""
  return (f"{entry['label']} {entry['compression_ratio']:.0f}x{bound} "
          f"({entry['bits_per_clip'] / 1000:.1f} kbit per clip)")


def _headline_text(results: dict, summary: dict, skipped: list[str],
                   target_loss_points: float) -> str:
  ref = 100 * results["reference"]["top1"]
  lead = (f"At <= {target_loss_points:g} points of accuracy loss (reference top-1 {ref:.1f}%, "
          f"{results['num_clips']} test clips of {'x'.join(map(str, results['clip_shape'][:3]))}), ")
  entries = list(summary.values())
  if not entries:
    return lead + "no method was evaluated" + (f" ({'; '.join(skipped)})" if skipped else "") + "."
  main, others = entries[0], [_ratio_text(e) for e in entries[1:]] + skipped
  if main["reached"]:
    lead += (f"{main['label']} compresses the clips {main['compression_ratio']:.0f}x"
             + (" or more" if main["bound"] == "at most" else "")
             + f" ({main['bits_per_clip'] / 1000:.1f} kbit per clip)")
  else:
    lead += _ratio_text(main)
  text = lead + ("; at the same accuracy " + " and ".join(others) if others else "") + "."
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


def load_results(path: str | pathlib.Path) -> dict:
  path = pathlib.Path(path)
  results = json.loads(path.read_text())
  if results.get("format") != RESULTS_FORMAT:
    raise ValueError(f"{path} is not a results file of format {RESULTS_FORMAT!r} (found "
                     f"{results.get('format')!r}); run evaluate.py again to write one.")
  return results


# --- report.md ------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
  return "-" if seconds is None else f"{1000 * seconds:.2f}"


def _pct(value: float | None) -> str:
  return "-" if value is None else f"{100 * value:.1f}"


def _pct_interval(point: dict) -> str:
  """top-1 % with its interval where results.json has one."""
  interval = point.get("top1_interval")
  text = _pct(point["top1"])
  return text if interval is None else f"{text} [{_pct(interval[0])}, {_pct(interval[1])}]"


def _num(value: float | None, fmt: str) -> str:
  return "-" if value is None else format(value, fmt)


def markdown(results: dict, *, plots: dict[str, str] | None = None,
             pictures: list[str] | None = None) -> str:
  """The report: headline, the operating-point table, ablations, channel, plots and pictures."""
  head = results.get("headline") or headline(results)
  lines = [f"# Evaluation: {results['config_name']}", ""]
  machine = results["machine"]
  lines += [
      f"Test split of `{results['dataset']}`: {results['num_clips']} clips of "
      f"{'x'.join(map(str, results['clip_shape']))} uint8 ({results['raw_clip_bytes']} bytes). "
      f"Measured on {machine['cpu_count']} CPU core(s), JAX backend `{machine['jax_backend']}` "
      f"({machine['platform']}); evaluation took {results['evaluate_seconds']:.0f} s.", "",
      "## Headline", "", head["text"], ""]
  lines += ["| method | bits per clip at the target | compression ratio | how |",
            "|---|---|---|---|"]
  for entry in head["methods"].values():
    lines.append(f"| {entry['label']} | {_num(entry['bits_per_clip'], ',.0f')} | "
                 f"{_num(entry['compression_ratio'], '.1f')} | {entry['bound']} |")
  lines += ["", f"Target: reference top-1 minus {head['target_loss_points']:g} points = "
            f"{100 * head['target_top1']:.1f}%. Each method's rate there is read off its measured "
            "accuracy-vs-bits curve (upper envelope, linear in top-1 against log bits).", ""]

  lines += ["## Operating points", "",
            f"Reference (stage-1 ViT, uncompressed): top-1 {_pct_interval(results['reference'])}%, "
            f"{_ms(results['reference']['seconds']['classify'])} ms per clip.", "",
            "| method | point | top-1 % [95% interval] | loss (points) | ratio | bits/clip | bits/pixel | "
            "estimated bits | rate gap | encode ms | code ms | uncode ms | decode ms | classify ms |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for name, method in results["methods"].items():
    if method["skipped"]:
      lines.append(f"| {method['label']} | skipped: {method['skipped']} |" + " |" * 12)
      continue
    for p in sorted(method["points"], key=lambda p: p["bits_per_clip"]):
      s = p["seconds"]
      gap = "-" if p["rate_gap_relative"] is None else f"{100 * p['rate_gap_relative']:+.1f}%"
      lines.append(
          f"| {method['label']} | {p['name']} | {_pct_interval(p)} | "
          f"{p['accuracy_loss_points']:.1f} | {p['compression_ratio']:.1f} | "
          f"{p['bits_per_clip']:,.0f} | {p['bits_per_pixel']:.4f} | "
          f"{_num(p['estimated_bits_per_clip'], ',.0f')} | {gap} | {_ms(s['encode'])} | "
          f"{_ms(s['entropy_encode'])} | {_ms(s['entropy_decode'])} | {_ms(s['decode'])} | "
          f"{_ms(s['classify'])} |")
  lines += ["", "Times are per clip on this machine: medians of clips run one at a time "
            "(`seconds_source` in results.json), each model step after `block_until_ready`. "
            "encode: the device's network (STAE attention + analysis, DeepISC encoder, x264 with "
            "its own entropy coding); code/uncode: range coding on the host; decode: synthesis + "
            "3D-2D decoder (STAE), DeepISC's decoder, or H.264 decoding; classify: the ViT.", ""]

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
              "At the same keep ratios: each variant's measured top-1 % at the main STAE's "
              "operating points, with the bits per clip it spent there in brackets.", ""] + header
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
    lines += ["## Time-varying channel", "",
              f"{channel['num_clips']} clips, one every {channel['clip_interval_seconds'] * 1000:.0f}"
              f" ms, queued on one Rayleigh-fading link ({opts['bandwidth_hz'] / 1e6:g} MHz, "
              f"Gauss-Markov fading), {len(opts['seeds'])} traces per mean SNR, the same traces "
              "for every method. A clip later than the deadline counts as wrong. Cells: accuracy "
              "% of the adaptive policy (rate margin "
              f"{opts['rate_margin']:g}) / of the best fixed point in hindsight.", ""]
    names = [n for n in results["methods"] if any(r["method"] == n for r in channel["rows"])]
    for snr in opts["mean_snrs_db"]:
      lines += [f"Mean SNR {snr:g} dB:", "",
                "| deadline ms | " + " | ".join(results["methods"][n]["label"] for n in names)
                + " |", "|---|" + "---|" * len(names)]
      for deadline in opts["deadlines_seconds"]:
        cells = []
        for n in names:
          a = deadlines_lib.adaptive(channel["rows"], n, snr, deadline)
          b = deadlines_lib.best_fixed(channel["rows"], n, snr, deadline)
          cells.append(f"{_pct(a and a['accuracy'])} / {_pct(b and b['accuracy'])}"
                       + (f" ({b['policy'][6:]})" if b else ""))
        lines.append(f"| {deadline * 1000:g} | " + " | ".join(cells) + " |")
      lines.append("")

  if plots:
    lines += ["## Plots", ""] + [f"![{title}]({path})" for title, path in plots.items()] + [""]
  if pictures:
    lines += ["## Pictures", "",
              "Per clip: the original frames; then for each operating point of a method that sends "
              "masks the frames and "
              "blocks kept (dropped frames dark, dropped blocks dimmed) and the reconstruction the "
              "ViT saw.", ""] + [f"![clip]({path})" for path in pictures] + [""]
  lines += ["## Definitions", "",
            "Compression ratio = T*H*W*3 bytes of the sampled uint8 clip / mean bytes of the "
            "whole bitstream (header, masks and CRC included). Accuracy loss = reference top-1 "
            "minus the method's top-1, in percentage points, same clips. H.264 and raw clips are "
            "classified by the reference ViT; each compression system by its own ViT (the "
            "stage-1 ViT, fine-tuned in the joint stage where the config has one). The adaptive "
            "policy's expected accuracies are the test top-1s measured above (a deployment would "
            "take them from a validation split).", ""]
  return "\n".join(lines)
