r"""Server side: decodes a `.stae` file, rebuilds the clip and classifies it.

  python decompress.py --config=configs/synthetic.py --input=clip.stae [--workdir=runs/synthetic]
                       [--picture=clip.png] [--top=5]

Prints the predicted classes; --picture writes the original-resolution reconstruction beside the
kept frames and blocks as a PNG. A file from another model or a corrupted file is refused with a
message (exit status 1). The file is read and its header checked (`clip_tools.unpack`: one schema)
and the --picture path checked before the model loads, so those mistakes are reported in about a
second; text from the file is printed escaped (`clip_tools.printable`).
"""

import pathlib
import sys

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from stae_jax import REPO_ROOT

_CONFIG = config_flags.DEFINE_config_file("config", str(REPO_ROOT / "configs" / "synthetic.py"),
                                          "Experiment config (file.py:switches).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir; default runs/<config.name>.")
_INPUT = flags.DEFINE_string("input", None, "The .stae file.", required=True)
_PICTURE = flags.DEFINE_string("picture", None, "Optional PNG of the kept blocks and the rebuilt clip.")
_TOP = flags.DEFINE_integer("top", 5, "How many classes to print.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from stae_jax.library_logs import quiet_library_logs  # pylint: disable=g-import-not-at-top
  quiet_library_logs()
  path = pathlib.Path(_INPUT.value)
  if not path.is_file():  # before any import of JAX: a wrong path costs a second
    sys.exit(f"decompress.py: error: {path} is not a file; pass the .stae file compress.py wrote")
  if _PICTURE.value:
    _check_picture(pathlib.Path(_PICTURE.value))
  from stae_jax.coding import DecodeError, TablesError  # pylint: disable=g-import-not-at-top
  from stae_jax.serving import clip_tools  # pylint: disable=g-import-not-at-top
  from stae_jax.systems import loading  # pylint: disable=g-import-not-at-top
  try:  # everything that needs no model first: a bad header is reported before the model loads
    if path.stat().st_size > clip_tools.MAX_FILE_BYTES:
      raise DecodeError(f"{path} has {path.stat().st_size} bytes, more than any .stae file "
                        f"({clip_tools.MAX_FILE_BYTES}); it is not one")
    data = path.read_bytes()
    header, _ = clip_tools.unpack(data)
    config = _CONFIG.value
    workdir = loading.resolve(_WORKDIR.value, config)
    loading.use_compile_cache(workdir)  # later starts reuse the compiles
    result = clip_tools.decompress(data, workdir)
  except (OSError, DecodeError, TablesError, loading.WorkdirError) as error:
    sys.exit(f"decompress.py: error: {error}")
  from stae_jax.data import datasets  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import pictures  # pylint: disable=g-import-not-at-top
  names = datasets.class_names_of(config.data)
  probabilities = np.exp(result.logits - result.logits.max())
  probabilities /= probabilities.sum()
  text = clip_tools.printable
  print(f"{text(_INPUT.value)}: system {text(header['system'])}, clip "
        f"{'x'.join(map(str, header['clip_shape']))}, point {text(header['operating_point'])}, "
        f"source {text(header['source']['name'])}")
  for rank, index in enumerate(np.argsort(-probabilities)[:_TOP.value]):
    name = names[index] if names and index < len(names) else f"class {index}"
    print(f"  {rank + 1}. {name}: {100 * probabilities[index]:.1f}%")
  if _PICTURE.value:
    rows = [] if result.frame_mask is None else [("kept", pictures.overlay(
        result.reconstruction, result.frame_mask, result.block_masks, result.block_size))]
    try:
      pictures.clip_picture(result.reconstruction, rows, text(header["source"]["name"], 60),
                            first_label="rebuilt").save(_PICTURE.value)
    except OSError as error:
      sys.exit(f"decompress.py: error: cannot write {_PICTURE.value} ({error}); pass a writable "
               "--picture path")
    print(f"picture: {_PICTURE.value}")


def _check_picture(picture: pathlib.Path) -> None:
  """Before decoding: the picture's folder must exist and its name end in .png."""
  if picture.suffix.lower() != ".png":
    sys.exit(f"decompress.py: error: --picture={picture} must end in .png (it is a PNG)")
  if not picture.parent.is_dir():
    sys.exit(f"decompress.py: error: cannot write --picture={picture}: {picture.parent} is not a "
             "folder; pass a path in an existing folder")
  if picture.is_dir():
    sys.exit(f"decompress.py: error: --picture={picture} is a folder; pass a file name ending in "
             ".png")


if __name__ == "__main__":
  app.run(main)
