r"""Evaluates everything train.py trained in a workdir: real compression of the test split.

  python evaluate.py --config=configs/synthetic.py
  python evaluate.py --config=configs/hmdb51.py --workdir=runs/hmdb51 --max_clips=200

--workdir defaults to runs/<config.name>, as for train.py. Every compression system trained in the
workdir is compared (STAE, its ablations, DeepISC) with H.264 (libx264 over a grid of kept frames x
resolution x CRF: --h264_grid, --crfs), raw offloading and the uncompressed reference, then under a
time-varying channel with deadlines. What is chosen from results is chosen on --validation_clips
clips carved from the training split. Writes into the workdir:

  results.json   every number (shape documented in stae_jax/evaluation/report.py)
  report.md      headline, tables; plots/*.png; pictures/clip_*.png

--reuse_results redoes the channel comparison, report and plots from an existing results.json
(e.g. with other --deadlines or --snrs) without running a model.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from stae_jax import REPO_ROOT

_CONFIG = config_flags.DEFINE_config_file("config", str(REPO_ROOT / "configs" / "synthetic.py"),
                                          "Experiment config (file.py:switches).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir; default runs/<config.name>.")
_MAX_CLIPS = flags.DEFINE_integer("max_clips", 0, "Evaluate only the first N test clips (0: all).")
_LATENCY_CLIPS = flags.DEFINE_integer("latency_clips", 4,
                                      "Clips timed one at a time per operating point.")
_VALIDATION = flags.DEFINE_integer(
    "validation_clips", 200, "Validation clips measured (what envelopes, policies and the tuned "
    "cells are chosen on; 0: none, choose on the test clips).")
_CRFS = flags.DEFINE_list("crfs", None,
                          "x264 CRFs: the CRF axis of the H.264 grid (default: "
                          "stae_jax.systems.h264.DEFAULT_CRFS; the whole sweep: "
                          "23,29,35,41,47,51).")
_GRID = flags.DEFINE_string(
    "h264_grid", "full", "The H.264 grid's other axes: 'full' (kept frames T, T/2, ..., 1 x sides "
    "1, 1/2, 1/4), 'single' (all frames at full size) or 'frames=16+2,scales=1+2'.")
_PRESET = flags.DEFINE_string("h264_preset", "veryfast", "x264 preset.")
_TUNE = flags.DEFINE_bool("tune_baselines", True,
                          "Fine-tune the reference ViT for H.264 at its envelope points near the "
                          "target (the report's tuned column).")
_SYSTEMS = flags.DEFINE_list("systems", None, "System tags to evaluate (default: all trained).")
_PICTURES = flags.DEFINE_integer("num_pictures", 3, "Test clips drawn as pictures.")
_DEADLINES = flags.DEFINE_list("deadlines", ["0.05", "0.1", "0.2", "0.3", "0.5", "1.0"],
                               "Deadlines in seconds for the channel comparison.")
_SNRS = flags.DEFINE_list("snrs", ["0", "10", "20"], "Mean SNRs (dB) of the channel traces.")
_SEEDS = flags.DEFINE_integer("channel_seeds", 3, "Channel traces per mean SNR.")
_REUSE = flags.DEFINE_bool("reuse_results", False,
                           "Recompute channel, report and plots from the workdir's results.json.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
  from stae_jax.training.logging import quiet_library_logs  # pylint: disable=g-import-not-at-top
  quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from stae_jax.evaluation import deadlines  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  from stae_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  workdir = workdir_lib.resolve(_WORKDIR.value, config)
  from stae_jax.systems import h264  # pylint: disable=g-import-not-at-top
  grid = h264.parse_grid(_GRID.value, int(config.data.frames))
  options = evaluate.EvalOptions(
      max_clips=_MAX_CLIPS.value, validation_clips=_VALIDATION.value,
      latency_clips=_LATENCY_CLIPS.value, num_pictures=_PICTURES.value, systems=_SYSTEMS.value,
      progress=_PROGRESS.value, tune_baselines=_TUNE.value,
      baselines=dict(h264=dict(grid, crfs=tuple(float(c) for c in
                                                (_CRFS.value or h264.DEFAULT_CRFS)),
                               preset=_PRESET.value)))
  channel = deadlines.ChannelOptions(
      deadlines_seconds=tuple(float(d) for d in _DEADLINES.value),
      mean_snrs_db=tuple(float(s) for s in _SNRS.value), seeds=tuple(range(_SEEDS.value)))
  paths = evaluate.run(config, workdir, options, channel, reuse_results=_REUSE.value)
  for name, path in paths.items():
    logging.info("%s: %s", name, path)
    print(f"{name}: {path}")


if __name__ == "__main__":
  app.run(main)
