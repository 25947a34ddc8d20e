"""The embedded dataset `synthetic_actions`: determinism, what makes it a real trade-off, the builder."""

import hashlib

import numpy as np
import pytest

from configs import synthetic as synthetic_config
from stae_jax.data import features
from stae_jax.data import synthetic

# Small clips where the point is not the default size: 16 frames keep the default window lengths.
SMALL = dict(frames=16, size=32)
MOVING = range(synthetic.NUM_CLASSES)


def _clips_of(label, count, **kwargs):
  """`count` clips of class `label` (labels are index % NUM_CLASSES)."""
  return [synthetic.generate_clip(label + synthetic.NUM_CLASSES * j, **kwargs) for j in range(count)]


def test_shapes_dtypes_labels_and_info():
  clip, label, info = synthetic.generate_clip(13, "test", frames=6, size=24, seed=3)
  assert clip.dtype == np.uint8 and clip.shape == (6, 24, 24, 3)
  assert label == 3 and info["class_name"] == synthetic.CLASS_NAMES[3]
  assert info["actor_centre"].shape == (6, 2) and info["actor_mask"].shape == (6, 24, 24)
  assert len(synthetic.CLASS_NAMES) == len(set(synthetic.CLASS_NAMES)) == 10


def test_default_size_clip():
  clip, _, _ = synthetic.generate_clip(0)
  assert clip.shape == (16, 64, 64, 3) and clip.dtype == np.uint8
  assert synthetic.SIZE_KWARGS == dict(num_train=3000, num_test=600, frames=16, size=64, seed=0)


def test_labels_balanced():
  labels = [synthetic.generate_clip(i, frames=6, size=16)[1] for i in range(50)]
  np.testing.assert_array_equal(np.bincount(labels), [5] * synthetic.NUM_CLASSES)


def test_same_seed_bit_identical_other_seed_or_split_differs():
  a, la, _ = synthetic.generate_clip(7, "train", seed=1, **SMALL)
  b, lb, _ = synthetic.generate_clip(7, "train", seed=1, **SMALL)
  assert la == lb and a.tobytes() == b.tobytes()
  assert not np.array_equal(a, synthetic.generate_clip(7, "train", seed=2, **SMALL)[0])
  assert not np.array_equal(a, synthetic.generate_clip(7, "test", seed=1, **SMALL)[0])


def test_clips_match_recorded_checksums():
  """Pins the generator: the same bytes on every machine and numpy build CI runs. A deliberate change
  to the generator must bump GENERATOR_VERSION (so built data is rebuilt) and update these."""
  assert synthetic.GENERATOR_VERSION == "1.3.0"
  for (index, split, kwargs), expected in [
      ((3, "train", dict(frames=8, size=32)),
       "12eac87a16cd60ff5a9006c8d6dc1eb44af87acd4d8140cccfa60b0b3a61b74f"),
      ((17, "test", {}), "542d327a804e38ca3998edf22db297dc3c6422103c9e9fb3a8b665292011036a"),
      ((14, "test", {}), "993b1c41b45c5ddf7a0806a70f1989aef5b002db08920a52810822d0facc0527"),
  ]:
    clip, _, _ = synthetic.generate_clip(index, split, **kwargs)
    assert hashlib.sha256(clip.tobytes()).hexdigest() == expected, (index, split)


def test_trig_table_is_far_from_rounding_boundaries():
  """The only floats in the generator: a 1-ulp libm difference must not change any table entry."""
  exact = np.array(synthetic._TRIG_EXACT)
  distance_to_half = np.abs(np.abs(exact - np.floor(exact)) - 0.5)
  assert distance_to_half.min() > 1e-6
  np.testing.assert_array_equal(synthetic._COS, np.round(exact[:, 0]))


def test_action_window_is_shorter_than_clip_and_actor_still_outside():
  for label in MOVING:
    for clip, _, info in _clips_of(label, 4):
      first, last = info["window"]
      length = last - first + 1
      assert 9 <= length <= 13 and 0 <= first and last <= 15, info["window"]
      state = np.concatenate([info["actor_centre"], info["actor_angle"][:, None],
                              info["actor_size"][:, None]], axis=1)
      moved = np.any(state[1:] != state[:-1], axis=1)  # moved[t]: between frame t and t+1
      np.testing.assert_array_equal(np.flatnonzero(moved), np.arange(first, last),
                                    err_msg=info["class_name"])


def test_pixels_still_outside_window_without_nuisances():
  """With the background, distractors and noise off, only frames inside the window change."""
  for label in MOVING:
    clip, _, info = synthetic.generate_clip(label, noise=0, num_distractors=0, background_speed=0)
    first, last = info["window"]
    changed = np.any(clip[1:] != clip[:-1], axis=(1, 2, 3))
    np.testing.assert_array_equal(np.flatnonzero(changed), np.arange(first, last),
                                  err_msg=info["class_name"])


def test_actor_small_and_background_moves():
  fractions = []
  for label in MOVING:
    clip, _, info = synthetic.generate_clip(label, noise=0, num_distractors=0)
    fractions.append(info["actor_mask"].mean(axis=(1, 2)))
    # Outside the actor, consecutive frames differ almost everywhere: the texture pans.
    away = ~(info["actor_mask"][1:] | info["actor_mask"][:-1])
    changed = np.any(clip[1:] != clip[:-1], axis=-1)
    assert changed[away].mean() > 0.7
    assert info["background_velocity"] != (0, 0)
  fractions = np.concatenate(fractions)
  assert 0.003 < fractions.min() and fractions.max() < 0.05, (fractions.min(), fractions.max())


def _actor_colour(clip, info):
  """Median colour of the pixels the actor touches on the frame where it is largest (grow starts at
  a few pixels, most of them partly covered), with nuisances off."""
  t = int(np.argmax(info["actor_mask"].sum(axis=(1, 2))))
  return np.median(clip[t][info["actor_mask"][t]], axis=0)


def test_actor_colour_names_the_class_pair_only():
  """Colour is the foothold (the pair, label // 2); it says nothing about the class in the pair."""
  off = dict(noise=0, num_distractors=0, **SMALL)
  colours = {}
  for label in MOVING:
    colours[label] = [_actor_colour(*_clip_and_info(label + synthetic.NUM_CLASSES * j, off))
                      for j in range(3)]
  for label in MOVING:
    for colour in colours[label]:
      nearest = np.argmin(np.abs(synthetic._GROUP_PALETTE - colour).sum(-1))
      assert nearest == label // 2, (synthetic.CLASS_NAMES[label], colour)
  # Without group colours, the actor colour of one class varies over the whole palette.
  shared = dict(off, group_colours=False)
  mixed = set()
  for j in range(12):
    colour = _actor_colour(*_clip_and_info(synthetic.NUM_CLASSES * j, shared))
    mixed.add(int(np.argmin(np.abs(synthetic._PALETTE - colour).sum(-1))))
  assert len(mixed) > 2, mixed


def _clip_and_info(index, kwargs):
  clip, _, info = synthetic.generate_clip(index, **kwargs)
  return clip, info


def _nearest_centroid_accuracy(features_a, features_b):
  """Train on the first half of each class, test on the second half: accuracy on held-out data."""
  half = len(features_a) // 2
  centroid_a = features_a[:half].mean(0)
  centroid_b = features_b[:half].mean(0)
  def predict_a(x):
    return np.sum((x - centroid_a) ** 2, -1) < np.sum((x - centroid_b) ** 2, -1)
  correct = predict_a(features_a[half:]).sum() + (~predict_a(features_b[half:])).sum()
  return correct / (len(features_a) - half + len(features_b) - half)


def _one_hot_bins(values, low, high, bins):
  index = np.clip(((values - low) / (high - low) * bins).astype(int), 0, bins - 1)
  return np.eye(bins)[index]


def _single_frame_state(info, t, size):
  """Everything about the actor one frame shows, binned: position, orientation, size."""
  x, y = info["actor_centre"][t]
  return np.concatenate([
      _one_hot_bins(np.array(x), 0, size, 8), _one_hot_bins(np.array(y), 0, size, 8),
      _one_hot_bins(np.array(info["actor_angle"][t]), 0, synthetic.ANGLE_STEPS, 8),
      _one_hot_bins(np.array(info["actor_size"][t]), 0, size * 0.25, 8)])


def _wrapped(delta, period):
  return (delta + period / 2) % period - period / 2


@pytest.mark.parametrize("pair", [("travel_left", "travel_right"),
                                  ("rotate_clockwise", "rotate_anticlockwise")])
def test_single_frames_cannot_separate_pair_but_two_frames_can(pair):
  """By construction every single-frame actor state has one distribution for both classes.

  Positions start uniform on the torus and orientations uniform on the angle table, and motions
  are whole grid steps, so the state at any frame is uniform whatever the class; everything else in
  a frame is drawn independently of the class. So no single-frame classifier beats chance. Shown on
  the best single-frame features there are (the actor's true state) at the first, middle and last
  frame, where a bounded (non-wrapping) track would give a clear bias; the same classifier on the
  change between the first and last frame is near perfect.
  """
  count = 160
  a, b = (synthetic.CLASS_NAMES.index(name) for name in pair)
  infos_a = [info for _, _, info in _clips_of(a, count, **SMALL)]
  infos_b = [info for _, _, info in _clips_of(b, count, **SMALL)]
  size = SMALL["size"]
  for t in (0, 8, 15):
    acc = _nearest_centroid_accuracy(np.stack([_single_frame_state(i, t, size) for i in infos_a]),
                                     np.stack([_single_frame_state(i, t, size) for i in infos_b]))
    # Held-out pairs: 160, so chance is 0.5 with a standard deviation of 0.04.
    assert abs(acc - 0.5) < 0.14, (pair, t, acc)

  def change(info):
    if pair[0].startswith("travel"):
      delta = _wrapped(info["actor_centre"][-1, 0] - info["actor_centre"][0, 0], size)
      return _one_hot_bins(np.array(delta), -size / 2, size / 2, 8)
    delta = _wrapped(info["actor_angle"][-1] - info["actor_angle"][0], synthetic.ANGLE_STEPS)
    return _one_hot_bins(np.array(delta), -128, 128, 8)

  acc = _nearest_centroid_accuracy(np.stack([change(i) for i in infos_a]),
                                   np.stack([change(i) for i in infos_b]))
  assert acc > 0.95, (pair, acc)


@pytest.mark.parametrize("pair", [("travel_left", "travel_right"), ("travel_up", "travel_down"),
                                  ("rotate_clockwise", "rotate_anticlockwise"),
                                  ("oscillate_horizontal", "oscillate_vertical")])
def test_single_frame_pixels_at_chance_within_a_pair(pair):
  """The same on what a model sees: pooled pixels of one frame (first, middle, last) do not
  separate the two classes of a pair (colour names the pair, so both share the actor's colour).
  Grow and shrink are left out by design: a clip's first frame shows the actor small or large."""
  count = 120
  a, b = (synthetic.CLASS_NAMES.index(name) for name in pair)
  clips = {label: [clip for clip, _, _ in _clips_of(label, count, **SMALL)] for label in (a, b)}
  def pooled(label, t):
    pixels = np.stack([c[t].astype(np.float32) for c in clips[label]])
    return pixels.reshape(count, 8, 4, 8, 4, 3).mean(axis=(2, 4)).reshape(count, -1)
  for t in (0, 8, 15):
    acc = _nearest_centroid_accuracy(pooled(a, t), pooled(b, t))
    assert abs(acc - 0.5) < 0.16, (pair, t, acc)


def test_bad_arguments_are_clear_errors():
  with pytest.raises(ValueError, match="split"):
    synthetic.generate_clip(0, "validation")
  with pytest.raises(ValueError, match="actor_size"):
    synthetic.generate_clip(0, actor_size=(0.3, 0.1))
  with pytest.raises(ValueError, match="frames"):
    synthetic.generate_clip(0, frames=3)
  with pytest.raises(ValueError, match="noise=1.5: expected an integer"):
    synthetic.generate_clip(0, noise=1.5)
  with pytest.raises(ValueError, match="least motion"):
    synthetic.generate_clip(0, travel=(0.0, 0.2))
  with pytest.raises(ValueError, match="growth above 1"):
    synthetic.generate_clip(0, growth=(1.0, 1.5))
  with pytest.raises(ValueError, match="unknown synthetic_actions builder_kwargs"):
    synthetic.make_config(num_clips=3)


def test_config_name_encodes_size_and_non_default_knobs():
  assert synthetic.make_config().name == "f16_s64_tr3000_te600_seed0"
  small = synthetic.make_config(num_train=20, num_test=10, frames=6, size=16, seed=1)
  assert small.name == "f6_s16_tr20_te10_seed1"
  assert synthetic.make_config(noise=0, actor_size=(0.1, 0.2)).name == (
      "f16_s64_tr3000_te600_seed0_actor_size0.1-0.2_noise0")
  assert synthetic.make_config(noise=3).name == "f16_s64_tr3000_te600_seed0"


def _read_all(builder, split):
  source = builder.as_data_source()[split]
  return [source[i] for i in range(len(source))]


def test_builder_builds_deterministically_and_reads_back(tmp_path):
  data_config = synthetic_config.get_config("num_train=20,num_test=10,frames=6,size=16,seed=1").data
  builders = []
  for name in ("a", "b"):
    builder = synthetic.make_builder(data_config, tmp_path / name)
    builder.download_and_prepare()
    builders.append(builder)
  assert builders[0].builder_config.name == "f6_s16_tr20_te10_seed1"
  assert builders[0].info.features["label"].names == list(synthetic.CLASS_NAMES)
  for split, count in (("train", 20), ("test", 10)):
    records_a, records_b = _read_all(builders[0], split), _read_all(builders[1], split)
    assert len(records_a) == len(records_b) == count
    labels = sorted(int(r["label"]) for r in records_a)
    assert np.bincount(labels).tolist() == [count // 10] * 10
    for record_a, record_b in zip(records_a, records_b):
      assert record_a["filename"] == record_b["filename"]
      frames_a = features.decode_frames(record_a["frames"])
      np.testing.assert_array_equal(frames_a, features.decode_frames(record_b["frames"]))
      # PNG is lossless: the stored clip is exactly generate_clip's.
      index = int(record_a["filename"].decode().rsplit("_", 1)[1])  # "train_000014"
      clip, label, _ = synthetic.generate_clip(index, split, frames=6, size=16, seed=1)
      np.testing.assert_array_equal(frames_a, clip)
      assert int(record_a["label"]) == label and int(record_a["num_frames"]) == 6
  # A different size sits beside it in the same data_dir without colliding.
  other = synthetic.make_builder(
      synthetic_config.get_config("num_train=10,num_test=10,frames=6,size=16,seed=1").data,
      tmp_path / "a")
  assert other.data_path != builders[0].data_path and not other.is_prepared()


def test_make_builder_uses_registered_default_config(tmp_path):
  builder = synthetic.make_builder(synthetic_config.get_config().data, tmp_path)
  assert builder.builder_config is synthetic.SyntheticActions.BUILDER_CONFIGS[0]
  assert builder.builder_config.name == "f16_s64_tr3000_te600_seed0"
