"""Read PyTorch checkpoints without PyTorch, through a restricted unpickler.

Two layouts of ``torch.save`` are understood:

* the legacy (pre-1.6) stream: a magic number, the protocol version, a system-info dict, the main pickle
  (storages appear as persistent ids), the list of storage keys, then for each key an int64 element count
  followed by the raw little-endian bytes;
* the zip container of torch >= 1.6: ``<archive>/data.pkl`` plus one raw file ``<archive>/data/<key>`` per storage.

Only the globals needed to rebuild tensors, ordered dicts and storages are allowed; any other global in the
pickle is refused, so a checkpoint cannot run code. Tensors come back as numpy arrays.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated, or uses something this reader refuses."""


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A storage whose bytes arrive after the main pickle (legacy) or from a zip member."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype = np.dtype(dtype)
        self.numel = numel
        self.data: np.ndarray | None = None


class _StorageView:
    def __init__(self, root: _Storage, offset: int, size: int):
        self.root, self.offset, self.size = root, offset, size


class _LazyTensor:
    """A tensor whose storage is filled in later; ``materialise`` returns a numpy copy."""

    def __init__(self, storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]):
        if isinstance(storage, _StorageView):
            offset += storage.offset
            storage = storage.root
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialise(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise CheckpointError("a tensor refers to a storage whose bytes were never read")
        if len(self.stride) != len(self.size) or min(self.stride, default=0) < 0 or self.offset < 0:
            raise CheckpointError(f"a tensor has malformed size {self.size} / stride {self.stride}")
        if all(self.size):  # an empty tensor reads nothing
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
            if last >= data.size:
                raise CheckpointError(f"a tensor of shape {self.size} reaches past the end of its storage")
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size, strides=tuple(s * item for s in self.stride), writeable=False
        )
        return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *unused):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.nn.parameter", "Parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str, storage_loader):
        super().__init__(file, encoding="latin1")
        self._source = source
        self._storage_loader = storage_loader

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(f"{self._source}: refusing to load global {module}.{name} (not a tensor checkpoint)")

    def persistent_load(self, pid):
        return self._storage_loader(pid)


def _storage_dtype(storage_type, source: str) -> np.dtype:
    if isinstance(storage_type, _StorageType):
        return storage_type.dtype
    raise CheckpointError(f"{source}: unsupported storage type {storage_type!r}")


def _load_legacy(f: io.BufferedIOBase, source: str) -> Any:
    def load_small():
        return _RestrictedUnpickler(f, source, lambda pid: _bad_pid(pid)).load()

    def _bad_pid(pid):
        raise CheckpointError(f"{source}: unexpected persistent id in header: {pid!r}")

    magic = load_small()
    if magic != LEGACY_MAGIC:
        raise CheckpointError(f"{source}: not a PyTorch checkpoint (bad magic number)")
    protocol = load_small()
    if protocol != LEGACY_PROTOCOL:
        raise CheckpointError(f"{source}: unsupported legacy protocol version {protocol}")
    sys_info = load_small()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise CheckpointError(f"{source}: big-endian checkpoints are not supported")

    storages: dict[str, _Storage] = {}

    def load_storage(pid):
        if not isinstance(pid, tuple) or not pid:
            raise CheckpointError(f"{source}: malformed persistent id {pid!r}")
        if pid[0] == "module":
            return pid[1] if len(pid) > 1 else None
        if pid[0] != "storage" or len(pid) < 5:
            raise CheckpointError(f"{source}: unsupported persistent id {pid[0]!r}")
        storage_type, key, _location, numel = pid[1:5]
        view_metadata = pid[5] if len(pid) > 5 else None
        key = str(key)
        if key not in storages:
            storages[key] = _Storage(_storage_dtype(storage_type, source), int(numel))
        root = storages[key]
        if view_metadata is not None:
            _view_key, offset, size = view_metadata
            return _StorageView(root, int(offset), int(size))
        return root

    result = _RestrictedUnpickler(f, source, load_storage).load()
    keys = _RestrictedUnpickler(f, source, _bad_pid).load()
    if not isinstance(keys, list):
        raise CheckpointError(f"{source}: malformed storage key list")
    for key in keys:
        key = str(key)
        if key not in storages:
            raise CheckpointError(f"{source}: storage {key} listed but never referenced")
        storage = storages[key]
        header = f.read(8)
        if len(header) != 8:
            raise CheckpointError(f"{source}: truncated file (storage {key} header missing)")
        (numel,) = struct.unpack("<q", header)
        if numel != storage.numel:
            raise CheckpointError(f"{source}: storage {key} holds {numel} elements, the pickle declared {storage.numel}")
        nbytes = numel * storage.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise CheckpointError(
                f"{source}: truncated file (storage {key} needs {nbytes} bytes, only {len(raw)} left)"
            )
        storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<")).astype(storage.dtype)
    return result


def _load_zip(path: str, source: str) -> Any:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{source}: corrupt zip checkpoint ({e})") from e
    with archive:
        pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pkl) != 1:
            raise CheckpointError(f"{source}: expected one data.pkl in the zip checkpoint, found {len(pkl)}")
        prefix = pkl[0][: -len("data.pkl")]
        storages: dict[str, _Storage] = {}

        def load_storage(pid):
            if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
                raise CheckpointError(f"{source}: unsupported persistent id {pid!r}")
            storage_type, key, _location, numel = pid[1:5]
            key = str(key)
            if key not in storages:
                storage = _Storage(_storage_dtype(storage_type, source), int(numel))
                try:
                    raw = archive.read(f"{prefix}data/{key}")
                except (KeyError, zipfile.BadZipFile) as e:
                    raise CheckpointError(f"{source}: storage {key} missing or corrupt ({e})") from e
                if len(raw) < storage.numel * storage.dtype.itemsize:
                    raise CheckpointError(f"{source}: storage {key} is truncated")
                storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"), count=storage.numel)
                storage.data = storage.data.astype(storage.dtype)
                storages[key] = storage
            return storages[key]

        try:
            data = archive.read(pkl[0])
        except zipfile.BadZipFile as e:
            raise CheckpointError(f"{source}: corrupt zip checkpoint ({e})") from e
        return _RestrictedUnpickler(io.BytesIO(data), source, load_storage).load()


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return obj.materialise()
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _materialise(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _materialise(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialise(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialise(v) for v in obj)
    return obj


def load(path: str | os.PathLike) -> Any:
    """Load a ``torch.save`` file (legacy or zip) without torch; tensors become numpy arrays.

    Raises FileNotFoundError for a missing file and CheckpointError (a ValueError) naming the file when it is
    corrupt, truncated, or refers to anything other than tensors, storages and ordered dicts.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if zipfile.is_zipfile(path):
            result = _load_zip(path, path)
        else:
            with open(path, "rb") as f:
                result = _load_legacy(f, path)
        return _materialise(result)
    except CheckpointError as e:
        if path in str(e):
            raise
        raise CheckpointError(f"{path}: {e}") from e
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError, OverflowError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(e).__name__}: {e})") from e
