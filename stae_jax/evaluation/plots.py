"""The report's plots, drawn from a results dict alone (matplotlib, Agg: no display needed).

  accuracy_vs_bits.png   top-1 (frozen reference ViT) against bits per clip (log axis): each
                         method's envelope points as a line (chosen on validation), its other
                         points measured on test faint (H.264's grid cells off the envelope,
                         with evaluate.py --test_points=all); the reference as a line and the
                         headline's target accuracy dashed
  accuracy_vs_deadline.png  accuracy under a deadline per method (adaptive policy solid, best fixed
                         point, chosen on validation, dotted), one panel per mean SNR
  latency_breakdown.png  where a clip's time goes at each method's cheapest envelope point reaching
                         the target (or its most accurate): device compute, transmission at the mean
                         rate of the middle SNR, server decode, classify (the device profile's
                         step times, as the channel study reads them)
"""

from __future__ import annotations

import pathlib

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from stae_jax.evaluation import curves  # pylint: disable=wrong-import-position
from stae_jax.evaluation import deadlines as deadlines_lib  # pylint: disable=wrong-import-position
from stae_jax.evaluation import device_profile  # pylint: disable=wrong-import-position

_MARKERS = "osD^v<>ph*"


def _methods(results):
  return [(n, m) for n, m in results["methods"].items() if not m["skipped"] and m["points"]]


def accuracy_vs_bits(results: dict, path: pathlib.Path) -> pathlib.Path:
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, (name, method) in enumerate(_methods(results)):
    chosen = curves.frontier(method["points"])
    names = {p["name"] for p in chosen}
    others = [p for p in method["points"] if p["name"] not in names]
    line, = ax.plot([p["bits_per_clip"] for p in chosen], [100 * p["top1"] for p in chosen],
                    marker=_MARKERS[i % len(_MARKERS)],
                    label=method["label"] + (" (envelope)" if others else ""))
    if others:
      ax.scatter([p["bits_per_clip"] for p in others], [100 * p["top1"] for p in others], s=10,
                 color=line.get_color(), alpha=0.25, linewidths=0,
                 label=f"{method['label']}: other points")
  ref = 100 * results["reference"]["top1"]
  head = results["headline"]
  ax.axhline(ref, color="k", lw=0.8, label="reference (uncompressed)")
  ax.axhline(100 * head["target_top1"], color="k", lw=0.8, ls="--",
             label=f"reference - {head['target_loss_points']:g} points")
  ax.set_xscale("log")
  ax.set_xlabel("bits per clip (real bitstream)")
  ax.set_ylabel("top-1 %")
  ax.set_title(f"{results['config_name']}: accuracy vs rate")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def accuracy_vs_deadline(results: dict, path: pathlib.Path) -> pathlib.Path | None:
  channel = results.get("channel")
  if not channel:
    return None
  snrs = channel["options"]["mean_snrs_db"]
  deadlines = channel["options"]["deadlines_seconds"]
  fig, axes = plt.subplots(1, len(snrs), figsize=(4.2 * len(snrs), 4), squeeze=False, sharey=True)
  for ax, snr in zip(axes[0], snrs):
    for i, (name, method) in enumerate(_methods(results)):
      adaptive = [deadlines_lib.adaptive(channel["rows"], name, snr, d) for d in deadlines]
      best = [deadlines_lib.best_fixed(channel["rows"], name, snr, d) for d in deadlines]
      ms = [1000 * d for d in deadlines]
      line, = ax.plot(ms, [100 * r["accuracy"] for r in adaptive], marker=_MARKERS[i % 10],
                      label=f"{method['label']} adaptive")
      ax.plot(ms, [100 * r["accuracy"] for r in best], ls=":", color=line.get_color(),
              label=f"{method['label']} best fixed")
    ax.set_xscale("log")
    ax.set_title(f"mean SNR {snr:g} dB")
    ax.set_xlabel("deadline (ms)")
    ax.grid(True, which="both", alpha=0.3)
  axes[0][0].set_ylabel("accuracy under the deadline %")
  axes[0][-1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _representative(method: dict, target: float) -> dict:
  """The cheapest envelope point reaching `target` (judged on validation where measured), else the
  most accurate one."""
  chosen = curves.frontier(method["points"])
  good = [p for p in chosen if (p.get("validation") or p)["top1"] >= target]
  if good:
    return min(good, key=lambda p: p["bits_per_clip"])
  return max(chosen, key=lambda p: (p.get("validation") or p)["top1"])


def latency_breakdown(results: dict, path: pathlib.Path) -> pathlib.Path:
  channel = results["channel"]
  snrs = channel["options"]["mean_snrs_db"]
  snr = snrs[len(snrs) // 2]
  mean_rate = float(channel["mean_rates_bps"][f"{snr:g}"])
  target = results["headline"]["target_top1"]
  profile = device_profile.of_results(results)["methods"]  # the step times the channel used
  labels, parts = [], []
  for name, method in _methods(results):
    p = _representative(method, target)
    labels.append(f"{method['label']}\n{p['name']}")
    s = profile[name][p["name"]]
    parts.append([s["encode"] + s["entropy_encode"], p["bits_per_clip"] / mean_rate,
                  s["entropy_decode"] + s["decode"], s["classify"]])
  parts = 1000 * np.array(parts)
  fig, ax = plt.subplots(figsize=(7, 0.6 * len(labels) + 1.5))
  left = np.zeros(len(labels))
  for j, part in enumerate(("device: encode + code", f"transmit at {mean_rate / 1e6:.2f} Mbit/s",
                            "server: decode", "server: classify")):
    ax.barh(labels, parts[:, j], left=left, label=part)
    left += parts[:, j]
  ax.set_xscale("symlog", linthresh=1.0)
  ax.set_xlabel("ms per clip")
  ax.set_title(f"latency per clip (mean SNR {snr:g} dB, no queueing)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def write_plots(results: dict, directory: pathlib.Path) -> dict[str, str]:
  """Writes every plot into `directory`; returns {title: file name} for the report."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  made = {"accuracy vs bits per clip": accuracy_vs_bits(results, directory / "accuracy_vs_bits.png"),
          "accuracy vs deadline": accuracy_vs_deadline(results,
                                                       directory / "accuracy_vs_deadline.png"),
          "latency breakdown": latency_breakdown(results, directory / "latency_breakdown.png")}
  return {title: str(p.relative_to(directory.parent)) for title, p in made.items() if p is not None}
