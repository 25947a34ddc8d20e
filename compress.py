r"""Device side: compresses one video file into a `.stae` file with a trained system.

  python compress.py --config=configs/synthetic.py --input=clip.avi [--output=clip.stae]
                     [--workdir=runs/synthetic] [--system=stae] [--point=keep=0.25x0.5]

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
_INPUT = flags.DEFINE_string("input", None, "Video file to compress.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the .stae file (default: beside "
                              "the input, with the suffix .stae).")
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
  output = pathlib.Path(_OUTPUT.value or pathlib.Path(_INPUT.value).with_suffix(".stae"))
  if not output.parent.is_dir():  # before any model is loaded: fail fast, lose nothing
    sys.exit(f"compress.py: error: cannot write {output}: {output.parent} is not a folder; pass a "
             "writable --output path")
  try:
    codec = workdir_lib.load_codec(workdir, _SYSTEM.value)
    data, header = clip_tools.compress_video(_INPUT.value, codec, workdir_lib.trained_data(workdir),
                                          _POINT.value)
  except (VideoReadError, DecodeError, TablesError, ValueError) as error:
    sys.exit(f"compress.py: error: {error}")
  try:
    output.write_bytes(data)
  except OSError as error:
    sys.exit(f"compress.py: error: cannot write {output} ({error.strerror}); pass a writable "
             "--output path")
  raw = 1
  for d in header["clip_shape"]:
    raw *= d
  print(f"{output}: {len(data)} bytes ({8 * len(data)} bits; {raw / len(data):.1f}x the "
        f"{'x'.join(map(str, header['clip_shape']))} uint8 clip), system {header['system']}, "
        f"keep {header['operating_point']}")


if __name__ == "__main__":
  app.run(main)
