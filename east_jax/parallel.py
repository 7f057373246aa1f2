"""Device mesh and global-batch assembly for `shard_map` data parallelism.

All devices form a 1-D mesh with axis `data` (one device is a mesh of one). Model
state is replicated; each batch is split along its leading axis.
"""

import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from east_jax.errors import UserInputError

DATA_AXIS = "data"


def create_mesh(devices=None) -> Mesh:
  """A 1-D `data` mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Assembles this process's slice of a batch into global arrays split over `data`."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def initialize_distributed(config) -> bool:
  """Starts JAX's multi-process runtime when `config.distributed.initialize` or the
  environment (EAST_DISTRIBUTED=1) asks for it; call before anything touches a device.

  Empty fields are detected by JAX (TPU pods, SLURM, Open MPI). CPU processes reduce
  over gloo. Returns whether it initialised.
  """
  d = config.distributed
  if not (d.initialize or os.environ.get("EAST_DISTRIBUTED") == "1"):
    return False
  kwargs = {}
  if d.coordinator_address:
    kwargs["coordinator_address"] = d.coordinator_address
  if d.num_processes > 0:
    kwargs["num_processes"] = d.num_processes
  if d.process_id >= 0:
    kwargs["process_id"] = d.process_id
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**kwargs)
  except (ValueError, RuntimeError) as e:
    raise UserInputError(
        f"jax.distributed.initialize failed: {str(e).splitlines()[0][:300]}. Outside TPU pods, "
        "SLURM and Open MPI set config.distributed.coordinator_address, num_processes and "
        "process_id (the same address and count on every process).") from None
  return True
