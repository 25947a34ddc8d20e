"""Every method the project compares, one module each, behind one codec interface (`base.Codec`).

  stae      the spatiotemporal attention autoencoder (learned; trained by train.py)
  deepisc   our reconstruction of DeepISC, a per-frame learned codec (learned)
  h264      libx264 through PyAV at low delay, swept over CRF (baseline)
  raw       the uint8 clip as it is (baseline)

A learned method's module provides, besides its `Codec`:
  LABEL, LEARNED = True, LOSS_TERMS (the loss-weight keys its stages accept),
  build(entry, data_config, *, rngs) -> {name: nnx.Module} (top-level parameter path prefixes),
  operating_points(entry) -> tuple[Point], training_points(entry) -> tuple[Point | None]
  (None: a point drawn per clip inside the step), optionally point_inputs(entry, point) -> dict
  of arrays (the point as traced values: the trainer then compiles one evaluation step for all
  points), forward(models, video, point, *, training, rng) -> dict (logits, reconstruction,
  bits, ...) taking a Point, None or point_inputs' dict,
  extra_losses(out, video, weights) -> {term: value}, entropy_model(models),
  codec(trained: base.Trained) -> Codec, summary(entry) -> dict.
A baseline's module provides LABEL, LEARNED = False and codecs(context: base.BaselineContext).

Adding a method is one module and one line in METHODS. Callers (trainer, evaluation, the
single-clip tools) look a method up here by the name a config or a results file carries and never
compare names themselves.
"""

from __future__ import annotations

import importlib
import types

from stae_jax.systems.base import BaselineContext, Codec, Coded, DecodeError, Point, Trained

__all__ = ["METHODS", "get", "learned", "baselines", "BaselineContext", "Codec", "Coded",
           "DecodeError", "Point", "Trained"]

#: name -> module path; the order is the order of reports (learned methods first).
METHODS = {
    "stae": "stae_jax.systems.stae",
    "deepisc": "stae_jax.systems.deepisc",
    "h264": "stae_jax.systems.h264",
    "raw": "stae_jax.systems.raw",
}


def get(name: str) -> types.ModuleType:
  """The module of method `name`; an unknown name is an error that lists the known ones."""
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; stae_jax.systems.METHODS has: "
                     f"{', '.join(METHODS)}")
  return importlib.import_module(METHODS[name])


def learned() -> list[str]:
  """Names of the methods train.py trains."""
  return [name for name in METHODS if get(name).LEARNED]


def baselines() -> list[str]:
  """Names of the methods evaluation sets up without training."""
  return [name for name in METHODS if not get(name).LEARNED]
