r"""UCF101 at the HMDB51 setting: 16 frames of 224x224, ViT-B/16 with 2x16x16 tubelets.

  python train.py --config=configs/ucf101.py
  python evaluate.py --config=configs/ucf101.py

Needs the official release extracted under `data/ucf101/` (`UCF-101/<Class>/<clip>.avi` and
`ucfTrainTestlist/`; see data/README.md) and an accelerator. Switches are those of
configs/hmdb51.py (`:split=2`, `:system=deepisc`, `:frame_attention=False`, ...).

The paper reports HMDB51 only; UCF101 is here for users who compare on both. Measured results go
into BENCHMARKS.md when a run is made.
"""

from configs import common
from configs import hmdb51


def get_config(arg=None):
  c = hmdb51.get_config(arg)
  c.name = "ucf101" + common.switches_suffix(arg)
  c.data.name = "ucf101"
  c.data.manual_dir = "data/ucf101"   # holds UCF-101/ and ucfTrainTestlist/
  return c
