"""Training: freezing by regex, config and workdir checks, and every stage end to end on the real
models (tiny config, a few steps): loss falls, frozen parameters stay put, nothing recompiles."""

import json
import pathlib
import subprocess
import sys
import types

from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import train_helpers  # pylint: disable=wrong-import-position

from stae_jax.models import vit as vit_lib  # pylint: disable=wrong-import-position
from stae_jax.systems import loading  # pylint: disable=wrong-import-position
from stae_jax.training import mesh as mesh_lib  # pylint: disable=wrong-import-position
from stae_jax.training import optim  # pylint: disable=wrong-import-position
from stae_jax.training import trainer  # pylint: disable=wrong-import-position

REPO = pathlib.Path(__file__).resolve().parent.parent


def _toy_params():
  class Toy(nnx.Module):
    def __init__(self, rngs):
      self.vit = nnx.Linear(3, 4, rngs=rngs)
      self.stae = nnx.List([nnx.Linear(4, 2, rngs=rngs)])
  return nnx.split(Toy(nnx.Rngs(0)), nnx.Param, ...)[1]


def test_frozen_parameters_get_no_optimizer_state_and_do_not_move():
  params = _toy_params()
  stage = trainer.ml_collections.ConfigDict(dict(
      name="t", steps=10, lr=0.1, trainable="^stae/", optimizer="adamw", grad_clip=1.0))
  tx, labels = optim.make_optimizer(stage, params)
  opt_state = tx.init(params)
  state_leaves = jax.tree_util.tree_leaves(opt_state)
  # Adam keeps mu and nu for the 2 stae leaves only (+ counts); none for the ViT's 2 leaves.
  moment_shapes = sorted(x.shape for x in state_leaves if x.ndim)
  assert moment_shapes == sorted([(4, 2), (2,)] * 2)
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  updates, _ = tx.update(grads, opt_state, params)
  new = optax.apply_updates(params, updates)
  assert np.array_equal(new["vit"]["kernel"][...], params["vit"]["kernel"][...])
  assert not np.array_equal(new["stae"][0]["kernel"][...], params["stae"][0]["kernel"][...])
  assert optim.count_parameters(params, labels) == {"train": 10, "frozen": 16}


def test_lr_scales_multiply_the_updates_of_matching_parameters():
  params = _toy_params()
  stage = trainer.ml_collections.ConfigDict(dict(
      name="t", steps=10, lr=0.1, trainable=".*", optimizer="sgd", momentum=0.0,
      lr_scales=(("^stae/", 10.0),)))
  tx, _ = optim.make_optimizer(stage, params)
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["vit"]["kernel"][...], -0.1, rtol=1e-6)
  np.testing.assert_allclose(updates["stae"][0]["kernel"][...], -1.0, rtol=1e-6)


def test_rate_weight_ramps_up_over_rate_warmup_steps():
  stage = trainer.ml_collections.ConfigDict(dict(rate_warmup_steps=4))
  assert [float(trainer.rate_ramp(stage, s)) for s in (0, 2, 4, 9)] == [0.0, 0.5, 1.0, 1.0]
  assert trainer.rate_ramp(trainer.ml_collections.ConfigDict(dict(rate_warmup_steps=0)), 3) == 1.0


def test_trainable_regex_that_matches_nothing_is_an_error():
  stage = trainer.ml_collections.ConfigDict(dict(name="t", steps=1, lr=0.1, trainable="^vitt/"))
  with pytest.raises(ValueError, match="matches no parameter.*stae, vit"):
    optim.make_optimizer(stage, _toy_params())


def test_batch_that_does_not_divide_over_devices_is_explained():
  fake_mesh = types.SimpleNamespace(shape={"data": 8, "model": 1})
  with pytest.raises(ValueError, match="data.batch_size=12 does not divide over the 8 devices"):
    mesh_lib.check_batch_size(12, fake_mesh)
  mesh_lib.check_batch_size(16, fake_mesh)


def _check(folder, config, stage, tag):
  trainer.check_stage_config(folder, config, trainer.stage_settings(config, stage, tag), tag)


def test_workdir_of_another_config_is_refused(tmp_path):
  config = train_helpers.tiny_config()
  _check(tmp_path, config, "classifier", None)
  _check(tmp_path, config, "classifier", None)  # same config: fine
  config.train.log_every = 7  # runtime knobs: fine
  config.data.workers = 3
  _check(tmp_path, config, "classifier", None)
  config.stages.classifier.lr = 0.5
  with pytest.raises(ValueError, match=r"different config \(stage.lr: 0.003 there, 0.5 now"):
    _check(tmp_path, config, "classifier", None)


def test_a_later_stage_setting_does_not_invalidate_an_earlier_stage(tmp_path):
  """A finished compressor stage stays valid when only the joint stage or the logging changes."""
  config = train_helpers.tiny_config()
  folder = tmp_path / "compressor"
  _check(folder, config, "compressor", "stae")
  config.stages.joint.lr = 0.5
  config.systems.stae.stages.joint.loss.rate = 3.0
  config.train.eval_every = 7
  _check(folder, config, "compressor", "stae")
  config.systems.stae.stages.compressor.loss.rate = 2.0
  with pytest.raises(ValueError, match="stage.loss.rate"):
    _check(folder, config, "compressor", "stae")


def test_another_systems_settings_do_not_invalidate_a_stage(tmp_path):
  """Changing DeepISC's model or loss weights keeps STAE's finished stages valid, and the other way
  round; a system's own model section and loss weights still count."""
  config = train_helpers.tiny_config(systems=("stae", "deepisc"))
  stae, deepisc = config.systems.stae, config.systems.deepisc
  stae_folder, deepisc_folder = tmp_path / "stae", tmp_path / "deepisc"
  _check(stae_folder, config, "compressor", "stae")
  _check(deepisc_folder, config, "compressor", "deepisc")
  deepisc.model.deepisc.init_step = 2.0
  deepisc.stages.compressor.loss.rate = 5.0
  stae.model.decoder.width = 4
  with pytest.raises(ValueError, match="system.model.decoder.width"):
    _check(stae_folder, config, "compressor", "stae")
  with pytest.raises(ValueError, match="system.model.deepisc.init_step"):
    _check(deepisc_folder, config, "compressor", "deepisc")
  stae.model.decoder.width = train_helpers.tiny_config().systems.stae.model.decoder.width
  _check(stae_folder, config, "compressor", "stae")  # only DeepISC's changed
  deepisc.model.deepisc.init_step = 8.0
  deepisc.stages.compressor.loss.rate = 0.1  # back to its value
  stae.model.stae.init_step = 4.0
  stae.stages.compressor.loss.task = 9.0
  _check(deepisc_folder, config, "compressor", "deepisc")  # only STAE's changed


def test_stage_overrides_merge_deeply_and_loss_keys_are_checked():
  """Overriding one loss weight keeps the others; a misspelled or foreign weight is an error that
  names the method's terms (it would otherwise silently weigh 0)."""
  from configs import common  # pylint: disable=g-import-not-at-top
  entry = common.stae_system(stae={}, decoder={}, entropy={}, context=True, loss=dict(rate=1.0))
  assert entry["stages"]["compressor"]["loss"] == dict(
      task=1.0, distill=0.0, reconstruction=100.0, block_reconstruction=100.0, rate=1.0)
  config = train_helpers.tiny_config(systems=("stae", "deepisc"))
  config.systems.stae.stages.compressor.lr = 0.25  # a system's own stage setting
  stage = trainer.stage_settings(config, "compressor", "stae")
  assert stage.lr == 0.25 and stage.loss.rate == 0.1 and stage.loss.block_reconstruction == 1.0
  assert stage.trainable == config.stages.compressor.trainable and stage.name == "compressor"
  assert trainer.stage_settings(config, "compressor", "deepisc").lr == config.stages.compressor.lr
  config.systems.stae.stages.compressor.loss = dict(reconstrution=1.0)
  with pytest.raises(ValueError, match="reconstrution.*task, distill, reconstruction"):
    trainer.stage_settings(config, "compressor", "stae")
  config.systems.deepisc.stages.compressor.loss.block_reconstruction = 1.0
  with pytest.raises(ValueError, match="block_reconstruction.*not its loss terms"):
    trainer.stage_settings(config, "compressor", "deepisc")
  config.stages.classifier.loss.rate = 1.0
  with pytest.raises(ValueError, match="the classifier"):
    trainer.stage_settings(config, "classifier", None)
  stages = common.training_stages(classifier=dict(steps=3, loss=dict(task=2.0)), compressor={},
                                  joint={})
  assert stages.classifier.loss.task == 2.0 and stages.classifier.trainable == "^vit/"


def test_unknown_config_key_on_the_command_line_is_an_error(tmp_path):
  """absl config_flags refuses a key the config does not have, and suggests the right one."""
  result = subprocess.run(
      [sys.executable, str(REPO / "train.py"), "--config=configs/synthetic.py",
       "--config.stages.joint.stepz=5", f"--workdir={tmp_path}"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert "Did you mean \"steps\"" in result.stderr, result.stderr[-2000:]
  assert not any(tmp_path.iterdir())  # failed before anything was written


def test_systems_default_and_switches():
  from configs import synthetic  # pylint: disable=g-import-not-at-top
  assert sorted(synthetic.get_config(None).systems) == ["deepisc", "stae"]
  assert list(synthetic.get_config("system=deepisc").systems) == ["deepisc"]
  ablation = synthetic.get_config("frame_attention=False")
  assert list(ablation.systems) == ["stae_no-frame-attention"]
  assert ablation.name == "synthetic"  # same workdir, its own systems/<tag> folder
  assert not ablation.systems["stae_no-frame-attention"].model.stae.frame_attention
  plan = trainer.stage_plan(synthetic.get_config(None), pathlib.Path("/w"))
  assert [(s, t, str(d)) for s, t, d in plan][:2] == [
      ("classifier", None, "/w/classifier"), ("compressor", "deepisc", "/w/systems/deepisc/compressor")]


def _losses(stage_dir):
  return [r["loss"] for r in map(json.loads, (pathlib.Path(stage_dir) / "metrics.jsonl").read_text().splitlines())
          if "loss" in r]


SYSTEMS_UNDER_TEST = [
    pytest.param(("stae",), id="stae"),
    pytest.param(("deepisc",), id="deepisc", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("systems", SYSTEMS_UNDER_TEST)
def test_every_stage_end_to_end(tmp_path, systems):
  """The real models through the real trainer: classifier, compressor, joint, for each system."""
  config = train_helpers.tiny_config(steps=5, systems=systems, batch_size=16)
  (tag,) = systems
  section = config.systems[tag].model.get("stae") or config.systems[tag].model.deepisc
  # Several points: a stage still compiles one train and one eval step (traced points).
  section.update(dict(keep_ratios=((0.5, 0.5), (1.0, 0.25), (1.0, 1.0))) if "keep_ratios" in section
                 else dict(token_choices=(2, 4)))
  config.stages.classifier.batch_size = 8  # a stage's own batch size
  # The stages' evaluations read the configured split (a recipe chosen on the trainer's figures
  # reads the validation clips; the in-memory clips have none, so test's stand in for them).
  config.train.eval_split = "validation"
  splits = []

  def loader(data_config, split, **kwargs):
    splits.append(split)
    return train_helpers.small_loader(data_config, "test" if split == "validation" else split,
                                      **kwargs)

  summaries = trainer.train_and_evaluate(config, tmp_path, loader_fn=loader)
  assert "validation" in splits and "test" not in splits
  starts = {s["stage"]: json.loads((pathlib.Path(s["directory"]) / "metrics.jsonl").read_text()
                                   .splitlines()[0]) for s in summaries}
  assert {k: v["batch_size"] for k, v in starts.items()} == dict(classifier=8, compressor=16, joint=16)
  assert [(s["stage"], s["system"]) for s in summaries] == [
      ("classifier", None), ("compressor", tag), ("joint", tag)]
  for s in summaries:
    # One compile for training and one for evaluation, whatever the number of points; none after.
    assert s["traces"] == 2, s
    if s["system"] is not None:
      assert s["operating_points"]["eval"] > 1, s
    losses = _losses(s["directory"])
    assert len(losses) == 5 and losses[-1] < losses[0], (s["stage"], s["system"], losses)
  classifier = train_helpers.final_params(tmp_path / "classifier")
  # Stage 1 builds and trains the ViT alone, shared by every system.
  assert classifier and all(name.startswith("vit/") for name in classifier), sorted(classifier)[:5]
  build = lambda rngs: nnx.Dict(vit=vit_lib.vit_from_config(config, rngs=rngs))
  init = {loading.path_str(p): np.asarray(x) for p, x in
          jax.tree_util.tree_flatten_with_path(nnx.split(build(nnx.Rngs(config.seed)), nnx.Param, ...)[1])[0]}
  assert set(init) == set(classifier)
  for name, value in classifier.items():
    if name.endswith("kernel"):
      assert not np.array_equal(value, init[name]), name
  for tag in systems:
    compressor = train_helpers.final_params(tmp_path / "systems" / tag / "compressor")
    joint = train_helpers.final_params(tmp_path / "systems" / tag / "joint")
    for name, value in compressor.items():
      if name.startswith("vit/"):  # frozen in stage 2: exactly the classifier's ViT
        np.testing.assert_array_equal(value, classifier[name], err_msg=name)
    assert any(not np.array_equal(joint[n], compressor[n]) for n in joint if n.startswith("vit/"))
    # The last stage of a system carries the frozen coding tables.
    from stae_jax.coding import tables as tables_lib  # pylint: disable=g-import-not-at-top
    tables = loading.restore_tables(tmp_path / "systems" / tag / "joint" / "checkpoints")
    assert tables_lib.CodingTables.from_pytree(tables).probabilities.ndim == 2
  assert (tmp_path / "config.json").exists() and (tmp_path / "classifier" / "config.json").exists()
  # Run again: every stage is done, nothing retrains.
  again = trainer.train_and_evaluate(config, tmp_path, loader_fn=train_helpers.small_loader)
  assert all(s["skipped"] for s in again)


@pytest.mark.slow
def test_chosen_frames_are_chosen_once_on_validation_clips(tmp_path):
  """STAE with frame_rule="chosen": the compressor stage chooses its frames before its first step,
  on validation clips only, with the frozen classifier; the joint stage starts from that choice
  rather than choosing again, and the trained system that evaluation loads keeps it."""
  config = train_helpers.tiny_config(steps=2, systems=("stae",), batch_size=8)
  config.systems.stae.model.stae.update(dict(frame_rule="chosen", frames=train_helpers.FRAMES,
                                             choice_clips=8))
  splits = []

  def loader(data_config, split, **kwargs):
    splits.append(split)
    return train_helpers.small_loader(data_config, "test" if split == "validation" else split,
                                      **kwargs)

  trainer.train_and_evaluate(config, tmp_path, loader_fn=loader)
  assert splits.count("validation") == 1  # the one choice; the stages evaluate on test
  logs = {stage: tmp_path / "systems" / "stae" / stage / "metrics.jsonl"
          for stage in ("compressor", "joint")}
  events = {stage: [json.loads(line) for line in path.read_text().splitlines()
                    if '"prepare"' in line] for stage, path in logs.items()}
  assert len(events["compressor"]) == 1 and not events["joint"]
  report = events["compressor"][0]
  trained = loading.load_system(tmp_path, "stae")
  stae = nnx.merge(trained.graphdef, trained.params, trained.rest)["stae"]
  assert int(stae.chosen_on[...]) == 8
  table = np.asarray(stae.chosen_frames[...])
  np.testing.assert_array_equal(table.sum(-1), np.arange(train_helpers.FRAMES + 1))
  for key, chosen in report.items():
    if key.startswith("chosen_frames[k="):
      k = int(key[len("chosen_frames[k="):-1])
      np.testing.assert_array_equal(np.flatnonzero(table[k]), chosen["frames"])


def test_library_info_logs_are_filtered_but_warnings_pass():
  import logging as py_logging
  from absl import logging as absl_logging
  from stae_jax import library_logs as log_lib
  log_lib.quiet_library_logs()
  log_lib.quiet_library_logs()  # idempotent
  handler = absl_logging.get_absl_handler()
  assert sum(isinstance(f, log_lib._LibraryInfoFilter) for f in handler.filters) == 1
  record = lambda level, path: py_logging.LogRecord("absl", level, path, 1, "m", None, None)
  assert not handler.filter(record(py_logging.INFO, "/x/site-packages/orbax/checkpoint/m.py"))
  assert handler.filter(record(py_logging.WARNING, "/x/site-packages/orbax/checkpoint/m.py"))
  assert handler.filter(record(py_logging.INFO, "/x/stae_jax/training/trainer.py"))
  read_only = py_logging.LogRecord("absl", py_logging.WARNING, "/x/orbax/checkpoint/m.py", 1,
                                   "Given directory is read only=%s", ("/w",), None)
  assert not handler.filter(read_only)
  assert not handler.filter(record(py_logging.INFO, "/x/site-packages/jax/_src/xla_bridge.py"))



def test_an_unknown_evaluation_split_is_refused(tmp_path):
  config = train_helpers.tiny_config(steps=2, systems=())
  config.train.stage_order = ("classifier",)
  config.train.eval_split = "tests"
  with pytest.raises(ValueError, match="eval_split='tests': use 'test' or 'validation'"):
    trainer.train_and_evaluate(config, tmp_path, loader_fn=train_helpers.small_loader)
