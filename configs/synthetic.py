r"""The embedded default: a procedurally generated action dataset, small models, minutes on a CPU.

  python train.py --config=configs/synthetic.py
  python evaluate.py --config=configs/synthetic.py

`synthetic_actions` stands in for HMDB51 on two CPU cores: classes are defined by motion, the action
fills only part of the clip, and the actor is small against a textured, moving background with
distractors (see stae_jax/data/synthetic.py). Switches: `configs/synthetic.py:system=deepisc`,
`:frame_attention=False`, `:spatial_attention=False`, `:size=64,frames=16`.

Results on two CPU cores are recorded in BENCHMARKS.md once the trainer lands (issue: training).
"""

from configs import common
import ml_collections


def get_config(arg=None):
  a = common.parse_arg(
      arg,
      system="stae",
      frame_attention=True,
      spatial_attention=True,
      frames=16,
      size=64,
      num_train=3000,
      num_test=600,
      seed=0,
  )
  c = ml_collections.ConfigDict()
  c.name = "synthetic" + common.switches_suffix(arg)
  c.seed = a.seed
  c.system = a.system

  c.data = ml_collections.ConfigDict(dict(
      name="synthetic_actions",
      # Everything a builder needs to (re)generate the dataset; part of the TFDS config name.
      builder_kwargs=dict(
          num_train=a.num_train, num_test=a.num_test, frames=a.frames, size=a.size, seed=a.seed),
      data_dir="data/tfds",       # built ArrayRecord datasets (relative to the repository root)
      manual_dir="",              # synthetic data needs no downloads
      split=1,                    # official split number (HMDB51/UCF101); ignored here
      frames=a.frames,            # T: frames per sampled clip
      stride=1,                   # temporal stride between sampled frames
      resolution=a.size,          # H = W of the clip the model sees
      train_sampling="random",    # random window of T*stride frames
      eval_sampling="uniform",    # centre window for evaluation
      min_crop_scale=0.85,        # random resized crop area range for training
      flip=False,                 # horizontal flip would swap left/right classes: off here
      batch_size=32,
      eval_batch_size=64,
      workers=0,                  # grain worker processes (0: in-process)
      prefetch=2,
  ))

  # Models (stae_jax/models): one sub-config per module.
  c.model = ml_collections.ConfigDict()
  return c
