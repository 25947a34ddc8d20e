r"""Trains every stage of every configured system: classifier, then compressor, then joint.

  python train.py --config=configs/synthetic.py
  python train.py --config=configs/synthetic.py:system=deepisc --config.stages.joint.steps=50

--workdir defaults to runs/<config.name>; running the same command again resumes where it stopped.
Multi-process (one process per host): pass --coordinator_address, --num_processes, --process_id,
or let the environment (JAX_COORDINATOR_ADDRESS, SLURM, TPU pods with STAE_DISTRIBUTED=1) say so.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from stae_jax import REPO_ROOT

_CONFIG = config_flags.DEFINE_config_file("config", str(REPO_ROOT / "configs" / "synthetic.py"),
                                          "Experiment config (file.py:switches).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go; default runs/<config.name>.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")


def main(argv):
  from stae_jax.library_logs import quiet_library_logs  # pylint: disable=g-import-not-at-top
  quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from stae_jax.training import mesh  # pylint: disable=g-import-not-at-top
  mesh.maybe_initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from stae_jax.training import trainer  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  from stae_jax.systems import loading  # pylint: disable=g-import-not-at-top
  workdir = loading.resolve(_WORKDIR.value, config)
  logging.info("workdir: %s", workdir)
  for summary in trainer.train_and_evaluate(config, workdir):
    logging.info("stage done: %s", summary)


if __name__ == "__main__":
  app.run(main)
