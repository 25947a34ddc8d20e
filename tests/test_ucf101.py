"""The UCF101 builder on the real release sample (3 clips, the official lists) and on broken copies.

Expected membership is read from the list files here with independent code, so the builder is
checked against the files, not against itself.
"""

import pathlib
import shutil

import av
import pytest
import tensorflow_datasets as tfds

from configs import ucf101 as ucf101_config
from stae_jax.data import ucf101
from stae_jax.data._manual import ManualDataError, MissingManualDataError
from stae_jax.data.features import decode_frames
from stae_jax.data.video import VideoReadError

SHORT_SIDE = 64
MAKEUP = "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
MASSAGE = "HeadMassage/v_HeadMassage_g02_c05.avi"
SHOTPUT = "Shotput/v_Shotput_g05_c02.avi"

tfds.disable_progress_bar()


def _data_config(manual_dir, split=1, **builder_kwargs):
  config = ucf101_config.get_config(f"split={split}").data
  config.manual_dir = str(manual_dir)
  config.builder_kwargs.short_side = SHORT_SIDE
  for key, value in builder_kwargs.items():
    config.builder_kwargs[key] = value
  return config


def _membership_from_files(manual_dir: pathlib.Path, split: int) -> dict[str, str]:
  """relpath -> 'train'/'test' for every listed clip present on disk, straight from the lists."""
  members = {}
  for part in ("train", "test"):
    for line in (manual_dir / "ucfTrainTestlist" / f"{part}list0{split}.txt").read_text().splitlines():
      if line.strip():
        relpath = line.split()[0]
        if (manual_dir / "UCF-101" / relpath).is_file():
          members[relpath] = part
  return members


def _class_index(manual_dir: pathlib.Path) -> list[str]:
  lines = (manual_dir / "ucfTrainTestlist" / "classInd.txt").read_text().split("\n")
  return [line.split()[1] for line in lines if line.strip()]


def _pyav_frame_count(path) -> int:
  with av.open(str(path), metadata_errors="ignore") as container:
    return sum(1 for _ in container.decode(container.streams.video[0]))


@pytest.fixture(scope="module")
def built_splits(real_data, tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  builders = {}
  for split in (1, 2, 3):
    builder = ucf101.make_builder(_data_config(real_data / "ucf101", split, allow_incomplete=True),
                                  data_dir)
    builder.download_and_prepare()
    builders[split] = builder
  return builders


@pytest.mark.parametrize("split", [1, 2, 3])
def test_partial_build_holds_every_present_clip_in_its_split(real_data, built_splits, split):
  manual_dir = real_data / "ucf101"
  builder = built_splits[split]
  expected = _membership_from_files(manual_dir, split)
  assert sorted(expected) == sorted([MAKEUP, MASSAGE, SHOTPUT])
  got = {}
  for split_name in builder.info.splits:
    source = builder.as_data_source(split_name)
    for i in range(len(source)):
      record = source[i]
      relpath = record["filename"].decode()
      got[relpath] = split_name
      assert builder.info.features["label"].names[record["label"]] == relpath.split("/")[0]
      frames = decode_frames(record["frames"])
      assert record["num_frames"] == len(frames) == _pyav_frame_count(manual_dir / "UCF-101" / relpath)
      assert frames.shape[1:] == (SHORT_SIDE, 86, 3)
      assert (record["source_height"], record["source_width"]) == (240, 320)
      assert record["fps"] == pytest.approx(25.0)
  assert got == expected
  # The sample's clips are all test clips of split 1 and all train clips of splits 2 and 3,
  # so each build lacks one split, and says so.
  empty = {"train", "test"} - set(expected.values())
  assert builder.info.metadata["left_out"]["empty_splits"] == sorted(empty)
  assert builder.info.metadata["left_out"]["counts"]["missing"] == len(
      ucf101.read_split(manual_dir, split).clips) - 3


def test_class_list_follows_class_index(real_data, built_splits):
  assert list(built_splits[1].info.features["label"].names) == _class_index(real_data / "ucf101")


def test_refuses_an_incomplete_release_by_default(real_data, tmp_path):
  builder = ucf101.make_builder(_data_config(real_data / "ucf101", 2), tmp_path)
  total = len(ucf101.read_split(real_data / "ucf101", 2).clips)
  with pytest.raises(MissingManualDataError,
                     match=f"{total} clips, of which {total - 3} are missing") as info:
    builder.download_and_prepare()
  assert "UCF101.rar" in str(info.value) and "allow_incomplete=True" in str(info.value)
  assert not builder.is_prepared()


def test_list_clips_reads_all_splits_without_video(real_data):
  manual_dir = real_data / "ucf101"
  for split, lists in ucf101.list_clips(manual_dir).items():
    assert len(lists.clips) == 13320, split
    train_lines = (manual_dir / "ucfTrainTestlist" / f"trainlist0{split}.txt").read_text().split()
    assert len(lists.train) == len(train_lines) // 2
    assert len({c.class_name for c in lists.clips}) == 101
    assert len(ucf101.missing_clips(manual_dir, lists.clips)) == 13320 - 3
    # The trainlist's own labels (1-based) agree with ours (0-based).
    assert [str(c.label + 1) for c in lists.train] == train_lines[1::2]


def test_not_registered_under_tfds_own_name():
  from tensorflow_datasets.core import registered
  assert registered._DATASET_REGISTRY.get("ucf101") is not ucf101.Ucf101


# ------------------------------------------------------------------------------ broken releases


def _small_release(tmp_path: pathlib.Path, real_data: pathlib.Path, clips: dict) -> pathlib.Path:
  """A copy of the release whose lists hold only `clips` (relpath -> None to copy, or bytes)."""
  source = real_data / "ucf101"
  release = tmp_path / "ucf101"
  lists = release / "ucfTrainTestlist"
  lists.mkdir(parents=True)
  for path in (source / "ucfTrainTestlist").iterdir():
    if path.name == "classInd.txt":
      shutil.copyfile(path, lists / path.name)
    else:
      lines = [line for line in path.read_bytes().splitlines(keepends=True)
               if line.split() and line.split()[0].decode() in clips]
      (lists / path.name).write_bytes(b"".join(lines))
  for relpath, content in clips.items():
    target = release / "UCF-101" / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
      shutil.copyfile(source / "UCF-101" / relpath, target)
    else:
      target.write_bytes(content)
  return release


def _build(release, tmp_path, split=2, **builder_kwargs):
  builder = ucf101.make_builder(_data_config(release, split, **builder_kwargs), tmp_path / "tfds")
  builder.download_and_prepare()
  return builder


def test_complete_small_release_builds_without_allow_incomplete(tmp_path, real_data):
  release = _small_release(tmp_path, real_data, {SHOTPUT: None})
  builder = _build(release, tmp_path, split=2)
  assert builder.builder_config.name == f"split2_{SHORT_SIDE}px"
  assert builder.info.splits["train"].num_examples == 1


def test_missing_directory(tmp_path):
  with pytest.raises(MissingManualDataError, match="UCF101 release not found") as info:
    _build(tmp_path / "nowhere", tmp_path)
  assert str(tmp_path / "nowhere") in str(info.value) and "data/README.md" in str(info.value)


def test_missing_lists(tmp_path, real_data):
  release = _small_release(tmp_path, real_data, {SHOTPUT: None})
  (release / "ucfTrainTestlist" / "testlist02.txt").unlink()
  with pytest.raises(MissingManualDataError, match="split-2 lists missing .*testlist02.txt"):
    _build(release, tmp_path)
  (release / "ucfTrainTestlist" / "classInd.txt").unlink()
  with pytest.raises(MissingManualDataError, match="class list not found"):
    _build(release, tmp_path, split=3)
  shutil.rmtree(release / "ucfTrainTestlist")
  with pytest.raises(MissingManualDataError, match="split lists not found"):
    _build(release, tmp_path, split=3)


def test_missing_video_folder(tmp_path, real_data):
  release = _small_release(tmp_path, real_data, {SHOTPUT: None})
  shutil.rmtree(release / "UCF-101")
  with pytest.raises(MissingManualDataError, match="the video folder itself does not exist"):
    _build(release, tmp_path)


def test_truncated_video_is_an_error(tmp_path, real_data):
  data = (real_data / "ucf101" / "UCF-101" / MASSAGE).read_bytes()
  release = _small_release(tmp_path, real_data, {MASSAGE: data[:len(data) // 3], SHOTPUT: None})
  with pytest.raises(VideoReadError, match="truncated.*allow_incomplete=True") as info:
    _build(release, tmp_path)
  assert str(release / "UCF-101" / MASSAGE) in str(info.value)


def test_zero_byte_video_is_an_error_and_left_out_only_when_allowed(tmp_path, real_data):
  release = _small_release(tmp_path, real_data, {MASSAGE: b"", SHOTPUT: None})
  with pytest.raises(VideoReadError, match="0 bytes"):
    _build(release, tmp_path)
  builder = _build(release, tmp_path, allow_incomplete=True)
  assert builder.info.splits["train"].num_examples == 1
  assert builder.info.metadata["left_out"]["counts"] == {"missing": 0, "unreadable": 1}
  assert builder.info.metadata["left_out"]["unreadable"][0]["file"] == MASSAGE


def test_list_line_naming_an_unknown_class(tmp_path, real_data):
  release = _small_release(tmp_path, real_data, {SHOTPUT: None})
  path = release / "ucfTrainTestlist" / "trainlist02.txt"
  path.write_bytes(path.read_bytes() + b"Juggling/v_Juggling_g01_c01.avi 79\r\n")
  with pytest.raises(ManualDataError, match="trainlist02.txt, line 2: unknown class 'Juggling'"):
    _build(release, tmp_path)


def test_list_label_disagreeing_with_class_index(tmp_path, real_data):
  release = _small_release(tmp_path, real_data, {SHOTPUT: None})
  path = release / "ucfTrainTestlist" / "trainlist02.txt"
  path.write_bytes(path.read_bytes().replace(b" 79", b" 78"))
  with pytest.raises(ManualDataError, match="label 78 disagrees with classInd.txt"):
    _build(release, tmp_path)


def test_edited_class_index(tmp_path, real_data):
  release = _small_release(tmp_path, real_data, {SHOTPUT: None})
  path = release / "ucfTrainTestlist" / "classInd.txt"
  path.write_bytes(path.read_bytes().replace(b"Shotput", b"ShotPut"))
  with pytest.raises(ManualDataError, match="79: 'ShotPut' \\(official 'Shotput'\\)"):
    _build(release, tmp_path)
