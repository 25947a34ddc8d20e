"""Loading a finished run: the workdir's layout, and reading back what train.py and evaluate.py
wrote. The one module evaluation, serving, the single-clip tools and the trainer share for it.

    <workdir>/config.json                        the resolved config of the last train.py run
    <workdir>/classifier/                        stage 1: the ViT every method is classified by
    <workdir>/systems/<tag>/<stage>/             each learned system's later stages (tag: stae,
                                                 deepisc, stae_no-frame-attention, ...)
    <workdir>/results.json                       what evaluate.py measured (H.264's grid, points)
    <workdir>/compile_cache/                     JAX's persistent compilation cache of the tools
each stage folder holding checkpoints/ (Orbax), metrics.jsonl and config.json (what that stage
trained: `stae_jax.training.workdir.stage_record`). A system's last stage's final checkpoint also
holds its frozen coding tables.

    codecs = loading.load_codecs(workdir, ["stae", "h264"])   # the classifier restored too

Systems are discovered from the folders, not from a config, so that a system trained with a switch
(`configs/synthetic.py:selection=random` trains `stae_random-selection` into the same
workdir) is loaded without naming it again. Each system (and the classifier) is rebuilt from the
record its stage folder holds, exactly as it was trained.

Import direction: this module sits with the methods (`stae_jax.systems`) and imports only them,
channel, coding, models and libraries; training (which writes workdirs), evaluation and serving import it.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any, Callable, Sequence

from absl import logging
from flax import nnx
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from stae_jax import REPO_ROOT
from stae_jax import channel as channel_lib
from stae_jax import systems
from stae_jax.coding import tables as tables_lib
from stae_jax.models import vit as vit_lib

CLASSIFIER = "classifier"
SYSTEMS = "systems"
RESULTS = "results.json"
#: Folder of a workdir that holds JAX's persistent compilation cache (`use_compile_cache`).
COMPILE_CACHE = "compile_cache"
#: The format tag of results.json (evaluate.py writes it; readers check it).
RESULTS_FORMAT = "stae_jax.results/2"


class WorkdirError(ValueError):
  """The workdir lacks a finished stage that is needed; the message says which command makes it."""


# ------------------------------------------------------------------------------------------------
# Layout
# ------------------------------------------------------------------------------------------------

def default(config) -> pathlib.Path:
  """`--workdir`'s default, the same for every script: runs/<config.name>."""
  return REPO_ROOT / "runs" / config.name


def resolve(workdir, config) -> pathlib.Path:
  """`--workdir` as given, or the default, made absolute (Orbax needs absolute paths)."""
  return pathlib.Path(workdir or default(config)).absolute()


def classifier_dir(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / CLASSIFIER


def system_dir(workdir, tag: str) -> pathlib.Path:
  return pathlib.Path(workdir) / SYSTEMS / tag


def stage_dir(workdir, stage: str, tag: str | None) -> pathlib.Path:
  """The folder of `stage`: the shared classifier (tag None) or a system's stage."""
  return classifier_dir(workdir) if tag is None else system_dir(workdir, tag) / stage


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


def read_record(directory: pathlib.Path) -> ml_collections.ConfigDict:
  """A stage folder's config.json (what that stage trained)."""
  path = pathlib.Path(directory) / "config.json"
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text()))
  except (OSError, ValueError) as error:
    raise WorkdirError(f"cannot read the stage record {path} ({error}); re-run train.py into a "
                       "fresh --workdir") from None


# ------------------------------------------------------------------------------------------------
# Checkpoints (read side; stae_jax.training.checkpoint writes them)
# ------------------------------------------------------------------------------------------------

def path_str(path) -> str:
  """`('vit', 'blocks', 0, 'kernel')`-like key paths as `vit/blocks/0/kernel` (the subject of the
  regexes that pick variables, here and in the trainer's optimizer)."""
  parts = []
  for key in path:
    if isinstance(key, jax.tree_util.GetAttrKey):
      if key.name == "value":  # nnx.Variable's own leaf: not part of the parameter's name
        continue
      parts.append(key.name)
    elif isinstance(key, jax.tree_util.DictKey):
      parts.append(str(key.key))
    elif isinstance(key, jax.tree_util.SequenceKey):
      parts.append(str(key.idx))
    elif isinstance(key, jax.tree_util.FlattenedIndexKey):
      parts.append(str(key.key))
    else:
      parts.append(str(key))
  return "/".join(parts)


def read_only_manager(directory: str | pathlib.Path) -> ocp.CheckpointManager:
  """A manager that only reads `directory` (options set so Orbax has nothing to override and log)."""
  return ocp.CheckpointManager(
      pathlib.Path(directory).absolute(),
      options=ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0))


def latest_meta(manager: ocp.CheckpointManager) -> dict | None:
  """The `meta` item of the newest complete checkpoint, or None when there is none."""
  step = manager.latest_step()
  if step is None:
    return None
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def finished_checkpoint(directory: pathlib.Path) -> tuple[int, dict] | None:
  """(step, meta) of the finished checkpoint in `directory`/checkpoints; None where the stage has
  no checkpoint or its newest one is not the stage's last (`meta["done"]`)."""
  checkpoints = pathlib.Path(directory) / "checkpoints"
  if not checkpoints.is_dir():
    return None
  manager = read_only_manager(checkpoints)
  try:
    step = manager.latest_step()
    meta = latest_meta(manager) if step is not None else None
  finally:
    manager.close()
  if meta is None or not meta.get("done"):
    return None
  return step, meta


def restore_variables(state, shardings, checkpoint_dir: str | pathlib.Path, step: int,
                      source_index: dict, regex: str) -> tuple[Any, list[str]]:
  """Replaces the params/rest leaves of `state` ({"params", "rest", ...}) whose path matches
  `regex` by those of checkpoint `step` in `checkpoint_dir`, placed in `shardings`.

  Only the matching leaves are read (Orbax partial restore). A matching leaf that the source lacks
  (`source_index`: the checkpoint meta's {path: [shape, dtype]}), or has with another shape, is an
  error: a model silently keeping random weights is the failure this guards against. Returns the
  new state and the restored paths.
  """
  pattern = re.compile(regex)
  target, imported, problems = {}, [], []
  for group in ("params", "rest"):
    flat = jax.tree_util.tree_flatten_with_path(state[group])[0]
    sh_flat = jax.tree_util.tree_leaves(shardings[group])
    for (path, leaf), sh in zip(flat, sh_flat):
      name = path_str(path)
      if not pattern.search(name):
        continue
      key = f"{group}/{name}"
      if key not in source_index:
        if group == "params":
          problems.append(f"{name} (missing)")
        continue
      if list(leaf.shape) != source_index[key][0]:
        problems.append(f"{name} (shape {source_index[key][0]} there, {list(leaf.shape)} here)")
        continue
      node = target.setdefault(group, {})
      parts = name.split("/")
      for part in parts[:-1]:
        node = node.setdefault(part, {})
      node[parts[-1]] = {"value": jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sh)}
      imported.append(key)
  if problems:
    raise ValueError(f"cannot start from {checkpoint_dir}: parameters matching {regex!r} differ: "
                     + ", ".join(problems[:8]) + (" ..." if len(problems) > 8 else "")
                     + ". Was it trained with another model config?")
  if not imported:
    raise ValueError(f"init regex {regex!r} matches no variable of {checkpoint_dir}.")
  manager = read_only_manager(checkpoint_dir)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True)))["state"]

  def lookup(group, path, leaf):
    node = restored.get(group)
    if node is None or not pattern.search(path_str(path)):
      return leaf
    for part in path_str(path).split("/"):
      node = node.get(part) if isinstance(node, dict) else None
      if node is None:
        return leaf
    return node["value"]

  new_state = dict(state)
  for group in ("params", "rest"):
    new_state[group] = jax.tree_util.tree_map_with_path(lambda p, x, g=group: lookup(g, p, x),
                                                        state[group])
  return new_state, imported


def restore_tables(directory: str | pathlib.Path, abstract_tables=None):
  """The coding tables stored in the newest checkpoint under `directory`, or None if it has none."""
  manager = read_only_manager(directory)
  step = manager.latest_step()
  # Orbax keeps each item of a step in its own folder; asking `item_metadata` instead would log a
  # warning for every item this read-only manager has no handler for.
  if step is None or not (pathlib.Path(manager.directory) / str(step) / "tables").is_dir():
    return None
  args = (ocp.args.StandardRestore(abstract_tables) if abstract_tables is not None
          else ocp.args.StandardRestore())
  return manager.restore(step, args=ocp.args.Composite(tables=args))["tables"]


def _restore(build, seed: int, directory: pathlib.Path, what: str, regex: str = ".*"):
  """(graphdef, params, rest, step) of models built by `build(rngs)`, filled from the stage's final
  checkpoint where their paths match `regex` (replicated over every local device)."""
  finished = finished_checkpoint(directory)
  if finished is None:
    raise WorkdirError(
        f"{what} has no finished checkpoint in {directory}; run `python train.py --config=...` with "
        "the same config and --workdir first (a run that stopped resumes where it stopped).")
  step, meta = finished
  graphdef, params, rest = nnx.split(build(nnx.Rngs(int(seed))), nnx.Param, ...)
  state = {"params": params, "rest": rest}
  # Replicated over the trainer's (data, model) mesh of every device with model axis 1, as
  # training placed them: the executables' keys in the compilation cache include the shardings.
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()).reshape(-1, 1), ("data", "model"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  shardings = jax.tree_util.tree_map(lambda _: replicated, state)
  state, _ = restore_variables(state, shardings, directory / "checkpoints", step,
                               meta["parameters"], regex)
  return graphdef, state["params"], state["rest"], step


# ------------------------------------------------------------------------------------------------
# Trained models
# ------------------------------------------------------------------------------------------------

def build_models(config, entry, rngs: nnx.Rngs) -> nnx.Dict:
  """The shared ViT, then the system's own modules (`entry.method`'s `build`), in one container
  whose top-level names are the parameter path prefixes stages freeze by regex."""
  vit = vit_lib.vit_from_config(config, rngs=rngs)
  return nnx.Dict(vit=vit, **systems.get(entry.method).build(entry, config.data, rngs=rngs))


def clip_shape_of(data_config) -> tuple[int, int, int, int]:
  """[T,H,W,3] of the clips `config.data` samples (what every codec of a run takes)."""
  return (int(data_config.frames), int(data_config.resolution), int(data_config.resolution), 3)


def trained_data(workdir) -> ml_collections.ConfigDict:
  """`config.data` of the run that trained `workdir` (every system shares the classifier's data),
  so single-clip tools sample clips exactly as the models were trained on."""
  directory = classifier_dir(workdir)
  if not (directory / "config.json").is_file():
    raise WorkdirError(f"no trained classifier in {directory}: train first with `python train.py "
                       f"--config=<config> --workdir={workdir}`.")
  return read_record(directory).data


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


def load_classifier(config, workdir) -> Classifier:
  """The stage-1 ViT as a `classify(clips) -> logits` function (the reference, and the classifier
  of every baseline). Only the ViT is built, from `config` (its model.vit section and seed), or
  with config None from the record the classifier's stage folder holds (as it was trained)."""
  directory = classifier_dir(workdir)
  if not (directory / "checkpoints").is_dir():
    raise WorkdirError(
        f"no trained classifier in {directory}: train first with `python train.py "
        f"--config=<the same config> --workdir={workdir}` (evaluate.py reads what it wrote).")
  if config is None:
    config = read_record(directory)
  graphdef, params, rest, _ = _restore(
      lambda rngs: nnx.Dict(vit=vit_lib.vit_from_config(config, rngs=rngs)), config.seed,
      directory, "the classifier", regex="^vit/")
  return Classifier(graphdef, params, rest)


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
  tree = restore_tables(last / "checkpoints")
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


# ------------------------------------------------------------------------------------------------
# results.json: what evaluate.py measured
# ------------------------------------------------------------------------------------------------

def load_results(path: str | pathlib.Path) -> dict:
  """A results.json, checked to be of `RESULTS_FORMAT`."""
  path = pathlib.Path(path)
  results = json.loads(path.read_text())
  if results.get("format") != RESULTS_FORMAT:
    raise ValueError(f"{path} is not a results file of format {RESULTS_FORMAT!r} (found "
                     f"{results.get('format')!r}); run evaluate.py again to write one.")
  return results


def measured_baselines(workdir, *, crfs=None, preset: str | None = None) -> dict:
  """The baselines' options (`load_codecs`' `baselines`) that evaluate.py measured in
  `workdir`'s results.json: H.264's grid (kept frames, side divisors, CRFs, preset), so that
  serve.py and client.py build the very points results.json plans with, instead of defaults of
  their own that drift from evaluate.py's (the README's commands failed on that). Where the test
  pass measured only some of the grid's cells (`validation_only`: evaluate.py's test_points
  "envelope"), `cells` names the measured ones: the client plans with results.json's test points,
  so those are the cells served and planned with. `crfs`, `preset` (the tools' flags) replace what
  was measured where given; `crfs` makes another grid, served whole. Without a results.json (or an
  H.264 entry in it) H.264 keeps its own defaults."""
  h264 = {}
  path = pathlib.Path(workdir) / RESULTS
  if path.is_file():
    results = load_results(path)
    method = results["methods"].get("h264")
    if method and not method.get("skipped") and method.get("config"):
      config, side = method["config"], int(results["clip_shape"][1])
      h264 = dict(frames=tuple(int(k) for k in config["frames"]),
                  scales=tuple(side // int(s) for s in config["sides"]),
                  crfs=tuple(float(c) for c in config["crfs"]), preset=config["preset"])
      if method.get("validation_only"):
        h264["cells"] = tuple(p["name"] for p in method["points"])
  if crfs is not None:
    h264["crfs"] = tuple(float(c) for c in crfs)
    h264.pop("cells", None)
  if preset is not None:
    h264["preset"] = preset
  return dict(h264=h264)


def operating_points(method: dict, times: dict | None = None) -> list[channel_lib.OperatingPoint]:
  """A method's points (`results.json` `methods.<tag>`) as the channel's `OperatingPoint`s: mean
  bits, top-1 on the validation split (test where none was measured) and step times per clip:
  `times` {point name: {step: seconds}} (the method's entry of a device profile,
  `stae_jax.evaluation.device_profile`: what the channel study plans with), or where not given
  each point's own single-clip seconds (what the serving client plans with)."""
  out = []
  for p in method["points"]:
    if times is None:
      seconds = p["seconds"]
      encode = p["device_seconds"]
    else:
      seconds = times[p["name"]]
      encode = seconds["encode"] + seconds["entropy_encode"]
    out.append(channel_lib.OperatingPoint(
        name=p["name"], bits=p["bits_per_clip"],
        expected_accuracy=(p.get("validation") or p)["top1"], encode_seconds=encode,
        decode_seconds=seconds["entropy_decode"] + seconds["decode"],
        classify_seconds=seconds["classify"]))
  return out


def results_method(workdir, tag: str) -> dict | None:
  """`methods.<tag>` of the workdir's results.json where evaluate.py measured points of it (None:
  no results.json, or the method was skipped or not measured)."""
  path = pathlib.Path(workdir) / RESULTS
  if not path.is_file():
    return None
  method = load_results(path)["methods"].get(tag)
  if not method or method.get("skipped") or not method.get("points"):
    return None
  return method


# ------------------------------------------------------------------------------------------------
# Codecs of a finished run
# ------------------------------------------------------------------------------------------------

def _no_classifier(clips):
  raise RuntimeError("these codecs were loaded without a classifier (device halves only); "
                     "classification runs on the server")


def load_codecs(workdir, methods: Sequence[str] | None = None, *,
                classify: Callable | None = None, device_only: bool = False,
                baselines: dict | None = None,
                clip_shape: Sequence[int] | None = None) -> list[systems.Codec]:
  """The codecs of a finished run, in the order of `methods`.

  methods: names to load, each a trained system's tag (`discover_systems`) or a baseline's name
    (`stae_jax.systems.baselines()`: "h264", "raw"); None: every trained system, then every
    baseline. A name that is neither is a WorkdirError listing what there is.
  classify: the classifier the baselines are scored by; None: the workdir's own classifier,
    restored here (`load_classifier`, built from its stage record) where a baseline is loaded,
    unless `device_only` (no ViT restored; a baseline's classify then raises: the device halves of
    serving's client). The learned systems carry their own ViT.
  baselines: per-baseline options ({"h264": {"crfs": ..., ...}}); None: what evaluate.py measured
    (`measured_baselines`).
  clip_shape: [T,H,W,3] the caller expects (its config's data); a system trained on another is a
    WorkdirError. None: the classifier's training data gives the baselines' clip shape.
  A baseline that cannot run here is returned with its `skipped` reason (callers decide).
  """
  workdir = pathlib.Path(workdir)
  trained = discover_systems(workdir)
  if methods is None:
    if not trained:
      logging.warning("no trained compression system in %s/%s: only the baselines are loaded",
                      workdir, SYSTEMS)
    methods = trained + systems.baselines()
  methods = list(methods)
  unknown = [m for m in methods if m not in trained and m not in systems.baselines()]
  if unknown:
    raise WorkdirError(
        f"{workdir} has no trained system {', '.join(map(repr, unknown))} (trained: "
        f"{', '.join(trained) or 'none'}; baselines: {', '.join(systems.baselines())}); train it "
        "with `python train.py --config=<config>:system=...`.")
  clip_shape = tuple(int(s) for s in (clip_shape or clip_shape_of(trained_data(workdir))))
  if classify is None and any(m not in trained for m in methods):
    classify = _no_classifier if device_only else load_classifier(None, workdir)
  context = systems.BaselineContext(
      clip_shape=clip_shape, classify=classify,
      options=measured_baselines(workdir) if baselines is None else dict(baselines))
  codecs = []
  for name in methods:
    if name in trained:
      codec = load_codec(workdir, name)
      if tuple(codec.clip_shape) != clip_shape:
        raise WorkdirError(
            f"system {codec.tag!r} was trained on clips of {list(codec.clip_shape)}, the config "
            f"asks for {list(clip_shape)}: use the config it was trained with.")
      codecs.append(codec)
    else:
      codecs.extend(systems.get(name).codecs(context))
  for codec in codecs:
    if codec.skipped:
      logging.warning("%s skipped: %s", codec.label, codec.skipped)
  return codecs
