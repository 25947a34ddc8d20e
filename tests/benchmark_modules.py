"""Loads a script of benchmarks/ as a module, for the tests of its pure parts (tables, parsers)."""

import importlib.util
import sys

from stae_jax import REPO_ROOT


def load(name: str):
  """benchmarks/<name>.py as a module; benchmarks/ goes on sys.path first, since the scripts
  import their neighbours (paired_points, train_step, timing) by name."""
  folder = str(REPO_ROOT / "benchmarks")
  if folder not in sys.path:
    sys.path.insert(0, folder)
  spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
