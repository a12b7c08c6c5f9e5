"""Files of a feature extraction: the package's one atomic writer, rows written batch by batch, progress.json.

Every file written in one piece goes through :func:`atomic_path` (or :func:`atomic_write`, :func:`write_json`,
:func:`save_npy` on top of it): the content goes to a temporary file in the target's folder, created as
``open()`` creates files (mode ``0o666`` less the umask, so group-readable under the usual umask ``0o022``,
unlike ``tempfile.mkstemp``'s ``0o600``), is fsynced, renamed over the target, and the folder is fsynced so
the rename itself survives a crash. A failure removes the temporary file; the target is either the old file
or the new one, never a mixture.

Large outputs (features of many stimuli) cannot be written in one piece: :class:`Rows` fills a ``.npy`` file
with positional writes, one slab of rows per batch, so nothing stays resident in memory; :class:`Progress`
records in ``progress.json`` (rewritten atomically after every batch) how many rows of each layer are on disk,
so a rerun continues from the last finished batch and skips finished layers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pathlib
import re
import secrets
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any

import numpy as np

_FORMAT = 1


# ---------------------------------------------------------------------------------------------------------
# Atomic files
# ---------------------------------------------------------------------------------------------------------
def _fsync(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_prefix(path: pathlib.Path) -> str:
    """Name prefix of the temporary files written beside ``path``: they carry this host and process, so a rerun
    can tell the leftovers of a killed writer (:func:`remove_stale_temporaries`) from files being written."""
    return f".{path.name}.{socket.gethostname()}.{os.getpid()}."


def process_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(root: str | os.PathLike) -> list[pathlib.Path]:
    """Deletes the temporary files under ``root`` left by killed processes of this host; returns them."""
    host, removed = socket.gethostname(), []
    for tmp in pathlib.Path(root).rglob(".*.tmp"):
        match = re.fullmatch(rf"\..+\.{re.escape(host)}\.(\d+)\.[^.]+\.tmp", tmp.name)
        if match and not process_alive(int(match.group(1))):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yields a fresh temporary path beside ``path``; when the block ends without error, that file becomes
    ``path`` atomically (fsync file, rename, fsync folder). For writers that want a file name (h5py, savefig)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{temporary_prefix(path)}{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # mode 0o666 & ~umask, as open()
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def atomic_write(path: str | os.PathLike, write: Callable[[IO], Any], *, text: bool = False) -> pathlib.Path:
    """Calls ``write(handle)`` on a temporary file (binary, or text without newline translation) that then
    replaces ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") if text else open(tmp, "wb") as handle:
            write(handle)
    return pathlib.Path(path)


def write_json(path: str | os.PathLike, obj: Any, **dump_kwargs) -> pathlib.Path:
    """``obj`` as JSON (``json.dump`` keyword arguments pass through, default ``indent=1``), atomically."""
    dump_kwargs.setdefault("indent", 1)
    return atomic_write(path, lambda handle: json.dump(obj, handle, **dump_kwargs), text=True)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> pathlib.Path:
    """``array`` as a ``.npy`` file, atomically."""
    return atomic_write(path, lambda handle: np.save(handle, array))


# ---------------------------------------------------------------------------------------------------------
# Rows filled batch by batch
# ---------------------------------------------------------------------------------------------------------
class Rows:
    """An (N, ...) array filled by contiguous row slabs: in memory, or a .npy file written positionally.

    A process that is not the writer keeps its rows in memory, starting from what the writer's file holds."""

    def __init__(self, shape: tuple[int, ...], dtype, path: pathlib.Path | None, fresh: bool, writer: bool = True):
        self.shape, self.dtype, self.path = tuple(shape), np.dtype(dtype), path
        self.row_bytes = self.dtype.itemsize * math.prod(shape[1:])
        if path is None or not writer:
            self.array = np.zeros(shape, self.dtype)
            if path is not None and not fresh:
                self.array[:] = np.load(path, mmap_mode="r")
            return
        self.array = None
        if not fresh and not path.exists():
            raise FileNotFoundError(f"{path}: missing, but progress.json records rows written to it; "
                                    "delete progress.json or use another out_dir")
        if fresh:
            np.lib.format.open_memmap(path, mode="w+", dtype=self.dtype, shape=self.shape).flush()
        self.offset = self._check_header(path)
        self.file = open(path, "r+b")

    def _check_header(self, path: pathlib.Path) -> int:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            file_shape, _, file_dtype = read_header(f)
            offset = f.tell()
        if tuple(file_shape) != self.shape or file_dtype != self.dtype:
            raise ValueError(f"{path}: holds {file_dtype} {file_shape}, expected {self.dtype} {self.shape}; "
                             "delete it or use another out_dir")
        return offset

    def write(self, start: int, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, self.dtype)
        if self.array is not None:
            self.array[start:start + rows.shape[0]] = rows
        else:
            os.pwrite(self.file.fileno(), rows.tobytes(), self.offset + start * self.row_bytes)

    def read(self, start: int, stop: int) -> np.ndarray:
        if self.array is not None:
            return self.array[start:stop]
        data = os.pread(self.file.fileno(), (stop - start) * self.row_bytes, self.offset + start * self.row_bytes)
        return np.frombuffer(data, self.dtype).reshape(stop - start, *self.shape[1:])

    def flush(self) -> None:
        if self.array is None:
            self.file.flush()
            os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.array is None:
            self.file.close()


# ---------------------------------------------------------------------------------------------------------
# progress.json
# ---------------------------------------------------------------------------------------------------------
def file_stem(layer: str, kind: str) -> str:
    """The base name of a layer's files in an out_dir: ``{layer}.{kind}``."""
    return f"{layer.replace(os.sep, '_')}.{kind}"


def ids_digest(ids: Sequence[str]) -> str:
    h = hashlib.sha1()
    for i in ids:
        h.update(i.encode())
        h.update(b"\0")
    return h.hexdigest()


class Progress:
    """The progress record of an out_dir (or of an in-memory run when ``out_dir`` is None, which saves nothing).

    One entry per layer file stem: the layer, its kind, the settings it was extracted with, ``rows_done`` and
    ``finished``. A record written for other stimulus ids or another model, or an entry with other settings,
    is refused with the file named.
    """

    def __init__(self, out_dir: pathlib.Path | None, ids: Sequence[str], model: str, settings: Mapping[str, Any],
                 writer: bool = True):
        self.out_dir, self.settings, self.writer = out_dir, dict(settings), writer
        self.record = {"format": _FORMAT, "n": len(ids), "ids_sha1": ids_digest(ids), "model": model, "layers": {}}
        if out_dir is None:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "progress.json"
        if path.exists():
            stored = json.loads(path.read_text())
            if stored.get("ids_sha1") != self.record["ids_sha1"] or stored.get("n") != len(ids):
                raise ValueError(f"{path}: was written for another list of stimulus ids ({stored.get('n')} ids); "
                                 "use another out_dir")
            if stored.get("model") != model:
                raise ValueError(f"{path}: was written for model {stored.get('model')!r}, not {model!r}")
            self.record = stored

    def rows_done(self, layer: str, kind: str) -> int | None:
        """Rows of ``layer`` already on disk, or None once it is finished; other settings raise."""
        entry = self.record["layers"].get(file_stem(layer, kind))
        if entry is None:
            return 0
        changed = {k: (entry.get(k), v) for k, v in self.settings.items() if entry.get(k) != v}
        if changed:
            raise ValueError(f"{self.out_dir / 'progress.json'}: layer {layer!r} ({kind}) was extracted with other "
                             f"settings {changed} (stored, requested); use another out_dir")
        return None if entry["finished"] else int(entry["rows_done"])

    def resume(self, plans: Sequence[Any]) -> tuple[dict[str, np.ndarray], list[Any], int]:
        """Finished layers (opened memory-mapped), the layer plans still to do, and the row to continue from;
        the entries of the layers to do are (re)started at that row and saved."""
        done = {plan.layer: self.rows_done(plan.layer, plan.kind) for plan in plans}
        finished = {plan.layer: np.load(self.out_dir / f"{file_stem(plan.layer, plan.kind)}.npy", mmap_mode="r")
                    for plan in plans if done[plan.layer] is None}
        pending = [plan for plan in plans if done[plan.layer] is not None]
        start = min((done[plan.layer] for plan in pending), default=0)
        for plan in pending:
            stem = file_stem(plan.layer, plan.kind)
            self.record["layers"][stem] = {"layer": plan.layer, "kind": plan.kind, **self.settings,
                                           "rows_done": start, "finished": False, "file": f"{stem}.npy",
                                           **({"dim": plan.flat_dim} if plan.kind == "gram" else {})}
        if pending:
            self.save()
        return finished, pending, start

    def advance(self, stems: Sequence[str], rows_done: int) -> None:
        for stem in stems:
            entry = self.record["layers"][stem]
            entry["rows_done"] = max(entry["rows_done"], rows_done)
        self.save()

    def finish(self, stem: str) -> None:
        self.record["layers"][stem]["finished"] = True
        self.save()

    def save(self) -> None:
        if self.out_dir is not None and self.writer:
            write_json(self.out_dir / "progress.json", self.record)

