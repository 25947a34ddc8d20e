"""The grain input pipeline and the dataset registry.

Most tests read a tiny TFDS builder defined here, whose PNG frames encode where every pixel came
from: red = 10 * frame index, green = 15 * column, blue = 10 * clip id (constant over the clip). A
batch can then be checked exactly: which frames were sampled, which columns were cropped, which
clip it is.
"""

import gc
import subprocess
import sys

from absl import flags
import grain
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from configs import synthetic
from stae_jax import REPO_ROOT
from stae_jax.data import build
from stae_jax.data import datasets
from stae_jax.data import pipeline
from stae_jax.data.features import encode_frames, video_features

HEIGHT, WIDTH = 12, 16
NUM_TRAIN, NUM_TEST = 10, 7


def _clip(clip_id: int, num_frames: int) -> np.ndarray:
  frames = np.zeros((num_frames, HEIGHT, WIDTH, 3), np.uint8)
  frames[..., 0] = 10 * np.arange(num_frames)[:, None, None]
  frames[..., 1] = 15 * np.arange(WIDTH)[None, None, :]
  frames[..., 2] = 10 * clip_id
  return frames


class TinyClips(tfds.core.GeneratorBasedBuilder):
  """Clip i of a split has 4 + i frames (the shortest are shorter than a strided window)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=video_features(["a", "b", "c"]))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(NUM_TRAIN), "test": self._generate_examples(NUM_TEST)}

  def _generate_examples(self, count):
    for clip_id in range(count):
      frames = _clip(clip_id, 4 + clip_id)
      yield str(clip_id), dict(
          frames=encode_frames(frames, "png"), label=clip_id % 3, num_frames=len(frames), fps=30.0,
          height=HEIGHT, width=WIDTH, source_height=HEIGHT, source_width=WIDTH,
          filename=f"clip{clip_id}")


@pytest.fixture(scope="module")
def tiny_builder(tmp_path_factory):
  builder = TinyClips(data_dir=str(tmp_path_factory.mktemp("tfds")), file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder


@pytest.fixture
def collect_workers():
  """Runs the finalizers grain's worker processes leave to the garbage collector, right away.

  Left for later, one may run while a later test builds a TFDS dataset, inside TFDS's lazy-import
  context, where the import in multiprocessing's semaphore clean-up fails.
  """
  yield
  gc.collect()


def _data_config(**overrides):
  data = synthetic.get_config().data
  data.update(dict(frames=4, stride=2, resolution=8, batch_size=2, eval_batch_size=3, workers=0,
                   prefetch=1, min_crop_scale=0.5, flip=False, flip_labels=(),
                   vertical_flip=False, vertical_flip_labels=(), time_reverse=False,
                   time_reverse_labels=(), roll=False))
  data.update(overrides)
  return data


def _loader(builder, split="train", *, seed=0, train=True, num_epochs=None, shard=False, **kw):
  return pipeline.loader_from_source(
      builder.as_data_source(split=split), _data_config(**kw), seed=seed, train=train,
      num_epochs=num_epochs, shard=shard)


def _record(builder, split, clip_id):
  """The stored record of a clip (TFDS stores records in an order hashed from their keys)."""
  source = builder.as_data_source(split=split)
  return next(r for r in (source[i] for i in range(len(source)))
              if r["filename"] == f"clip{clip_id}".encode())


def _clip_ids(batch) -> np.ndarray:
  return (batch["video"][:, 0, 0, 0, 2] // 10).astype(int)


# --- temporal sampling -----------------------------------------------------------------------


def test_uniform_sampling_takes_the_centre_window():
  np.testing.assert_array_equal(pipeline.temporal_indices(20, 4, 3, "uniform"), [5, 8, 11, 14])
  np.testing.assert_array_equal(pipeline.temporal_indices(10, 10, 1, "uniform"), np.arange(10))


def test_random_sampling_keeps_stride_and_covers_every_start():
  rng = np.random.default_rng(0)
  starts = set()
  for _ in range(200):
    indices = pipeline.temporal_indices(20, 4, 3, "random", rng)
    np.testing.assert_array_equal(np.diff(indices), 3)
    assert 0 <= indices[0] and indices[-1] < 20
    starts.add(int(indices[0]))
  assert starts == set(range(20 - 9))


def test_short_clips_shrink_the_stride_then_repeat_the_last_frame():
  # 10 frames cannot hold 4 frames at stride 4 (13 needed); stride 3 fits exactly.
  np.testing.assert_array_equal(pipeline.temporal_indices(10, 4, 4, "uniform"), [0, 3, 6, 9])
  # 3 frames cannot hold 5 even at stride 1: the last frame repeats.
  rng = np.random.default_rng(0)
  for sampling in pipeline.SAMPLINGS:
    np.testing.assert_array_equal(
        pipeline.temporal_indices(3, 5, 2, sampling, rng), [0, 1, 2, 2, 2])
  np.testing.assert_array_equal(pipeline.temporal_indices(1, 3, 1, "random", rng), [0, 0, 0])


def test_bad_sampling_arguments_name_the_fix():
  with pytest.raises(ValueError, match="train_sampling"):
    pipeline.temporal_indices(10, 4, 1, "dense")
  with pytest.raises(ValueError, match="random generator"):
    pipeline.temporal_indices(10, 4, 1, "random")
  with pytest.raises(ValueError, match="no frames"):
    pipeline.temporal_indices(0, 4, 1, "uniform")
  record = {"frames": [b""] * 8, "label": 0}
  with pytest.raises(ValueError, match="eval_sampling"):
    pipeline.make_clip(record, _data_config(eval_sampling="random"), train=False)


# --- spatial view ----------------------------------------------------------------------------


def test_eval_crop_is_the_centred_square():
  assert pipeline.crop_box(240, 320) == (40, 0, 280, 240)
  assert pipeline.crop_box(320, 240) == (0, 40, 240, 280)


def test_train_view_at_scale_one_is_the_evaluation_view_unresampled():
  """min_crop_scale 1: no random resized crop, so no aspect jitter and no bilinear resampling
  (which smoothed every training frame while test frames stayed sharp), and nothing drawn."""
  rng = np.random.default_rng(0)
  for height, width in ((64, 64), (240, 320)):
    centred = pipeline.crop_box(height, width)
    assert pipeline.crop_box(height, width, min_crop_scale=1.0, rng=rng) == centred
  assert rng.random() == np.random.default_rng(0).random()
  frames = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
  record = dict(frames=encode_frames(frames, "png"), label=0)
  config = _data_config(frames=4, stride=1, min_crop_scale=1.0)
  for seed in range(4):
    clip = pipeline.make_clip(record, config, train=True, rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(clip["video"], frames)


def test_train_crop_stays_inside_with_bounded_area_and_aspect():
  rng = np.random.default_rng(1)
  for _ in range(500):
    left, top, right, bottom = pipeline.crop_box(240, 320, min_crop_scale=0.4, rng=rng)
    assert 0 <= left < right <= 320 and 0 <= top < bottom <= 240
    width, height = right - left, bottom - top
    assert 0.4 * 240 * 240 * (1 - 1e-9) <= width * height <= 240 * 240 * (1 + 1e-9)
    # The aspect jitter holds unless the crop was cut to the frame's full height.
    assert 3 / 4 - 1e-9 <= width / height <= 4 / 3 + 1e-9 or height == 240


def test_eval_clip_is_the_centre_crop_of_the_centre_window(tiny_builder):
  record = _record(tiny_builder, "test", 6)   # 10 frames
  clip = pipeline.make_clip(record, _data_config(resolution=HEIGHT), train=False)
  video = clip["video"]
  assert video.shape == (4, HEIGHT, HEIGHT, 3) and video.dtype == np.uint8
  # Centre window of 4 frames at stride 2 in 10 frames: 1, 3, 5, 7.
  np.testing.assert_array_equal(video[:, 0, 0, 0], [10, 30, 50, 70])
  # Centre square of a 12x16 frame: columns 2..13, unresized.
  np.testing.assert_array_equal(video[0, 0, :, 1], 15 * np.arange(2, 14))
  np.testing.assert_array_equal(video[..., 2], 60)
  assert clip["label"] == np.int32(0) and clip["label"].dtype == np.int32


def test_train_crop_is_the_same_for_every_frame_and_flip_mirrors_it(tiny_builder):
  record = _record(tiny_builder, "train", 9)
  flipped_some, kept_some = False, False
  for seed in range(12):
    plain = pipeline.make_clip(record, _data_config(), train=True,
                               rng=np.random.default_rng(seed))["video"]
    # Every frame shows the same columns (green) and a uniform red, i.e. one crop for the clip.
    assert (plain[..., 1] == plain[:1, ..., 1]).all()
    assert (plain[..., 0] == plain[:, :1, :1, 0]).all()
    flip = pipeline.make_clip(record, _data_config(flip=True), train=True,
                              rng=np.random.default_rng(seed))["video"]
    if np.array_equal(flip, plain):
      kept_some = True
    else:
      np.testing.assert_array_equal(flip, plain[:, :, ::-1])
      flipped_some = True
  assert flipped_some and kept_some


def test_symmetries_transform_the_clip_and_map_the_label():
  """vertical_flip, time_reverse (each with its label permutation) and roll: training only."""
  frames = np.zeros((4, 8, 8, 3), np.uint8)
  frames[..., 0] = 40 * np.arange(4)[:, None, None]   # red: time
  frames[..., 1] = 20 * np.arange(8)[None, :, None]   # green: row
  frames[..., 2] = 20 * np.arange(8)[None, None, :]   # blue: column
  record = dict(frames=encode_frames(frames, "png"), label=0)
  swap = (2, 0, 1)  # label 0 -> 2 -> 1 -> 0: applying it twice differs from once
  config = _data_config(frames=4, stride=1, min_crop_scale=1.0, vertical_flip=True,
                        vertical_flip_labels=swap, time_reverse=True, time_reverse_labels=swap)
  plain_config = _data_config(frames=4, stride=1, min_crop_scale=1.0)
  seen = set()
  for seed in range(24):
    out = pipeline.make_clip(record, config, train=True, rng=np.random.default_rng(seed))
    # The symmetries draw after the window and the crop, so the same seed gives the same crop.
    plain = pipeline.make_clip(record, plain_config, train=True,
                               rng=np.random.default_rng(seed))["video"]
    video, label = out["video"], int(out["label"])
    flipped = bool(video[0, 0, 0, 1] > video[0, -1, 0, 1])
    reversed_ = bool(video[0, 0, 0, 0] > video[-1, 0, 0, 0])
    expected = plain[:, ::-1] if flipped else plain
    np.testing.assert_array_equal(video, expected[::-1] if reversed_ else expected)
    assert label == [0, 2, 1][flipped + reversed_], (flipped, reversed_, label)
    seen.add((flipped, reversed_))
  assert len(seen) == 4, seen
  rolled = pipeline.make_clip(record, _data_config(frames=4, stride=1, min_crop_scale=1.0, roll=True),
                              train=True, rng=np.random.default_rng(3))["video"]
  plain = pipeline.make_clip(record, plain_config, train=True, rng=np.random.default_rng(3))["video"]
  assert any(np.array_equal(rolled, np.roll(plain, (dy, dx), axis=(1, 2)))
             for dy in range(8) for dx in range(8))
  # Evaluation never transforms.
  clean = pipeline.make_clip(record, _data_config(frames=4, stride=1, roll=True, time_reverse=True),
                             train=False)
  np.testing.assert_array_equal(
      clean["video"], pipeline.make_clip(record, _data_config(frames=4, stride=1), train=False)["video"])
  with pytest.raises(ValueError, match="time_reverse_labels"):
    for seed in range(8):
      pipeline.make_clip(dict(record, label=2), _data_config(
          frames=4, stride=1, time_reverse=True, time_reverse_labels=(0,)),
          train=True, rng=np.random.default_rng(seed))


# --- loaders ---------------------------------------------------------------------------------


def test_batches_have_the_promised_shapes_and_dtypes(tiny_builder):
  batch = next(iter(_loader(tiny_builder)))
  assert set(batch) == {"video", "label"}
  assert batch["video"].shape == (2, 4, 8, 8, 3) and batch["video"].dtype == np.uint8
  assert batch["label"].shape == (2,) and batch["label"].dtype == np.int32
  batch = next(iter(_loader(tiny_builder, "test", train=False)))
  assert set(batch) == {"video", "label", "mask"}
  assert batch["video"].shape == (3, 4, 8, 8, 3) and batch["mask"].dtype == np.bool_


def test_same_seed_same_batches_other_seed_other_batches(tiny_builder):
  def first(seed):
    iterator = iter(_loader(tiny_builder, seed=seed))
    return [next(iterator)["video"] for _ in range(3)]

  a, b, c = first(3), first(3), first(4)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, z) for x, z in zip(a, c))


def test_restored_state_continues_with_the_same_batches(tiny_builder):
  iterator = iter(_loader(tiny_builder, seed=5))
  for _ in range(3):   # mid-epoch: 10 clips are 5 batches
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(4)]   # crosses into the second epoch
  restored = iter(_loader(tiny_builder, seed=5))
  restored.set_state(state)
  for want in expected:
    got = next(restored)
    np.testing.assert_array_equal(got["video"], want["video"])
    np.testing.assert_array_equal(got["label"], want["label"])


def test_training_epochs_reshuffle_and_the_stream_drops_its_last_partial_batch(tiny_builder):
  # Batches run across epoch boundaries: 2 epochs of 10 clips are 6 batches of 3, 2 clips dropped.
  loader = _loader(tiny_builder, num_epochs=2, batch_size=3)
  stream = np.concatenate([_clip_ids(b) for b in loader])
  assert len(stream) == 18
  assert sorted(stream[:10]) == list(range(NUM_TRAIN))
  assert len(set(stream[10:])) == 8 and not np.array_equal(stream[:8], stream[10:])


def test_two_processes_train_on_disjoint_halves(tiny_builder):
  seen = []
  for index in range(2):
    loader = _loader(tiny_builder, num_epochs=1, seed=7, batch_size=5,
                     shard=grain.sharding.ShardOptions(index, 2, drop_remainder=True))
    seen.append(np.concatenate([_clip_ids(b) for b in loader]))
  assert len(seen[0]) == len(seen[1]) == NUM_TRAIN // 2
  assert not set(seen[0]) & set(seen[1])
  assert set(seen[0]) | set(seen[1]) == set(range(NUM_TRAIN))


@pytest.mark.parametrize("shard_count", [1, 2, 3, 8])
def test_evaluation_counts_every_clip_once(tiny_builder, shard_count):
  counted, steps = [], set()
  for index in range(shard_count):
    batches = list(_loader(tiny_builder, "test", train=False, num_epochs=1,
                           shard=grain.sharding.ShardOptions(index, shard_count)))
    steps.add(len(batches))
    for batch in batches:
      counted.extend(_clip_ids(batch)[batch["mask"]])
      np.testing.assert_array_equal(batch["label"][batch["mask"]],
                                    _clip_ids(batch)[batch["mask"]] % 3)
  assert sorted(counted) == list(range(NUM_TEST))
  assert len(steps) == 1   # every process runs the same number of steps


def test_worker_processes_give_the_same_clips_grouped_differently(tiny_builder, collect_workers):
  # Each of 2 workers batches every other record, so batches regroup; the clips (and their
  # random views, seeded by stream position) are the same.
  def clips(workers):
    iterator = iter(_loader(tiny_builder, seed=2, workers=workers))
    return sorted(clip.tobytes() for _ in range(4) for clip in next(iterator)["video"])

  assert clips(2) == clips(0)


def test_evaluation_with_workers_has_only_full_batches_and_every_clip_once(tiny_builder,
                                                                           collect_workers):
  batches = list(_loader(tiny_builder, "test", train=False, num_epochs=1, workers=2))
  assert all(len(b["label"]) == 3 for b in batches)
  counted = np.concatenate([_clip_ids(b)[b["mask"]] for b in batches])
  assert sorted(counted) == list(range(NUM_TEST))


# --- registry --------------------------------------------------------------------------------


def test_unknown_dataset_lists_the_known_ones():
  with pytest.raises(ValueError, match="hmdb51, surveillance_fight, synthetic_actions, ucf101"):
    datasets.get_builder(_data_config(name="kinetics"))


def _synthetic_config(data_dir):
  data = synthetic.get_config("frames=8,size=32,num_train=16,num_test=8").data
  data.update(dict(data_dir=str(data_dir), frames=4, stride=2, resolution=16, batch_size=4,
                   eval_batch_size=5))
  return data


def test_synthetic_dataset_through_the_registry(tmp_path):
  data = _synthetic_config(tmp_path)
  builder = datasets.ensure_built(data)
  assert builder.is_prepared() and str(builder.data_dir).startswith(str(tmp_path))
  assert datasets.ensure_built(data).data_dir == builder.data_dir   # the second call reuses it
  batch = next(iter(pipeline.make_loader(data, "train", seed=0, train=True, shard=False)))
  assert batch["video"].shape == (4, 4, 16, 16, 3) and batch["video"].dtype == np.uint8
  assert batch["label"].max() < len(datasets.class_names(builder))
  batches = list(pipeline.make_loader(data, "test", seed=0, train=False, num_epochs=1))
  assert [int(b["mask"].sum()) for b in batches] == [5, 3]
  # 16 stored training clips: the 10th is the validation split, the other 15 are trained on.
  validation = list(pipeline.make_loader(data, "validation", seed=0, train=False, num_epochs=1))
  assert [int(b["mask"].sum()) for b in validation] == [1]
  train = builder.as_data_source(split="train")
  np.testing.assert_array_equal(validation[0]["label"][0], train[9]["label"])
  with pytest.raises(ValueError, match="carved from the training split"):
    pipeline.make_loader(data, "val", seed=0, train=False)


def test_validation_is_carved_from_train_deterministically_and_disjointly():
  records = [dict(index=i) for i in range(45)]
  validation = pipeline.carve(records, "validation")
  train = pipeline.carve(records, "train")
  held = [validation[i]["index"] for i in range(len(validation))]
  kept = [train[i]["index"] for i in range(len(train))]
  assert held == [9, 19, 29, 39] and len(kept) == 41
  assert sorted(held + kept) == list(range(45))
  assert [pipeline.carve(records, "validation")[i] for i in range(4)] == [validation[i] for i in range(4)]
  assert pipeline.split_source(lambda name: {"test": ["t"]}[name], "test") == ["t"]
  with pytest.raises(ValueError, match="'train' or 'validation'"):
    pipeline.carve(records, "test")
  # Fewer than VALIDATION_EVERY stored training clips: no validation split, and the error says how
  # to evaluate without one; the training split is the stored one.
  few = lambda name: {"train": records[:pipeline.VALIDATION_EVERY - 1]}[name]
  with pytest.raises(ValueError, match=r"validation split is empty.*9 clip.*--validation_clips=0"):
    pipeline.split_source(few, "validation")
  assert len(pipeline.split_source(few, "train")) == pipeline.VALIDATION_EVERY - 1
  with pytest.raises(ValueError, match="training split is empty"):
    pipeline.split_source(lambda name: [], "train")


def test_build_command_writes_a_preview(tmp_path):
  # The command as users type it, on a tiny synthetic dataset.
  command = [
      sys.executable, "-m", "stae_jax.data.build",
      "--config=configs/synthetic.py:frames=8,size=32,num_train=16,num_test=8",
      f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.data.frames=4",
      f"--workdir={tmp_path / 'run'}", "--preview_clips=3"]
  result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "train 16 clips" in result.stdout and "test 8 clips" in result.stdout
  assert str(tmp_path / "run" / "preview.png") in result.stdout
  with Image.open(tmp_path / "run" / "preview.png") as preview:
    assert preview.size == (build.LABEL_WIDTH_PX + 4 * (32 + 2), 3 * (32 + 4))
  # Importing the module (as this file does) defines none of the command's flags: an entry point
  # imported beside it (train.py, a benchmark) defines its own --config.
  assert not flags.FLAGS.flags_by_module_dict().get("stae_jax.data.build")
