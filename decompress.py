r"""Server side: decodes a `.stae` file, rebuilds the clip and classifies it.

  python decompress.py --config=configs/synthetic.py --input=clip.stae [--workdir=runs/synthetic]
                       [--picture=clip.png] [--top=5]

Prints the predicted classes; --picture writes the original-resolution reconstruction beside the
kept frames and blocks as a PNG. A file from another model or a corrupted file is refused with a
message (exit status 1).
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
  from stae_jax.coding import DecodeError, TablesError  # pylint: disable=g-import-not-at-top
  from stae_jax.data import datasets  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import clip_tools, pictures  # pylint: disable=g-import-not-at-top
  from stae_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  workdir = workdir_lib.resolve(_WORKDIR.value, config)
  try:
    data = pathlib.Path(_INPUT.value).read_bytes()
    result = clip_tools.decompress(data, workdir)
  except (OSError, DecodeError, TablesError, workdir_lib.WorkdirError) as error:
    sys.exit(f"decompress.py: error: {error}")
  names = datasets.class_names_of(config.data)
  probabilities = np.exp(result.logits - result.logits.max())
  probabilities /= probabilities.sum()
  print(f"{_INPUT.value}: system {result.header['system']}, clip "
        f"{'x'.join(map(str, result.header['clip_shape']))}, source {result.header['source']['name']}")
  for rank, index in enumerate(np.argsort(-probabilities)[:_TOP.value]):
    name = names[index] if names and index < len(names) else f"class {index}"
    print(f"  {rank + 1}. {name}: {100 * probabilities[index]:.1f}%")
  if _PICTURE.value:
    rows = [] if result.frame_mask is None else [("kept", pictures.overlay(
        result.reconstruction, result.frame_mask, result.block_masks, result.block_size))]
    pictures.clip_picture(result.reconstruction, rows, result.header["source"]["name"],
                          first_label="rebuilt").save(_PICTURE.value)
    print(f"picture: {_PICTURE.value}")


if __name__ == "__main__":
  app.run(main)
