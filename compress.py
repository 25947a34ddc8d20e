r"""Device side: compresses video files into `.stae` files with a trained system.

  python compress.py --config=configs/synthetic.py --input=clip.avi [--output=clip.stae]
                     [--workdir=runs/synthetic] [--system=stae] [--point=keep=0.25x1]
  python compress.py --config=configs/synthetic.py --input=a.avi,b.avi [--output=folder/]

Several inputs (comma-separated) are compressed in one call: the model is restored and compiled
once. Each output goes beside its input with the suffix .stae, or into --output when that is a
folder (with one input, --output may also name the file). Two inputs that would write the same
output (a.avi and a.mp4) are refused, naming both, before any work. Inputs are checked (each must
exist and open as a video) before the model loads, so a wrong path is reported in about a second;
an input that cannot be read is reported and skipped; the exit status is then 1.

The clip is the evaluation view (centre window of T frames, centre square crop, model resolution);
only its frames are decoded and each is resized as it arrives (`clip_tools.read_clip`), so memory
is bounded by the clip, not the video. --point picks one of the system's trained operating points
by name (as report.md lists them: `keep=0.25x1` for STAE, `tokens=4` for DeepISC; default its
first). Printed per file: the bitstream's bytes (what a link carries) and its ratio to the raw
clip, and the file's bytes (bitstream plus header). The file format is described in
stae_jax/serving/clip_tools.py.
"""

import math
import pathlib
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from stae_jax import REPO_ROOT

_CONFIG = config_flags.DEFINE_config_file("config", str(REPO_ROOT / "configs" / "synthetic.py"),
                                          "Experiment config (file.py:switches).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir; default runs/<config.name>.")
_INPUT = flags.DEFINE_list("input", None, "Video file(s) to compress (comma-separated).",
                           required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Where to write: a .stae file (one input) or a "
                              "folder (default: beside each input, with the suffix .stae).")
_SYSTEM = flags.DEFINE_string("system", "stae", "Tag of the trained system in the workdir.")
_POINT = flags.DEFINE_string("point", None, "Operating point by name (default: the system's first).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from stae_jax.library_logs import quiet_library_logs  # pylint: disable=g-import-not-at-top
  quiet_library_logs()
  from stae_jax.data import video as video_lib  # pylint: disable=g-import-not-at-top
  inputs = [pathlib.Path(i) for i in _INPUT.value]
  outputs = _outputs(inputs, _OUTPUT.value)
  for output in outputs:
    if not output.parent.is_dir():  # before any model is loaded: fail fast, lose nothing
      sys.exit(f"compress.py: error: cannot write {output}: {output.parent} is not a folder; pass "
               "a writable --output path")
  failed = 0
  readable = []
  for path, output in zip(inputs, outputs):  # before the model loads: a wrong path costs a second
    try:
      video_lib.VideoReader(path).close()
      readable.append((path, output))
    except video_lib.VideoReadError as error:
      print(f"compress.py: error: {error}", file=sys.stderr)
      failed += 1
  if not readable:
    sys.exit(f"compress.py: {failed} of {len(inputs)} inputs failed; nothing to compress")
  from stae_jax.coding import DecodeError, TablesError  # pylint: disable=g-import-not-at-top
  from stae_jax.serving import clip_tools  # pylint: disable=g-import-not-at-top
  from stae_jax.systems import loading  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  workdir = loading.resolve(_WORKDIR.value, config)
  loading.use_compile_cache(workdir)  # later starts reuse the compiles
  try:
    data_config = loading.trained_data(workdir)
    codec = loading.load_codec(workdir, _SYSTEM.value)
    point = codec.point(_POINT.value or codec.points[0])  # an unknown point fails once
  except (DecodeError, TablesError, ValueError) as error:
    sys.exit(f"compress.py: error: {error}")
  for path, output in readable:
    try:
      source = clip_tools.read_clip(path, data_config)
      data, header = clip_tools.compress_clip(source, path.name, codec, point)
      output.write_bytes(data)
    except (video_lib.VideoReadError, DecodeError, ValueError) as error:
      print(f"compress.py: error: {path}: {error}", file=sys.stderr)
      failed += 1
      continue
    except OSError as error:
      print(f"compress.py: error: cannot write {output} ({error.strerror}); pass a writable "
            "--output path", file=sys.stderr)
      failed += 1
      continue
    stream = len(clip_tools.unpack(data)[1])
    raw = math.prod(header["clip_shape"])
    print(f"{output}: bitstream {stream} bytes ({8 * stream} bits; {raw / stream:.1f}x the "
          f"{'x'.join(map(str, header['clip_shape']))} uint8 clip), file {len(data)} bytes "
          f"(with its {len(data) - stream}-byte header), system {header['system']}, point "
          f"{header['operating_point']}")
  if failed:
    sys.exit(f"compress.py: {failed} of {len(inputs)} inputs failed")


def _outputs(inputs: list[pathlib.Path], output: str | None) -> list[pathlib.Path]:
  """Where each input's .stae file goes (see the module doc); two inputs bound for one output are
  refused, naming both, since the second would silently overwrite the first."""
  if output is None:
    outputs = [i.with_suffix(".stae") for i in inputs]
  elif pathlib.Path(output).is_dir():
    outputs = [pathlib.Path(output) / i.with_suffix(".stae").name for i in inputs]
  elif len(inputs) > 1:
    sys.exit(f"compress.py: error: --output={output} is not a folder; with several inputs pass an "
             "existing folder (or no --output: each file goes beside its input)")
  else:
    outputs = [pathlib.Path(output)]
  first: dict[pathlib.Path, pathlib.Path] = {}
  for path, out in zip(inputs, outputs):
    key = out.absolute()
    if key in first:
      sys.exit(f"compress.py: error: inputs {first[key]} and {path} would both be written to "
               f"{out}; rename one or compress them in separate calls")
    first[key] = path
  return outputs


if __name__ == "__main__":
  app.run(main)
