r"""Converts a Hugging Face VideoMAE folder into a finished stage the trainer can start from.

    python -m stae_jax.training.import_videomae --src=weights/videomae-base-finetuned-kinetics \
      --out=weights/videomae-base-hmdb51 --num_classes=51

The weight mapping itself is `stae_jax.models.videomae_import` (safetensors -> `VideoViT`); this
module adds what belongs to training: the trainer's checkpoint layout and the command line.

Output, a folder the trainer reads as it reads an earlier stage:
    OUT/checkpoints/0/{state,meta}                Orbax, written by stae_jax.training.checkpoint;
                                                  state = {"step", "params": {"vit": ...}, "rest"},
                                                  meta = {"done": True, "parameters": {...}, ...}
    OUT/vit_config.json                           the `config.model.vit` keys that match the weights
    OUT/import_report.json                        what was loaded, initialised fresh, or left unused
Train from it with
    python train.py --config=configs/hmdb51.py \
      --config.stages.classifier.init_from=/abs/OUT --config.stages.classifier.init_params='^vit/' \
      <the --config.model.vit.* flags the converter prints>
(`init_params='^vit/'` because the converted checkpoint holds only the ViT; the trainer refuses a
regex that matches parameters the source lacks.)
"""

from __future__ import annotations

import json
import pathlib
from typing import Sequence

from absl import app
from absl import flags
from flax import nnx
import jax.numpy as jnp

from stae_jax.models import videomae_import as vi
from stae_jax.models import vit as vit_lib
from stae_jax.training import checkpoint as ckpt_lib
from stae_jax.training import state as state_lib


def save_for_trainer(model: vit_lib.VideoViT, report: vi.ImportReport,
                     out: str | pathlib.Path) -> pathlib.Path:
  """Writes `model` as a finished stage the trainer can `init_from` (layout in the module doc).

  The state is built exactly as the trainer builds its own (`nnx.Dict(vit=...)` split into params
  and rest) and saved with the trainer's checkpoint code, so `init_from=OUT` with
  `init_params='^vit/'` reads it through the same partial restore as an earlier stage.
  """
  out = pathlib.Path(out).absolute()
  checkpoints = out / "checkpoints"
  if checkpoints.exists() and any(checkpoints.iterdir()):
    raise vi.VideoMAEImportError(f"{checkpoints} already holds a checkpoint; pass an empty --out "
                                 "or delete that folder.")
  _, params, rest = state_lib.split_models(nnx.Dict(vit=model))
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "rest": rest}
  meta = dict(stage="videomae_import", system=None, step=0, steps=0, done=True,
              parameters=state_lib.parameter_index(state), source=report.source,
              architecture=report.architecture, vit_config=report.vit_config)
  manager = ckpt_lib.make_manager(checkpoints, keep=1, asynchronous=False)
  ckpt_lib.save(manager, 0, state, None, meta)
  manager.wait_until_finished()
  manager.close()
  (out / "vit_config.json").write_text(json.dumps(report.vit_config, indent=2, sort_keys=True))
  (out / "import_report.json").write_text(json.dumps(report.to_json(), indent=2, sort_keys=True))
  return out


def config_flags_for(vit_config: dict, out: str | pathlib.Path) -> list[str]:
  """The train.py flags that make a config's classifier stage start from a converted folder."""
  keys = ("width", "depth", "num_heads", "mlp_dim", "tubelet", "patch", "num_classes",
          "layer_norm_eps", "inputs", "pool", "stem_channels")
  flags_ = [f"--config.model.vit.{k}={vit_config[k]}" for k in keys]
  return flags_ + [f"--config.stages.classifier.init_from={pathlib.Path(out).absolute()}",
                   "--config.stages.classifier.init_params=^vit/"]


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _SRC.value or not _OUT.value:
    raise app.UsageError("--src (a Hugging Face VideoMAE folder) and --out are required.")
  model, report = vi.load_videomae(_SRC.value, num_classes=_NUM_CLASSES.value, seed=_SEED.value)
  out = save_for_trainer(model, report, _OUT.value)
  print(report.summary())
  print(f"wrote {out}/checkpoints (Orbax), vit_config.json, import_report.json. Train with:")
  print("  python train.py --config=configs/hmdb51.py \\\n    "
        + " \\\n    ".join(config_flags_for(report.vit_config, out)))


def define_flags() -> None:
  """The converter's flags, defined only when it runs as a program (the library defines none)."""
  global _SRC, _OUT, _NUM_CLASSES, _SEED
  _SRC = flags.DEFINE_string("src", None, "Hugging Face VideoMAE folder (config.json, model.safetensors).")
  _OUT = flags.DEFINE_string("out", None, "Folder to write the Orbax checkpoint into (empty or new).")
  _NUM_CLASSES = flags.DEFINE_integer(
      "num_classes", None, "Head size; default: the checkpoint's. Another number replaces the head.")
  _SEED = flags.DEFINE_integer("seed", 0, "Seed of a freshly initialised head.")


if __name__ == "__main__":
  define_flags()
  app.run(main)
