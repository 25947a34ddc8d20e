"""grain input pipelines: built TFDS records -> batches of uint8 clips at model resolution.

    loader = make_loader(config.data, "train", seed=config.seed, train=True)
    for batch in loader:   # {"video": uint8[B,T,H,W,3], "label": int32[B]}
      ...

One clip is made from one record in three steps, all on the host and all in uint8:
- temporal sampling (`temporal_indices`): T = `frames` indices `stride` apart, a random window for
  training, the centre window for evaluation. Only those frames are decoded.
- spatial view (`crop_box`): training takes a random resized crop whose area is a fraction in
  [min_crop_scale, 1] of the largest centred square, with a modest aspect jitter (3/4 to 4/3),
  or with min_crop_scale 1 the evaluation view (no resampling); evaluation takes the centred
  square, which is "resize the short side, then centre crop". The crop is resized to resolution x
  resolution, and is the same for every frame of a clip (motion is the signal; a per-frame crop
  would add motion that is not in the video).
- optional horizontal flip of the whole clip (training only, `flip`).
- optional symmetries of a generated world, training only, each with probability 1/2 and a label
  permutation saying which class the transformed clip belongs to (`*_labels`; empty keeps the
  label): `flip` (+ `flip_labels`), `vertical_flip` (+ `vertical_flip_labels`), `time_reverse`
  (+ `time_reverse_labels`), and `roll`, a random circular shift of every frame by the same offset
  (valid only where the scene lives on a torus, as synthetic_actions does). On synthetic_actions
  these give one stored clip 8 x H x W views that are all valid clips of the generator's
  distribution, so a short training run cannot memorise clips and must learn the motion.

Randomness comes only from the per-record generator grain hands a `RandomMap` (seeded from the
loader seed and the record's position in the stream), so the same seed gives the same batches, and
a restored iterator state continues with the same batches. With `workers` > 0 each worker batches
every workers-th record, so a different worker count gives the same clips grouped differently.

Splits: "test" is the dataset's test split; "validation" is carved from its training split
(`VALIDATION_RULE`: every `VALIDATION_EVERY`-th stored record, a fixed rule, so every method, seed
and run sees the same clips) and "train" is the rest of it. A dataset whose builder stores its own
validation split (the surveillance_fight folds: whole source groups, `validation_rule`) is read as
stored instead: "train", "validation" and "test" are its three splits, nothing carved. Nothing
trains on the validation clips; evaluation chooses on them whatever it chooses from results
(envelopes, policies), so the test clips only score. (On HMDB51/UCF101 several clips come from one
source video, and the rule does not keep those together: a validation clip may share a source
video with training clips, which makes validation accuracies a little optimistic, for every method
alike.) A stored training split of fewer than VALIDATION_EVERY clips (a sample such as the two
real HMDB51 clips) has no validation clips: asking for them is an error naming the fix (evaluate.py
--validation_clips=0).

Sharding: each JAX process reads its own part of the split (`grain.sharding.ShardByJaxProcess`).
Training shards drop the remainder so every process has the same number of clips per epoch.
Evaluation must count every clip exactly once, and every process must run the same number of steps
(each step is a collective), so each process's contiguous part is padded up to the same whole
number of batches (of every worker) by repeating its last clip, and batches carry `mask: bool[B]`,
False on padding.
"""

from __future__ import annotations

import math

import grain
import ml_collections
import numpy as np
from PIL import Image

from stae_jax.data import datasets
from stae_jax.data.features import decode_frames

SAMPLINGS = ("random", "uniform")
SPLITS = ("train", "validation", "test")
#: Every VALIDATION_EVERY-th record of the stored training split (positions 9, 19, ...) is held out.
VALIDATION_EVERY = 10
VALIDATION_RULE = (f"every {VALIDATION_EVERY}th clip of the stored training split (positions "
                   f"{VALIDATION_EVERY - 1}, {2 * VALIDATION_EVERY - 1}, ...), held out of training")
#: Records read ahead by background threads, per worker. A record holds every frame of its video
#: (an HMDB51 clip is ~5 MB of JPEGs, of which a clip uses 16 frames), so grain's default (500
#: records) would hold gigabytes per worker; reading a record takes a fraction of the time making
#: a clip from it does, so a few records ahead keep the decoding busy.
READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=16)
#: Aspect-ratio range of the training crop (width / height); log-uniform, modest on purpose.
CROP_ASPECT_RANGE = (3 / 4, 4 / 3)


def temporal_indices(num_frames: int, frames: int, stride: int, sampling: str,
                     rng: np.random.Generator | None = None) -> np.ndarray:
  """Indices of the `frames` frames to take from a clip of `num_frames`: int64[frames].

  "random" places the window of (frames - 1) * stride + 1 frames anywhere in the clip (needs
  `rng`); "uniform" centres it. A clip shorter than the window first gets the largest stride that
  fits (the whole action at a faster pace beats a frozen tail), and if even stride 1 does not fit,
  its last frame is repeated. A clip is never rejected for being short.
  """
  if sampling not in SAMPLINGS:
    raise ValueError(f"temporal sampling {sampling!r} is not one of {SAMPLINGS}; set "
                     "config.data.train_sampling / eval_sampling to one of them.")
  if num_frames < 1:
    raise ValueError("cannot sample frames from a clip with no frames; rebuild the dataset "
                     "(its builder must skip unreadable videos).")
  if frames < 1 or stride < 1:
    raise ValueError(f"config.data.frames ({frames}) and stride ({stride}) must be >= 1.")
  if frames > 1 and (frames - 1) * stride + 1 > num_frames:
    stride = max(1, (num_frames - 1) // (frames - 1))
  slack = max(num_frames - ((frames - 1) * stride + 1), 0)
  if sampling == "random":
    if rng is None:
      raise ValueError("random temporal sampling needs a random generator.")
    start = int(rng.integers(0, slack + 1))
  else:
    start = slack // 2
  return np.minimum(start + stride * np.arange(frames), num_frames - 1)


def crop_box(height: int, width: int, *, min_crop_scale: float = 1.0,
             rng: np.random.Generator | None = None) -> tuple[float, float, float, float]:
  """(left, top, right, bottom) of the crop to take from a height x width frame.

  Without `rng`: the centred square of side min(height, width). With `rng`: a random resized crop
  of area scale * side**2, scale uniform in [min_crop_scale, 1] and aspect log-uniform in
  CROP_ASPECT_RANGE, at a uniform position. The area is relative to the centred square rather
  than the whole frame so that a wide frame (HMDB51 is 4:3 and wider) does not make crops that
  cannot fit, and so that scale 1 at aspect 1 shows exactly as much as the evaluation view.

  min_crop_scale 1 means no random resized crop: training takes the evaluation view and draws
  nothing. An aspect jitter alone would stretch and bilinearly resample every training frame,
  smoothing its noise and edges, while test frames stay sharp (it cost synthetic_actions' motion
  classifier 28 points in one class pair: BENCHMARKS.md "Classifier controls").
  """
  side = min(height, width)
  if not 0 < min_crop_scale <= 1:
    raise ValueError(f"config.data.min_crop_scale={min_crop_scale} must be in (0, 1].")
  if rng is None or min_crop_scale == 1:
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side
  area = rng.uniform(min_crop_scale, 1.0) * side * side
  aspect = math.exp(rng.uniform(*np.log(CROP_ASPECT_RANGE)))
  crop_w = min(width, math.sqrt(area * aspect))
  crop_h = min(height, math.sqrt(area / aspect))
  left = rng.uniform(0, width - crop_w)
  top = rng.uniform(0, height - crop_h)
  return left, top, left + crop_w, top + crop_h


def make_clip(record: dict, data_config: ml_collections.ConfigDict, *, train: bool,
              rng: np.random.Generator | None = None) -> dict:
  """One stored record -> {"video": uint8[T,R,R,3], "label": int32}, R = data_config.resolution.

  Training uses `rng` for the window, the crop and the flip; evaluation is deterministic.
  """
  encoded = record["frames"]
  sampling = data_config.train_sampling if train else data_config.eval_sampling
  if not train and sampling == "random":
    raise ValueError("config.data.eval_sampling='random' would make evaluation depend on the "
                     "seed; set it to 'uniform'.")
  indices = temporal_indices(len(encoded), data_config.frames, data_config.stride, sampling, rng)
  # Repeated indices (short clips) are decoded and resized once.
  unique, inverse = np.unique(indices, return_inverse=True)
  decoded = decode_frames(encoded, unique.tolist())
  height, width = decoded.shape[1:3]
  box = crop_box(height, width, min_crop_scale=data_config.min_crop_scale,
                 rng=rng if train else None)
  size = (data_config.resolution, data_config.resolution)
  resized = np.stack([
      np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR, box=box))
      for frame in decoded])
  video = resized if len(unique) == len(indices) else resized[inverse]
  label = int(record["label"])
  if train and data_config.flip and rng.random() < 0.5:
    video = video[:, :, ::-1]   # a view: batching copies it once, into the batch
    label = _mapped(data_config, "flip_labels", label)
  if train:
    video, label = _symmetries(video, label, data_config, rng)
  return {"video": video, "label": np.int32(label)}


def _mapped(data_config: ml_collections.ConfigDict, key: str, label: int) -> int:
  """The label of a transformed clip: `data_config[key][label]`, or `label` if the map is empty."""
  mapping = tuple(data_config.get(key) or ())
  if not mapping:
    return label
  if label >= len(mapping):
    raise ValueError(f"config.data.{key} has {len(mapping)} entries; label {label} needs one "
                     "(a permutation of every class).")
  return int(mapping[label])


def _symmetries(video: np.ndarray, label: int, data_config: ml_collections.ConfigDict,
                rng: np.random.Generator) -> tuple[np.ndarray, int]:
  """vertical_flip, time_reverse and roll (module docstring); nothing is drawn for those off."""
  if data_config.get("vertical_flip", False) and rng.random() < 0.5:
    video = video[:, ::-1]
    label = _mapped(data_config, "vertical_flip_labels", label)
  if data_config.get("time_reverse", False) and rng.random() < 0.5:
    video = video[::-1]
    label = _mapped(data_config, "time_reverse_labels", label)
  if data_config.get("roll", False):
    height, width = video.shape[1:3]
    video = np.roll(video, (int(rng.integers(height)), int(rng.integers(width))), axis=(1, 2))
  return video, label


class _TrainClip(grain.transforms.RandomMap):
  """Random window, random resized crop and optional flip, from grain's per-record generator."""

  def __init__(self, data_config: ml_collections.ConfigDict):
    self._data_config = data_config

  def random_map(self, element, rng: np.random.Generator):
    return make_clip(element, self._data_config, train=True, rng=rng)


class _EvalClip(grain.transforms.Map):
  """Centre window and centre crop; keeps the padding mask of `_PaddedShard`."""

  def __init__(self, data_config: ml_collections.ConfigDict):
    self._data_config = data_config

  def map(self, element):
    clip = make_clip(element, self._data_config, train=False)
    clip["mask"] = np.bool_(element["mask"])
    return clip


class _PaddedShard(grain.sources.RandomAccessDataSource):
  """Records [start, stop) of `source`, then copies of the last one up to `length`, with a mask.

  Evaluation padding: every process gets the same `length`, a whole number of batches.
  """

  def __init__(self, source, start: int, stop: int, length: int):
    self._source, self._start, self._count, self._length = source, start, stop - start, length

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self._length:
      raise IndexError(f"index {index} out of range for a padded shard of {self._length}")
    # An empty shard (fewer clips than processes) pads with clip 0; all of it is masked out.
    position = self._start + min(index, self._count - 1) if self._count else 0
    return {**self._source[position], "mask": index < self._count}


class _Records(grain.sources.RandomAccessDataSource):
  """The records of `source` at `positions`, in that order."""

  def __init__(self, source, positions):
    self._source, self._positions = source, list(positions)

  def __len__(self) -> int:
    return len(self._positions)

  def __getitem__(self, index: int) -> dict:
    return self._source[self._positions[index]]

  def __repr__(self) -> str:
    return f"_Records({self._source!r}, {len(self._positions)} records)"


def carve(train_source, split: str):
  """The "train" or "validation" records of a dataset's stored training split (`VALIDATION_RULE`):
  validation every VALIDATION_EVERY-th record, train the others."""
  held_out = VALIDATION_EVERY - 1
  if split == "validation":
    positions = range(held_out, len(train_source), VALIDATION_EVERY)
  elif split == "train":
    positions = (i for i in range(len(train_source)) if i % VALIDATION_EVERY != held_out)
  else:
    raise ValueError(f"carve takes split 'train' or 'validation', got {split!r}")
  return _Records(train_source, positions)


def _shard_options(shard: bool | grain.sharding.ShardOptions, *, train: bool):
  if isinstance(shard, grain.sharding.ShardOptions):
    return shard
  if shard:
    return grain.sharding.ShardByJaxProcess(drop_remainder=train)
  return grain.sharding.NoSharding()


def eval_shard_bounds(num_records: int, batch_size: int,
                      shard_options: grain.sharding.ShardOptions,
                      workers: int = 0) -> tuple[int, int, int]:
  """(start, stop, padded length) of one process's part of an evaluation split.

  Parts are contiguous and differ by at most one clip; all are padded to the same length, a
  multiple of batch_size * workers: grain's workers each batch every workers-th record, so only
  then is every worker's last batch full (a partial batch would change shapes and recompile).
  """
  index, count = shard_options.shard_index, shard_options.shard_count
  base, remainder = divmod(num_records, count)
  start = index * base + min(index, remainder)
  stop = start + base + (index < remainder)
  per_shard = base + (remainder > 0)
  round_size = batch_size * max(workers, 1)
  return start, stop, -(-per_shard // round_size) * round_size


def loader_from_source(source, data_config: ml_collections.ConfigDict, *, seed: int, train: bool,
                       num_epochs: int | None = None,
                       shard: bool | grain.sharding.ShardOptions = True) -> grain.DataLoader:
  """The loader of `make_loader` over any random-access source of records (e.g. a test's)."""
  options = _shard_options(shard, train=train)
  if train:
    sampler = grain.samplers.IndexSampler(
        len(source), shard_options=options, shuffle=True, num_epochs=num_epochs, seed=seed)
    operations = [_TrainClip(data_config),
                  grain.transforms.Batch(data_config.batch_size, drop_remainder=True)]
  else:
    start, stop, length = eval_shard_bounds(
        len(source), data_config.eval_batch_size, options, data_config.workers)
    source = _PaddedShard(source, start, stop, length)
    # The source is this process's part already: the sampler and the loader see no sharding.
    options = grain.sharding.NoSharding()
    sampler = grain.samplers.IndexSampler(
        length, shard_options=options, shuffle=False, num_epochs=num_epochs, seed=seed)
    operations = [_EvalClip(data_config),
                  grain.transforms.Batch(data_config.eval_batch_size, drop_remainder=False)]
  return grain.DataLoader(
      data_source=source, sampler=sampler, operations=operations, shard_options=options,
      worker_count=data_config.workers, worker_buffer_size=data_config.prefetch,
      read_options=READ_OPTIONS)


def validation_rule(data_config: ml_collections.ConfigDict) -> str:
  """How the "validation" split of `data_config` is chosen: the dataset's own stored validation
  split's rule, else VALIDATION_RULE (carved)."""
  return datasets.stored_validation_rule(data_config) or VALIDATION_RULE


def split_source(stored_source, split: str, *, stored_validation: bool = False):
  """The records of `split`, from `stored_source(name)`, the dataset's stored split of that name:
  "test" as stored, "train" and "validation" carved from the stored training split, or, with
  `stored_validation` (the dataset stores a validation split), all three as stored."""
  if split not in SPLITS:
    raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}; the validation clips are "
                     "carved from the training split (data/pipeline.py VALIDATION_RULE), or "
                     "stored by the dataset.")
  if split == "test" or stored_validation:
    return stored_source(split)
  stored = stored_source("train")
  records = carve(stored, split)
  if not len(records):
    if split == "validation":
      raise ValueError(
          f"the validation split is empty: it is {VALIDATION_RULE}, and the stored training split "
          f"has {len(stored)} clip(s), fewer than {VALIDATION_EVERY}. Evaluate with "
          "--validation_clips=0 (EvalOptions.validation_clips=0: envelopes and policies are then "
          "chosen on the test clips, and the report says so), or build more of the dataset.")
    raise ValueError("the training split is empty: the dataset stores no training clips; check "
                     "config.data and rebuild the dataset.")
  return records


def make_loader(data_config: ml_collections.ConfigDict, split: str, *, seed: int, train: bool,
                num_epochs: int | None = None,
                shard: bool | grain.sharding.ShardOptions = True) -> grain.DataLoader:
  """A grain DataLoader of `split` ("train", "validation" or "test": see the module docstring) of
  the dataset `data_config` names.

  Batches are {"video": uint8[B,T,R,R,3], "label": int32[B]}, plus "mask": bool[B] when not
  `train` (False on the padding that completes the last batch; see the module docstring).
  Training batches are shuffled anew each epoch and may span an epoch boundary (only a finite
  stream's last partial batch is dropped); evaluation keeps the stored order.
  `num_epochs=None` repeats forever (pass 1 for one evaluation pass). `shard`: True splits the data
  across JAX processes, False reads all of it, or pass explicit `grain.sharding.ShardOptions`.
  The loader's iterator has `get_state()`/`set_state()` for checkpointing. The dataset is built
  first if it is not yet (single process only: several processes must not write it at once).
  """
  import jax  # pylint: disable=g-import-not-at-top  (only to know the process count)


  if jax.process_count() == 1:
    builder = datasets.ensure_built(data_config)
  else:
    builder = datasets.get_builder(data_config)
    if not builder.is_prepared():
      raise FileNotFoundError(
          f"dataset {data_config.name!r} is not built under {builder.data_dir}; build it once "
          "before a multi-process run: python -m stae_jax.data.build --config=<config>.")
  source = split_source(lambda stored: builder.as_data_source(split=stored), split,
                        stored_validation=datasets.stored_validation_rule(data_config) is not None)
  return loader_from_source(source, data_config, seed=seed, train=train, num_epochs=num_epochs,
                            shard=shard)
