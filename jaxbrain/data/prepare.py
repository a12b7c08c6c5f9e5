"""Public releases -> validated NeuralDataset files, converted once and reused while their inputs are unchanged.

A benchmark entry names a prepared file (`path/to/name.h5`) or a release with its reader and options:
`reader:source_dir` or `reader:source_dir?option=value&option=value` (e.g.
`generic:/data/faces?name=faces&test_fraction=0.2`); option values are typed like the reader's defaults.
A release is converted into `<data_dir>/<dataset name>.h5` with a record `<dataset name>.json` beside it holding
the reader, its options and the fingerprint of the source folder (every file's relative path, size and
modification time), so a rerun reuses the file only when all three are unchanged. Writing decodes every image
(for the file's stimulus digest) and names every undecodable one.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import logging
import os
import pathlib
import urllib.parse
from collections.abc import Mapping
from typing import Any

from jaxbrain import config_values, identity, results
from jaxbrain.data import neural, sources

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ReleaseEntry:
    """A release named in a config: reader, source folder and reader options."""

    reader: str
    source: pathlib.Path
    options: Mapping[str, Any]


def reader_defaults(reader: str) -> dict[str, inspect.Parameter]:
    """The reader's keyword parameters after the source folder."""
    function = sources.get_reader(reader)
    module, _, name = function.target.rpartition(".")
    target = getattr(importlib.import_module(module), name)
    return dict(list(inspect.signature(target).parameters.items())[1:])


def parse_entry(entry: str) -> ReleaseEntry:
    """`reader:source_dir[?k=v&k=v]` -> ReleaseEntry with options cast to the reader's parameter types."""
    reader, _, rest = entry.partition(":")
    if reader not in sources.READERS:
        raise ValueError(f"unknown dataset reader {reader!r}; known: {', '.join(sorted(sources.READERS))}")
    source, _, query = rest.partition("?")
    parameters = reader_defaults(reader)
    options = {}
    for key, text in urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key not in parameters:
            raise ValueError(f"benchmark {entry!r}: reader {reader!r} has no option {key!r}; options: "
                             f"{', '.join(parameters)}")
        default = parameters[key].default
        like = None if default is inspect.Parameter.empty else default
        options[key] = config_values.parse_value(f"{entry}: option {key}", text, like,
                                                 None if like is not None else parameters[key].annotation)
    return ReleaseEntry(reader, pathlib.Path(source).expanduser(), options)


def source_fingerprint(source: pathlib.Path) -> str:
    """Fingerprint of a release folder (or file) from every file's relative path, size and modification time."""
    if source.is_file():
        stat = source.stat()
        return identity.fingerprint({"file": source.name, "size": stat.st_size, "mtime": stat.st_mtime_ns})
    listing = []
    for folder, _, files in os.walk(source):
        for name in files:
            path = pathlib.Path(folder) / name
            stat = path.stat()
            listing.append((str(path.relative_to(source)), stat.st_size, stat.st_mtime_ns))
    return identity.fingerprint({"files": sorted(listing)})


def _record_of(release: ReleaseEntry) -> dict:
    return {"reader": release.reader, "options": dict(release.options),
            "source": str(release.source), "source_fingerprint": source_fingerprint(release.source)}


_IDENTITY_KEYS = ("reader", "options", "source_fingerprint")


def _comparable(record: Mapping[str, Any]) -> dict:
    return json.loads(json.dumps({k: record.get(k) for k in _IDENTITY_KEYS}, default=results._jsonable))


def _matching_file(data_dir: pathlib.Path, record: dict) -> pathlib.Path | None:
    """The prepared file whose record names the same reader, options and source fingerprint, if any."""
    wanted = _comparable(record)
    for sidecar in sorted(data_dir.glob("*.json")):
        try:
            stored = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if _comparable(stored) == wanted and sidecar.with_suffix(".h5").is_file():
            return sidecar.with_suffix(".h5")
    return None


def convert(release: ReleaseEntry, data_dir: str | os.PathLike, *, embed_stimuli: bool = False,
            overwrite: bool = False) -> tuple[pathlib.Path, bool]:
    """Converts a release into `data_dir/<name>.h5` unless a file from the same inputs exists.

    Returns the file and whether it was already there. A file of the same dataset name from other inputs is
    replaced (results keyed by the old file's digest stay distinguishable by their fingerprint).
    """
    data_dir = pathlib.Path(data_dir)
    if not release.source.exists():
        raise FileNotFoundError(f"source of dataset {release.reader!r} not found: {release.source}")
    record = _record_of(release)
    existing = None if overwrite else _matching_file(data_dir, record)
    if existing is not None and neural.is_valid_file(existing):
        return existing, True
    log.info("reading %s from %s with %s", release.reader, release.source, dict(release.options))
    dataset = sources.get_reader(release.reader)(release.source, **release.options)
    path = data_dir / f"{dataset.name}.h5"
    results.remove_stale_temporaries(data_dir)
    neural.save(dataset, path, embed_stimuli=embed_stimuli)
    results.write_json(path.with_suffix(".json"), {**record, "name": dataset.name})
    return path, False


def load_entry(entry: str, data_dir: str | os.PathLike) -> neural.NeuralDataset:
    """The dataset of a benchmark entry: a prepared `.h5` file, or a release converted (once) into `data_dir`."""
    if entry.partition(":")[0] in sources.READERS:
        path, _ = convert(parse_entry(entry), data_dir)
        return neural.load(path)
    if not entry.endswith(".h5"):
        raise ValueError(f"benchmark {entry!r}: expected a prepared .h5 file, planted_<name>, or "
                         f"reader:source_dir[?option=value&...] with a reader of {', '.join(sorted(sources.READERS))}")
    path = pathlib.Path(entry).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    return neural.load(path)
