"""Device mesh and global-batch assembly for `shard_map` data parallelism.

All devices form a 1-D mesh with axis `data` (one device is a mesh of one). Model
state is replicated; each batch is split along its leading axis.
"""

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

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
