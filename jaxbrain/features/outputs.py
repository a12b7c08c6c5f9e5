"""Where each batch's reduced layers go: feature rows or a Gram accumulator per layer, and the progress record.

A batch's outputs are queued while the device computes them and written to the host (or the out_dir) while the
device runs the next batch; after every written batch the files are fsynced and ``progress.json`` records the
rows done, so an interrupted run loses at most the batches in flight.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxbrain import sharding
from jaxbrain.features.gram import GramAccumulator
from jaxbrain.features.plan import LayerPlan
from jaxbrain.features.store import Progress, Rows, file_stem


class FeatureOutput:
    """Features of one layer as they come, batch by batch: in memory, or in ``{stem}.npy`` of an out_dir."""

    def __init__(self, shape: tuple[int, ...], dtype, *, start: int = 0, stem: pathlib.Path | None = None,
                 writer: bool = True):
        self.path = None if stem is None else pathlib.Path(f"{stem}.npy")
        self.rows, self.writer = Rows(shape, dtype, self.path, start == 0, writer), writer

    def add(self, x: jax.Array, lo: int, hi: int):
        return lo, hi, x

    def write(self, queued) -> None:
        lo, hi, x = queued
        block = sharding.to_host(x)[:hi - lo]
        self.rows.write(lo, block)

    def flush(self) -> None:
        self.rows.flush()

    def finish(self, progress: Progress, stem_name: str) -> np.ndarray:
        """The features: the in-memory array, or the finished file opened memory-mapped."""
        if self.path is None or not self.writer:
            return self.rows.array
        self.rows.close()
        progress.finish(stem_name)
        return np.load(self.path, mmap_mode="r")


class Sink:
    """The outputs of every pending layer of one extraction, fed batch by batch with write-behind."""

    def __init__(self, plans: Sequence[LayerPlan], mesh, n: int, start: int, batch_rows: int, dtype: str,
                 record: Progress, bar: Any = None):
        self.record, self.bar, self.queued = record, bar, None
        self.stems = {plan.layer: file_stem(plan.layer, plan.kind) for plan in plans}
        self.outputs = {}
        for plan in plans:
            stem = None if record.out_dir is None else record.out_dir / self.stems[plan.layer]
            if plan.kind == "gram":
                self.outputs[plan.layer] = GramAccumulator(mesh, n, plan.flat_dim, dtype, batch_rows, start=start,
                                                           stem=stem, writer=record.writer)
            else:
                self.outputs[plan.layer] = FeatureOutput((n, *plan.feature_shape), dtype, start=start, stem=stem,
                                                         writer=record.writer)

    def add(self, feats: dict[str, jax.Array], lo: int, hi: int) -> None:
        """Queue the batch of stimuli ``lo:hi`` and write out the one queued before it."""
        now = (lo, hi, {layer: out.add(feats[layer], lo, hi) for layer, out in self.outputs.items()})
        self._write()
        self.queued = now

    def _write(self) -> None:
        if self.queued is None:
            return
        lo, hi, queued = self.queued
        for layer, out in self.outputs.items():
            out.write(queued[layer])
        if self.record.out_dir is not None and self.record.writer:
            for out in self.outputs.values():
                out.flush()
            self.record.advance(list(self.stems.values()), hi)
        if self.bar is not None:
            self.bar.update(hi - lo)
        self.queued = None

    def finish(self) -> dict[str, np.ndarray]:
        """Write the last batch; every layer's result (see ``extract``)."""
        self._write()
        if self.bar is not None:
            self.bar.close()
        return {layer: out.finish(self.record, self.stems[layer]) for layer, out in self.outputs.items()}
