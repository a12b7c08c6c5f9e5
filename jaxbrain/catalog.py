"""Benchmark entries of a config -> loaded benchmarks, by kind of entry.

`planted_<name>` (generated once into the workdir, `jaxbrain.planted`), a prepared `.h5` file or
`reader:source_dir[?option=value&...]` (a public release converted once, `jaxbrain.data.prepare`), and
`rdm:folder[?correlation=spearman&symmetric=false]` (an RDM benchmark: per-subject similarity or dissimilarity
matrices, `jaxbrain.data.sources.generic.load_rdm_folder`). Names must be distinct within one run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pathlib
import urllib.parse

import numpy as np

from jaxbrain import config_values, planted
from jaxbrain.data import neural, prepare

RDM_PREFIX = "rdm:"


@dataclasses.dataclass
class Benchmark:
    """A loaded benchmark: a NeuralDataset, or an RDM set with how to correlate; `truth` of planted data."""

    name: str
    dataset: neural.NeuralDataset | None = None
    rdms: object | None = None
    correlation: str = "pearson"
    truth: dict | None = None

    @property
    def stimuli(self):
        return self.dataset.stimuli if self.dataset is not None else self.rdms.stimuli

    @property
    def rois(self) -> list[str]:
        return list(self.dataset.rois) if self.dataset is not None else list(self.rdms.groups)

    @functools.cached_property
    def digest(self) -> str:  # an RDM set's digest decodes every stimulus: computed once
        if self.dataset is not None:
            return self.dataset.digest
        digest = hashlib.sha256(f"{self.rdms.kind}{self.correlation}{self.rdms.stimulus_ids}".encode())
        for key in sorted(self.rdms.rdms):
            digest.update(key.encode() + np.ascontiguousarray(self.rdms.rdms[key], np.float64).tobytes())
        if self.rdms.stimuli is not None:
            digest.update(self.rdms.stimuli.content_digest().encode())
        return digest.hexdigest()[:16]


def _rdm_benchmark(entry: str) -> Benchmark:
    from jaxbrain.data.sources.generic import load_rdm_folder

    folder, _, query = entry[len(RDM_PREFIX):].partition("?")
    options = dict(urllib.parse.parse_qsl(query))
    unknown = set(options) - {"correlation", "symmetric"}
    if unknown:
        raise ValueError(f"benchmark {entry!r}: unknown options {sorted(unknown)}; options: correlation, symmetric")
    symmetric = config_values.parse_value(f"{entry}: option symmetric", options.get("symmetric", "true"), True)
    rdms = load_rdm_folder(pathlib.Path(folder).expanduser(), symmetric=symmetric)
    if rdms.stimuli is None:
        raise ValueError(f"RDM benchmark {folder}: stimuli.csv has no image column, so no model can see the stimuli")
    return Benchmark(rdms.name, rdms=rdms, correlation=options.get("correlation", "pearson"))


def load(entries, planted_settings: dict, data_dir: pathlib.Path) -> dict[str, Benchmark]:
    """name -> Benchmark for every entry, in order."""
    loaded = {}
    for entry in entries:
        if entry.startswith(RDM_PREFIX):
            benchmark = _rdm_benchmark(entry)
        elif entry.startswith(planted.PREFIX) and ":" not in entry and not entry.endswith(".h5"):
            dataset, truth = planted.load_planted(entry, planted_settings, data_dir)
            benchmark = Benchmark(dataset.name, dataset=dataset, truth=truth)
        else:
            dataset = prepare.load_entry(entry, data_dir)
            benchmark = Benchmark(dataset.name, dataset=dataset)
        if benchmark.name in loaded:
            raise ValueError(f"two benchmarks are named {benchmark.name!r} ({entry!r} and an earlier entry); give "
                             "them distinct names, e.g. generic:DIR?name=NAME")
        loaded[benchmark.name] = benchmark
    return loaded
