"""The results table every experiment writes, units of work keyed by fingerprint, and atomic file output.

`results.csv` holds one row per (model, benchmark, subject, roi, layer, stage, metric) and the `fingerprint` of
the unit of work that produced it. Work is recorded in parts: one small CSV per finished piece under
`parts/` (experiments without settings-keyed units) or under `units/<fingerprint>/parts/`, beside the unit's
arrays (`arrays/`, the numbers a rerun resumes from) and `unit.json` (its settings and provenance). A rerun skips
pieces whose part exists; `results.csv` is rebuilt from the parts after every piece, so an interrupted run leaves
neither a half-written file nor a duplicate row. Rows of units made with other settings stay in the table,
told apart by their fingerprint and by one column per setting whose value differs between the units present.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import socket
import tempfile
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from jaxbrain import claims, identity

COLUMNS = ("model", "benchmark", "subject", "roi", "layer", "depth", "stage", "metric", "value", "ci_low", "ci_high",
           "n_targets", "alpha", "alpha_at_edge", "seed", "fingerprint")
_STRING_COLUMNS = {"subject": str, "roi": str, "layer": str, "model": str, "benchmark": str, "fingerprint": str}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_prefix(path: pathlib.Path) -> str:
    """Name prefix of the temporary files written beside `path`: they carry this host and process, so a rerun
    can tell the leftovers of a killed writer (see `remove_stale_temporaries`) from files being written."""
    return f".{path.name}.{socket.gethostname()}.{os.getpid()}."


def remove_stale_temporaries(root: str | os.PathLike) -> list[pathlib.Path]:
    """Deletes temporary files under `root` left by killed processes of this host; returns them."""
    host, removed = socket.gethostname(), []
    for tmp in pathlib.Path(root).rglob(".*.tmp"):
        match = re.fullmatch(rf"\..+\.{re.escape(host)}\.(\d+)\.[^.]+\.tmp", tmp.name)
        if match and not claims.process_alive(int(match.group(1))):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _atomic_write(path: pathlib.Path, write, binary: bool = False) -> None:
    """Writes through `write(handle)` into a temporary file beside `path`, then renames it into place.

    The temporary name is unique per process; the file gets the permissions a plain open would give (group and
    others may read it, as the umask allows); data and rename are flushed to disk.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(folder: pathlib.Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _jsonable(obj):
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
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


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes named arrays as an uncompressed .npz, atomically."""
    _atomic_write(pathlib.Path(path), lambda h: np.savez(h, **arrays), binary=True)


def _part_name(key: tuple[str, ...] | str) -> str:
    key = (key,) if isinstance(key, str) else key
    return "__".join(re.sub(r"[^A-Za-z0-9._-]+", "-", k) for k in key) + ".csv"


def _frame(rows: Iterable[Mapping[str, Any]], fingerprint: str) -> pd.DataFrame:
    rows = list(rows)
    unknown = set().union(*(row.keys() for row in rows)) - set(COLUMNS)
    if unknown:
        raise ValueError(f"result rows have unknown columns: {sorted(unknown)}")
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["fingerprint"] = fingerprint
    return frame


def _read_part(path: pathlib.Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=_STRING_COLUMNS, keep_default_na=False, na_values=[""])


class Unit:
    """One unit of work under `units/<fingerprint>/`: its record, row parts and arrays."""

    def __init__(self, store: "ResultStore", fingerprint: str):
        self.store, self.fingerprint = store, fingerprint
        self.path = store.workdir / "units" / fingerprint
        self.claim_path = self.path / ".claim"

    def describe(self, record: Mapping[str, Any]) -> None:
        """Writes unit.json (what determines the unit, and provenance) unless it exists."""
        if not (self.path / "unit.json").is_file():
            write_json(self.path / "unit.json", {"fingerprint": self.fingerprint, **record})

    def record(self) -> dict:
        path = self.path / "unit.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def has_rows(self, name: str) -> bool:
        return (self.path / "parts" / _part_name(name)).is_file()

    def put_rows(self, name: str, rows: Iterable[Mapping[str, Any]], flush: bool = True) -> None:
        write_csv(self.path / "parts" / _part_name(name), _frame(rows, self.fingerprint))
        if flush:
            self.store.flush()

    def has_arrays(self, name: str) -> bool:
        return (self.path / "arrays" / f"{name}.npz").is_file()

    def put_arrays(self, name: str, arrays: Mapping[str, np.ndarray]) -> None:
        write_npz(self.path / "arrays" / f"{name}.npz", arrays)

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.path / "arrays" / f"{name}.npz", allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


class ResultStore:
    """Resumable collection of result rows under `workdir`, one part per finished piece of work."""

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = pathlib.Path(workdir)
        self.parts = self.workdir / "parts"

    def has(self, key: tuple[str, ...]) -> bool:
        return (self.parts / _part_name(key)).is_file()

    def get(self, key: tuple[str, ...]) -> pd.DataFrame:
        return _read_part(self.parts / _part_name(key))

    def put(self, key: tuple[str, ...], rows: Iterable[Mapping[str, Any]], fingerprint: str = "") -> pd.DataFrame:
        """Records the rows of one finished piece of work and rebuilds results.csv."""
        frame = _frame(rows, fingerprint)
        write_csv(self.parts / _part_name(key), frame)
        self.flush()
        return frame

    def unit(self, fingerprint: str) -> Unit:
        return Unit(self, fingerprint)

    def units(self) -> list[Unit]:
        folder = self.workdir / "units"
        return [Unit(self, p.name) for p in sorted(folder.iterdir()) if p.is_dir()] if folder.is_dir() else []

    def _part_files(self) -> list[pathlib.Path]:
        files = sorted(self.parts.glob("*.csv")) if self.parts.is_dir() else []
        return files + sorted((self.workdir / "units").glob("*/parts/*.csv"))

    def table(self, fingerprints: Iterable[str] | None = None) -> pd.DataFrame:
        """All rows (or those of `fingerprints`), plus one column per unit setting that differs between units."""
        frames = [f for f in map(_read_part, self._part_files()) if len(f)]
        if not frames:
            return pd.DataFrame(columns=list(COLUMNS))
        table = pd.concat(frames, ignore_index=True)
        for column in COLUMNS:
            if column not in table:
                table[column] = "" if column == "fingerprint" else np.nan
        table = table[list(COLUMNS)]
        table["fingerprint"] = table["fingerprint"].fillna("").astype(str)
        table = self._with_differing_settings(table)
        if fingerprints is not None:
            table = table[table["fingerprint"].isin(set(fingerprints))].reset_index(drop=True)
        return table

    def _with_differing_settings(self, table: pd.DataFrame) -> pd.DataFrame:
        settings = {u.fingerprint: identity.flatten(u.record().get("settings", {})) for u in self.units()}
        present = [settings[fp] for fp in table["fingerprint"].unique() if fp in settings]
        keys = sorted({k for s in present for k in s})
        differing = [k for k in keys if len({json.dumps(s.get(k), default=str) for s in present}) > 1]
        for key in differing:
            table[key] = table["fingerprint"].map(lambda fp, key=key: settings.get(fp, {}).get(key))
        return table

    def flush(self) -> None:
        write_csv(self.workdir / "results.csv", self.table())


def read_table(workdir: str | os.PathLike) -> pd.DataFrame:
    """The results.csv of a workdir as a DataFrame (subject/roi/layer kept as strings)."""
    path = pathlib.Path(workdir) / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no results.csv in {workdir}")
    return pd.read_csv(path, dtype=_STRING_COLUMNS, keep_default_na=False, na_values=[""])


def cross_subject_mean(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean `value` over subjects per `keys`; where cross-subject rows (subject "all") exist for a key, they are
    used alone so subjects are not counted twice. Returns `keys` + value."""
    rows = rows.assign(subject=rows["subject"].astype(str))
    has_all = rows.groupby(keys)["subject"].transform(lambda s: (s == "all").any())
    rows = rows[~has_all | (rows["subject"] == "all")]
    return rows.groupby(keys, as_index=False)["value"].mean()
