r"""Speed of the conditional (version-3) entropy coder on batches of clips, against a baseline.

  python benchmarks/context_coder_speed.py [--baseline=main] [--batches=1,64] [--repeats=15]
      [--config=configs/synthetic.py] [--json=/tmp/coder_speed.json]

What is coded: clips of the config's STAE shape (its frames, block grid and latent [h, w, C] per
block) at each of its operating points (k_f of T frames, k_s of N blocks, as STAE keeps them),
every clip with its own random masks and latents that are smooth across frames and neighbouring
blocks (levels 0..31, as the colour channels' step of 8 makes them, +-1 frame to frame); the
tables are the config's conditional entropy model frozen at its initialisation (no trained model
is needed; the coder's work per symbol does not depend on what the tables hold, only on their
width and on escapes, which these latents do not have).

How: `encode_batch` and `decode_batch` of this checkout and of the revision --baseline (its
bitstream.py and context.py, read with `git show` and loaded beside this checkout's, in this
process) code the same clips in turn, --repeats times, interleaved so that both see the same load:
at each batch size B of --batches, the point's 64 clips (--clips) in calls of B clips each (B = 1:
every clip alone, as `encode` / `decode` code it); the figures are medians over the repeats, per
clip, of the wall clock and of this process's CPU time (which other processes' load disturbs
less). Before timing, the streams of both are compared byte for byte (when the baseline writes
the same format version: version 3's repeat flags changed the bytes of version 2) and both
decodings with what was sent. The machine and its load (1-minute load average before and
after) are printed with the figures: on a shared machine only the ratios measured in one run mean
anything.
"""

import importlib.util
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from flax import nnx
from ml_collections import config_flags
import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from stae_jax.coding import bitstream  # pylint: disable=wrong-import-position
from stae_jax.coding import tables as tables_lib  # pylint: disable=wrong-import-position
from stae_jax.models.stae import keep_count  # pylint: disable=wrong-import-position
from stae_jax.systems import stae as stae_system  # pylint: disable=wrong-import-position

_CONFIG = config_flags.DEFINE_config_file("config", str(REPO_ROOT / "configs" / "synthetic.py"),
                                          "Experiment config (file.py[:switches]).")
_TAG = flags.DEFINE_string("tag", "stae", "The STAE system's tag in config.systems.")
_BASELINE = flags.DEFINE_string("baseline", "main", "Git revision whose coder is the baseline.")
_BATCHES = flags.DEFINE_list("batches", ["1", "64"], "Clips per encode_batch / decode_batch call "
                              "(each must divide --clips).")
_CLIPS = flags.DEFINE_integer("clips", 64, "Clips coded per point and repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 15, "Timed calls of each coder per point.")
_JSON = flags.DEFINE_string("json", None, "Also write the figures here.")


def load_baseline(revision: str):
  """The bitstream module of `revision`, its context rule and compiled range decoder beside it
  (all from `git show`, into a folder left in place: numba compiles the decoder, and caches it
  beside its file, at its first call). A revision from before the compiled decoder has none."""
  modules = {}
  folder = tempfile.mkdtemp(prefix="coder_baseline_")
  for name, path in (("baseline_context", "stae_jax/models/context.py"),
                     ("baseline_range_decoder", "stae_jax/coding/range_decoder.py"),
                     ("baseline_bitstream", "stae_jax/coding/bitstream.py")):
    shown = subprocess.run(["git", "-C", str(REPO_ROOT), "show", f"{revision}:{path}"],
                           check=False, capture_output=True, text=True)
    if shown.returncode and name == "baseline_range_decoder":
      continue  # before the compiled decoder: the revision's bitstream does not import one
    if shown.returncode:
      raise SystemExit(f"--baseline={revision}: git show {revision}:{path} failed: "
                       f"{shown.stderr.strip()}")
    source = shown.stdout
    file = pathlib.Path(folder) / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    modules[name] = importlib.util.module_from_spec(spec)
    sys.modules[name] = modules[name]  # dataclasses look their module up while being built
    spec.loader.exec_module(modules[name])
  baseline = modules["baseline_bitstream"]
  baseline.context_lib = modules["baseline_context"]  # the rule as that revision had it
  if "baseline_range_decoder" in modules:
    baseline.range_decoder = modules["baseline_range_decoder"]  # ... and its compiled reader
  return baseline


def make_clips(rng, batch: int, frames: int, grid: int, inner: tuple, channels: int,
               k_f: int, k_s: int) -> dict:
  """encode_batch's arguments for `batch` clips, each with its own masks (see the module doc)."""
  blocks = grid * grid
  frame_masks = np.zeros((batch, frames), bool)
  block_masks = np.zeros((batch, k_f, blocks), bool)
  latents = np.zeros((batch, k_f, k_s) + inner + (channels,), np.int32)
  for b in range(batch):
    frame_masks[b, rng.choice(frames, k_f, replace=False)] = True
    scene = rng.integers(0, 32, (grid // 2 + 1, grid // 2 + 1) + inner + (channels,))
    scene = scene.repeat(2, 0).repeat(2, 1)[:grid, :grid].reshape((blocks,) + inner + (channels,))
    for f in range(k_f):
      kept = np.sort(rng.choice(blocks, k_s, replace=False))
      block_masks[b, f, kept] = True
      latents[b, f] = scene[kept] + rng.integers(-1, 2, (k_s,) + inner + (channels,))
  return dict(latents=latents, frame_masks=frame_masks, block_masks=block_masks)


def same_payloads(decoded, clips) -> bool:
  return all(np.array_equal(p.latents, clips["latents"][i]) and p.latents.dtype == np.int32
             and np.array_equal(p.frame_mask, clips["frame_masks"][i])
             and np.array_equal(p.block_masks, clips["block_masks"][i])
             for i, p in enumerate(decoded))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  config = _CONFIG.value
  entry = config.systems[_TAG.value]
  if not entry.model.get("entropy", {}).get("context", False):
    raise app.UsageError(f"{_TAG.value!r} does not code under the conditional entropy model")
  stae = entry.model.stae
  tables = tables_lib.freeze(stae_system.build_prior(entry, config.data, rngs=nnx.Rngs(0)),
                             tail_mass=float(entry.model.entropy.get("tail_mass", 1e-9)))
  frames, grid = int(config.data.frames), int(config.data.resolution) // int(stae.block_size)
  inner = (int(stae.block_size) // int(stae.latent_stride),) * 2
  baseline = load_baseline(_BASELINE.value)
  batches, repeats, num_clips = [int(b) for b in _BATCHES.value], _REPEATS.value, _CLIPS.value
  if any(b < 1 or num_clips % b for b in batches):
    raise app.UsageError(f"every batch size must divide --clips={num_clips}, got {batches}")
  rng = np.random.default_rng(0)
  load_before = os.getloadavg()[0]
  rows_out = []
  for frame_keep, block_keep in stae.keep_ratios:
    k_f, k_s = keep_count(frame_keep, frames), keep_count(block_keep, grid * grid)
    clips = make_clips(rng, num_clips, frames, grid, inner, tables.channels, k_f, k_s)
    latents = clips.pop("latents")
    coders = dict(baseline=baseline, batched=bitstream)
    streams = {}
    for name, coder in coders.items():
      streams[name], stats = coder.encode_batch(latents, tables, **clips)
      if not same_payloads(coder.decode_batch(streams[name], tables), dict(latents=latents,
                                                                           **clips)):
        raise AssertionError(f"{name} coder: a clip at keep {frame_keep}x{block_keep} did not "
                             "decode to what was sent")
    same_format = baseline.CONTEXT_VERSION == bitstream.CONTEXT_VERSION
    if same_format and streams["baseline"] != streams["batched"]:
      raise AssertionError(f"the streams differ from the baseline's at keep {frame_keep}x"
                           f"{block_keep}")
    for batch in batches:
      parts = [slice(start, start + batch) for start in range(0, num_clips, batch)]

      def encode_all(coder):
        for part in parts:
          coder.encode_batch(latents[part], tables, frame_masks=clips["frame_masks"][part],
                             block_masks=clips["block_masks"][part])

      def decode_all(coder, name):
        for part in parts:
          coder.decode_batch(streams[name][part], tables)

      times = {(name, op, clock): [] for name in coders for op in ("encode", "decode")
               for clock in ("wall", "cpu")}
      for _ in range(repeats):
        for name, coder in coders.items():
          for op, call in (("encode", lambda: encode_all(coder)),
                           ("decode", lambda: decode_all(coder, name))):
            wall, cpu = time.perf_counter(), time.process_time()
            call()
            times[name, op, "cpu"].append(time.process_time() - cpu)
            times[name, op, "wall"].append(time.perf_counter() - wall)
      symbols = int(latents[0].size)
      figures = dict(point=f"keep={frame_keep:g}x{block_keep:g}", k_f=k_f, k_s=k_s, batch=batch,
                     symbols_per_clip=symbols, bits_per_clip=float(8 * stats["num_bytes"].mean()))
      for (name, op, clock), seconds in times.items():
        median = float(np.median(seconds))
        suffix = "" if clock == "wall" else "_cpu"
        figures[f"{name}_{op}_ms{suffix}"] = 1e3 * median / num_clips
        figures[f"{name}_{op}_msymbols_per_s{suffix}"] = symbols * num_clips / median / 1e6
      for op in ("encode", "decode"):
        for suffix in ("", "_cpu"):
          figures[f"{op}_speedup{suffix}"] = (figures[f"baseline_{op}_ms{suffix}"]
                                              / figures[f"batched_{op}_ms{suffix}"])
      rows_out.append(figures)
  load_after = os.getloadavg()[0]
  cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
              if line.startswith("model name")), platform.processor()) if os.path.exists(
                  "/proc/cpuinfo") else platform.processor()
  print(f"\n{cpu}, {os.cpu_count()} cores; 1-minute load {load_before:.1f} before, "
        f"{load_after:.1f} after; {num_clips} clips a point in batches of {batches}, medians of "
        f"{repeats} repeats; tables "
        f"{tables.rows} rows x {tables.probabilities.shape[1]} symbols (escape and padding "
        f"included); baseline: {_BASELINE.value}; "
        + ("streams byte-identical\n" if baseline.CONTEXT_VERSION == bitstream.CONTEXT_VERSION
           else f"the baseline writes version {baseline.CONTEXT_VERSION}, this checkout "
           f"{bitstream.CONTEXT_VERSION}: streams not compared\n"))
  for suffix, clock in (("", "wall clock"), ("_cpu", "this process's CPU time")):
    print(f"{clock}:\n")
    print(f"| point | k_f x k_s | symbols/clip | batch | encode ms/clip ({_BASELINE.value} / this "
          f"checkout) | speed-up | decode ms/clip ({_BASELINE.value} / this checkout) | speed-up | "
          "M symbols/s encode / decode (this checkout) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows_out:
      print(f"| {r['point']} | {r['k_f']} x {r['k_s']} | {r['symbols_per_clip']} | {r['batch']} | "
            f"{r['baseline_encode_ms' + suffix]:.3f} / {r['batched_encode_ms' + suffix]:.3f} | "
            f"{r['encode_speedup' + suffix]:.1f}x | {r['baseline_decode_ms' + suffix]:.3f} / "
            f"{r['batched_decode_ms' + suffix]:.3f} | {r['decode_speedup' + suffix]:.1f}x | "
            f"{r['batched_encode_msymbols_per_s' + suffix]:.2f} / "
            f"{r['batched_decode_msymbols_per_s' + suffix]:.2f} |")
    print()
  if _JSON.value:
    pathlib.Path(_JSON.value).write_text(json.dumps(dict(
        cpu=cpu, cores=os.cpu_count(), load_before=load_before, load_after=load_after,
        clips=num_clips, batches=batches, repeats=repeats, baseline=_BASELINE.value,
        table_width=int(tables.probabilities.shape[1]), points=rows_out), indent=2))


if __name__ == "__main__":
  app.run(main)
