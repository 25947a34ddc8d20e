"""The surveillance_fight builder on the real release (../shared/data/real/surveillance_fight).

The split is checked on the whole release from videos.txt (no decoding), against a few lines of
independent parsing here. Frame size, rate and content are checked on a build of a few real clips
chosen so that the label-leaking sizes and rates are all in it: 320x240 at 18 fps and 704x480 at
20 fps (noFight only in the release), 1920x1080, 1280x720 of both classes, and a 10 fps fight.
"""

import math
import pathlib
import re

import av
import numpy as np
import pytest
from PIL import Image
import tensorflow_datasets as tfds

from configs import surveillance_fight as fight_config
from stae_jax.data import datasets
from stae_jax.data import pipeline
from stae_jax.data import surveillance_fight as sf
from stae_jax.data._manual import ManualDataError, MissingManualDataError
from stae_jax.data.features import decode_frames, encode_frames
from stae_jax.data.video import VideoReadError

tfds.disable_progress_bar()

#: relpath -> (source width, source height, source fps); split membership follows the fixed rule.
SAMPLE = {
    "noFight/nofi084.mp4": (320, 240, 18.0),
    "noFight/nofi062.mp4": (704, 480, 20.0),
    "noFight/nofi039.mp4": (1280, 720, 30.0),
    "fight/fi077.mp4": (1920, 1080, 29.97),
    "fight/fi051.mp4": (1280, 720, 30.0),
    "fight/fi133.mp4": (640, 360, 10.0),
}
TEST_CLIPS = {"noFight/nofi039.mp4", "fight/fi051.mp4"}


@pytest.fixture(scope="module")
def release(real_data):
  path = real_data / "surveillance_fight"
  if not path.is_dir():
    pytest.skip(f"the surveillance_fight release is not at {path}")
  return path


def _data_config(manual_dir, **builder_kwargs):
  config = fight_config.get_config().data
  config.manual_dir = str(manual_dir)
  for key, value in builder_kwargs.items():
    config.builder_kwargs[key] = value
  return config


def _small_release(tmp_path: pathlib.Path, release: pathlib.Path, clips=SAMPLE,
                   videos_txt: str | None = None) -> pathlib.Path:
  """The real videos.txt (or `videos_txt`) and links to the real files of `clips` (relpaths;
  links, not copies: nothing of the release is copied anywhere)."""
  small = tmp_path / "surveillance_fight"
  for folder in ("fight", "noFight"):
    (small / folder).mkdir(parents=True)
  if videos_txt is None:
    (small / "videos.txt").symlink_to(release / "videos.txt")
  else:
    (small / "videos.txt").write_text(videos_txt)
  for relpath in clips:
    (small / relpath).symlink_to(release / relpath)
  return small


def _build(manual_dir, data_dir, **builder_kwargs):
  builder = sf.make_builder(_data_config(manual_dir, **builder_kwargs), data_dir)
  builder.download_and_prepare()
  return builder


@pytest.fixture(scope="module")
def small_build(release, tmp_path_factory):
  tmp = tmp_path_factory.mktemp("fight")
  builder = _build(_small_release(tmp, release), tmp / "tfds", allow_incomplete=True)
  records = {split: [source[i] for i in range(len(source))]
             for split in builder.info.splits
             for source in [builder.as_data_source(split)]}
  return builder, records


# ------------------------------------------------------------------------------ the split


def _sources_from_file(release: pathlib.Path) -> dict[str, set[str]]:
  """clip name -> the sources videos.txt names for it (independent of the builder's parser)."""
  sources, current = {}, None
  for line in (release / "videos.txt").read_text().splitlines():
    line = line.strip()
    if line.startswith("http"):
      current = line
    elif m := re.fullmatch(r"(nofi)(\d+) - nofi(\d+) : (.+)", line):
      for i in range(int(m[2]), int(m[3]) + 1):
        sources.setdefault(f"nofi{i:03d}", set()).add(m[4])
    elif line:
      sources.setdefault(line.split(":")[0].strip(), set()).add(current)
  return sources


def test_split_by_source(release):
  lists = sf.read_split(release)
  train = {c.relpath for c in lists.train}
  test = {c.relpath for c in lists.test}
  everything = {f"fight/fi{i:03d}.mp4" for i in range(1, 151)} | {
      f"noFight/nofi{i:03d}.mp4" for i in range(1, 151)}
  assert train | test == everything and not train & test
  assert (len(train), len(test)) == (203, 97)
  count = lambda clips, cls: sum(c.startswith(cls + "/") for c in clips)
  assert (count(test, "fight"), count(test, "noFight")) == (50, 47)
  assert (count(train, "fight"), count(train, "noFight")) == (100, 103)
  # No source (YouTube video or source dataset) has clips on both sides.
  sides: dict[str, set[str]] = {}
  for name, clip_sources in _sources_from_file(release).items():
    relpath = f"{'noFight' if name.startswith('nofi') else 'fight'}/{name}.mp4"
    for source in clip_sources:
      sides.setdefault(source, set()).add("test" if relpath in test else "train")
  assert len(sides) == 46
  assert [s for s, where in sides.items() if len(where) > 1] == []
  # Labels follow the folder: 0 = noFight, 1 = fight.
  assert {(c.class_name, c.label) for c in lists.clips} == {("noFight", 0), ("fight", 1)}
  assert all(c.relpath.startswith(c.class_name + "/") for c in lists.clips)


def test_sources_sharing_a_clip_are_one_group(release):
  groups = sf.read_sources(release)
  assert len(groups) == 44 and sum(len(g.sources) for g in groups) == 46
  by_clip = {c.relpath: g for g in groups for c in g.clips}
  # nofi022 is listed under two YouTube videos; nofi076 in both dataset ranges.
  assert len(by_clip["noFight/nofi022.mp4"].sources) == 2
  assert set(by_clip["noFight/nofi076.mp4"].sources) == {"CamNet Dataset", "Synopsis dataset"}
  assert len(by_clip["noFight/nofi076.mp4"].clips) == 30
  test = {c.relpath for c in sf.read_split(release).test}
  assert {r for r in SAMPLE if r in test} == TEST_CLIPS


# ------------------------------------------------------------------------------ the folds

#: Per fold of the default 5: (groups, sources, clips, fight, noFight), as the module docstring
#: says.
FOLD_COUNTS = [(9, 10, 62, 28, 34), (8, 8, 62, 30, 32), (9, 10, 59, 31, 28), (9, 9, 58, 30, 28),
               (9, 9, 59, 31, 28)]
EVERY_CLIP = {f"fight/fi{i:03d}.mp4" for i in range(1, 151)} | {
    f"noFight/nofi{i:03d}.mp4" for i in range(1, 151)}


@pytest.fixture(scope="module")
def folds(release):
  """{fold: {"train", "validation", "test": set of relpaths}} of the default 5 folds."""
  return {fold: {part: {c.relpath for c in getattr(lists, part)}
                 for part in ("train", "validation", "test")}
          for fold in range(sf.FOLDS) for lists in [sf.read_fold(release, fold)]}


def test_fold_counts_are_the_documented_ones(release):
  counts = sf.fold_counts(release)
  print("\nfold groups sources clips fight noFight")
  for fold, c in enumerate(counts):
    print(fold, c["groups"], c["sources"], c["clips"], c["fight"], c["noFight"])
  assert [(c["groups"], c["sources"], c["clips"], c["fight"], c["noFight"])
          for c in counts] == FOLD_COUNTS
  assert sum(c["groups"] for c in counts) == 44 and sum(c["sources"] for c in counts) == 46
  for fold, (groups, sources, clips, fight, no_fight) in enumerate(FOLD_COUNTS):
    row = f"  {fold}      {groups}       {sources:<2}       {clips}     {fight}     {no_fight}"
    assert row in sf.__doc__, fold
  # The CamNet/Synopsis group (30 noFight clips) is in fold 0.
  assert "noFight/nofi062.mp4" in {c.relpath for c in sf.read_fold(release, 0).test}


def test_folds_partition_the_clips(folds):
  tested = [clip for fold in folds.values() for clip in fold["test"]]
  assert len(tested) == 300 and set(tested) == EVERY_CLIP  # every clip in exactly one test split
  validated = [clip for fold in folds.values() for clip in fold["validation"]]
  assert len(validated) == 300 and set(validated) == EVERY_CLIP
  for fold, parts in folds.items():
    train, validation, test = parts["train"], parts["validation"], parts["test"]
    assert train | validation | test == EVERY_CLIP
    assert not train & validation and not train & test and not validation & test
    assert validation == folds[(fold + 1) % sf.FOLDS]["test"]
    assert (len(train), len(validation), len(test)) == (
        300 - FOLD_COUNTS[(fold + 1) % sf.FOLDS][2] - FOLD_COUNTS[fold][2],
        FOLD_COUNTS[(fold + 1) % sf.FOLDS][2], FOLD_COUNTS[fold][2])


def test_no_source_is_in_two_parts_of_a_fold(release, folds):
  """Checked with the independent parser: every source's clips lie in one part of each fold."""
  sources = _sources_from_file(release)
  assert len({s for clip_sources in sources.values() for s in clip_sources}) == 46
  for fold, parts in folds.items():
    where: dict[str, set[str]] = {}
    for name, clip_sources in sources.items():
      relpath = f"{'noFight' if name.startswith('nofi') else 'fight'}/{name}.mp4"
      part = next(p for p, clips in parts.items() if relpath in clips)
      for source in clip_sources:
        where.setdefault(source, set()).add(part)
    assert [s for s, p in where.items() if len(p) > 1] == [], fold
    # Validation and training share no source either: validation is whole sources too.
    assert {p for ps in where.values() for p in ps} == {"train", "validation", "test"}


def test_folds_are_deterministic(release):
  groups = sf.read_sources(release)
  once = sf.assign_folds(groups)
  assert sf.assign_folds(groups) == once
  # The order of videos.txt does not matter: only group sizes and names decide.
  shuffled = tuple(np.random.default_rng(0).permutation(np.array(groups, dtype=object)))
  assert sf.assign_folds(shuffled) == once
  # Other numbers of folds also partition the groups.
  for k in (3, 10):
    assigned = sf.assign_folds(groups, k)
    assert len(assigned) == k and all(assigned)
    assert sorted(g.name for part in assigned for g in part) == sorted(g.name for g in groups)


def test_fold_config_names_the_fold_and_stores_validation(tmp_path):
  config = fight_config.get_config("fold=2")
  assert config.name == "surveillance_fight_fold=2"  # the workdir records the fold
  builder = datasets.get_builder(config.data)
  assert builder.builder_config is sf.SurveillanceFight.builder_configs[
      "source_fold2of5_128x96_10fps"]
  assert (builder.builder_config.fold, builder.builder_config.folds) == (2, 5)
  assert "fold 3 of the 5 folds" in pipeline.validation_rule(config.data)
  default = fight_config.get_config().data
  assert datasets.stored_validation_rule(default) is None
  assert pipeline.validation_rule(default) == pipeline.VALIDATION_RULE
  # A stored validation split is read as stored, nothing carved from train.
  stored = {"train": list(range(30)), "validation": ["v"], "test": ["t"]}
  for split in ("train", "validation", "test"):
    assert pipeline.split_source(stored.get, split, stored_validation=True) == stored[split]
  assert len(pipeline.split_source(stored.get, "train")) == 27
  assert fight_config.get_config("fold=0,folds=10").data.builder_kwargs.folds == 10
  ten = sf.make_builder(_data_config(tmp_path, fold=9, folds=10), tmp_path)
  assert ten.builder_config.name == "source_fold9of10_128x96_10fps"


def test_bad_fold_settings_are_explained(tmp_path, release):
  with pytest.raises(ValueError, match="fold must be an integer in 0..4.*:fold=<k>"):
    sf.make_builder(_data_config(tmp_path, fold=5), tmp_path)
  with pytest.raises(ValueError, match="folds must be an integer >= 3"):
    sf.make_builder(_data_config(tmp_path, fold=0, folds=2), tmp_path)
  with pytest.raises(ValueError, match="folds=6 needs a fold"):
    sf.make_builder(_data_config(tmp_path, folds=6), tmp_path)
  with pytest.raises(ValueError, match="folds must be an integer in 3..44"):
    sf.read_fold(release, 0, 45)


def test_fold_build_stores_train_validation_and_test(release, tmp_path):
  """A fold built from one real clip of each of its parts: three stored splits, each clip where
  read_fold puts it."""
  lists = sf.read_fold(release, 1)
  chosen = {part: min(c.relpath for c in getattr(lists, part))
            for part in ("train", "validation", "test")}
  builder = _build(_small_release(tmp_path, release, chosen.values()), tmp_path / "tfds",
                   allow_incomplete=True, fold=1)
  assert builder.builder_config.name == "source_fold1of5_128x96_10fps_partial"
  assert set(builder.info.splits) == {"train", "validation", "test"}
  for part, relpath in chosen.items():
    records = builder.as_data_source(part)
    assert [records[i]["filename"].decode() for i in range(len(records))] == [relpath]


# ------------------------------------------------------------------------------ stored clips


def test_stored_clips_share_one_size_and_rate(small_build, release):
  builder, records = small_build
  assert builder.builder_config.name == "source_split_128x96_10fps_partial"
  got = {r["filename"].decode(): split for split, rs in records.items() for r in rs}
  assert got == {r: ("test" if r in TEST_CLIPS else "train") for r in SAMPLE}
  shapes = {}
  for split_records in records.values():
    for record in split_records:
      relpath = record["filename"].decode()
      width, height, fps = SAMPLE[relpath]
      assert (record["source_width"], record["source_height"]) == (width, height)
      frames = decode_frames(record["frames"])
      shapes.setdefault(relpath.split("/")[0], set()).add(
          (frames.shape[1:], record["height"], record["width"], float(record["fps"])))
      with av.open(str(release / relpath)) as container:
        source_frames = sum(1 for _ in container.decode(container.streams.video[0]))
      # One frame per 0.1 s of the source, none repeated.
      assert record["num_frames"] == len(frames) == math.ceil(source_frames * 10 / fps - 1e-6)
  assert shapes == {"fight": {((96, 128, 3), 96, 128, 10.0)},
                    "noFight": {((96, 128, 3), 96, 128, 10.0)}}
  left_out = builder.info.metadata["left_out"]
  assert left_out["counts"] == {"missing": 300 - len(SAMPLE), "unreadable": 0}


def test_stored_frames_are_the_frames_on_screen_every_tenth_of_a_second(small_build, release):
  _, records = small_build
  record = next(r for r in records["train"] if r["filename"] == b"fight/fi077.mp4")
  with av.open(str(release / "fight/fi077.mp4")) as container:
    source = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
  stored = decode_frames(record["frames"]).astype(np.float32)

  def stored_view(frame):  # 1920x1080 -> centred 1440x1080 (4:3) -> 128x96 -> JPEG q90
    small = Image.fromarray(frame[:, 240:1680]).resize((128, 96), Image.BILINEAR)
    return decode_frames(encode_frames(np.asarray(small)[None], "jpeg", 90))[0].astype(np.float32)

  for k in (3, 10, len(stored) - 1):
    on_screen = math.floor(k * 29.97 / 10)
    errors = {j: np.abs(stored[k] - stored_view(source[j])).mean()
              for j in range(max(0, on_screen - 2), min(len(source), on_screen + 3))}
    assert errors[on_screen] < 0.5, (k, errors)
    assert min(errors, key=errors.get) == on_screen
    # ... and far from the frame a copy by clip index would have taken.
    assert np.abs(stored[k] - stored_view(source[k])).mean() > 2 + errors[on_screen]


def test_training_clips_come_out_at_model_resolution(small_build):
  _, records = small_build
  config = fight_config.get_config().data
  rng = np.random.default_rng(0)
  for record in records["train"]:
    for train in (True, False):
      clip = pipeline.make_clip(record, config, train=train, rng=rng)
      assert clip["video"].shape == (8, 64, 64, 3) and clip["video"].dtype == np.uint8


def test_registered_and_configured():
  config = fight_config.get_config()
  builder = datasets.get_builder(config.data)
  assert isinstance(builder, sf.SurveillanceFight)
  assert builder.builder_config is sf.SurveillanceFight.builder_configs["source_split_128x96_10fps"]
  assert builder.release_dir == (pathlib.Path(__file__).parents[1] / ".." / "shared" / "data"
                                 / "real" / "surveillance_fight")
  assert config.model.vit.num_classes == len(sf.CLASS_NAMES) == 2
  assert datasets.class_names_of(config.data) == ["noFight", "fight"]


# ------------------------------------------------------------------------------ broken releases


def test_refuses_an_incomplete_release_by_default(release, tmp_path):
  small = _small_release(tmp_path, release, ["fight/fi133.mp4"])
  with pytest.raises(MissingManualDataError, match="300 clips, of which 299 are missing") as info:
    _build(small, tmp_path / "tfds")
  assert "allow_incomplete=True" in str(info.value) and sf.HOMEPAGE in str(info.value)


def test_missing_release_and_missing_source_list(release, tmp_path):
  with pytest.raises(MissingManualDataError, match="release not found") as info:
    _build(tmp_path / "nowhere", tmp_path / "tfds")
  assert str(tmp_path / "nowhere") in str(info.value) and "manual_dir" in str(info.value)
  small = _small_release(tmp_path, release, ["fight/fi133.mp4"])
  (small / "videos.txt").unlink()
  with pytest.raises(MissingManualDataError, match="source list not found.*split by source"):
    _build(small, tmp_path / "tfds", allow_incomplete=True)


def test_edited_source_list_is_refused(release, tmp_path):
  text = (release / "videos.txt").read_text()
  dropped = "".join(line for line in text.splitlines(keepends=True)
                    if not line.startswith("fi150"))
  small = _small_release(tmp_path / "a", release, ["fight/fi133.mp4"], videos_txt=dropped)
  with pytest.raises(ManualDataError, match="no source for 1 of the release's 300 clips \\(fi150\\)"):
    _build(small, tmp_path / "a" / "tfds", allow_incomplete=True)
  garbled = text.replace("fi001: 0.13.50 - 0.15.60", "fi001 0.13.50")
  small = _small_release(tmp_path / "b", release, ["fight/fi133.mp4"], videos_txt=garbled)
  with pytest.raises(ManualDataError, match="videos.txt, line 2: expected a source URL"):
    _build(small, tmp_path / "b" / "tfds", allow_incomplete=True)
  stranger = text.replace("fi001:", "fi151:")
  small = _small_release(tmp_path / "c", release, ["fight/fi133.mp4"], videos_txt=stranger)
  with pytest.raises(ManualDataError, match="fi151 is not a clip of the release"):
    _build(small, tmp_path / "c" / "tfds", allow_incomplete=True)


def test_truncated_clip_is_left_out_and_recorded(release, tmp_path):
  small = _small_release(tmp_path, release, ["fight/fi133.mp4"])
  (small / "noFight" / "nofi084.mp4").write_bytes(
      (release / "noFight" / "nofi084.mp4").read_bytes()[:20000])
  builder = _build(small, tmp_path / "tfds", allow_incomplete=True)
  assert [split.num_examples for split in builder.info.splits.values()] == [1]
  left_out = builder.info.metadata["left_out"]
  assert left_out["counts"] == {"missing": 298, "unreadable": 1}
  assert left_out["unreadable"][0]["file"] == "noFight/nofi084.mp4"
  assert "nofi084.mp4" in left_out["unreadable"][0]["reason"]


def test_bad_builder_settings_are_explained(tmp_path):
  with pytest.raises(ValueError, match="fps must be an integer in 1..10"):
    sf.make_builder(_data_config(tmp_path, fps=25), tmp_path)
  with pytest.raises(ValueError, match="height must be a positive even integer"):
    sf.make_builder(_data_config(tmp_path, height=95), tmp_path)
  config = _data_config(tmp_path)
  config.split = 2
  with pytest.raises(ValueError, match="one fixed split by source"):
    sf.make_builder(config, tmp_path)
  config = _data_config(tmp_path)
  config.builder_kwargs.short_side = 64
  with pytest.raises(ValueError, match="unknown surveillance_fight builder_kwargs \\['short_side'\\]"):
    sf.make_builder(config, tmp_path)


def test_classifier_on_differences_does_not_see_a_still_scene():
  """configs/surveillance_fight.py's ViT sees frame differences: two different still scenes look
  alike to it (a camera's look cannot be learnt), and moving content changes what it sees."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from stae_jax.models import vit as vit_lib  # pylint: disable=g-import-not-at-top
  config = fight_config.get_config()
  assert config.model.vit.inputs == "differences"
  vit = vit_lib.vit_from_config(config, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  scenes = rng.integers(0, 256, (2, 1, 64, 64, 3)).astype(np.float32)
  still = np.repeat(scenes, config.data.frames, axis=1)        # two different still scenes
  moving = still.copy()
  moving[1, 1::2] = 255 - moving[1, 1::2]                      # the second one flickers
  logits = np.asarray(vit(still))
  np.testing.assert_allclose(logits[0], logits[1], rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(vit(moving))[1] - logits[1]).max() > 1e-3
