"""Grain pipelines over a prepared image source: shuffled, augmented, process-local training batches, and
ordered, padded evaluation batches.

Training stream. Epoch ``e`` visits the source in the order of a permutation drawn from (``seed``, 2, e), computed
once per epoch and process (Grain's per-index ``shuffle`` costs about 2 ms per example on CPU, as much as a
JPEG decode). Global batch ``k`` holds the stream positions
``k*B .. k*B + B - 1`` (continuous mode, ``num_epochs=None``: an endless stream whose batches may span two
epochs, nothing dropped) or, with ``num_epochs`` set, batch ``k`` of epoch ``e`` holds positions
``e*N + k*B ..`` for ``k < N // B`` (each epoch's last partial batch dropped, then the iterator ends). Each
process loads only rows ``rows = (start, stop)`` of every global batch (by default ``process_index * B / P``
onwards), so the concatenation over processes is the same global batch whatever the number of processes, ready
for ``jax.make_array_from_process_local_data``. The example at stream position ``g`` is augmented with a
generator seeded by (``seed``, 0, g), and global batch ``k`` is mixed with one seeded by (``seed``, 1, k): a
batch depends only on (source, recipe, seed, k), never on threads, workers or process count.

Resuming. The returned object is a Grain ``DatasetIterator``: ``get_state()`` / ``set_state()`` (a small dict:
the next batch index, per worker with ``worker_count``) and Orbax checkpointing through
``grain.checkpoint.CheckpointSave(iterator)`` / ``CheckpointRestore(iterator)`` as one item of a
``CheckpointManager`` reproduce the following batches bit for bit.

Workers. ``worker_count > 0`` builds whole batches in Grain worker processes (the calling script needs an
``if __name__ == "__main__":`` guard); absl flags are marked parsed as Grain requires.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Any

import grain
import jax
import numpy as np

from jaxbrain.data import stimuli
from jaxbrain.train import augment

@dataclasses.dataclass(frozen=True)
class TrainLayout:
    """Where row ``row`` of this process's part of global batch ``batch`` comes from in the shuffled stream."""

    num_examples: int
    global_batch_size: int
    rows: tuple[int, int]
    num_epochs: int | None = None

    def __post_init__(self):
        if self.num_examples < 1:
            raise ValueError("the training source is empty")
        lo, hi = self.rows
        if not 0 <= lo < hi <= self.global_batch_size:
            raise ValueError(f"process rows {self.rows} outside a global batch of {self.global_batch_size}")
        if self.num_epochs is not None and self.num_examples < self.global_batch_size:
            raise ValueError(f"global batch {self.global_batch_size} is larger than the {self.num_examples} "
                             "training examples; one epoch holds no full batch")

    @property
    def local_batch_size(self) -> int:
        return self.rows[1] - self.rows[0]

    @property
    def steps_per_epoch(self) -> int:
        """Full global batches per epoch (per-epoch mode); the continuous stream averages N / B."""
        return self.num_examples // self.global_batch_size

    @property
    def num_batches(self) -> int:
        """Batches the iterator yields (effectively endless in continuous mode)."""
        if self.num_epochs is None:
            return sys.maxsize // self.global_batch_size
        return self.num_epochs * self.steps_per_epoch

    def position(self, batch: int, row: int) -> int:
        """Position in the endless shuffled stream of local ``row`` of global batch ``batch``."""
        offset = self.rows[0] + row
        if self.num_epochs is None:
            return batch * self.global_batch_size + offset
        epoch, step = divmod(batch, self.steps_per_epoch)
        return epoch * self.num_examples + step * self.global_batch_size + offset


def process_rows(global_batch_size: int, process_index: int | None = None,
                 process_count: int | None = None) -> tuple[int, int]:
    """This process's block of a global batch split evenly by process (``jax.process_index/count`` default)."""
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if global_batch_size % count:
        raise ValueError(f"global batch size {global_batch_size} is not a multiple of {count} processes")
    local = global_batch_size // count
    return index * local, (index + 1) * local


@functools.lru_cache(maxsize=2)
def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch ``epoch`` of the training stream visits the source."""
    return np.random.default_rng([seed, 2, epoch]).permutation(num_examples)


@dataclasses.dataclass(frozen=True)
class _TrainRow:
    """Grain map: flat local row number -> {"image", "label"} of the example at its stream position."""

    source: Any
    recipe: augment.Recipe
    layout: TrainLayout
    seed: int

    def __call__(self, flat: int) -> dict[str, np.ndarray]:
        batch, row = divmod(int(flat), self.layout.local_batch_size)
        position = self.layout.position(batch, row)
        epoch, offset = divmod(position, self.layout.num_examples)
        record = self.source[int(epoch_order(self.layout.num_examples, self.seed, epoch)[offset])]
        rng = np.random.default_rng([self.seed, 0, position])
        image = self.recipe.example(augment.decode(record["image"]), rng)
        return {"image": image, "label": np.int32(record["label"])}


@dataclasses.dataclass(frozen=True)
class _MixBatch:
    """Grain map with index: the recipe's batch step (mixup/cutmix, label smoothing) seeded by the batch index."""

    recipe: augment.Recipe
    num_classes: int
    seed: int

    def __call__(self, batch: int, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, 1, int(batch)])
        return self.recipe.batch(rows["image"], rows["label"], self.num_classes, rng)


def train_dataset(source: Any, recipe: augment.Recipe, *, global_batch_size: int, seed: int = 0,
                  num_epochs: int | None = None, process_index: int | None = None,
                  process_count: int | None = None, rows: tuple[int, int] | None = None) -> grain.MapDataset:
    """A Grain MapDataset whose element ``k`` is this process's part of global training batch ``k``.

    ``source``: an :class:`~jaxbrain.train.image_folder.ImageSource` or :class:`SubsetView` (``len``, ``[i] ->
    {"image": bytes, "label": int}``, ``num_classes``). Batch contract, with ``L = stop - start`` of ``rows``
    (default ``global_batch_size / process_count``):

    * ``image``: float32 (L, recipe.crop, recipe.crop, 3), normalised by the recipe's mean and std;
    * ``label``: int32 (L,), the original class of each row (before mixing);
    * ``label_probs``: float32 (L, num_classes), only when the recipe mixes or smooths labels: the target
      distribution (rows sum to 1).
    """
    if rows is None:
        rows = process_rows(global_batch_size, process_index, process_count)
    layout = TrainLayout(len(source), global_batch_size, tuple(rows), num_epochs)
    if recipe.mixing is not None and (layout.rows[0] % 2 or layout.local_batch_size % 2):
        raise ValueError(f"mixup/cutmix pairs neighbouring rows: process rows {layout.rows} must start at an "
                         "even row and hold an even number of rows")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    rows_ds = grain.MapDataset.range(layout.num_batches * layout.local_batch_size)
    rows_ds = rows_ds.map(_TrainRow(source, recipe, layout, seed))
    batches = rows_ds.batch(layout.local_batch_size, drop_remainder=True)
    return batches.map_with_index(_MixBatch(recipe, source.num_classes, seed))


def _iterate(dataset: grain.MapDataset, worker_count: int, num_threads: int,
             prefetch: int) -> grain.DatasetIterator:
    threads = max(1, num_threads)
    if worker_count > 0:
        stimuli._mark_flags_parsed()  # noqa: SLF001 (the project's one helper for this)
        it = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                         per_worker_buffer_size=max(1, prefetch)))
    else:
        it = dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                       prefetch_buffer_size=max(threads, prefetch)))
    return iter(it)


def train_iterator(source: Any, recipe: augment.Recipe, *, global_batch_size: int, seed: int = 0,
                   num_epochs: int | None = None, process_index: int | None = None,
                   process_count: int | None = None, rows: tuple[int, int] | None = None,
                   worker_count: int = 0, num_threads: int = 2, prefetch: int = 2) -> grain.DatasetIterator:
    """Iterate :func:`train_dataset` (same batch contract) as a checkpointable Grain ``DatasetIterator``.

    ``num_threads`` batches are built at once in threads (``worker_count == 0``) or one per worker process;
    ``prefetch`` batches are kept ready (per worker). Endless when ``num_epochs`` is None.
    """
    dataset = train_dataset(source, recipe, global_batch_size=global_batch_size, seed=seed,
                            num_epochs=num_epochs, process_index=process_index, process_count=process_count,
                            rows=rows)
    return _iterate(dataset, worker_count, num_threads, prefetch)


@dataclasses.dataclass(frozen=True)
class _DecodedSource:
    """A prepared source seen as the stimulus set of :mod:`jaxbrain.data.stimuli` (ids are record indices)."""

    source: Any

    def __len__(self) -> int:
        return len(self.source)

    def load(self, stimulus_id: str) -> np.ndarray:
        return np.asarray(augment.decode(self.source[int(stimulus_id)]["image"]))


@dataclasses.dataclass(frozen=True)
class _AddLabels:
    labels: np.ndarray

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        index = np.minimum(batch["index"], len(self.labels) - 1)
        labels = np.where(batch["mask"], self.labels[index], 0).astype(np.int32)
        return {**batch, "label": labels}


def eval_dataset(source: Any, preprocessing: Any, *, global_batch_size: int, process_index: int | None = None,
                 process_count: int | None = None, rows: tuple[int, int] | None = None) -> grain.MapDataset:
    """A Grain MapDataset of this process's part of each evaluation batch, in source order, no augmentation.

    Global batch ``k`` holds records ``k*B .. k*B + B - 1``; the last is padded to B. Batch contract (L rows):
    ``image`` float32 (L, crop, crop, 3) by the evaluation transform of ``preprocessing`` (a
    ``registry.Preprocessing``), ``label`` int32 (L,), ``mask`` bool (L,) False on padding rows (zero image,
    label 0), ``index`` int64 (L,) the record index (>= len(source) on padding rows).
    """
    if rows is None:
        rows = process_rows(global_batch_size, process_index, process_count)
    ids = [str(i) for i in range(len(source))]
    dataset = stimuli.stimulus_dataset(_DecodedSource(source), ids, preprocessing, global_batch_size,
                                       rows=tuple(rows))
    return dataset.map(_AddLabels(np.asarray(source.labels)))


def eval_iterator(source: Any, preprocessing: Any, *, global_batch_size: int, process_index: int | None = None,
                  process_count: int | None = None, rows: tuple[int, int] | None = None,
                  worker_count: int = 0, num_threads: int = 2, prefetch: int = 2) -> grain.DatasetIterator:
    """Iterate :func:`eval_dataset` once (same batch contract); ``ceil(len(source) / B)`` batches."""
    dataset = eval_dataset(source, preprocessing, global_batch_size=global_batch_size,
                           process_index=process_index, process_count=process_count, rows=rows)
    return _iterate(dataset, worker_count, num_threads, prefetch)
