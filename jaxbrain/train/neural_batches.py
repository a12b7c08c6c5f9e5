"""Stimulus-response batches for hybrid fine-tuning, pooled over subjects, for subject-specific stimuli too.

A :class:`NeuralSet` is one split of a benchmark seen as items: every stimulus that any of the chosen subjects
saw (first-seen order over subjects), its responses for each (subject, ROI) pair, and a presence mask that is
False where that subject did not see the stimulus (NSD's subject-specific images), so each item's neural loss
sums only over the pairs that saw it. Targets are the reliable ones (``kept`` masks from the noise ceiling).

Options of the fine-tuning protocol: ``fraction`` keeps the first ``round(fraction * n)`` items of a
permutation drawn from ``seed`` (the neural-data sweeps; nested across fractions of one seed); ``permute``
(the stimulus-response permutation control) re-pairs every pair's responses with other items of the same set
by one fixed random permutation drawn from ``seed``, breaking the stimulus-response link while keeping the
response distribution.

Batches (Grain, see :mod:`jaxbrain.train.batches`): an epoch is one pass over the items in a fresh order,
batches of ``global_batch`` (at most the number of items; the last partial batch of an epoch dropped); each item's image is the stimulus with the fine-tuning transform (evaluation resize and crop, then the
small random affine of :func:`jaxbrain.train.augment.neural_stimulus_transform`) drawn from a generator seeded by
(seed, item position in the stream). Fields: ``image`` (b, crop, crop, 3) float32, ``target/<subject>/<roi>``
(b, T) float32 and ``present/<subject>/<roi>`` (b,) float32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from jaxbrain.data import stimuli as stimuli_lib
from jaxbrain.train import augment
from jaxbrain.train.readouts import pair_key


@dataclasses.dataclass(frozen=True)
class NeuralSet:
    stimuli: Any
    ids: tuple[str, ...]
    targets: dict[str, np.ndarray]  # "subject/roi" -> (n_items, T) float32 (zeros where absent)
    present: dict[str, np.ndarray]  # "subject/roi" -> (n_items,) bool

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, key: str) -> np.ndarray:
        """Item indices the pair ``key`` saw."""
        return np.flatnonzero(self.present[key])


def neural_set(dataset, split: str, pairs: Sequence[tuple[str, str]], kept: dict[str, np.ndarray], *,
               fraction: float = 1.0, seed: int = 0, permute: bool = False) -> NeuralSet:
    """The items of ``split`` for ``pairs`` ((subject, roi)), with the module's fraction and permutation options."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    order: dict[str, None] = {}
    for subject in dict.fromkeys(s for s, _ in pairs):
        order.update(dict.fromkeys(map(str, dataset.ids(split, subject))))
    ids = list(order)
    rng = np.random.default_rng(seed)
    if fraction < 1:
        keep = max(1, round(fraction * len(ids)))
        ids = [ids[i] for i in np.sort(rng.permutation(len(ids))[:keep])]
    position = {stimulus_id: i for i, stimulus_id in enumerate(ids)}
    shuffle = rng.permutation(len(ids)) if permute else np.arange(len(ids))
    targets, present = {}, {}
    for subject, roi in pairs:
        key = pair_key(subject, roi)
        y = dataset.targets(split, subject, roi)[:, kept[key]].astype(np.float32)
        full = np.zeros((len(ids), y.shape[1]), np.float32)
        seen = np.zeros(len(ids), bool)
        for row, stimulus_id in enumerate(map(str, dataset.ids(split, subject))):
            if stimulus_id in position:
                full[position[stimulus_id]], seen[position[stimulus_id]] = y[row], True
        targets[key], present[key] = full[shuffle], seen[shuffle]  # under permutation presence moves along
    return NeuralSet(dataset.stimuli, tuple(ids), targets, present)


@dataclasses.dataclass(frozen=True)
class _NeuralBatch:
    """Grain map (index, global batch of item indices) -> this process's rows, images transformed."""

    data: NeuralSet
    preprocessing: Any
    rows: tuple[int, int]
    seed: int
    augment: bool

    def __call__(self, batch: int, indices: np.ndarray) -> dict[str, np.ndarray]:
        lo, hi = self.rows
        local = np.asarray(indices)[lo:hi]
        images = []
        for offset, item in enumerate(local):
            image = self.data.stimuli.load(self.data.ids[int(item)])
            if self.augment:
                rng = np.random.default_rng([self.seed, int(batch), lo + offset])
                images.append(augment.neural_stimulus_transform(image, self.preprocessing, rng))
            else:
                images.append(stimuli_lib.preprocess(image, self.preprocessing))
        out = {"image": np.stack(images).astype(np.float32)}
        for key in self.data.targets:
            out[f"target/{key}"] = self.data.targets[key][local]
            out[f"present/{key}"] = self.data.present[key][local].astype(np.float32)
        return out


def train_batches(data: NeuralSet, preprocessing: Any, global_batch: int, rows: tuple[int, int], *, seed: int,
                  epochs: int | None = None, augment_images: bool = True) -> grain.MapDataset:
    """Shuffled, augmented training batches of ``data`` (module docstring); ``epochs=None`` repeats forever."""
    if global_batch > len(data):
        raise ValueError(f"neural batch {global_batch} is larger than the {len(data)} items")
    ds = grain.MapDataset.range(len(data)).shuffle(seed=seed).repeat(epochs).batch(global_batch, drop_remainder=True)
    return ds.map_with_index(_NeuralBatch(data, preprocessing, rows, seed, augment_images))


def steps_per_epoch(data: NeuralSet, global_batch: int) -> int:
    """Steps of one pass over the items (each epoch's last partial batch is dropped)."""
    return len(data) // global_batch
