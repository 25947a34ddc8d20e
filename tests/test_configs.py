"""Configs: every file loads, switches are typed and checked, workdir names record switches."""

import importlib

import pytest

from configs import common

CONFIGS = ["synthetic", "hmdb51", "ucf101", "surveillance_fight"]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_documents_its_command(name):
  module = importlib.import_module(f"configs.{name}")
  config = module.get_config(None)
  assert config.name == name
  assert f"python train.py --config=configs/{name}.py" in module.__doc__.splitlines()[2]
  assert config.data.frames > 0 and config.data.resolution > 0


def test_switches_are_typed():
  from configs import hmdb51
  config = hmdb51.get_config("split=2,frames=8,frame_attention=False,system=deepisc")
  assert config.data.split == 2 and isinstance(config.data.split, int)
  assert config.data.frames == 8
  assert list(config.systems) == ["deepisc"]  # the one place that says what is trained
  # System switches choose a folder inside the workdir, not a new workdir.
  assert config.name == "hmdb51_split=2_frames=8"


def test_unknown_switch_names_the_known_ones():
  with pytest.raises(ValueError, match="unknown config switch 'splt'.*split"):
    common.parse_arg("splt=2", split=1)


def test_bad_switch_value_is_explained():
  with pytest.raises(ValueError, match="expected an integer"):
    common.parse_arg("split=two", split=1)
  with pytest.raises(ValueError, match="expected a boolean"):
    common.parse_arg("flip=maybe", flip=True)


def test_tuple_switch_and_bare_flag():
  a = common.parse_arg("keep=0.25+0.5,fast", keep=(0.5,), fast=False)
  assert a.keep == (0.25, 0.5) and a.fast is True


def test_system_switches_choose_the_systems_to_train():
  from configs import synthetic
  assert sorted(synthetic.get_config(None).systems) == ["deepisc", "stae"]
  assert list(synthetic.get_config("system=deepisc").systems) == ["deepisc"]
  # The default STAE: frame attention only, its frames chosen on validation clips per k.
  default = synthetic.get_config(None).systems["stae"].model.stae
  assert default.frame_rule == "chosen" and default.frames == 16  # one choice per k of 16 frames
  assert not default.spatial_attention and default.frame_attention
  neither = synthetic.get_config("selection=random")
  assert list(neither.systems) == ["stae_random-selection"]
  assert neither.systems["stae_random-selection"].model.stae.selection == "random"
  # Tags name what differs from the config's default system.
  for switches, tag in (("spatial_attention=True", "stae_spatial-attention"),
                        ("frame_attention=False,spatial_attention=True",
                         "stae_no-frame-attention_spatial-attention"),
                        ("frame_attention=False", "stae_no-frame-attention"),
                        ("frame_rule=segments", "stae_segment-frames"),
                        ("spatial_attention=True,frame_rule=segments",
                         "stae_spatial-attention_segment-frames"),
                        ("selection=uniform", "stae_uniform-selection"),
                        ("context=False", "stae_factorized-prior")):
    assert list(synthetic.get_config(switches).systems) == [tag], switches
  top_k = synthetic.get_config("frame_rule=top_k")
  assert list(top_k.systems) == ["stae_top-k-frames"]
  assert top_k.systems["stae_top-k-frames"].model.stae.frame_rule == "top_k"
  comb = synthetic.get_config("frame_rule=comb").systems["stae_comb-frames"].model.stae
  assert comb.frame_rule == "comb" and comb.frames == 16  # its priors are per frame of the clip
  assert "frames" not in synthetic.get_config("frame_rule=segments").systems[
      "stae_segment-frames"].model.stae
  # The frame rule names learned frames only: the baselines and every-frame variants keep their tags.
  assert list(synthetic.get_config("frame_rule=segments,selection=random").systems) == [
      "stae_random-selection"]
  assert list(synthetic.get_config("frame_rule=segments,frame_attention=False").systems) == [
      "stae_no-frame-attention"]
  # A workdir trained before the switch existed records no frame_rule: the default's, by its tag.
  entry = synthetic.get_config(None).systems["stae"].to_dict()
  del entry["model"]["stae"]["frame_rule"]
  assert common.system_tag(entry, synthetic.DEFAULTS) == "stae"


def test_configs_with_the_shared_defaults_keep_their_tags():
  """hmdb51 and surveillance_fight keep the shared defaults (both attentions, segments): their
  tags are what they were before the synthetic default changed."""
  from configs import hmdb51
  assert list(hmdb51.get_config(None).systems) == ["deepisc", "stae"]
  for switches, tag in (("spatial_attention=False", "stae_no-spatial-attention"),
                        ("frame_attention=False,spatial_attention=False",
                         "stae_no-frame-attention_no-spatial-attention"),
                        ("frame_rule=chosen", "stae_chosen-frames"),
                        ("frame_rule=chosen,spatial_attention=False",
                         "stae_no-spatial-attention_chosen-frames"),
                        ("frame_rule=chosen,selection=random", "stae_random-selection")):
    assert list(hmdb51.get_config(switches).systems) == [tag], switches
  entry = hmdb51.get_config(None).systems["stae"].to_dict()
  del entry["model"]["stae"]["frame_rule"]
  assert common.system_tag(entry) == "stae"


def test_stae_learning_rate_follows_the_budget():
  """STAE's compressor stage runs at 0.012 at the default 200 steps and at the shared 0.003 for
  the longer budget (the rate each budget measured best at); DeepISC keeps the shared rate."""
  from configs import synthetic
  default = synthetic.get_config(None)
  longer = synthetic.get_config("codec_steps=1000")
  assert default.systems.stae.stages.compressor.lr == 0.012
  assert longer.systems.stae.stages.compressor.lr == 0.003
  assert longer.stages.compressor.steps == 1000
  assert "lr" not in longer.systems.deepisc.stages.compressor
  # DeepISC trains the shared budget (which a command-line override of it then moves too),
  # unless the switch names its own.
  assert "steps" not in default.systems.deepisc.stages.compressor
  assert default.stages.compressor.steps == 200
  assert synthetic.get_config("deepisc_steps=100").systems.deepisc.stages.compressor.steps == 100


def test_attention_ablations_keep_the_defaults_blocks_per_clip():
  """The attention switches move the default's points to the same blocks per clip (the ablations
  compare at matched bits): frame attention alone (the default) keeps every block of the kept
  frames, spatial attention alone every frame, both twice the frames with half their blocks."""
  from configs import synthetic
  from stae_jax.models.stae import keep_count
  blocks = lambda f, b: keep_count(f, 16) * keep_count(b, 64)
  default = synthetic.get_config(None).systems["stae"].model.stae.keep_ratios
  assert {b for _, b in default} == {1.0}
  wanted = sorted({blocks(f, b) for f, b in default})
  assert wanted == [64, 128, 256, 512, 1024]
  for switch, tag in (("frame_attention=False,spatial_attention=True",
                       "stae_no-frame-attention_spatial-attention"),
                      ("spatial_attention=True", "stae_spatial-attention")):
    ratios = synthetic.get_config(switch).systems[tag].model.stae.keep_ratios
    assert sorted(blocks(f, b) for f, b in ratios) == wanted, (switch, ratios)
    if switch.startswith("frame"):
      assert {f for f, _ in ratios} == {1.0}, ratios
    else:  # twice the frames, half their blocks, up to every frame
      assert [tuple(r) for r in ratios] == [(0.125, 0.5), (0.25, 0.5), (0.5, 0.5), (1.0, 0.5),
                                            (1.0, 1.0)], ratios
  both = synthetic.get_config("frame_attention=False")  # neither attention: the ratios stand
  assert tuple(map(tuple, both.systems["stae_no-frame-attention"]
                   .model.stae.keep_ratios)) == tuple(map(tuple, default))
  # Points written for both attentions (the shared defaults) map as before.
  mixed = ((0.125, 0.5), (0.25, 0.5), (0.5, 0.5), (1.0, 0.25), (1.0, 0.5), (1.0, 1.0))
  assert common.matched_keep_ratios(mixed, True, False) == (
      (0.0625, 1.0), (0.125, 1.0), (0.25, 1.0), (0.5, 1.0), (1.0, 1.0))
  assert common.matched_keep_ratios(mixed, False, True) == (
      (1.0, 0.0625), (1.0, 0.125), (1.0, 0.25), (1.0, 0.5), (1.0, 1.0))
  assert common.matched_keep_ratios(mixed, True, True) == mixed


@pytest.mark.parametrize("name", CONFIGS)
def test_eval_section_supplies_evaluates_defaults(name):
  """Every config evaluate.py runs has `eval`, and evaluate builds its options from it: the
  CRF axis is `h264.DEFAULT_CRFS` (written once), the rest the library's defaults."""
  from stae_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  from stae_jax.systems import h264  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"configs.{name}").get_config(None)
  assert config.eval.to_dict() == evaluate.default_settings()
  assert tuple(config.eval.crfs) == h264.DEFAULT_CRFS
  options, channel = evaluate.options_from_config(config)
  assert options.baselines["h264"]["crfs"] == tuple(float(c) for c in h264.DEFAULT_CRFS)
  assert options.baselines["h264"]["preset"] == config.eval.h264_preset
  assert options.validation_clips == config.eval.validation_clips
  assert options.tune_baselines is config.eval.tune_baselines
  assert channel.deadlines_seconds == tuple(config.eval.deadlines)
  assert channel.seeds == tuple(range(config.eval.channel_seeds))


def test_evaluate_flags_override_the_config_which_overrides_the_defaults():
  from configs import synthetic  # pylint: disable=g-import-not-at-top
  from stae_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  config = synthetic.get_config(None)
  with config.unlocked():
    config.eval.crfs = (23, 51)
    config.eval.validation_clips = 0
    config.eval.h264_grid = "single"
  options, channel = evaluate.options_from_config(config)
  assert options.baselines["h264"] == dict(frames=(16,), scales=(1,), crfs=(23.0, 51.0),
                                           preset="veryfast")
  assert options.validation_clips == 0
  # evaluate.py's flags arrive as absl gives them (lists of strings; None: not given).
  options, channel = evaluate.options_from_config(
      config, crfs=["35"], snrs=["5"], channel_seeds=1, tune_baselines=False,
      validation_clips=None, h264_grid=None)
  assert options.baselines["h264"]["crfs"] == (35.0,) and options.tune_baselines is False
  assert options.validation_clips == 0 and options.baselines["h264"]["frames"] == (16,)
  assert channel.mean_snrs_db == (5.0,) and channel.seeds == (0,)
  # A config without an eval section (a workdir's older config, a test's) gets the defaults.
  with config.unlocked():
    del config["eval"]
  options, _ = evaluate.options_from_config(config)
  assert options.validation_clips == evaluate.EvalOptions().validation_clips
  with pytest.raises(ValueError, match="unknown evaluation setting.*crfs"):
    evaluate.options_from_config(config, crf=["30"])
  with pytest.raises(ValueError, match="unknown setting.*crfs"):
    common.eval_settings(crf=(30,))


def test_surveillance_fight_fold_switch_names_the_workdir():
  from configs import surveillance_fight
  from stae_jax.data import surveillance_fight as fight_data
  default = surveillance_fight.get_config(None)
  assert default.data.builder_kwargs.fold == fight_data.NO_FOLD  # the fixed split
  assert default.data.builder_kwargs.folds == fight_data.FOLDS
  config = surveillance_fight.get_config("fold=3,system=deepisc")
  assert config.data.builder_kwargs.fold == 3 and config.name == "surveillance_fight_fold=3"
  assert "configs/surveillance_fight.py:fold=$k" in surveillance_fight.__doc__
