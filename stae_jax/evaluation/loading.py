"""Finding and restoring what train.py left in a workdir: the shared classifier and every system.

    runs/<name>/classifier/checkpoints/            stage 1: the ViT every method is classified by
    runs/<name>/systems/<tag>/<stage>/checkpoints/ each compression system; its last stage's final
                                                   checkpoint also holds the frozen coding tables

Systems are discovered from the folders, not from the config given to evaluate.py, so that a system
trained with a switch (`configs/synthetic.py:frame_attention=False` trains `stae_no-frame-attention`
into the same workdir) is compared with the others without naming it again. Each system's config is
the one its trainer recorded (`config.json` in the stage folder), so the models are rebuilt exactly
as they were trained.

Reading reuses the trainer's helpers (`stae_jax.training.state.import_variables`, the partial Orbax
restore stage 2 starts from; `stae_jax.training.checkpoint.latest_meta` / `restore_tables`): one
checkpoint reader in the project.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

from flax import nnx
import jax
import ml_collections

from stae_jax.coding import tables as tables_lib
from stae_jax.training import checkpoint as ckpt_lib
from stae_jax.training import mesh as mesh_lib
from stae_jax.training import state as state_lib

CLASSIFIER = "classifier"


class WorkdirError(ValueError):
  """The workdir lacks a finished stage evaluation needs; the message says which command makes it."""


@dataclasses.dataclass
class TrainedModels:
  """One restored checkpoint: the models' graphdef and state (what `jax.jit` functions take)."""
  tag: str                 # "classifier", or the system's tag ("stae", "deepisc", ...)
  config: ml_collections.ConfigDict  # the config the models were trained with
  graphdef: object
  params: object           # nnx.State of nnx.Param
  rest: object             # nnx.State of everything else
  directory: pathlib.Path  # the stage folder
  step: int
  tables: tables_lib.CodingTables | None = None

  @property
  def system(self) -> str:
    return self.config.system

  def merge(self):
    return nnx.merge(self.graphdef, self.params, self.rest)


def _finished_step(stage_dir: pathlib.Path, what: str) -> tuple[int, dict]:
  manager = ckpt_lib.make_manager(stage_dir / "checkpoints", asynchronous=False)
  try:
    step = manager.latest_step()
    meta = ckpt_lib.latest_meta(manager) if step is not None else None
  finally:
    manager.close()
  if meta is None or not meta.get("done"):
    raise WorkdirError(
        f"{what} has no finished checkpoint in {stage_dir}; run `python train.py --config=...` with "
        "the same config and --workdir first (a run that stopped resumes where it stopped).")
  return step, meta


def restore_models(config: ml_collections.ConfigDict, stage_dir: pathlib.Path, *, tag: str,
                   regex: str = ".*") -> TrainedModels:
  """Builds `config`'s models and fills those matching `regex` from the stage's final checkpoint."""
  from stae_jax.models import systems  # pylint: disable=g-import-not-at-top
  step, meta = _finished_step(stage_dir, f"stage {stage_dir.name!r} of {tag!r}")
  models = systems.build_models(config, nnx.Rngs(int(config.seed)))
  graphdef, params, rest = state_lib.split_models(models)
  state = {"params": params, "rest": rest}
  replicated = mesh_lib.replicated(mesh_lib.make_mesh(1))
  shardings = jax.tree_util.tree_map(lambda _: replicated, state)
  state, _ = state_lib.import_variables(state, shardings, stage_dir / "checkpoints", step,
                                        meta["parameters"], regex)
  return TrainedModels(tag=tag, config=config, graphdef=graphdef, params=state["params"],
                       rest=state["rest"], directory=stage_dir, step=step)


def load_classifier(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> TrainedModels:
  """The stage-1 ViT (its checkpoint holds the whole model container; only `vit/` is read)."""
  stage_dir = pathlib.Path(workdir).absolute() / CLASSIFIER
  if not (stage_dir / "checkpoints").is_dir():
    raise WorkdirError(
        f"no trained classifier in {stage_dir}: train first with `python train.py "
        f"--config=<the same config> --workdir={workdir}` (evaluate.py reads what it wrote).")
  return restore_models(config, stage_dir, tag=CLASSIFIER, regex="^vit/")


def system_config_of(stage_dir: pathlib.Path) -> ml_collections.ConfigDict:
  """The config a system stage was trained with (the trainer records it in `config.json`)."""
  recorded = json.loads((stage_dir / "config.json").read_text())
  for key in ("stage_name", "system_tag"):
    recorded.pop(key, None)
  return ml_collections.ConfigDict(recorded)


def final_stage_dir(system_dir: pathlib.Path) -> pathlib.Path | None:
  """The folder of a system's last stage (the one whose final checkpoint holds the tables)."""
  stages = [d for d in system_dir.iterdir() if (d / "config.json").is_file()]
  if not stages:
    return None
  order = list(system_config_of(stages[0]).train.stage_order)
  stages.sort(key=lambda d: order.index(d.name) if d.name in order else -1)
  return stages[-1]


def discover_systems(workdir: str | pathlib.Path) -> list[str]:
  """Tags of the systems trained in `workdir`, "stae" first, then "deepisc", then the rest."""
  root = pathlib.Path(workdir).absolute() / "systems"
  if not root.is_dir():
    return []
  tags = sorted(d.name for d in root.iterdir() if d.is_dir() and final_stage_dir(d) is not None)
  rank = {"stae": 0, "deepisc": 1}
  return sorted(tags, key=lambda t: (rank.get(t, 2), t))


def load_system(workdir: str | pathlib.Path, tag: str) -> TrainedModels:
  """A trained compression system with its coding tables, checked against its entropy model."""
  system_dir = pathlib.Path(workdir).absolute() / "systems" / tag
  stage_dir = final_stage_dir(system_dir) if system_dir.is_dir() else None
  if stage_dir is None:
    known = ", ".join(discover_systems(workdir)) or "none"
    raise WorkdirError(f"no system {tag!r} in {workdir} (trained systems: {known}); train it with "
                       f"`python train.py --config=<config>:system=...`.")
  config = system_config_of(stage_dir)
  loaded = restore_models(config, stage_dir, tag=tag)
  tree = ckpt_lib.restore_tables(stage_dir / "checkpoints")
  if tree is None:
    raise WorkdirError(
        f"the final checkpoint of {stage_dir} holds no coding tables; it was not written by a "
        "finished run of train.py (the last stage of a system freezes them). Re-run train.py.")
  tables = tables_lib.CodingTables.from_pytree(tree)
  models = loaded.merge()
  prior = models["prior"] if "prior" in models else models["deepisc"].prior
  loaded.tables = tables_lib.require_tables(tables, prior)
  return loaded


def class_names(config) -> list[str] | None:
  """Label names of the config's dataset (None if they cannot be known without building it)."""
  if config.data.name == "synthetic_actions":
    from stae_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    return list(synthetic.CLASS_NAMES)
  try:
    from stae_jax.data import datasets  # pylint: disable=g-import-not-at-top
    builder = datasets.get_builder(config.data)
    return datasets.class_names(builder) if builder.is_prepared() else None
  except Exception:  # pylint: disable=broad-except  (names are a nicety; numbers are shown instead)
    return None
