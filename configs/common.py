"""Helpers shared by every config: the `file.py:key=value,...` switch parser and workdir naming.

A config file is `get_config(arg)`; `arg` is whatever follows the colon in
`--config=configs/hmdb51.py:split=2,frames=16`. Switches are typed by their defaults so that
`frames=16` is an int and `frame_attention=False` a bool, and an unknown switch is an error that
lists the known ones (a typo must never silently train the wrong system).
"""

from __future__ import annotations

import ml_collections

from stae_jax.configdicts import deep_merge


def _coerce(key: str, text: str, default):
  if isinstance(default, bool):
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on", ""):
      return True
    if low in ("0", "false", "no", "off"):
      return False
    raise ValueError(f"config switch {key}={text!r}: expected a boolean (True/False).")
  if isinstance(default, int):
    try:
      return int(text)
    except ValueError:
      raise ValueError(f"config switch {key}={text!r}: expected an integer.") from None
  if isinstance(default, float):
    try:
      return float(text)
    except ValueError:
      raise ValueError(f"config switch {key}={text!r}: expected a number.") from None
  if isinstance(default, (tuple, list)):
    kind = type(default[0]) if default else str
    return tuple(_coerce(key, part, kind()) for part in text.split("+") if part)
  return text


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses `key=value,key2=value2` (a bare `key` means `key=True`) over typed defaults.

  Tuples are written with `+` between items (`keep_ratios=0.25+0.5`), since `,` separates switches.
  """
  values = dict(defaults)
  if arg:
    for item in arg.split(","):
      item = item.strip()
      if not item:
        continue
      key, _, text = item.partition("=")
      key = key.strip()
      if key not in defaults:
        known = ", ".join(sorted(defaults))
        raise ValueError(f"unknown config switch {key!r}; this config knows: {known}.")
      values[key] = _coerce(key, text if "=" in item else "", defaults[key])
  return ml_collections.ConfigDict(values)


#: Switches that pick which system is trained, not which data or setting: they do not change the
#: workdir (runs/<name>); each system trains into its own folder inside it, so that evaluate.py finds
#: and compares every system trained on the same data with the same classifier.
SYSTEM_SWITCHES = ("system", "frame_attention", "spatial_attention", "selection", "frame_rule",
                   "context")

#: The typed defaults of the system switches, for `parse_arg(arg, **SYSTEM_DEFAULTS, ...)`.
#: system: a method of `stae_jax.systems` (stae, deepisc); the others are STAE's ablations:
#: selection="random" is the "neither attention" ablation (uniform random top-k at the same keep
#: ratios); selection="uniform" keeps evenly spaced frames (first and last included) and blocks;
#: frame_rule="top_k" keeps the k best-scored frames instead of the best frame of each of k equal
#: stretches of the clip ("segments"; `stae_jax.models.stae.segment_top_mask`), and
#: frame_rule="comb" k evenly spaced frames whose start and gap are learned (`comb_mask`),
#: frame_rule="chosen" for each k the frames the frozen classifier reads best on validation clips,
#: the same for every clip (`stae_jax.systems.stae.choose_frames`);
#: context=False codes STAE's latents under the factorized prior instead of the conditional one
#: (`stae_jax.models.entropy.ContextPrior`), the entropy model's ablation.
SYSTEM_DEFAULTS = dict(system="stae", frame_attention=True, spatial_attention=True,
                       selection="attention", frame_rule="segments", context=True)


def switches_suffix(arg: str | None) -> str:
  """The part of a workdir name that records non-default data/setting switches, e.g. `_split=2`."""
  if not arg:
    return ""
  items = [item.strip() for item in arg.split(",") if item.strip()]
  items = [item for item in items if item.partition("=")[0].strip() not in SYSTEM_SWITCHES]
  return "".join("_" + item.replace("/", "-") for item in items)


#: The loss weights of a learned system's compressor and joint stages. Reconstruction anchors (MSE
#: on 0..1 pixels is ~0.01-0.05, hence the weight of 100): through a frozen ViT the task gradient
#: alone drove the decoder to adversarial low-PSNR fills (accuracy at chance on the synthetic
#: config), and a heavier rate weight (1-30) squeezed the latents before the transforms had learnt
#: anything (BENCHMARKS.md "Main job"). Task 1 (was 0.1) once STAE's block code starts as cell
#: colours: it then moves frame selection towards what the classifier needs (+1 point at 0.125x1 on
#: the synthetic job, less than the noise).
SYSTEM_LOSS = dict(task=1.0, distill=0.0, reconstruction=100.0, rate=0.1)


def matched_keep_ratios(keep_ratios, frame_attention: bool, spatial_attention: bool, *,
                        written_for: tuple[bool, bool] = (True, True)) -> tuple:
  """STAE's operating points for the attention switches (frame_attention, spatial_attention), at
  the blocks per clip of `keep_ratios`, written for the attentions `written_for` (the config's
  default system), so that the ablations compare at matched bits. Each point keeps a share q = f*b
  of the clip's blocks: frame attention alone keeps (q, 1) (every block of the kept frames),
  spatial attention alone (1, q) (every frame), both (min(1, 2q), q / min(1, 2q)) (twice the
  frames, half their blocks) unless the points were written for both. Repeats are dropped (order
  kept); with both off (everything kept), or switches that equal `written_for`, the ratios stand."""
  ratios = tuple((float(f), float(b)) for f, b in keep_ratios)
  if not (frame_attention or spatial_attention) or (frame_attention, spatial_attention) == tuple(
      written_for):
    return ratios
  matched = []
  for f, b in ratios:
    q = f * b
    if not spatial_attention:
      matched.append((q, 1.0))
    elif not frame_attention:
      matched.append((1.0, q))
    else:
      frames = min(1.0, 2 * q)
      matched.append((frames, q / frames))
  return tuple(dict.fromkeys(matched))


def stae_system(*, stae: dict, decoder: dict, entropy: dict, context: bool,
                loss: dict | None = None, compressor: dict | None = None,
                defaults: dict | None = None) -> dict:
  """A `config.systems` entry of method "stae": the keyword arguments of STAE, Decoder and the
  entropy model, and its stages' loss weights. block_reconstruction: STAE's block transforms also
  learn from the blocks a keep ratio drops. context: the conditional entropy model (the `context`
  switch; False: the factorized prior). An attention switched off moves the keep ratios to the
  same blocks per clip as the points the config wrote for its default system (`defaults`, its
  switch defaults; SYSTEM_DEFAULTS if not given: `matched_keep_ratios`). compressor: STAE's own
  settings of that stage over `config.stages.compressor` (e.g. its learning rate)."""
  defaults = SYSTEM_DEFAULTS if defaults is None else defaults
  loss = dict(SYSTEM_LOSS, block_reconstruction=100.0, **(loss or {}))
  entropy = dict(entropy, context=bool(context))
  if "keep_ratios" in stae:  # else STAE's own default point
    stae = dict(stae, keep_ratios=matched_keep_ratios(
        stae["keep_ratios"], stae.get("frame_attention", True), stae.get("spatial_attention", True),
        written_for=(defaults["frame_attention"], defaults["spatial_attention"])))
  return dict(method="stae", model=dict(stae=stae, decoder=decoder, entropy=entropy),
              stages=dict(compressor=dict(compressor or {}, loss=loss),
                          joint=dict(loss=dict(loss))))


def deepisc_system(*, deepisc: dict, entropy: dict, loss: dict | None = None,
                   compressor: dict | None = None) -> dict:
  """A `config.systems` entry of method "deepisc" (the same entropy settings as STAE's).
  compressor: DeepISC's own settings of that stage over `config.stages.compressor` (e.g. its
  budget, where its own learning curve flattens)."""
  loss = dict(SYSTEM_LOSS, **(loss or {}))
  return dict(method="deepisc", model=dict(deepisc=deepisc, entropy=entropy),
              stages=dict(compressor=dict(compressor or {}, loss=loss),
                          joint=dict(loss=dict(loss))))


#: How a system tag names a frame rule that differs from the config's default (learned frames only).
FRAME_RULE_TAGS = {"segments": "_segment-frames", "top_k": "_top-k-frames", "comb": "_comb-frames",
                   "chosen": "_chosen-frames"}


def system_tag(entry: dict, defaults: dict | None = None) -> str:
  """The folder name of a system inside the workdir: its method, plus the STAE switches that
  differ from the config's default system (`defaults`, its switch defaults; SYSTEM_DEFAULTS if not
  given): `_no-frame-attention` / `_frame-attention`, `_no-spatial-attention` /
  `_spatial-attention`, `_random-selection`, `_top-k-frames` (FRAME_RULE_TAGS; the frame rule only
  where frames are learned), `_factorized-prior`. So each config's default system is `stae`, and
  one tag names one system within a config (configs with other defaults name it differently: a
  stage record stores the whole entry). An entry without `frame_rule` (a workdir trained before
  the switch existed) keeps the default's name for it."""
  defaults = SYSTEM_DEFAULTS if defaults is None else defaults
  model = entry["model"].get("stae", {})  # other methods have no STAE switches: the defaults
  frame_on = model.get("frame_attention", defaults["frame_attention"])
  spatial_on = model.get("spatial_attention", defaults["spatial_attention"])
  selection = model.get("selection", defaults["selection"])
  rule = model.get("frame_rule", defaults["frame_rule"])
  # The frame rule is what the learned frame attention does: without it there is none to name.
  learned_frames = frame_on and selection == "attention"
  # Only `stae_system` sets the context key: an explicit False is STAE's factorized-prior ablation.
  factorized = entry["model"].get("entropy", {}).get("context") is False
  tag = entry["method"]
  if frame_on != defaults["frame_attention"]:
    tag += "_frame-attention" if frame_on else "_no-frame-attention"
  if spatial_on != defaults["spatial_attention"]:
    tag += "_spatial-attention" if spatial_on else "_no-spatial-attention"
  if selection != defaults["selection"]:
    tag += f"_{selection}-selection"
  if learned_frames and rule != defaults["frame_rule"]:
    tag += FRAME_RULE_TAGS[rule]
  return tag + ("_factorized-prior" if factorized else "")


def systems_to_train(arg: str | None, switches: ml_collections.ConfigDict, *,
                     defaults: dict | None = None, **entries: dict) -> ml_collections.ConfigDict:
  """`config.systems` ({tag: entry}): what train.py trains into runs/<name>/systems/<tag>/, and
  the one place that says which systems a config has.

  `entries` maps each method to its entry (`stae_system`, `deepisc_system`). By default every one
  is trained; any system switch on the command line (`:system=deepisc`, `:frame_attention=False`,
  `:selection=random`) narrows the run to that one system, with STAE's switches applied to its
  model.stae. Tags name what differs from `defaults` (the config's switch defaults: `system_tag`).
  """
  explicit = {item.partition("=")[0].strip() for item in (arg or "").split(",")}
  if switches.system not in entries:
    raise ValueError(f"config switch system={switches.system!r}: this config has systems "
                     f"{', '.join(entries)}.")
  if explicit & set(SYSTEM_SWITCHES):
    chosen = [entries[switches.system]]
  else:
    chosen = list(entries.values())
  return ml_collections.ConfigDict({system_tag(e, defaults): e for e in chosen})


#: Entropy models (STAE's `prior`, DeepISC's `deepisc/prior`) learn 10x faster than the rest of a
#: stage (`optim.scale_by_path`): their density has to narrow a long way from its initial spread.
PRIOR_LR_SCALES = (("^(prior|deepisc/prior)/", 10.0),)


def training_stages(*, classifier: dict, compressor: dict, joint: dict) -> ml_collections.ConfigDict:
  """`config.stages`: the three training stages of ../shared/DESIGN.md, with per-config sizes.

  Each argument overrides the stage's defaults (steps, lr, warmup_steps, weight_decay, ...), merged
  at every depth. A system's loss weights live in its entry (`stae_system`), so tuning one system
  never touches another's stages.
  Each stage names what it trains (`trainable`, a regex over parameter paths; the rest get no
  optimizer state), what it starts from (`init_from` an earlier stage, `init_params` which
  variables) and its loss weights. The rate weight (bits per pixel) sets the operating point.
  """
  # batch_size 0: the stage uses data.batch_size; set it to give one stage its own batch.
  # rate_warmup_steps: the rate weight rises from 0 over these steps (trainer.rate_ramp).
  base = dict(schedule="cosine", optimizer="adamw", grad_clip=1.0, batch_size=0,
              rate_warmup_steps=0)
  stages = ml_collections.ConfigDict()
  stages.classifier = deep_merge({**base, **dict(
      weight_decay=0.05, trainable="^vit/", init_from="", init_params=".*",
      loss=dict(task=1.0))}, classifier)
  stages.compressor = deep_merge({**base, **dict(
      weight_decay=0.0,
      trainable="^(stae|prior|decoder|deepisc)/",  # the ViT stays frozen
      init_from="classifier", init_params="^vit/",
      distill_temperature=2.0,  # loss weights: each system's entry (SYSTEM_LOSS)
      lr_scales=PRIOR_LR_SCALES)}, compressor)
  stages.joint = deep_merge({**base, **dict(
      weight_decay=0.0, trainable=".*", init_from="compressor", init_params=".*",
      lr_scales=PRIOR_LR_SCALES)}, joint)
  return stages



def train_settings(*, log_every: int, eval_every: int, eval_batches: int,
                   checkpoint_every: int) -> ml_collections.ConfigDict:
  """`config.train`: logging, evaluation and checkpoint cadence, and the mesh."""
  return ml_collections.ConfigDict(dict(
      stage_order=("classifier", "compressor", "joint"),
      log_every=log_every,                # steps between metric lines (and progress-bar updates)
      eval_every=eval_every,              # steps between evaluations (0: only at a stage's end)
      eval_batches=eval_batches,          # batches per evaluation (0: the whole split)
      # The split the stages' evaluations read: "test", or "validation" where a choice (a recipe,
      # a step count) is made on the trainer's figures.
      eval_split="test",
      checkpoint_every=checkpoint_every,  # steps between checkpoints (also at each evaluation)
      keep_checkpoints=2,                 # the last few are kept, plus the best by eval loss
      async_checkpoints=True,
      progress=True, tensorboard=False,
      model_axis_size=1,                  # devices per parameter shard (mesh axis `model`)
      sharding_rules=(),                  # ((path regex, (axis or None per dim)), ...)
  ))


def eval_settings(**overrides) -> ml_collections.ConfigDict:
  """`config.eval`: what evaluate.py measures besides the trained systems (validation_clips,
  test_points, latency_clips, latency_repeats, num_pictures, tune_baselines, h264_grid, crfs,
  h264_preset, deadlines, snrs, channel_seeds; `stae_jax.evaluation.evaluate.default_settings` says
  what each is).

  The defaults are not written here: they come from where the library writes them once (the CRFs
  from `stae_jax.systems.h264.DEFAULT_CRFS`, ...), so a config, a workdir's older config without
  this section and evaluate.py agree. `overrides` are this config's own choices; evaluate.py's flags
  of the same names (or `--config.eval.<name>=...`) override both. A name that is not a setting is
  an error that lists the known ones."""
  # Imported here: the evaluation package pulls in JAX, which only a config that is built needs.
  from stae_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  settings = evaluate.default_settings()
  unknown = sorted(set(overrides) - set(settings))
  if unknown:
    raise ValueError(f"eval_settings: unknown setting(s) {', '.join(unknown)}; the known ones are "
                     f"{', '.join(settings)}.")
  settings.update(overrides)
  return ml_collections.ConfigDict(settings)
