"""Fine-tuning the reference ViT on a baseline's decoded clips, with a learned system's budget.

The "tuned" column of the report scores every method with a ViT tuned for its output. A learned
system has one already (its last stage, the joint stage, trains the ViT on the system's own
reconstructions); a baseline gets the stage-1 ViT fine-tuned here for the same budget: the same
steps, learning rate, schedule, optimizer, clipping and batch size as that system's last stage
(`budget`), on the baseline's decoded training clips (evaluation/tuned.py makes them), with the
classifier stage's loss (cross-entropy) and only the ViT trainable. Nothing is checkpointed: a few
steps are cheaper to redo than to store, and the same seed redoes the same steps.
"""

from __future__ import annotations

from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections

from stae_jax.training import mesh as mesh_lib
from stae_jax.training import optim
from stae_jax.training import state as state_lib
from stae_jax.training import trainer
from stae_jax.systems import loading

#: What of a stage's settings makes its budget (the rest, loss weights and what trains, are the
#: classifier stage's).
BUDGET_KEYS = ("steps", "lr", "warmup_steps", "schedule", "final_lr_fraction", "optimizer", "b1",
               "b2", "momentum", "weight_decay", "grad_clip", "batch_size")


def budget(workdir, tag: str) -> ml_collections.ConfigDict:
  """The fine-tuning stage: system `tag`'s last stage's budget (`BUDGET_KEYS`, as its stage folder
  recorded them; `budget_of` names it), training `^vit/` on the task loss alone."""
  directory = loading.system_dir(workdir, tag)
  last = loading.final_stage_dir(directory) if directory.is_dir() else None
  if last is None:
    raise loading.WorkdirError(f"no trained system {tag!r} in {workdir} to take a fine-tuning "
                                   "budget from; train it first.")
  stage = loading.read_record(last).stage.to_dict()
  kept = {key: stage[key] for key in BUDGET_KEYS if key in stage}
  return ml_collections.ConfigDict(dict(
      kept, name="tuned", budget_of=f"{tag}'s {last.name} stage", trainable="^vit/",
      loss=dict(task=1.0)))


class Finetuner:
  """Fine-tunes copies of `classifier` (a `workdir.Classifier`) by `stage`; one compile for all."""

  def __init__(self, classifier: loading.Classifier, stage: ml_collections.ConfigDict, *,
               seed: int):
    self.stage, self._classifier = stage, classifier
    self._mesh = mesh_lib.make_mesh(1)
    tx, labels = optim.make_optimizer(stage, classifier.params)

    def init(params, rest):
      copy = lambda tree: jax.tree_util.tree_map(jnp.copy, tree)  # the step donates its state
      return {"step": jnp.zeros((), jnp.int32), "params": copy(params),
              "opt_state": tx.init(params), "rest": copy(rest)}

    shardings = state_lib.state_shardings(
        jax.eval_shape(init, classifier.params, classifier.rest), self._mesh)
    self._init = jax.jit(init, out_shardings=shardings)
    self._steps = trainer.Steps(graphdef=classifier.graphdef, tx=tx, labels=labels, stage=stage,
                                method=None, state_shardings=shardings, mesh=self._mesh,
                                key=jax.random.PRNGKey(int(seed)))

  @property
  def batch_size(self) -> int:
    return int(self.stage.get("batch_size", 0))

  def run(self, batches: Iterator[dict]) -> tuple[loading.Classifier, dict]:
    """`stage.steps` steps on `batches` ({"video": [B,T,H,W,3] 0..255, "label": int32[B]}) from
    the reference's weights; returns the tuned classifier and the last step's metrics."""
    state = self._init(self._classifier.params, self._classifier.rest)
    metrics = {}
    for _ in range(int(self.stage.steps)):
      batch = next(batches)
      state, metrics = self._steps.train(state, mesh_lib.global_batch(batch, self._mesh), None)
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    return self._classifier.with_params(state["params"], state["rest"]), metrics
