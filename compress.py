r"""Device side: compresses video files into `.stae` files with a trained system.

  python compress.py --config=configs/synthetic.py --input=clip.avi [--output=clip.stae]
                     [--workdir=runs/synthetic] [--system=stae] [--point=keep=0.25x0.5]
  python compress.py --config=configs/synthetic.py --input=a.avi,b.avi [--output=folder/]

Several inputs (comma-separated) are compressed in one call: the model is restored and compiled
once. Each output goes beside its input with the suffix .stae, or into --output when that is a
folder (with one input, --output may also name the file). An input that cannot be read is
reported and skipped; the exit status is then 1.

The clip is the evaluation view (centre window of T frames, centre square crop, model resolution);
--point picks one of the system's trained operating points by name (as report.md lists them:
`keep=0.25x0.5` for STAE, `tokens=4` for DeepISC; default its first). The file format is described
in stae_jax/evaluation/clip_tools.py.
"""

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
  from stae_jax.coding import DecodeError, TablesError  # pylint: disable=g-import-not-at-top
  from stae_jax.data.video import VideoReadError  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import clip_tools  # pylint: disable=g-import-not-at-top
  from stae_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  workdir = workdir_lib.resolve(_WORKDIR.value, config)
  inputs = [pathlib.Path(i) for i in _INPUT.value]
  outputs = _outputs(inputs, _OUTPUT.value)
  for output in outputs:
    if not output.parent.is_dir():  # before any model is loaded: fail fast, lose nothing
      sys.exit(f"compress.py: error: cannot write {output}: {output.parent} is not a folder; pass "
               "a writable --output path")
  try:
    codec = workdir_lib.load_codec(workdir, _SYSTEM.value)
    data_config = workdir_lib.trained_data(workdir)
    codec.point(_POINT.value or codec.points[0])  # an unknown point fails once, before any input
  except (DecodeError, TablesError, ValueError) as error:
    sys.exit(f"compress.py: error: {error}")
  failed = 0
  for path, output in zip(inputs, outputs):
    try:
      data, header = clip_tools.compress_video(path, codec, data_config, _POINT.value)
      output.write_bytes(data)
    except (VideoReadError, DecodeError, ValueError) as error:
      print(f"compress.py: error: {path}: {error}", file=sys.stderr)
      failed += 1
      continue
    except OSError as error:
      print(f"compress.py: error: cannot write {output} ({error.strerror}); pass a writable "
            "--output path", file=sys.stderr)
      failed += 1
      continue
    raw = 1
    for d in header["clip_shape"]:
      raw *= d
    print(f"{output}: {len(data)} bytes ({8 * len(data)} bits; {raw / len(data):.1f}x the "
          f"{'x'.join(map(str, header['clip_shape']))} uint8 clip), system {header['system']}, "
          f"keep {header['operating_point']}")
  if failed:
    sys.exit(f"compress.py: {failed} of {len(inputs)} inputs failed")


def _outputs(inputs: list[pathlib.Path], output: str | None) -> list[pathlib.Path]:
  """Where each input's .stae file goes (see the module doc)."""
  if output is None:
    return [i.with_suffix(".stae") for i in inputs]
  output = pathlib.Path(output)
  if output.is_dir():
    names = [i.with_suffix(".stae").name for i in inputs]
    if len(set(names)) != len(names):
      sys.exit("compress.py: error: several inputs share a file name, so their .stae files would "
               "overwrite each other in --output; rename them or compress them separately")
    return [output / name for name in names]
  if len(inputs) > 1:
    sys.exit(f"compress.py: error: --output={output} is not a folder; with several inputs pass an "
             "existing folder (or no --output: each file goes beside its input)")
  return [output]


if __name__ == "__main__":
  app.run(main)
