"""Run identity: fingerprints of settings and files, and the provenance recorded beside every unit of work.

A unit of work (a prepared dataset, a feature cache, one model's scores on one benchmark) is keyed by the
fingerprint of everything that determines it: file contents by digest, settings by value. A fingerprint is the
SHA-256 of the canonical JSON of a nested dict, shortened to 16 hex digits. File digests are cached by (path,
size, modification time) in the workdir, so a rerun does not hash gigabytes again; a changed file has another
size or time and is hashed anew.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import platform
import subprocess
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

FINGERPRINT_LENGTH = 16
_CHUNK = 1 << 22


def _canonical(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _canonical(obj.tolist())
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, float) and obj == int(obj) and abs(obj) < 2**53:
        return float(obj)
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    return obj


def fingerprint(settings: Mapping[str, Any]) -> str:
    """The 16-hex-digit fingerprint of a nested dict of settings (order of keys does not matter)."""
    text = json.dumps(_canonical(settings), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_LENGTH]


def flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"cv": {"n_splits": 5}} -> {"cv.n_splits": 5}; sequences become JSON text so they compare as values."""
    flat = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple, np.ndarray)):
            flat[name] = json.dumps(_canonical(value))
        else:
            flat[name] = _canonical(value)
    return flat


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Settings (flattened) whose values differ: name -> (old, new); missing values are None."""
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def hash_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class DigestCache:
    """File digests cached by (absolute path, size, mtime) in a JSON file; `None` path = in memory only."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = None if path is None else pathlib.Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, list] = {}
        if self.path is not None and self.path.is_file():
            try:
                self._entries = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                self._entries = {}

    def digest(self, path: str | os.PathLike) -> str:
        path = pathlib.Path(path).resolve()
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns]
        with self._lock:
            entry = self._entries.get(str(path))
            if entry is not None and entry[:2] == stamp:
                return entry[2]
        value = hash_file(path)
        with self._lock:
            self._entries[str(path)] = [*stamp, value]
            if self.path is not None:
                from jaxbrain import results

                results.write_json(self.path, self._entries)
        return value


def _package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_revision() -> str | None:
    root = pathlib.Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode:
        return None
    return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance() -> dict[str, Any]:
    """Package versions, the project's git revision, devices and matmul precision of this process."""
    import jax

    devices = jax.devices()
    return {
        "versions": {name: _package_version(name) for name in ("jaxbrain", "jax", "jaxlib", "flax", "numpy",
                                                                "scikit-learn")},
        "python": platform.python_version(),
        "git_revision": _git_revision(),
        "device_kind": devices[0].device_kind if devices else None,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "matmul_precision": str(jax.config.jax_default_matmul_precision or "default"),
        "x64": bool(jax.config.jax_enable_x64),
    }
