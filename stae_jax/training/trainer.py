"""The trainer: every stage of every system, through one loop (big_vision style, cut by banners).

The workdir layout is `stae_jax.systems.loading`'s: the classifier stage once, shared by every
system, then each system's later stages in its own folder. What a system is (its models, forward,
loss terms, operating points, entropy model) comes from its method's module in
`stae_jax.systems`; the trainer never asks which method it trains.

A stage is configuration (`config.stages.<name>`, deep-merged with the system's own
`config.systems.<tag>.stages.<name>`, which holds its loss weights): which parameters train
(`trainable` regex; the others get no optimizer state), steps, optimizer and schedule, loss weights
(checked against the method's LOSS_TERMS), where its weights start (`init_from` an earlier stage,
`init_params` regex). Stages run in `config.train.stage_order`; one
whose last checkpoint is marked done is skipped, one that has checkpoints resumes from the newest
(same step, same data order: the grain iterator state is in the checkpoint).
"""

from __future__ import annotations

import functools
import json
import pathlib

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from stae_jax import systems
from stae_jax.configdicts import deep_merge
from stae_jax.systems import loading
from stae_jax.models import vit as vit_lib
from stae_jax.training import checkpoint as ckpt_lib
from stae_jax.training import logging as log_lib
from stae_jax.training import losses
from stae_jax.training import mesh as mesh_lib
from stae_jax.training import optim
from stae_jax.training import state as state_lib
from stae_jax.training import workdir as workdir_lib

#: Record keys that may change between runs on one folder (they do not change what it trained).
RUNTIME_KEYS = ("stage_order", "data.workers", "data.prefetch")
#: The loss terms of the shared classifier stage.
CLASSIFIER_LOSS_TERMS = ("task",)


def default_loader(data_config, split, *, seed, train, num_epochs=None):
  from stae_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.make_loader(data_config, split, seed=seed, train=train, num_epochs=num_epochs)


# ------------------------------------------------------------------------------------------------
# Stages, systems and their records
# ------------------------------------------------------------------------------------------------

def stage_settings(config, stage_name: str, tag: str | None) -> ml_collections.ConfigDict:
  """A stage's settings for one system: `config.stages.<stage>` deep-merged with
  `config.systems.<tag>.stages.<stage>`; loss-weight keys checked against the method's terms."""
  if stage_name not in config.stages:
    raise ValueError(f"train.stage_order names {stage_name!r}, which config.stages lacks "
                     f"(it has: {', '.join(config.stages)}).")
  stage = config.stages[stage_name].to_dict()
  terms = CLASSIFIER_LOSS_TERMS
  if tag is not None:
    entry = system_entry(config, tag)
    stage = deep_merge(stage, entry.to_dict().get("stages", {}).get(stage_name, {}))
    terms = systems.get(entry.method).LOSS_TERMS
  unknown = sorted(set(stage.get("loss", {})) - set(terms))
  if unknown:
    where = f"system {tag!r}" if tag else "the classifier"
    raise ValueError(f"stage {stage_name!r} of {where} has loss weights {unknown} that are not its "
                     f"loss terms ({', '.join(terms)}); fix the key in the config.")
  stage = ml_collections.ConfigDict(stage)
  with stage.unlocked():
    stage.name = stage_name
  return stage


def system_entry(config, tag: str) -> ml_collections.ConfigDict:
  if tag not in config.systems:
    raise ValueError(f"unknown system {tag!r}; config.systems has: {', '.join(config.systems)}.")
  entry = config.systems[tag]
  systems.get(entry.method)  # an unknown method is an error naming the known ones
  return entry


def stage_plan(config, workdir: pathlib.Path) -> list[tuple[str, str | None, pathlib.Path]]:
  """[(stage, system tag or None, folder)] in run order: the classifier once, then per system."""
  for stage in config.train.stage_order:
    if stage not in config.stages:
      raise ValueError(f"train.stage_order names {stage!r}, which config.stages lacks "
                       f"(it has: {', '.join(config.stages)}).")
  plan = []
  if loading.CLASSIFIER in config.train.stage_order:
    plan.append((loading.CLASSIFIER, None, loading.classifier_dir(workdir)))
  for tag in config.systems:
    for stage in config.train.stage_order:
      if stage != loading.CLASSIFIER:
        plan.append((stage, tag, loading.stage_dir(workdir, stage, tag)))
  return plan


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def check_workdir_config(directory: pathlib.Path, config_dict: dict) -> None:
  """Refuses a folder that holds a run of another config, else records it (as config.json).

  Keys under RUNTIME_KEYS (dotted prefixes) may differ: they do not change what the
  folder's run trained."""
  path = directory / "config.json"
  mine = _flatten(json.loads(json.dumps(config_dict)))
  skip = tuple(RUNTIME_KEYS)
  if path.exists():
    theirs = _flatten(json.loads(path.read_text()))
    keys = sorted(k for k in set(mine) | set(theirs)
                  if mine.get(k, "<absent>") != theirs.get(k, "<absent>")
                  and not any(k == r or k.startswith(r + ".") for r in skip))
    if keys:
      diffs = "; ".join(f"{k}: {theirs.get(k, '<absent>')!r} there, {mine.get(k, '<absent>')!r} now"
                        for k in keys[:6])
      raise ValueError(
          f"{directory} holds a run of a different config ({diffs}{' ...' if len(keys) > 6 else ''}). "
          "Pass another --workdir, or delete that folder to start it again.")
  elif jax.process_index() == 0:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config_dict, indent=2, sort_keys=True))
    tmp.replace(path)


def check_stage_config(directory: pathlib.Path, config, stage, tag: str | None) -> None:
  """`check_workdir_config` for one stage folder, on `workdir.stage_record`."""
  record = workdir_lib.stage_record(config, stage.to_dict(), tag)
  record["stage_order"] = list(config.train.stage_order)
  check_workdir_config(directory, record)


# ------------------------------------------------------------------------------------------------
# Losses of a stage
# ------------------------------------------------------------------------------------------------

def rate_ramp(stage, step):
  """The rate weight's multiplier at `step`: rises linearly from 0 to 1 over the stage's
  `rate_warmup_steps` (0: always 1). Why: with the full rate weight from the first step the
  entropy model squeezes the latents before the transforms have learnt what to put in them, and
  the codec settles on sending almost nothing (measured on the synthetic config: PSNR stuck at
  14.7 dB and accuracy near chance after 60 steps, against 16.5 dB and 0.38 without the squeeze)."""
  warmup = int(stage.get("rate_warmup_steps", 0))
  if warmup <= 0:
    return 1.0
  return jnp.clip(jnp.asarray(step, jnp.float32) / warmup, 0.0, 1.0)


def _is_zero(weight) -> bool:
  """Whether a loss weight is a Python zero (a traced weight, like the rate ramp's, never is)."""
  return isinstance(weight, (int, float)) and weight == 0


def stage_loss(stage, method, models, batch, *, operating_point, training, rng, rate_scale=1.0):
  """(loss, metrics) of one batch; `batch["mask"]` (evaluation padding) weights the clips.
  `method`: the system's module in `stae_jax.systems`, or None for the shared classifier stage.
  rate_scale multiplies the rate weight (`rate_ramp` in training, 1 in evaluation)."""
  video, labels = batch["video"], batch["label"]
  weights = batch.get("mask")
  w = stage.loss
  if method is None:
    with jax.named_scope("classifier"):  # as in the systems' forwards (benchmarks/step_split.py)
      logits = models["vit"](video)
    task = losses.cross_entropy(logits, labels, weights)
    return task, dict(loss=task, task=task, accuracy=losses.accuracy(logits, labels, weights))
  out = method.forward(models, video, operating_point, training=training, rng=rng)
  task = losses.cross_entropy(out["logits"], labels, weights)
  # "pixel_reconstruction" (STAE with selection_gradient="task"): the same pixels, decoded with
  # constant masks, so the pixel error does not steer the selection.
  mse = losses.reconstruction_mse(out.get("pixel_reconstruction", out["reconstruction"]), video,
                                  weights)
  bpp = losses.bits_per_pixel(out["bits"]["total"], video.shape, weights)
  # Terms of weight 0 are left out of the loss, not multiplied by 0: a stage without the task
  # term then never backpropagates through the classifier (its logits are only a metric).
  terms = ((w.get("task", 0.0), task), (w.get("reconstruction", 0.0), mse),
           (w.get("rate", 0.0) * rate_scale, bpp))
  total = sum((weight * value for weight, value in terms if not _is_zero(weight)),
              jnp.float32(0.0))
  metrics = dict(task=task, reconstruction_mse=mse, psnr=losses.psnr_from_mse(mse), bpp=bpp,
                 accuracy=losses.accuracy(out["logits"], labels, weights))
  for term, (value, term_metrics) in method.extra_losses(out, video, weights, losses).items():
    if w.get(term, 0.0):
      total = total + w[term] * value
      metrics.update(term_metrics)
  if w.get("distill", 0.0):
    teacher = models["vit"](video)
    distill = losses.distillation(out["logits"], teacher, float(stage.get("distill_temperature", 1.0)),
                                  weights)
    total = total + w.distill * distill
    metrics["distill"] = distill
  metrics["loss"] = total
  return total, metrics


# ------------------------------------------------------------------------------------------------
# Compiled steps
# ------------------------------------------------------------------------------------------------

class Steps:
  """jit-compiled train and eval steps of one stage (cached).

  A point the method can pass traced (`point_inputs(entry, point)`, e.g. STAE's index into its keep
  ratios) shares one compile with every other point; other points (a static `Point`, or None for
  "drawn per clip inside the step") compile once each. `trace_count` counts traces, so a test can
  check that nothing recompiles after the first step and that a stage compiles once.
  """

  def __init__(self, *, graphdef, tx, labels, stage, method, state_shardings, mesh, key,
               point_inputs=None):
    self.trace_count = 0
    self._train, self._eval = {}, {}
    self._point_inputs = point_inputs
    batch_sh = mesh_lib.batch_sharding(mesh)
    replicated = mesh_lib.replicated(mesh)
    trainable = [l == "train" for l in jax.tree_util.tree_leaves(labels)]

    def loss_fn(params, rest, batch, rng, operating_point, training, rate_scale=1.0):
      models = nnx.merge(graphdef, params, rest)
      loss, metrics = stage_loss(stage, method, models, batch, operating_point=operating_point,
                                 training=training, rng=rng, rate_scale=rate_scale)
      new_rest = nnx.split(models, nnx.Param, ...)[2]
      return loss, (metrics, new_rest)

    def train_step(state, batch, traced_point, operating_point):
      self.trace_count += 1
      point = operating_point if traced_point is None else traced_point
      rng = jax.random.fold_in(key, state["step"])
      grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
      (_, (metrics, new_rest)), grads = grad_fn(state["params"], state["rest"], batch, rng,
                                                point, True, rate_ramp(stage, state["step"]))
      with jax.named_scope("optimizer"):  # named for profiles (benchmarks/step_split.py)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
      leaves = [g for g, t in zip(jax.tree_util.tree_leaves(grads), trainable) if t]
      metrics["grad_norm"] = optax.tree.norm(leaves)
      new_state = dict(step=state["step"] + 1, params=params, opt_state=opt_state, rest=new_rest)
      return new_state, metrics

    def eval_step(state, batch, traced_point, operating_point):
      self.trace_count += 1
      point = operating_point if traced_point is None else traced_point
      rng = jax.random.PRNGKey(0)
      _, (metrics, _) = loss_fn(state["params"], state["rest"], batch, rng, point, False)
      count = jnp.sum(batch["mask"].astype(jnp.float32)) if "mask" in batch else jnp.float32(
          batch["label"].shape[0])
      return {k: v * count for k, v in metrics.items()} | {"count": count}

    self._make_train = lambda op: jax.jit(
        functools.partial(train_step, operating_point=op), donate_argnums=0,
        in_shardings=(state_shardings, batch_sh, replicated),
        out_shardings=(state_shardings, replicated))
    self._make_eval = lambda op: jax.jit(
        functools.partial(eval_step, operating_point=op),
        in_shardings=(state_shardings, batch_sh, replicated), out_shardings=replicated)

  def _split(self, operating_point):
    """(compile key, traced inputs): a point the method passes traced compiles under key None."""
    if operating_point is None or self._point_inputs is None:
      return operating_point, None
    return None, self._point_inputs(operating_point)

  def _compiled(self, cache, make, operating_point):
    static, traced = self._split(operating_point)
    if static not in cache:
      cache[static] = make(static)
    return cache[static], traced

  def train(self, state, batch, operating_point):
    step, traced = self._compiled(self._train, self._make_train, operating_point)
    return step(state, batch, traced)

  def eval(self, state, batch, operating_point):
    step, traced = self._compiled(self._eval, self._make_eval, operating_point)
    return step(state, batch, traced)

  def lower_train(self, state, batch, operating_point):
    """The train step of `operating_point` lowered for these arguments, not yet compiled: for
    compile timing and `.compile().memory_analysis()` (benchmarks/paper_size.py). The compiled
    step is called as `compiled(state, batch, traced)` (traced: `point_inputs` of the point, or
    None) and donates `state`, like `train`."""
    step, traced = self._compiled(self._train, self._make_train, operating_point)
    return step.lower(state, batch, traced)


def _op_name(op) -> str:
  return "drawn" if op is None else op.name


# ------------------------------------------------------------------------------------------------
# One stage
# ------------------------------------------------------------------------------------------------

def run_stage(config, stage_name: str, tag: str | None, directory: pathlib.Path, *, mesh,
              loader_fn, plan_dirs: dict[str, pathlib.Path], is_last_of_system: bool) -> dict:
  """Trains one stage to its last step (or resumes it; or skips it if done). Returns a summary.
  tag None: the shared classifier stage (the ViT alone); else a stage of system `tag`."""
  stage = stage_settings(config, stage_name, tag)
  entry = None if tag is None else system_entry(config, tag)
  method = None if entry is None else systems.get(entry.method)
  train_cfg = config.train
  eval_split = train_cfg.get("eval_split", "test")
  if eval_split not in ("test", "validation"):
    raise ValueError(f"config.train.eval_split={eval_split!r}: use 'test' or 'validation' (the "
                     "clips the stages' evaluations read).")
  check_stage_config(directory, config, stage, tag)
  manager = ckpt_lib.make_manager(directory / "checkpoints", keep=train_cfg.keep_checkpoints,
                                  asynchronous=train_cfg.get("async_checkpoints", True))
  meta = loading.latest_meta(manager)
  if meta is not None and meta.get("done"):
    logging.info("stage %s (%s) is done: %s", stage_name, tag or "shared", directory)
    manager.close()
    return dict(stage=stage_name, system=tag, directory=str(directory), skipped=True)

  # --- Model and optimizer ---------------------------------------------------------------------
  stage_seed = int(config.seed)
  if entry is None:
    build = lambda rngs: nnx.Dict(vit=vit_lib.vit_from_config(config, rngs=rngs))
  else:
    build = functools.partial(loading.build_models, config, entry)
  shapes = state_lib.model_shapes(build, stage_seed)
  tx, labels = optim.make_optimizer(stage, shapes[1])
  counts = optim.count_parameters(shapes[1], labels)
  graphdef, state, shardings = state_lib.create_state(
      build, stage_seed, tx, mesh, [tuple(r) for r in train_cfg.get("sharding_rules", ())], shapes)

  # --- Input pipeline ----------------------------------------------------------------------------
  # A stage may set its own batch size (`stages.<name>.batch_size`; 0 or absent: data.batch_size):
  # on small hosts a compressor stage learns more from more, smaller steps in the same time.
  batch_key = f"stages.{stage_name}.batch_size" if stage.get("batch_size", 0) else "data.batch_size"
  global_batch = int(stage.get("batch_size", 0) or config.data.batch_size)
  mesh_lib.check_batch_size(global_batch, mesh, batch_key)
  mesh_lib.check_batch_size(int(config.data.eval_batch_size), mesh, "data.eval_batch_size")
  local_data = ml_collections.ConfigDict(config.data.to_dict())
  with local_data.unlocked():
    local_data.batch_size = global_batch // jax.process_count()
    local_data.eval_batch_size = int(config.data.eval_batch_size) // jax.process_count()
  loader = loader_fn(local_data, "train", seed=int(config.seed), train=True)
  iterator = iter(loader)

  # --- Checkpoint load: resume this stage, or start from an earlier one ---------------------------
  if meta is not None:
    step = manager.latest_step()
    state, _ = ckpt_lib.restore(manager, step, state_lib.abstract_state(state, shardings), iterator)
    logging.info("resuming stage %s at step %d", stage_name, step)
  elif stage.get("init_from"):
    source = stage.init_from
    source_dir = plan_dirs.get(source) or pathlib.Path(source)
    src_manager = ckpt_lib.make_manager(source_dir / "checkpoints", asynchronous=False)
    src_step = src_manager.latest_step()
    src_meta = loading.latest_meta(src_manager)
    src_manager.close()
    if src_step is None or not src_meta.get("done"):
      raise ValueError(f"stage {stage_name} starts from {source!r} ({source_dir}), which has no "
                       "finished checkpoint; train that stage first.")
    state, imported = loading.restore_variables(
        state, shardings, source_dir / "checkpoints", src_step, src_meta["parameters"],
        stage.get("init_params", ".*"))
    logging.info("stage %s: %d variables from %s", stage_name, len(imported), source_dir)
  start = int(jax.device_get(state["step"]))

  # --- Update step ---------------------------------------------------------------------------------
  key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), zlib_hash(f"{tag}/{stage_name}"))
  point_inputs = getattr(method, "point_inputs", None)
  steps = Steps(graphdef=graphdef, tx=tx, labels=labels, stage=stage, method=method,
                state_shardings=shardings, mesh=mesh, key=key,
                point_inputs=None if point_inputs is None else functools.partial(point_inputs, entry))
  if method is None:
    train_points, eval_points = (None,), (None,)
  else:
    train_points, eval_points = method.training_points(entry), method.operating_points(entry)

  def evaluate(state) -> dict:
    results = {}
    for op in eval_points:
      eval_loader = loader_fn(local_data, eval_split, seed=int(config.seed), train=False,
                              num_epochs=1)
      sums = None
      for i, batch in enumerate(eval_loader):
        if train_cfg.eval_batches and i >= train_cfg.eval_batches:
          break
        out = steps.eval(state, mesh_lib.global_batch(batch, mesh), op)
        sums = out if sums is None else jax.tree_util.tree_map(jnp.add, sums, out)
      sums = jax.device_get(sums)
      count = max(float(sums.pop("count")), 1.0)
      prefix = "eval" if len(eval_points) == 1 else f"eval[{_op_name(op)}]"
      results.update({f"{prefix}_{k}": float(v) / count for k, v in sums.items()})
    losses_ = [v for k, v in results.items() if k.endswith("_loss")]
    results["eval_loss"] = float(np.mean(losses_))
    return results

  # --- The loop ------------------------------------------------------------------------------------
  total = int(stage.steps)
  writer = log_lib.MetricWriter(directory, stage_name, tensorboard=train_cfg.get("tensorboard", False))
  bar = log_lib.ProgressBar(f"{tag + ': ' if tag else ''}{stage_name}", total, start,
                            enabled=train_cfg.get("progress", True))
  speed = log_lib.Throughput(global_batch, total)
  if start == 0:
    writer.write(0, dict(event="start", batch_size=global_batch, trainable_parameters=counts["train"],
                         frozen_parameters=counts["frozen"], devices=jax.device_count(),
                         processes=jax.process_count()))
  # A method's one-off work before its first step (STAE's frame_rule="chosen": frames chosen on
  # validation clips with the frozen classifier); it sees the validation split, never the test.
  prepare = getattr(method, "prepare", None)
  if prepare is not None and meta is None:
    state, prepared = prepare(entry, graphdef, state, shardings, lambda: loader_fn(
        local_data, "validation", seed=int(config.seed), train=False, num_epochs=1))
    if prepared:
      writer.write(0, dict(event="prepare", **prepared))
  schedule = optim.learning_rate_schedule(stage)

  def meta_for(step, done):
    return dict(stage=stage_name, system=tag, step=step, steps=total, done=done,
                parameters=state_lib.parameter_index(state))

  eval_metrics = {}
  for step in range(start, total):
    batch = next(iterator)
    op = train_points[step % len(train_points)]
    state, metrics = steps.train(state, mesh_lib.global_batch(batch, mesh), op)
    done_steps = step + 1
    last = done_steps == total
    if done_steps % train_cfg.log_every == 0 or last or step == start:
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      speed.update(done_steps)
      metrics.update(lr=float(schedule(step)), clips_per_second=speed.clips_per_second,
                     operating_point=_op_name(op))
      writer.write(done_steps, metrics)
      bar.update(done_steps, metrics["loss"], speed.clips_per_second, speed.eta_seconds(done_steps))
    eval_now = last or (train_cfg.eval_every and done_steps % train_cfg.eval_every == 0)
    eval_metrics = evaluate(state) if eval_now else {}
    if eval_metrics:
      writer.write(done_steps, eval_metrics)
    if last or eval_now or done_steps % train_cfg.checkpoint_every == 0:
      tables = None
      if last and is_last_of_system and tag is not None:
        tables = frozen_tables(graphdef, state, entry)
      ckpt_lib.save(manager, done_steps, state, iterator, meta_for(done_steps, last),
                    metrics={"eval_loss": eval_metrics["eval_loss"]} if eval_metrics else None,
                    tables=tables)
  bar.close()
  manager.wait_until_finished()
  manager.close()
  writer.close()
  return dict(stage=stage_name, system=tag, directory=str(directory), skipped=False,
              start_step=start, final_step=total, traces=steps.trace_count,
              operating_points=dict(train=len(train_points), eval=len(eval_points)), **eval_metrics)


def zlib_hash(text: str) -> int:
  import zlib  # pylint: disable=g-import-not-at-top
  return zlib.crc32(text.encode()) & 0x7FFFFFFF


def frozen_tables(graphdef, state, entry):
  """The entropy model of a trained system frozen into coding tables (as an Orbax pytree), with
  the entry's `model.entropy.tail_mass` (the support's left-out mass, escape-coded)."""
  from stae_jax.coding import tables as tables_lib  # pylint: disable=g-import-not-at-top
  models = nnx.merge(graphdef, jax.device_get(state["params"]), jax.device_get(state["rest"]))
  prior = systems.get(entry.method).entropy_model(models)
  tail_mass = entry.model.get("entropy", {}).get("tail_mass")
  kwargs = {} if tail_mass is None else dict(tail_mass=float(tail_mass))
  return tables_lib.freeze(prior, **kwargs).to_pytree()


# ------------------------------------------------------------------------------------------------
# All stages
# ------------------------------------------------------------------------------------------------

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                       loader_fn=None) -> list[dict]:
  """Runs every stage of every system in `config.systems` into `workdir`; returns stage summaries."""
  loader_fn = loader_fn or default_loader
  workdir = pathlib.Path(workdir).absolute()
  mesh = mesh_lib.make_mesh(int(config.train.get("model_axis_size", 1)))
  mesh_lib.check_batch_size(int(config.data.batch_size), mesh)
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  plan = stage_plan(config, workdir)
  summaries = []
  for tag in [None] + list(config.systems):
    mine = [(s, d) for s, t, d in plan if t == tag]
    # Where each stage of this system lives in the workdir, whether or not this run trains it:
    # a run of `stage_order=("compressor",)` starts from the classifier a previous run finished.
    plan_dirs = {s: loading.stage_dir(workdir, s, None if s == loading.CLASSIFIER else tag)
                 for s in config.stages}
    for i, (stage_name, directory) in enumerate(mine):
      summaries.append(run_stage(config, stage_name, tag, directory, mesh=mesh,
                                 loader_fn=loader_fn, plan_dirs=plan_dirs,
                                 is_last_of_system=(i == len(mine) - 1)))
  return summaries
