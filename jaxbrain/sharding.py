"""Data-parallel meshes and batch placement: one code path for 1 CPU, fake CPU devices, GPUs and TPU hosts.

A mesh has a single ``data`` axis over every device (explicit axis type). A global batch is split along
its first axis across that axis; each process loads only the rows its own devices hold
(:func:`process_rows`) and :func:`global_batch` assembles the global ``jax.Array`` from those local rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None, axis: str = DATA_AXIS) -> jax.sharding.Mesh:
    """A one-axis mesh (explicit axis type) over ``devices`` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("data_mesh: no devices given")
    return jax.make_mesh((len(devices),), (axis,), axis_types=(AxisType.Explicit,), devices=devices)


def data_size(mesh: jax.sharding.Mesh, axis: str = DATA_AXIS) -> int:
    """Number of devices along the data axis of ``mesh``."""
    if axis not in mesh.shape:
        raise ValueError(f"mesh has no axis {axis!r}; its axes are {tuple(mesh.shape)}")
    return int(mesh.shape[axis])


def padded_size(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``n``."""
    if multiple < 1:
        raise ValueError(f"padded_size: multiple must be >= 1, got {multiple}")
    return -(-int(n) // multiple) * multiple


def pad_to_multiple(x: np.ndarray, multiple: int, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``x`` zero-padded along ``axis`` to a multiple of ``multiple``, and the boolean mask of real rows."""
    n = x.shape[axis]
    target = padded_size(n, multiple)
    mask = np.arange(target) < n
    if target == n:
        return x, mask
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, target - n)
    return np.pad(x, widths), mask


def batch_sharding(mesh: jax.sharding.Mesh, axis: str = DATA_AXIS) -> NamedSharding:
    """Sharding that splits the leading (batch) dimension over the data axis."""
    return NamedSharding(mesh, P(axis))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def process_rows(mesh: jax.sharding.Mesh, global_batch_size: int, axis: str = DATA_AXIS) -> tuple[int, int]:
    """``(start, stop)``: the rows of a global batch held by this process's devices (contiguous)."""
    if global_batch_size % data_size(mesh, axis):
        raise ValueError(f"global batch size {global_batch_size} is not a multiple of the "
                         f"{data_size(mesh, axis)} devices on the {axis!r} axis")
    index_map = batch_sharding(mesh, axis).addressable_devices_indices_map((global_batch_size,))
    starts = sorted({(idx[0].start or 0, idx[0].stop or global_batch_size) for idx in index_map.values()})
    start, stop = starts[0][0], starts[-1][1]
    if sum(b - a for a, b in starts) != stop - start:
        raise ValueError("this process's devices do not hold a contiguous block of the batch axis; "
                         "build the mesh with data_mesh() so each host's devices are adjacent")
    return start, stop


def global_batch(local: np.ndarray, mesh: jax.sharding.Mesh, axis: str = DATA_AXIS) -> jax.Array:
    """The global batch-sharded array assembled from this process's rows ``local`` (see :func:`process_rows`)."""
    processes = len({device.process_index for device in mesh.devices.flat})  # a local mesh spans one process
    global_rows = local.shape[0] * processes
    return jax.make_array_from_process_local_data(
        batch_sharding(mesh, axis), local, (global_rows, *local.shape[1:]))


def to_host(x: jax.Array) -> np.ndarray:
    """The full value of ``x`` on this host (gathered across processes when there are several)."""
    if jax.process_count() > 1 and not x.is_fully_addressable:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def is_writer() -> bool:
    """Whether this process writes shared files: the first process of a jax.distributed run, or the only one."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process of a jax.distributed run reaches the barrier `name` (no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
