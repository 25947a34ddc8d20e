"""Quieter library logs for the command-line tools: every entry script calls `quiet_library_logs()`
once in its `main` (train.py, evaluate.py, serve.py, client.py, compress.py, decompress.py)."""

from __future__ import annotations


class _LibraryInfoFilter:
  """Drops INFO records from Orbax, TFDS, grain and JAX's backend probe ("Unable to initialize
  backend 'tpu'" on every CPU start): dozens of lines per checkpoint or dataset load drown the
  progress bar and the project's own messages (compress.py printed ~53 per call). Warnings and
  errors still pass, except Orbax's "Given directory is read only", which every reader of a
  finished workdir triggers on purpose (the tools open checkpoints read-only)."""

  _NOISY = ("/orbax/", "/tensorflow_datasets/", "/grain/", "/jax/_src/xla_bridge.py")
  _EXPECTED = (("/orbax/", "Given directory is read only"),)

  def filter(self, record) -> bool:
    if record.levelno > 20:  # above INFO
      return not any(part in record.pathname and str(record.msg).startswith(message)
                     for part, message in self._EXPECTED)
    return not any(part in record.pathname for part in self._NOISY)


def quiet_library_logs() -> None:
  """Installs `_LibraryInfoFilter` on absl's handler (idempotent); call once in a `main`."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _LibraryInfoFilter) for f in handler.filters):
    handler.addFilter(_LibraryInfoFilter())
