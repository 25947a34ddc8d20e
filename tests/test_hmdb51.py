"""The HMDB51 builder on the real release sample (2 clips, all 153 split files) and on broken copies.

Expected membership is read from the split files here with a few lines of independent code, so the
builder is checked against the files, not against itself.
"""

import pathlib
import shutil

import av
import pytest
import tensorflow_datasets as tfds

from configs import hmdb51 as hmdb51_config
from stae_jax.data import hmdb51
from stae_jax.data._manual import ManualDataError, MissingManualDataError
from stae_jax.data.features import decode_frames
from stae_jax.data.video import VideoReadError

SHORT_SIDE = 64
BRUSH = "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi"
STAIRS = ("climb_stairs/Increase_stride_length_by_running_stairs__working_step_over_action_speed_"
          "development_climb_stairs_f_cm_np1_le_med_1.avi")

tfds.disable_progress_bar()


def _data_config(manual_dir, split=1, **builder_kwargs):
  config = hmdb51_config.get_config(f"split={split}").data
  config.manual_dir = str(manual_dir)
  config.builder_kwargs.short_side = SHORT_SIDE
  for key, value in builder_kwargs.items():
    config.builder_kwargs[key] = value
  return config


def _membership_from_files(manual_dir: pathlib.Path, split: int) -> dict[str, str]:
  """relpath -> 'train'/'test' for every clip present on disk, straight from the split files."""
  members = {}
  for path in (manual_dir / "testTrainMulti_7030_splits").glob(f"*_test_split{split}.txt"):
    class_name = path.name[:-len(f"_test_split{split}.txt")]
    for line in path.read_text().splitlines():
      if line.strip():
        clip, membership = line.split()
        relpath = f"{class_name}/{clip}"
        if (manual_dir / relpath).is_file() and membership != "0":
          members[relpath] = {"1": "train", "2": "test"}[membership]
  return members


def _pyav_frame_count(path) -> int:
  with av.open(str(path), metadata_errors="ignore") as container:
    return sum(1 for _ in container.decode(container.streams.video[0]))


def _records(builder) -> dict[str, list[dict]]:
  return {split: [source[i] for i in range(len(source))]
          for split in builder.info.splits
          for source in [builder.as_data_source(split)]}


@pytest.fixture(scope="module")
def built_splits(real_data, tmp_path_factory):
  """Splits 1-3 built from the real sample with allow_incomplete=True."""
  data_dir = tmp_path_factory.mktemp("tfds")
  builders = {}
  for split in (1, 2, 3):
    builder = hmdb51.make_builder(_data_config(real_data / "hmdb51", split, allow_incomplete=True),
                                  data_dir)
    builder.download_and_prepare()
    builders[split] = builder
  return builders


@pytest.mark.parametrize("split", [1, 2, 3])
def test_partial_build_holds_every_present_clip_in_its_split(real_data, built_splits, split):
  manual_dir = real_data / "hmdb51"
  builder = built_splits[split]
  assert builder.builder_config.name == f"split{split}_{SHORT_SIDE}px_partial"
  expected = _membership_from_files(manual_dir, split)
  assert sorted(expected) == sorted([BRUSH, STAIRS])  # both sample clips are used in every split
  records = _records(builder)
  got = {r["filename"].decode(): split_name for split_name, rs in records.items() for r in rs}
  assert got == expected
  label_names = builder.info.features["label"].names
  for records_of_split in records.values():
    for record in records_of_split:
      relpath = record["filename"].decode()
      assert label_names[record["label"]] == relpath.split("/")[0]
      frames = decode_frames(record["frames"])
      assert record["num_frames"] == len(frames) == _pyav_frame_count(manual_dir / relpath)
      assert frames.shape[1:] == (SHORT_SIDE, 86, 3) == (record["height"], record["width"], 3)
      assert (record["source_height"], record["source_width"]) == (240, 320)
      assert record["fps"] == pytest.approx(30.0)
  left_out = builder.info.metadata["left_out"]
  assert left_out["counts"] == {"missing": 5100 - 2, "unreadable": 0}
  assert BRUSH not in left_out["missing"] and len(left_out["missing"]) == 5098


def test_class_list_is_the_51_split_file_classes(real_data, built_splits):
  files = (real_data / "hmdb51" / "testTrainMulti_7030_splits").glob("*_test_split1.txt")
  from_files = sorted(p.name[:-len("_test_split1.txt")] for p in files)
  assert list(built_splits[1].info.features["label"].names) == from_files
  assert len(from_files) == 51


def test_empty_split_is_absent_and_recorded(tmp_path, real_data):
  # Only the brush_hair clip: in split 1 it is train, so split 1 has no test clip at all.
  release = _small_release(tmp_path, real_data, {BRUSH: None})
  builder = hmdb51.make_builder(_data_config(release, 1, allow_incomplete=True), tmp_path / "tfds")
  builder.download_and_prepare()
  assert list(builder.info.splits) == ["train"]
  assert builder.info.metadata["left_out"]["empty_splits"] == ["test"]


def test_refuses_an_incomplete_release_by_default(real_data, tmp_path):
  builder = hmdb51.make_builder(_data_config(real_data / "hmdb51"), tmp_path)
  with pytest.raises(MissingManualDataError, match="5100 clips, of which 5098 are missing") as info:
    builder.download_and_prepare()
  message = str(info.value)
  assert str(real_data / "hmdb51") in message and "hmdb51_org.rar" in message
  assert "allow_incomplete=True" in message
  assert not builder.is_prepared()


def test_list_clips_reads_all_splits_without_video(real_data):
  manual_dir = real_data / "hmdb51"
  splits = hmdb51.list_clips(manual_dir)
  for split, lists in splits.items():
    assert (len(lists.train), len(lists.test)) == (3570, 1530), split
    assert len({c.class_name for c in lists.clips}) == 51
    missing = hmdb51.missing_clips(manual_dir, lists.clips)
    assert len(missing) == 5098
  brush = [c for c in splits[3].test if c.relpath == BRUSH]
  assert brush and brush[0].label == 0 and brush[0].class_name == "brush_hair"


def test_make_builder_rejects_unknown_builder_kwargs(real_data, tmp_path):
  config = _data_config(real_data / "hmdb51")
  config.builder_kwargs.shortside = 32
  with pytest.raises(ValueError, match="unknown hmdb51 builder_kwargs \\['shortside'\\]"):
    hmdb51.make_builder(config, tmp_path)


def test_default_config_uses_the_registered_config(tmp_path):
  config = hmdb51_config.get_config().data
  builder = hmdb51.make_builder(config, tmp_path)
  assert builder.builder_config is hmdb51.Hmdb51.builder_configs["split1_256px"]
  assert builder.release_dir == pathlib.Path(__file__).parents[1] / "data" / "hmdb51"


# ------------------------------------------------------------------------------ broken releases


def _small_release(tmp_path: pathlib.Path, real_data: pathlib.Path, clips: dict) -> pathlib.Path:
  """A copy of the release whose split files list only `clips`, so the set is complete.

  clips: relpath -> None (copy the real file) or bytes (write these instead).
  """
  source = real_data / "hmdb51"
  release = tmp_path / "hmdb51"
  splits = release / "testTrainMulti_7030_splits"
  splits.mkdir(parents=True)
  names = {pathlib.PurePosixPath(p).name for p in clips}
  for path in (source / "testTrainMulti_7030_splits").iterdir():
    lines = [line for line in path.read_text().splitlines(keepends=True)
             if line.split() and line.split()[0] in names]
    (splits / path.name).write_text("".join(lines))
  for relpath, content in clips.items():
    (release / relpath).parent.mkdir(parents=True, exist_ok=True)
    if content is None:
      shutil.copyfile(source / relpath, release / relpath)
    else:
      (release / relpath).write_bytes(content)
  return release


def _build(release, tmp_path, split=1, **builder_kwargs):
  builder = hmdb51.make_builder(_data_config(release, split, **builder_kwargs), tmp_path / "tfds")
  builder.download_and_prepare()
  return builder


def test_complete_small_release_builds_without_allow_incomplete(tmp_path, real_data):
  release = _small_release(tmp_path, real_data, {BRUSH: None, STAIRS: None})
  builder = _build(release, tmp_path)
  assert builder.builder_config.name == f"split1_{SHORT_SIDE}px"
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {"train": 1,
                                                                                   "test": 1}


def test_missing_directory(tmp_path):
  with pytest.raises(MissingManualDataError, match="HMDB51 release not found") as info:
    _build(tmp_path / "nowhere", tmp_path)
  assert str(tmp_path / "nowhere") in str(info.value) and "data/README.md" in str(info.value)


def test_missing_split_folder(tmp_path, real_data):
  release = _small_release(tmp_path, real_data, {STAIRS: None})
  shutil.rmtree(release / "testTrainMulti_7030_splits")
  with pytest.raises(MissingManualDataError, match="split files not found") as info:
    _build(release, tmp_path)
  assert "test_train_splits.rar" in str(info.value)


def test_missing_split_file(tmp_path, real_data):
  release = _small_release(tmp_path, real_data, {STAIRS: None})
  (release / "testTrainMulti_7030_splits" / "wave_test_split2.txt").unlink()
  _build(release, tmp_path, split=1)  # split 1 does not need it
  with pytest.raises(MissingManualDataError, match="1 of the 51 HMDB51 split-2 files are missing"
                     ".*wave_test_split2.txt"):
    _build(release, tmp_path, split=2)


def test_truncated_video_is_an_error(tmp_path, real_data):
  data = (real_data / "hmdb51" / BRUSH).read_bytes()
  release = _small_release(tmp_path, real_data, {BRUSH: data[:len(data) // 2], STAIRS: None})
  with pytest.raises(VideoReadError, match="truncated.*allow_incomplete=True") as info:
    _build(release, tmp_path)
  assert str(release / BRUSH) in str(info.value)


def test_truncated_video_left_out_and_reported_under_allow_incomplete(tmp_path, real_data):
  data = (real_data / "hmdb51" / BRUSH).read_bytes()
  release = _small_release(tmp_path, real_data, {BRUSH: data[:len(data) // 2], STAIRS: None})
  builder = _build(release, tmp_path, split=2, allow_incomplete=True)  # both clips train in split 2
  assert builder.info.splits["train"].num_examples == 1
  left_out = builder.info.metadata["left_out"]
  assert left_out["counts"] == {"missing": 0, "unreadable": 1}
  assert left_out["unreadable"][0]["file"] == BRUSH
  assert "truncated" in left_out["unreadable"][0]["reason"]


def test_zero_byte_video_is_an_error(tmp_path, real_data):
  release = _small_release(tmp_path, real_data, {BRUSH: None, STAIRS: b""})
  with pytest.raises(VideoReadError, match="0 bytes") as info:
    _build(release, tmp_path)
  assert str(release / STAIRS) in str(info.value)


def test_split_file_of_an_unknown_class(tmp_path, real_data):
  release = _small_release(tmp_path, real_data, {STAIRS: None})
  (release / "testTrainMulti_7030_splits" / "juggle_test_split1.txt").write_text("a.avi 1 \n")
  with pytest.raises(ManualDataError, match="classes HMDB51 does not have: juggle_test_split1.txt"):
    _build(release, tmp_path)


def test_malformed_split_line(tmp_path, real_data):
  release = _small_release(tmp_path, real_data, {STAIRS: None})
  path = release / "testTrainMulti_7030_splits" / "climb_stairs_test_split1.txt"
  path.write_text(path.read_text() + "another_clip.avi 3 \n")
  with pytest.raises(ManualDataError, match="climb_stairs_test_split1.txt, line 2: expected"):
    _build(release, tmp_path)
