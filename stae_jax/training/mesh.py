"""Devices: multi-process start-up, the (`data`, `model`) Mesh, parameter sharding, global batches.

One code path for 1 CPU, 8 fake CPU devices, a GPU and a TPU pod slice: `jax.jit` over a Mesh with
NamedShardings (no pmap). Each process reads its own shard of the data; its per-host batch becomes
one slice of a global array (`jax.make_array_from_process_local_data`), so no host ever holds the
global batch.
"""

from __future__ import annotations

import os
import re

from absl import logging
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from stae_jax.systems.loading import path_str

DATA_AXIS = "data"
MODEL_AXIS = "model"

_initialized = False


def maybe_initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                                 process_id: int | None = None) -> bool:
  """Calls `jax.distributed.initialize` when the run is multi-process; returns whether it did.

  Multi-process means explicit flags (coordinator, process count, id), or the environment a cluster
  sets (JAX_COORDINATOR_ADDRESS, SLURM, TPU pod metadata via STAE_DISTRIBUTED=1). Must run before
  anything touches a device.
  """
  global _initialized
  if _initialized:
    return True
  if coordinator_address or (num_processes and num_processes > 1):
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  elif os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("STAE_DISTRIBUTED") == "1" or (
      int(os.environ.get("SLURM_NTASKS", "1")) > 1):
    jax.distributed.initialize()  # addresses and ids from the environment
  else:
    return False
  _initialized = True
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def make_mesh(model_axis_size: int = 1) -> Mesh:
  """All devices as (`data`, `model`); `model_axis_size` devices share each parameter shard."""
  devices = jax.devices()
  n = len(devices)
  if model_axis_size < 1 or n % model_axis_size:
    raise ValueError(f"train.model_axis_size={model_axis_size} does not divide the {n} devices; "
                     f"choose a divisor of {n}.")
  grid = np.asarray(devices).reshape(n // model_axis_size, model_axis_size)
  return Mesh(grid, (DATA_AXIS, MODEL_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "data.batch_size") -> None:
  """The global batch must split evenly over the `data` axis and over the processes."""
  data_devices = mesh.shape[DATA_AXIS]
  if batch_size % data_devices:
    raise ValueError(
        f"{what}={batch_size} does not divide over the {data_devices} devices of the mesh's data axis; "
        f"use a multiple of {data_devices} (e.g. --config.{what}={max(data_devices, batch_size // data_devices * data_devices)}).")
  if batch_size % jax.process_count():
    raise ValueError(f"{what}={batch_size} does not divide over {jax.process_count()} processes.")


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_shardings(params, mesh: Mesh, rules=()):
  """NamedShardings for a parameter tree: the first (regex, spec) rule matching a path wins.

  `spec` is a tuple of mesh axis names / None per dimension, e.g. `(None, "model")` for a kernel
  split over its output features. Unmatched parameters are replicated. A rule whose axis does not
  divide the dimension is an error naming the parameter (silent replication would hide the mistake).
  """
  compiled = [(re.compile(rx), tuple(spec)) for rx, spec in rules]

  def one(path, leaf):
    name = path_str(path)
    shape = getattr(leaf, "shape", ())
    for rx, spec in compiled:
      if rx.search(name) and len(spec) == len(shape):
        for dim, axis in zip(shape, spec):
          if axis is not None and dim % mesh.shape[axis]:
            raise ValueError(f"sharding rule {rx.pattern!r} -> {spec}: {name} has shape {shape}; "
                             f"dimension {dim} does not divide over mesh axis {axis!r} "
                             f"({mesh.shape[axis]} devices).")
        return NamedSharding(mesh, P(*spec))
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(one, params)


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's slice of the batch -> global arrays sharded over `data` (no host copy of all)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}

