"""Grain datasets of process-local training batches drawn from in-memory records.

``range(n).shuffle(seed).repeat(epochs)`` is a fresh permutation of the records every epoch (Grain's
``MapDataset.shuffle`` draws a new permutation for each pass of a repeated parent); consecutive runs of
``global_batch`` indices form the global batches, and each process materialises only its rows
``[start, stop)`` of every batch (``mesh.process_rows``). Iterating the dataset gives a Grain iterator whose
position is checkpointed with the run, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import grain
import numpy as np


def index_batches(n: int, global_batch: int, *, seed: int, epochs: int | None = None,
                  drop_remainder: bool = True) -> grain.MapDataset:
    """Batches of record indices, reshuffled every epoch (``epochs=None``: forever)."""
    if n < 1:
        raise ValueError("index_batches: no records")
    if drop_remainder and global_batch > n:
        raise ValueError(f"global batch {global_batch} is larger than the {n} records")
    return grain.MapDataset.range(n).shuffle(seed=seed).repeat(epochs).batch(global_batch,
                                                                            drop_remainder=drop_remainder)


@dataclasses.dataclass(frozen=True)
class _TakeRows:
    """Grain map: a global batch of indices -> this process's rows of every array (picklable)."""

    arrays: Mapping[str, np.ndarray]
    rows: tuple[int, int]

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        local = np.asarray(indices)[self.rows[0]:self.rows[1]]
        return {name: value[local] for name, value in self.arrays.items()}


def array_batches(arrays: Mapping[str, np.ndarray], global_batch: int, rows: tuple[int, int], *, seed: int,
                  epochs: int | None = None) -> grain.MapDataset:
    """Batches of this process's rows of ``arrays`` (same length), shuffled per epoch."""
    lengths = {name: len(value) for name, value in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"array_batches: arrays differ in length: {lengths}")
    n = next(iter(lengths.values()))
    return index_batches(n, global_batch, seed=seed, epochs=epochs).map(_TakeRows(dict(arrays), rows))


def iterate(dataset: grain.MapDataset, num_threads: int = 0, prefetch: int = 2):
    """A checkpointable Grain iterator over ``dataset`` (with ``num_threads`` > 0: threads prefetch batches)."""
    if num_threads <= 0:
        return iter(dataset)
    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                          prefetch_buffer_size=max(prefetch, num_threads))))


