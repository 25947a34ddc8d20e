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
  neither = synthetic.get_config("selection=random")
  assert list(neither.systems) == ["stae_random-selection"]
  assert neither.systems["stae_random-selection"].model.stae.selection == "random"
  both_off = synthetic.get_config("frame_attention=False,spatial_attention=False")
  assert list(both_off.systems) == ["stae_no-frame-attention_no-spatial-attention"]
