r"""The tiny test config (tests/evaluate_helpers.py) as a config file, for tests that run the
command-line tools as a user types them on the tiny trained workdir:

  python client.py --config=tests/tiny_config_file.py:<data_dir> --workdir=<tiny workdir> ...

Its test split is built (in well under a second) under <data_dir>: 20 synthetic_actions clips of
the tiny shape, stored with 8 frames as the in-memory training source is.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import evaluate_helpers  # pylint: disable=g-import-not-at-top,wrong-import-position
import train_helpers  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_config(data_dir):
  config = evaluate_helpers.tiny_config()
  config.data.data_dir = str(data_dir)
  config.data.builder_kwargs.update(num_train=8, num_test=20, frames=train_helpers.STORED_FRAMES)
  return config
