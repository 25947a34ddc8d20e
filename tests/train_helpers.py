"""Shared by the training tests (also run as a script in subprocesses): a tiny config and an
in-memory synthetic_actions source, so tests use the real grain pipeline without building TFDS files.

  python tests/train_helpers.py WORKDIR [--steps N] [--devices N] [--process_id I --num_processes N
                                          --port P] [--stages classifier,...]
"""

from __future__ import annotations

import functools
import sys

import numpy as np

FRAMES, SIZE, NUM_TRAIN, NUM_TEST = 4, 16, 48, 16
STORED_FRAMES = 8  # the generator needs >= 5; the pipeline samples FRAMES of them


def tiny_config(steps: int = 6, systems=("stae",), stages=("classifier", "compressor", "joint"),
                batch_size: int = 8):
  from configs import synthetic  # pylint: disable=g-import-not-at-top
  from stae_jax.data import synthetic as synthetic_data  # pylint: disable=g-import-not-at-top
  c = synthetic.get_config(f"frames={FRAMES},size={SIZE}")
  c.data.batch_size = batch_size
  # The generator's symmetries (random flips, time reversal, circular shift) make five-step losses
  # noise-dominated; these tests are about the trainer (tests/test_pipeline.py tests them).
  c.data.update(dict(flip=False, vertical_flip=False, time_reverse=False, roll=False))
  c.data.eval_batch_size = 8
  # Frames in, not the default's motion inputs: the trainer does not depend on the classifier's
  # front end, and the motion graph's compile is most of a tiny stage's time (tests/test_vit.py and
  # tests/test_motion.py test the motion inputs).
  c.model.vit.update(dict(width=32, depth=1, num_heads=2, tubelet=2, patch=8,
                          num_classes=synthetic_data.NUM_CLASSES, inputs="frames", pool=1,
                          stem_channels=0))
  stae, deepisc = c.systems.stae, c.systems.deepisc
  # Both attentions and per-clip learned frames ("segments"), not the default's chosen frames
  # without spatial attention: every mask of the format (frames and blocks) goes through the
  # trainer, the bitstream and the server, and no stage starts with a frame search (tests of the
  # chosen rule: test_stae.py, test_systems.py, test_training.py).
  stae.model.stae.update(dict(transform_width=8, frame_widths=(4, 4, 4), spatial_widths=(4, 4),
                              keep_ratios=((0.5, 0.5), (1.0, 0.5)), frame_attention=True,
                              spatial_attention=True, frame_rule="segments"))
  del stae.model.stae["frames"]
  stae.model.decoder.update(dict(width=8, temporal_layers=1, spatial_layers=1))
  deepisc.model.deepisc.update(dict(width=32, encoder_depth=1, decoder_depth=1, num_heads=2,
                                    patch=8, max_tokens=4, channels=4, token_choices=(2, 4)))
  for name in c.stages:
    c.stages[name].steps = steps
    c.stages[name].warmup_steps = 0
    c.stages[name].lr = 3e-3
  # In five steps from a fresh Adam the joint stage's pixel terms are noise-dominated (quantisation
  # noise, random windows); weighting the task, which the now-trainable ViT lowers at once, makes
  # "loss falls" a test of the trainer rather than of the loss weights.
  for entry in (stae, deepisc):
    entry.stages.joint.loss.reconstruction = 1.0
  # The compressor starts near its pixel optimum (the block code is initialised to code each cell's
  # mean colour), so over five batches its pixel terms move by the noise of random windows while its
  # task and rate terms fall steadily: equal weights make "loss falls" visible there too.
  stae.stages.joint.loss.block_reconstruction = 0.0
  for entry in (stae, deepisc):
    entry.stages.compressor.loss.reconstruction = 1.0
  stae.stages.compressor.loss.block_reconstruction = 1.0
  c.train.update(dict(stage_order=tuple(stages), log_every=1, eval_every=0, eval_batches=1,
                      checkpoint_every=2, progress=False))
  c.systems = {k: v for k, v in c.systems.to_dict().items() if k in systems} if systems else c.systems
  return c


class MemorySource:
  """synthetic_actions records (PNG frames), generated once and kept in memory."""

  def __init__(self, split: str, n: int):
    self._name = f"MemorySource(split={split!r}, n={n}, frames={STORED_FRAMES}, size={SIZE})"
    from stae_jax.data import synthetic as synthetic_data  # pylint: disable=g-import-not-at-top
    from stae_jax.data.features import encode_frames  # pylint: disable=g-import-not-at-top
    self._records = []
    for i in range(n):
      clip, label, _ = synthetic_data.generate_clip(i, split, frames=STORED_FRAMES, size=SIZE)
      self._records.append({"frames": encode_frames(clip, "png"), "label": label})

  def __len__(self):
    return len(self._records)

  def __repr__(self):  # grain checks a restored iterator's source by its repr
    return self._name

  def __getitem__(self, index):
    return self._records[index]


@functools.cache
def _source(split):
  return MemorySource(split, NUM_TRAIN if split == "train" else NUM_TEST)


def memory_loader(data_config, split, *, seed, train, num_epochs=None):
  """"train", "test", or "validation", carved from the training records as `make_loader` carves
  it (here "train" keeps all its records, as the training tests were written for)."""
  from stae_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  source = pipeline.carve(_source("train"), split) if split == "validation" else _source(split)
  return pipeline.loader_from_source(source, data_config, seed=seed, train=train,
                                     num_epochs=num_epochs)


def final_params(stage_dir) -> dict[str, np.ndarray]:
  """{path: array} of the params in the newest checkpoint of a stage folder."""
  import pathlib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from stae_jax.systems.loading import path_str  # pylint: disable=g-import-not-at-top
  directory = pathlib.Path(stage_dir, "checkpoints").absolute()
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step()
  # A target on this process's first device, so checkpoints saved on 8 devices restore here.
  metadata = ocp.StandardCheckpointer().metadata(directory / str(step) / "state").item_metadata
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                                  metadata["params"])
  tree = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      {"params": target}, restore_args=ocp.checkpoint_utils.construct_restore_args({"params": target}),
      partial_restore=True)))["state"]
  return {path_str(p).removesuffix("/value"): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(tree["params"])[0]}


@functools.cache
def _small_source(split):
  return MemorySource(split, 16)


def small_loader(data_config, split, *, seed, train, num_epochs=None):
  """16 clips per split: a batch of 16 sees the whole training set, so its loss must fall."""
  from stae_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.loader_from_source(_small_source(split), data_config, seed=seed, train=train,
                                     num_epochs=num_epochs)


def main(argv):
  import argparse  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser()
  parser.add_argument("workdir")
  parser.add_argument("--steps", type=int, default=6)
  parser.add_argument("--devices", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=None)
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--port", type=int, default=None)
  parser.add_argument("--stages", default="classifier")
  parser.add_argument("--systems", default="stae")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--checkpoint_every", type=int, default=2)
  args = parser.parse_args(argv)
  if args.devices > 1:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_platforms", "cpu")
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  from stae_jax.training import mesh  # pylint: disable=g-import-not-at-top
  if args.num_processes:
    mesh.maybe_initialize_distributed(f"127.0.0.1:{args.port}", args.num_processes, args.process_id)
  from stae_jax.training import trainer  # pylint: disable=g-import-not-at-top
  config = tiny_config(args.steps, systems=tuple(args.systems.split(",")),
                       stages=tuple(args.stages.split(",")), batch_size=args.batch_size)
  config.train.checkpoint_every = args.checkpoint_every
  summaries = trainer.train_and_evaluate(config, args.workdir, loader_fn=memory_loader)
  print("SUMMARIES", summaries, flush=True)


if __name__ == "__main__":
  import pathlib  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # for `configs`
  main(sys.argv[1:])
