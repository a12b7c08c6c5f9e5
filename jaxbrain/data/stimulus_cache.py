"""Stimuli decoded, resized and centre-cropped once per benchmark and geometry, for every model after the first.

Decoding JPEGs and resizing them costs more than the forward pass of a small model on an accelerator, and every
model of a sweep would repeat it. :func:`cached_stimuli` does it once per stimulus set, id list and geometry
(resize, crop, interpolation) into a uint8 ``.npy`` file that is then read memory-mapped: the pipeline only
normalises rows of it. The pixels are those of :func:`jaxbrain.data.stimuli.resize_and_crop`, so features are the
same with or without the cache. The file is written under a temporary name and renamed when complete; an
interrupted build leaves nothing that a later run would use.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import pathlib
import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxbrain.data import stimuli as stimulus_pipeline


class CroppedStimuli:
    """The resized, centre-cropped uint8 pixels of ``ids`` (memory-mapped), for one ``geometry``."""

    def __init__(self, array: np.ndarray, ids: Sequence[str], geometry: tuple, path: pathlib.Path):
        self.array, self.geometry, self.path = array, geometry, path
        self.positions = {stimulus_id: k for k, stimulus_id in enumerate(ids)}

    def __len__(self) -> int:
        return len(self.positions)

    def __contains__(self, stimulus_id: str) -> bool:
        return stimulus_id in self.positions

    def __repr__(self) -> str:
        return f"CroppedStimuli({self.path})"

    def cropped(self, stimulus_id: str) -> np.ndarray:
        return self.array[self.positions[stimulus_id]]


def cached_stimuli(stimuli: Any, ids: Sequence[str], preprocessing: Any, directory: str | os.PathLike,
                   identity: str, *, num_threads: int = 4) -> CroppedStimuli:
    """``ids`` of ``stimuli`` resized and cropped as ``preprocessing`` says, from ``directory`` (built there on
    first use). ``identity`` names the stimulus set's content (e.g. a dataset digest): the file is keyed by it,
    the ids and the geometry, so another set, order or resolution gets its own file."""
    ids = [str(i) for i in ids]
    geometry = stimulus_pipeline.geometry(preprocessing)
    key = hashlib.sha256(repr((identity, ids, geometry)).encode()).hexdigest()[:16]
    resize, crop, interpolation = geometry
    path = pathlib.Path(directory) / f"{resize}_{crop}_{interpolation}_{key}.npy"
    shape = (len(ids), crop, crop, 3)
    if not path.exists():
        _build(stimuli, ids, preprocessing, path, shape, num_threads)
    array = np.load(path, mmap_mode="r")
    if array.shape != shape or array.dtype != np.uint8:
        raise ValueError(f"stimulus cache {path} holds {array.dtype} {array.shape}, expected uint8 {shape}; "
                         "delete it to rebuild")
    return CroppedStimuli(array, ids, geometry, path)


def _build(stimuli, ids: list[str], preprocessing, path: pathlib.Path, shape: tuple, num_threads: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp.npy")
    try:
        _fill(stimuli, ids, preprocessing, tmp, shape, num_threads)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fill(stimuli, ids: list[str], preprocessing, tmp: pathlib.Path, shape: tuple, num_threads: int) -> None:
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)

    def row(k: int) -> None:  # PIL releases the GIL while decoding and resizing
        array[k] = stimulus_pipeline.resize_and_crop(stimuli.load(ids[k]), preprocessing)

    with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
        list(pool.map(row, range(len(ids))))
    array.flush()
