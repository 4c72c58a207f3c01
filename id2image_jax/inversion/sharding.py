"""Placing inversion data on a 1-D device mesh over the target axis.

Every per-target array (latents, optimiser state, targets, loss history) has
the target axis first and is split across all devices along it with
``NamedSharding(mesh, P('targets'))``; model variables are replicated
(``P()``). Targets never interact, so the step needs no collective at all and
the same program runs on one GPU, eight GPUs or a TPU pod slice.

Multi-host (one process per host, e.g. a TPU pod or several GPU nodes):

1. call `initialize_distributed()` at program start, before anything else
   touches JAX (the CLI does it when the config says ``distributed=True``);
2. give every process the *same* full host arrays (the targets of a test set
   are small: N descriptors of a few KiB). `to_global` builds each global
   array with ``jax.make_array_from_callback``, so every process materialises
   only the shards of its own devices;
3. results come back with `to_host`, which all-gathers across processes
   (``multihost_utils.process_allgather``); every process then holds the same
   numpy arrays and only process 0 should write files.

This path cannot be exercised on a single machine; the single-process path
(including many devices on one host) is what the tests cover.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = 'targets'


def initialize_distributed(**kwargs) -> None:
  """Joins a multi-process JAX run; call once, before any other JAX call.

  Args:
    **kwargs: passed to ``jax.distributed.initialize`` (coordinator address,
      process count and id). On TPU pods and SLURM/Kubernetes GPU clusters
      JAX detects them and none are needed.
  """
  jax.distributed.initialize(**kwargs)


def make_mesh(*, devices=None) -> Mesh:
  """A 1-D mesh named ``'targets'`` over `devices` (default: all devices)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (AXIS,))


def target_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Split along the leading (target) axis; rank-0 arrays are replicated.

  The spec is always ``P('targets')`` (never padded with trailing ``None``):
  jit caches on sharding equality, and ``P('targets')`` and
  ``P('targets', None)`` compare unequal although they place data alike.
  """
  return NamedSharding(mesh, P(AXIS) if ndim else P())


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def constrain(tree: Any, mesh: Mesh | None) -> Any:
  """Pins every leaf inside a jitted function to its target sharding.

  Used on the step's outputs so that the state comes back with exactly the
  sharding it went in with: jit then never recompiles for a new layout, and
  donated buffers can be reused in place.
  """
  if mesh is None:
    return tree
  return jax.tree.map(
      lambda x: jax.lax.with_sharding_constraint(
          x, target_sharding(mesh, x.ndim)), tree)


def to_global(tree: Any, mesh: Mesh, *, replicate: bool = False) -> Any:
  """Host arrays (identical on every process) -> global sharded jax arrays.

  Args:
    tree: pytree of array-likes; per-target leaves have the target axis first
      and its length must be a multiple of the mesh size.
    mesh: the device mesh.
    replicate: if True every leaf is replicated (model variables).

  Returns:
    The same tree of ``jax.Array`` placed on `mesh`.
  """
  def sharding(x):
    return replicated(mesh) if replicate else target_sharding(mesh, x.ndim)

  if jax.process_count() == 1:
    # One process addresses every device: device_put moves data straight
    # from wherever it is (no host round trip for arrays already on device).
    return jax.tree.map(lambda x: jax.device_put(x, sharding(x)), tree)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding(x),
                                        lambda index: x[index])
  return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
  """Global jax arrays -> numpy on every process (all-gather if multi-host)."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree.map(get, tree)


def batch_sharding(batch_size: int) -> jax.sharding.Sharding | None:
  """Splits batches over all local devices (data parallel), if several.

  Returns:
    A ``NamedSharding`` over the leading axis, or None on one device or when
    `batch_size` does not divide evenly.
  """
  devices = jax.local_devices()
  if len(devices) < 2:
    return None
  if batch_size % len(devices):
    logging.warning('batch_size %d is not a multiple of the %d devices: '
                    'using one device', batch_size, len(devices))
    return None
  mesh = jax.sharding.Mesh(np.asarray(devices), ('batch',))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('batch'))
