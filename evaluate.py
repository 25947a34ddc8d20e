r"""Evaluates everything train.py trained in a workdir: real compression of the test split.

  python evaluate.py --config=configs/synthetic.py
  python evaluate.py --config=configs/hmdb51.py --workdir=runs/hmdb51 --max_clips=200

--workdir defaults to runs/<config.name>, as for train.py. Every compression system trained in the
workdir is compared (STAE, its ablations, DeepISC) with H.264 (libx264 over a grid of kept frames x
resolution x CRF: --h264_grid, --crfs), raw offloading and the uncompressed reference, then under a
time-varying channel with deadlines. What is chosen from results is chosen on --validation_clips
clips carved from the training split (or the dataset's own validation split, where it stores one:
the surveillance_fight folds).

What the test split measures: every point of every method with few points (the learned systems);
of a method with more points than the report lists one by one (H.264's grid: 75 cells by
default), only its points on the upper envelope chosen on the validation clips and the cells its
ViT is tuned at: the points the headline's curves and the tuned column read, and the channel
comparison's choices (--test_points=envelope, the default). Its other cells keep their validation
numbers in results.json (`validation_only`) and report.md's "Every point of" table, marked "not
measured on test". --test_points=all measures every cell on the test split too (as before it
existed: 960 s on two cores for the synthetic main job's workdir, H.264's cells two thirds of it).
Without a validation pass (--validation_clips=0) every point is measured on test.

The evaluation settings (--validation_clips, --test_points, --latency_clips, --latency_repeats,
--num_pictures, --tune_baselines, --h264_grid, --crfs, --h264_preset, --deadlines, --snrs,
--channel_seeds) live in the config's `eval` section (configs/common.py `eval_settings`). Each
default is written once, in the library (EvalOptions, ChannelOptions,
stae_jax.systems.h264.DEFAULT_CRFS, ...), and gathered by
stae_jax.evaluation.evaluate.default_settings. A flag given here overrides the config, as does
`--config.eval.<name>=...`. Writes into the workdir:

  results.json   every number (shape documented in stae_jax/evaluation/report.py)
  report.md      headline, tables; plots/*.png; pictures/clip_*.png

--reuse_results redoes the channel comparison, report and plots from an existing results.json
(e.g. with other --deadlines or --snrs) without running a model: the channel study reads only
results.json, its per-clip results and its device profile (the step times per method and point,
measured in isolation: stae_jax/evaluation/device_profile.py). --device_profile=<json> makes it use
a declared profile instead (with or without --reuse_results), e.g. another device's.
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
_SYSTEMS = flags.DEFINE_list("systems", None, "System tags to evaluate (default: all trained).")
_REUSE = flags.DEFINE_bool("reuse_results", False,
                           "Recompute channel, report and plots from the workdir's results.json.")
_DEVICE_PROFILE = flags.DEFINE_string(
    "device_profile", None, "A JSON device profile (stae_jax/evaluation/device_profile.py; or a "
    "results.json, whose device_profile is read) that the channel study uses instead of the one "
    "measured here, e.g. another device's.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
# Overrides of config.eval (None: the config's value; see the module doc).
_LATENCY_CLIPS = flags.DEFINE_integer(
    "latency_clips", None, "Clips timed one at a time per operating point (default: "
    "config.eval.latency_clips).")
_LATENCY_REPEATS = flags.DEFINE_integer(
    "latency_repeats", None, "Runs in a row of each of those clips per point; the device profile "
    "takes medians over them (default: config.eval.latency_repeats).")
_VALIDATION = flags.DEFINE_integer(
    "validation_clips", None, "Validation clips measured (what envelopes, policies and the tuned "
    "cells are chosen on; 0: none, choose on the test clips; default: "
    "config.eval.validation_clips).")
_TEST_POINTS = flags.DEFINE_enum(
    "test_points", None, ["envelope", "all"], "What the test split measures of a method with many "
    "points (H.264's grid): 'envelope', its validation envelope and tuned cells; 'all', every "
    "point (default: config.eval.test_points).")
_CRFS = flags.DEFINE_list(
    "crfs", None, "x264 CRFs: the CRF axis of the H.264 grid (default: config.eval.crfs, "
    "stae_jax.systems.h264.DEFAULT_CRFS unless the config says otherwise; the whole sweep: "
    "23,29,35,41,47,51).")
_GRID = flags.DEFINE_string(
    "h264_grid", None, "The H.264 grid's other axes: 'full' (kept frames T, T/2, ..., 1 x sides "
    "1, 1/2, 1/4), 'single' (all frames at full size) or 'frames=16+2,scales=1+2' (default: "
    "config.eval.h264_grid).")
_PRESET = flags.DEFINE_string("h264_preset", None,
                              "x264 preset (default: config.eval.h264_preset).")
_TUNE = flags.DEFINE_bool(
    "tune_baselines", None, "Fine-tune the reference ViT for H.264 at its envelope points near "
    "the target (the report's tuned column; default: config.eval.tune_baselines).")
_PICTURES = flags.DEFINE_integer(
    "num_pictures", None, "Test clips drawn as pictures (default: config.eval.num_pictures).")
_DEADLINES = flags.DEFINE_list("deadlines", None,
                               "Deadlines in seconds for the channel comparison (default: "
                               "config.eval.deadlines).")
_SNRS = flags.DEFINE_list("snrs", None,
                          "Mean SNRs (dB) of the channel traces (default: config.eval.snrs).")
_SEEDS = flags.DEFINE_integer("channel_seeds", None,
                              "Channel traces per mean SNR (default: config.eval.channel_seeds).")


def main(argv):
  from stae_jax.library_logs import quiet_library_logs  # pylint: disable=g-import-not-at-top
  quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from stae_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  from stae_jax.systems import loading  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  workdir = loading.resolve(_WORKDIR.value, config)
  options, channel = evaluate.options_from_config(
      config, max_clips=_MAX_CLIPS.value, systems_to_run=_SYSTEMS.value,
      progress=_PROGRESS.value, validation_clips=_VALIDATION.value,
      test_points=_TEST_POINTS.value, latency_clips=_LATENCY_CLIPS.value,
      latency_repeats=_LATENCY_REPEATS.value,
      num_pictures=_PICTURES.value,
      tune_baselines=_TUNE.value, h264_grid=_GRID.value, crfs=_CRFS.value,
      h264_preset=_PRESET.value, deadlines=_DEADLINES.value, snrs=_SNRS.value,
      channel_seeds=_SEEDS.value)
  paths = evaluate.run(config, workdir, options, channel, reuse_results=_REUSE.value,
                       declared_profile=_DEVICE_PROFILE.value)
  for name, path in paths.items():
    logging.info("%s: %s", name, path)
    print(f"{name}: {path}")

if __name__ == "__main__":
  app.run(main)
