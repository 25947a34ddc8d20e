"""Orbax checkpoints of one stage: train state + grain iterator state + progress, kept atomically.

Each save is one Orbax step directory holding three items:
  state   the train state (step, params, optimizer state, other model variables), StandardSave
  data    the grain iterator's state, one JSON file per process (grain's Orbax handler)
  meta    {"stage", "step", "steps", "done"} as JSON
and, in the final checkpoint of a compression system, `tables` (the frozen coding tables).
Orbax writes each step into a temporary directory and renames it when complete, so a run killed at
any moment leaves only whole checkpoints (partial ones are ignored and removed on the next start).
The manager keeps the last `keep` steps and the best by eval loss. Reading a finished stage back
(its meta, a partial restore of its variables, its tables) is `stae_jax.systems.loading`'s.
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


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, iterator=None) -> tuple[Any, dict]:
  """Restores `state` into the shardings of `abstract_state` (and the iterator in place)."""
  items = dict(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
  if iterator is not None:
    items["data"] = grain_checkpoint.CheckpointRestore(iterator)
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return restored["state"], restored["meta"]
