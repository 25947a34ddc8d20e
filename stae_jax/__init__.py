"""stae-jax: spatiotemporal attention-based semantic video compression for edge action recognition."""

import pathlib

__version__ = "0.1.0"

#: The repository root (configs' relative paths such as `data/tfds` resolve against it).
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
