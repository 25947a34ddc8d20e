r"""HMDB51 at the paper's setting: 16 frames of 224x224, ViT-B/16 with 2x16x16 tubelets.

  python train.py --config=configs/hmdb51.py
  python evaluate.py --config=configs/hmdb51.py

Needs the official release extracted under `data/hmdb51/` (`<class>/<clip>.avi` and
`testTrainMulti_7030_splits/`; see data/README.md) and an accelerator. Switches:
`configs/hmdb51.py:split=2,frames=16`, `:system=deepisc`, `:frame_attention=False`.

Target (arXiv 2305.12796): 104x compression at <= 5 points of accuracy loss; the H.264 curve this
must beat is in ../shared/DESIGN.md. Measured results go into BENCHMARKS.md when a run is made.
"""

from configs import common
import ml_collections


def get_config(arg=None):
  a = common.parse_arg(
      arg,
      system="stae",
      frame_attention=True,
      spatial_attention=True,
      split=1,
      frames=16,
      stride=2,
      size=224,
      seed=0,
  )
  c = ml_collections.ConfigDict()
  c.name = "hmdb51" + common.switches_suffix(arg)
  c.seed = a.seed
  c.system = a.system

  c.data = ml_collections.ConfigDict(dict(
      name="hmdb51",
      builder_kwargs=dict(short_side=256),  # frames stored with this short side, JPEG
      data_dir="data/tfds",
      manual_dir="data/hmdb51",   # the extracted official release
      split=a.split,              # 1, 2 or 3 (testTrainMulti_7030_splits)
      frames=a.frames,
      stride=a.stride,
      resolution=a.size,
      train_sampling="random",
      eval_sampling="uniform",
      min_crop_scale=0.4,
      flip=True,
      batch_size=64,
      eval_batch_size=64,
      workers=8,
      prefetch=4,
  ))

  # Models (stae_jax/models): one sub-config per module.
  c.model = ml_collections.ConfigDict()
  return c
