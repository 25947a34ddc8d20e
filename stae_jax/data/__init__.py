"""Datasets (TFDS builders without TensorFlow), video reading and grain input pipelines."""

import os
import pathlib

from stae_jax import REPO_ROOT


def real_data_dir() -> pathlib.Path:
  """Where the real test clips live: $STAE_REAL_DATA, else `../shared/data/real` beside the checkout."""
  env = os.environ.get("STAE_REAL_DATA")
  return pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "real"


def resolve(path: str | os.PathLike) -> pathlib.Path:
  """Resolves a config path: absolute paths stay, relative ones are taken from the repository root."""
  p = pathlib.Path(path).expanduser()
  return p if p.is_absolute() else REPO_ROOT / p
