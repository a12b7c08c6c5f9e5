"""The results table every experiment writes, and atomic, resumable file output.

`results.csv` holds one row per (model, benchmark, subject, roi, layer, stage, metric). Work is recorded in
parts (one small CSV per finished unit of work under `parts/`); a rerun skips units whose part exists, and
`results.csv` is rebuilt from the parts after every unit, so an interrupted run leaves neither a half-written
file nor a duplicate row.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import tempfile
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

COLUMNS = ("model", "benchmark", "subject", "roi", "layer", "depth", "stage", "metric", "value", "n_targets",
           "alpha", "seed")


def _atomic_write(path: pathlib.Path, write) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _jsonable(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (pathlib.Path, tuple)):
        return str(obj) if isinstance(obj, pathlib.Path) else list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes `obj` as indented JSON, atomically."""
    _atomic_write(pathlib.Path(path), lambda h: json.dump(obj, h, indent=2, default=_jsonable, sort_keys=True))


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Writes a DataFrame as CSV, atomically."""
    _atomic_write(pathlib.Path(path), lambda h: frame.to_csv(h, index=False))


def write_text(path: str | os.PathLike, text: str) -> None:
    _atomic_write(pathlib.Path(path), lambda h: h.write(text))


def _part_name(key: tuple[str, ...]) -> str:
    return "__".join(re.sub(r"[^A-Za-z0-9._-]+", "-", k) for k in key) + ".csv"


class ResultStore:
    """Resumable collection of result rows under `workdir`, one part per finished unit of work."""

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = pathlib.Path(workdir)
        self.parts = self.workdir / "parts"

    def has(self, key: tuple[str, ...]) -> bool:
        return (self.parts / _part_name(key)).is_file()

    def get(self, key: tuple[str, ...]) -> pd.DataFrame:
        return pd.read_csv(self.parts / _part_name(key), keep_default_na=False, na_values=[""])

    def put(self, key: tuple[str, ...], rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
        """Records the rows of one finished unit and rebuilds results.csv."""
        rows = list(rows)
        unknown = set().union(*(row.keys() for row in rows)) - set(COLUMNS)
        if unknown:
            raise ValueError(f"result rows have unknown columns: {sorted(unknown)}")
        frame = pd.DataFrame(rows, columns=list(COLUMNS))
        write_csv(self.parts / _part_name(key), frame)
        self.flush()
        return frame

    def table(self) -> pd.DataFrame:
        files = sorted(self.parts.glob("*.csv")) if self.parts.is_dir() else []
        frames = [pd.read_csv(f, keep_default_na=False, na_values=[""]) for f in files]
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame(columns=list(COLUMNS))
        return pd.concat(frames, ignore_index=True)[list(COLUMNS)]

    def flush(self) -> None:
        write_csv(self.workdir / "results.csv", self.table())


def read_table(workdir: str | os.PathLike) -> pd.DataFrame:
    """The results.csv of a workdir as a DataFrame (subject/roi/layer kept as strings)."""
    path = pathlib.Path(workdir) / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no results.csv in {workdir}")
    return pd.read_csv(path, dtype={"subject": str, "roi": str, "layer": str, "model": str, "benchmark": str},
                       keep_default_na=False, na_values=[""])


def cross_subject_mean(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean `value` over subjects per `keys`; where cross-subject rows (subject "all") exist for a key, they are
    used alone so subjects are not counted twice. Returns `keys` + value."""
    rows = rows.assign(subject=rows["subject"].astype(str))
    has_all = rows.groupby(keys)["subject"].transform(lambda s: (s == "all").any())
    rows = rows[~has_all | (rows["subject"] == "all")]
    return rows.groupby(keys, as_index=False)["value"].mean()
