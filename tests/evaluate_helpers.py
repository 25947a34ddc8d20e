"""A tiny trained workdir for the evaluation and clip-tool tests, made once per test session.

It is made by the real trainer (`stae_jax.training.trainer.train_and_evaluate`) on the tiny config
and in-memory synthetic data of tests/train_helpers.py: stage 1 (classifier) and stage 2 for STAE
and DeepISC, a few steps each, so the checkpoints, config records and coding tables are exactly
what train.py writes. The models are barely trained: the tests check the machinery, not accuracy.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import shutil
import sys

_TESTS = pathlib.Path(__file__).resolve().parent
for path in (_TESTS, _TESTS.parent):
  if str(path) not in sys.path:
    sys.path.insert(0, str(path))

import train_helpers  # pylint: disable=g-import-not-at-top,wrong-import-position

STEPS = 2
_made: dict[str, pathlib.Path] = {}


def tiny_config():
  return train_helpers.tiny_config(STEPS, systems=("stae", "deepisc"),
                                   stages=("classifier", "compressor"))


def tiny_workdir(tmp_path_factory) -> pathlib.Path:
  """The session's trained workdir: trained once per test run, then copied into each process.

  Under pytest-xdist the workers share one training (the first to ask trains it in the run's
  common temporary folder, under a lock; the others wait for it), and each worker gets its own
  copy, as each worker had its own training before: tests write into the workdir (results.json,
  plots, compile caches)."""
  if "workdir" not in _made:
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    trained = shared / "tiny_workdir_trained"
    with open(shared / "tiny_workdir.lock", "w") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      if not trained.is_dir():
        from stae_jax.training import trainer  # pylint: disable=g-import-not-at-top
        partial = shared / "tiny_workdir_training"
        shutil.rmtree(partial, ignore_errors=True)
        trainer.train_and_evaluate(tiny_config(), partial, loader_fn=train_helpers.memory_loader)
        partial.rename(trained)
    workdir = tmp_path_factory.mktemp("evaluate_workdir")
    shutil.copytree(trained, workdir, dirs_exist_ok=True)
    _made["workdir"] = workdir
  return _made["workdir"]


memory_loader = train_helpers.memory_loader
