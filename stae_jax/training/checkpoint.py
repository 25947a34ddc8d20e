"""Orbax checkpoints of one stage: train state + grain iterator state + progress, kept atomically.

Each save is one Orbax step directory holding three items:
  state   the train state (step, params, optimizer state, other model variables), StandardSave
  data    the grain iterator's state, one JSON file per process (grain's Orbax handler)
  meta    {"stage", "step", "steps", "done"} as JSON
and, in the final checkpoint of a compression system, `tables` (the frozen coding tables).
Orbax writes each step into a temporary directory and renames it when complete, so a run killed at
any moment leaves only whole checkpoints (partial ones are ignored and removed on the next start).
The manager keeps the last `keep` steps and the best by eval loss.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import grain.checkpoint as grain_checkpoint
import orbax.checkpoint as ocp

BEST_METRIC = "eval_loss"


class _IteratorSnapshot:
  """The iterator's state taken now, so an async save records exactly the step it belongs to."""

  def __init__(self, iterator):
    state = iterator.get_state()
    self._state = state if isinstance(state, bytes) else json.dumps(state).encode()

  def get_state(self) -> bytes:
    return self._state


def make_manager(directory: str | pathlib.Path, *, keep: int = 2, asynchronous: bool = True) -> ocp.CheckpointManager:
  directory = pathlib.Path(directory).absolute()  # Orbax needs absolute paths
  policy = ocp.checkpoint_managers.AnyPreservationPolicy([
      ocp.checkpoint_managers.LatestN(n=max(int(keep), 1)),
      ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=True, n=1,
                                    keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policy, create=True, cleanup_tmp_directories=True,
      enable_async_checkpointing=asynchronous)
  return ocp.CheckpointManager(directory, options=options)


def save(manager: ocp.CheckpointManager, step: int, state, iterator, meta: dict, *,
         metrics: dict | None = None, tables: Any = None) -> None:
  """Starts an (async) save of `step`; the iterator's state is snapshotted before returning."""
  items = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
  if iterator is not None:
    items["data"] = grain_checkpoint.CheckpointSave(_IteratorSnapshot(iterator))
  if tables is not None:
    items["tables"] = ocp.args.StandardSave(tables)
  if metrics is not None:
    metrics = {k: float(v) for k, v in metrics.items()}
  manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)


def latest_meta(manager: ocp.CheckpointManager) -> dict | None:
  """The `meta` item of the newest complete checkpoint, or None when there is none."""
  step = manager.latest_step()
  if step is None:
    return None
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, iterator=None) -> tuple[Any, dict]:
  """Restores `state` into the shardings of `abstract_state` (and the iterator in place)."""
  items = dict(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
  if iterator is not None:
    items["data"] = grain_checkpoint.CheckpointRestore(iterator)
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return restored["state"], restored["meta"]


def read_only_manager(directory: str | pathlib.Path) -> ocp.CheckpointManager:
  """A manager that only reads `directory` (options set so Orbax has nothing to override and log)."""
  return ocp.CheckpointManager(
      pathlib.Path(directory).absolute(),
      options=ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0))


def restore_tables(directory: str | pathlib.Path, abstract_tables=None):
  """The coding tables stored in the newest checkpoint under `directory`, or None if it has none."""
  manager = read_only_manager(directory)
  step = manager.latest_step()
  # Orbax keeps each item of a step in its own folder; asking `item_metadata` instead would log a
  # warning for every item this read-only manager has no handler for.
  if step is None or not (pathlib.Path(manager.directory) / str(step) / "tables").is_dir():
    return None
  args = ocp.args.StandardRestore(abstract_tables) if abstract_tables is not None else ocp.args.StandardRestore()
  return manager.restore(step, args=ocp.args.Composite(tables=args))["tables"]

