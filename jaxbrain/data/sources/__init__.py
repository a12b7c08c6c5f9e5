"""Readers that turn public dataset releases into NeuralDatasets, one module per release.

`READERS` maps a dataset name (as given to `configs/prepare.py:dataset=<name>`) to a reader
`reader(source_dir, **options) -> NeuralDataset`; modules are imported only when their reader is called.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def _lazy(module: str, function: str) -> Callable:
    def reader(source_dir, **options):
        return getattr(importlib.import_module(f"jaxbrain.data.sources.{module}"), function)(source_dir, **options)

    reader.__name__ = function
    reader.__qualname__ = function
    reader.__doc__ = f"Lazily imported `jaxbrain.data.sources.{module}.{function}`."
    reader.target = f"jaxbrain.data.sources.{module}.{function}"
    return reader


READERS: dict[str, Callable] = {
    "cowley2023": _lazy("cowley2023", "load_cowley2023"),
    "nsd": _lazy("nsd", "load_nsd"),
    "things_fmri": _lazy("things_fmri", "load_things_fmri"),
    "tvsd": _lazy("tvsd", "load_tvsd"),
    "generic": _lazy("generic", "load_generic"),
    "things_eeg1": _lazy("things_eeg1", "load_things_eeg1"),
    "things_eeg2": _lazy("things_eeg2", "load_things_eeg2"),
    "things_meg": _lazy("things_meg", "load_things_meg"),
    "freemanziemba2013": _lazy("brainscore", "load_freemanziemba2013"),
    "majajhong2015": _lazy("brainscore", "load_majajhong2015"),
}


def get_reader(name: str) -> Callable:
    """The reader registered under `name`; unknown names raise KeyError listing the known ones."""
    try:
        return READERS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(READERS))}") from None
