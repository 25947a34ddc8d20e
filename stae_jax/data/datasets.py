"""The dataset registry: `config.data.name` -> the TFDS builder that stores it, built on demand.

Each dataset module exposes `make_builder(data_config, data_dir)`; modules are imported only when
their dataset is asked for, so reading the synthetic data never imports the readers of the real releases.
Building never downloads: the synthetic data is generated, and the real datasets read the manual
directory the user extracted (see data/README.md).
"""

from __future__ import annotations

import importlib

import ml_collections
import tensorflow_datasets as tfds

from stae_jax.data import resolve

#: config.data.name -> the module (under stae_jax.data) whose `make_builder` makes its builder.
DATASET_MODULES = {
    "synthetic_actions": "stae_jax.data.synthetic",
    "hmdb51": "stae_jax.data.hmdb51",
    "ucf101": "stae_jax.data.ucf101",
    "surveillance_fight": "stae_jax.data.surveillance_fight",
}


def get_builder(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The builder of `data_config.name`, writing under `data_config.data_dir` (repo-relative)."""
  name = data_config.name
  if name not in DATASET_MODULES:
    known = ", ".join(sorted(DATASET_MODULES))
    raise ValueError(
        f"unknown dataset {name!r} in config.data.name; known datasets: {known}. "
        "Set --config.data.name to one of them (or register a new builder in "
        "stae_jax/data/datasets.py).")
  module = importlib.import_module(DATASET_MODULES[name])
  return module.make_builder(data_config, str(resolve(data_config.data_dir)))


def ensure_built(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """Returns the builder of `data_config`, first writing its ArrayRecord files if they are missing.

  A builder whose files exist is returned without touching them, so this is cheap to call before
  every run. TFDS shows its own progress while building.
  """
  builder = get_builder(data_config)
  if not builder.is_prepared():
    # The builders take config.data.manual_dir themselves; TFDS must not look for prepared
    # copies on GCS (no network here, and none of these datasets is there).
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder


def stored_validation_rule(data_config: ml_collections.ConfigDict) -> str | None:
  """How the validation split that `data_config`'s builder stores was chosen, or None where it
  stores none (then the input pipeline carves one from the training split). A dataset module
  whose builder configs store one says so with `validation_rule(data_config)`."""
  name = data_config.get("name")
  if name not in DATASET_MODULES:
    return None
  rule = getattr(importlib.import_module(DATASET_MODULES[name]), "validation_rule", None)
  return rule(data_config) if rule is not None else None


def class_names(builder: tfds.core.DatasetBuilder) -> list[str]:
  """The label names of a built dataset, in label order."""
  return list(builder.info.features["label"].names)


def class_names_of(data_config) -> list[str] | None:
  """Label names of `data_config`'s dataset without building it (None where they cannot be known
  before it is built: reports then show class numbers)."""
  module = importlib.import_module(DATASET_MODULES[data_config.name]) if (
      data_config.name in DATASET_MODULES) else None
  names = getattr(module, "CLASS_NAMES", None)
  if names is not None:
    return list(names)
  try:
    builder = get_builder(data_config)
    return class_names(builder) if builder.is_prepared() else None
  except Exception:  # pylint: disable=broad-except  (names are a nicety; numbers are shown instead)
    return None
