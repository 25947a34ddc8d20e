"""The workdir: its layout, and reading back what the trainer wrote (the one owner of both).

    <workdir>/config.json                        the resolved config of the last train.py run
    <workdir>/classifier/                        stage 1: the ViT every method is classified by
    <workdir>/systems/<tag>/<stage>/             each learned system's later stages (tag: stae,
                                                 deepisc, stae_no-frame-attention, ...)
each stage folder holding checkpoints/ (Orbax), metrics.jsonl and config.json (what that stage
trained: `stage_record`). A system's last stage's final checkpoint also holds its frozen coding
tables.

Systems are discovered from the folders, not from the config given to evaluate.py, so that a system
trained with a switch (`configs/synthetic.py:frame_attention=False` trains
`stae_no-frame-attention` into the same workdir) is compared with the others without naming it
again. Each system is rebuilt from the record its stage folder holds, exactly as it was trained.
"""

from __future__ import annotations

import json
import pathlib

from flax import nnx
import jax
import ml_collections
import numpy as np

from stae_jax import REPO_ROOT
from stae_jax import systems
from stae_jax.coding import tables as tables_lib
from stae_jax.models import vit as vit_lib
from stae_jax.training import checkpoint as ckpt_lib
from stae_jax.training import mesh as mesh_lib
from stae_jax.training import state as state_lib

CLASSIFIER = "classifier"
SYSTEMS = "systems"


class WorkdirError(ValueError):
  """The workdir lacks a finished stage that is needed; the message says which command makes it."""


def default(config) -> pathlib.Path:
  """`--workdir`'s default, the same for all four scripts: runs/<config.name>."""
  return REPO_ROOT / "runs" / config.name


def resolve(workdir, config) -> pathlib.Path:
  """`--workdir` as given, or the default, made absolute (Orbax needs absolute paths)."""
  return pathlib.Path(workdir or default(config)).absolute()


#: Folder of a workdir that holds JAX's persistent compilation cache (`use_compile_cache`).
COMPILE_CACHE = "compile_cache"


def use_compile_cache(workdir) -> pathlib.Path | None:
  """Points JAX's persistent compilation cache at `<workdir>/compile_cache`, so a tool that
  loads a trained run (serve.py, client.py, compress.py, decompress.py) compiles each step once
  per machine, not once per start: its next start deserialises the executables instead of
  recompiling them (BENCHMARKS.md "Serving start-up"). Executables are keyed by their HLO,
  backend and compile options, never by parameter values (the models' weights are arguments), so
  a retrained workdir reuses what still matches and compiles the rest. Call it before anything
  compiles. Returns the folder, or None where the workdir does not exist (nothing is created
  for a mistyped path)."""
  workdir = pathlib.Path(workdir)
  if not workdir.is_dir():
    return None
  folder = workdir / COMPILE_CACHE
  jax.config.update("jax_compilation_cache_dir", str(folder))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return folder


def classifier_dir(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / CLASSIFIER


def system_dir(workdir, tag: str) -> pathlib.Path:
  return pathlib.Path(workdir) / SYSTEMS / tag


def stage_dir(workdir, stage: str, tag: str | None) -> pathlib.Path:
  """The folder of `stage`: the shared classifier (tag None) or a system's stage."""
  return classifier_dir(workdir) if tag is None else system_dir(workdir, tag) / stage


# ------------------------------------------------------------------------------------------------
# Stage records (config.json of a stage folder)
# ------------------------------------------------------------------------------------------------

def stage_record(config, stage: dict, tag: str | None) -> dict:
  """What a stage folder records, and what makes two runs of it the same: the classifier depends on
  the seed, the data, the ViT and its stage; a system's stage also on the system's own entry
  (`config.systems.<tag>`: method, model sections). Nothing of another system is recorded, so
  changing one system never invalidates another's finished stages."""
  full = config.to_dict()
  record = dict(seed=full["seed"], data=full["data"], model=dict(vit=full["model"]["vit"]),
                stage=stage)
  if tag is not None:
    entry = dict(full["systems"][tag])
    entry.pop("stages", None)  # merged into `stage` already
    record.update(system_tag=tag, system=entry)
  return record


def read_record(directory: pathlib.Path) -> ml_collections.ConfigDict:
  path = pathlib.Path(directory) / "config.json"
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text()))
  except (OSError, ValueError) as error:
    raise WorkdirError(f"cannot read the stage record {path} ({error}); re-run train.py into a "
                       "fresh --workdir") from None


# ------------------------------------------------------------------------------------------------
# Reading trained models
# ------------------------------------------------------------------------------------------------

def _finished_step(directory: pathlib.Path, what: str) -> tuple[int, dict]:
  manager = ckpt_lib.make_manager(directory / "checkpoints", asynchronous=False)
  try:
    step = manager.latest_step()
    meta = ckpt_lib.latest_meta(manager) if step is not None else None
  finally:
    manager.close()
  if meta is None or not meta.get("done"):
    raise WorkdirError(
        f"{what} has no finished checkpoint in {directory}; run `python train.py --config=...` with "
        "the same config and --workdir first (a run that stopped resumes where it stopped).")
  return step, meta


def _restore(build, seed: int, directory: pathlib.Path, what: str, regex: str = ".*"):
  """(graphdef, params, rest, step) of models built by `build(rngs)`, filled from the stage's final
  checkpoint where their paths match `regex`."""
  step, meta = _finished_step(directory, what)
  graphdef, params, rest = state_lib.split_models(build(nnx.Rngs(int(seed))))
  state = {"params": params, "rest": rest}
  replicated = mesh_lib.replicated(mesh_lib.make_mesh(1))
  shardings = jax.tree_util.tree_map(lambda _: replicated, state)
  state, _ = state_lib.import_variables(state, shardings, directory / "checkpoints", step,
                                        meta["parameters"], regex)
  return graphdef, state["params"], state["rest"], step


def trained_data(workdir) -> ml_collections.ConfigDict:
  """`config.data` of the run that trained `workdir` (every system shares the classifier's data),
  so single-clip tools sample clips exactly as the models were trained on."""
  directory = classifier_dir(workdir)
  if not (directory / "config.json").is_file():
    raise WorkdirError(f"no trained classifier in {directory}: train first with `python train.py "
                       f"--config=<config> --workdir={workdir}`.")
  return read_record(directory).data


def load_classifier(config, workdir):
  """The stage-1 ViT as a `classify(clips) -> logits` function (the reference, and the classifier
  of every baseline). Only the ViT is built."""
  directory = classifier_dir(workdir)
  if not (directory / "checkpoints").is_dir():
    raise WorkdirError(
        f"no trained classifier in {directory}: train first with `python train.py "
        f"--config=<the same config> --workdir={workdir}` (evaluate.py reads what it wrote).")
  graphdef, params, rest, _ = _restore(
      lambda rngs: nnx.Dict(vit=vit_lib.vit_from_config(config, rngs=rngs)), config.seed,
      directory, "the classifier", regex="^vit/")
  return Classifier(graphdef, params, rest)


class Classifier:
  """A restored ViT, jitted: `classify(clips uint8 or float 0..255 [B,T,H,W,3]) -> logits`."""

  def __init__(self, graphdef, params, rest, *, compiled=None):
    self.graphdef, self.params, self.rest = graphdef, params, rest
    self._state = (params, rest)
    self._classify = compiled or jax.jit(lambda p, r, clip: nnx.merge(graphdef, p, r)["vit"](clip))

  def with_params(self, params, rest) -> "Classifier":
    """The same ViT with other weights (a fine-tuned copy), sharing this one's compiled step."""
    return Classifier(self.graphdef, params, rest, compiled=self._classify)

  def __call__(self, clips):
    return np.asarray(jax.block_until_ready(self._classify(*self._state, jax.numpy.asarray(clips))))


def final_stage_dir(directory: pathlib.Path) -> pathlib.Path | None:
  """The folder of a system's last stage (the one whose final checkpoint holds the tables)."""
  stages = [d for d in directory.iterdir() if (d / "config.json").is_file()]
  if not stages:
    return None
  order = list(read_record(stages[0]).get("stage_order", ()))
  stages.sort(key=lambda d: order.index(d.name) if d.name in order else -1)
  return stages[-1]


def discover_systems(workdir) -> list[str]:
  """Tags of the systems trained in `workdir`: each method's own tag first, in registry order,
  then its variants by name."""
  root = pathlib.Path(workdir) / SYSTEMS
  if not root.is_dir():
    return []
  tags = sorted(d.name for d in root.iterdir() if d.is_dir() and final_stage_dir(d) is not None)
  rank = {name: i for i, name in enumerate(systems.METHODS)}
  return sorted(tags, key=lambda t: (t not in rank, rank.get(t, 0), t))


def load_system(workdir, tag: str) -> systems.Trained:
  """A trained learned system with its coding tables, checked against its entropy model."""
  directory = system_dir(workdir, tag)
  last = final_stage_dir(directory) if directory.is_dir() else None
  if last is None:
    known = ", ".join(discover_systems(workdir)) or "none"
    raise WorkdirError(f"no system {tag!r} in {workdir} (trained systems: {known}); train it with "
                       f"`python train.py --config=<config>:system=...`.")
  record = read_record(last)
  if "system" not in record or "method" not in record.system:
    raise WorkdirError(f"{last} was trained by an older stae-jax (its config.json names no system "
                       "entry); train it again into a fresh --workdir.")
  method = systems.get(record.system.method)
  graphdef, params, rest, step = _restore(
      lambda rngs: build_models(record, record.system, rngs), record.seed, last,
      f"stage {last.name!r} of {tag!r}")
  tree = ckpt_lib.restore_tables(last / "checkpoints")
  if tree is None:
    raise WorkdirError(
        f"the final checkpoint of {last} holds no coding tables; it was not written by a "
        "finished run of train.py (the last stage of a system freezes them). Re-run train.py.")
  prior = method.entropy_model(nnx.merge(graphdef, params, rest))
  tables = tables_lib.require_tables(tables_lib.CodingTables.from_pytree(tree), prior)
  return systems.Trained(tag=tag, entry=record.system, data=record.data, graphdef=graphdef,
                         params=params, rest=rest, tables=tables, directory=last, step=step)


def load_codec(workdir, tag: str) -> systems.Codec:
  """`load_system` made into its method's codec."""
  trained = load_system(workdir, tag)
  return systems.get(trained.entry.method).codec(trained)


def build_models(config, entry, rngs: nnx.Rngs) -> nnx.Dict:
  """The shared ViT, then the system's own modules (`entry.method`'s `build`), in one container
  whose top-level names are the parameter path prefixes stages freeze by regex."""
  vit = vit_lib.vit_from_config(config, rngs=rngs)
  return nnx.Dict(vit=vit, **systems.get(entry.method).build(entry, config.data, rngs=rngs))
