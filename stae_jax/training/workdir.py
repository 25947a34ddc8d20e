"""What the trainer writes into a workdir's stage folders besides checkpoints: the stage record.

The workdir's layout and everything that reads a finished run back (stage records, checkpoints,
the classifier, the systems and their tables) is `stae_jax.systems.loading`, which evaluation,
serving and the single-clip tools share; this module holds only the trainer's side.
"""

from __future__ import annotations


def stage_record(config, stage: dict, tag: str | None) -> dict:
  """What a stage folder records (its config.json, read back by `loading.read_record`), and what
  makes two runs of it the same: the classifier depends on the seed, the data, the ViT and its
  stage; a system's stage also on the system's own entry (`config.systems.<tag>`: method, model
  sections). Nothing of another system is recorded, so changing one system never invalidates
  another's finished stages."""
  full = config.to_dict()
  record = dict(seed=full["seed"], data=full["data"], model=dict(vit=full["model"]["vit"]),
                stage=stage)
  if tag is not None:
    entry = dict(full["systems"][tag])
    entry.pop("stages", None)  # merged into `stage` already
    record.update(system_tag=tag, system=entry)
  return record
