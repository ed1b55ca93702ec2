"""Seeds spread over devices: a 1-D 'seeds' mesh, data replicated.

The program itself is unchanged: once its key argument is sharded along the
seed axis, XLA's sharding propagation partitions the vmapped run, and each
device runs its own seeds (a test checks the outputs' sharding and that the
results equal the unsharded run).
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def seed_device_count(num_seeds: int, available: int) -> int:
  """The most devices, at most `available`, that split the seeds evenly."""
  return max(d for d in range(1, available + 1) if num_seeds % d == 0)


def seed_mesh(num_seeds: int,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D 'seeds' mesh over `seed_device_count` of the (local) devices."""
  devices = list(devices if devices is not None else jax.local_devices())
  count = seed_device_count(num_seeds, len(devices))
  return Mesh(np.array(devices[:count]), ("seeds",))


def place(mesh: Mesh, keys: jax.Array, data, hparams):
  """Puts keys sharded along the seed axis and data and hparams replicated."""
  replicated = NamedSharding(mesh, PartitionSpec())
  return (jax.device_put(keys, NamedSharding(mesh, PartitionSpec("seeds"))),
          jax.device_put(data, replicated), jax.device_put(hparams, replicated))
