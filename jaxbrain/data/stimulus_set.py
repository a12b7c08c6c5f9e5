"""StimulusSet: an ordered mapping from stimulus id (str) to an RGB image.

A set is backed by one of
  * a folder of image files (`StimulusSet.from_folder`),
  * a zip archive of image files (`StimulusSet.from_zip`),
  * an HDF5 image brick, a dataset shaped (N, H, W, 3) uint8 such as NSD's `nsd_stimuli.hdf5:imgBrick`
    (`StimulusSet.from_brick`),
  * an in-memory uint8 array (N, H, W, 3) or list of HxWx3 arrays (`StimulusSet.from_array`).

`load(id)` always returns a uint8 array (H, W, 3) in RGB order. A set is stored inside a NeuralDataset file by
`to_hdf5(group, embed=...)`: either by reference (the path of the folder/zip/brick plus the member name or row of
each id) or with its pixels embedded (the original encoded file bytes for folders and zips, a uint8 brick for
arrays), and read back by `StimulusSet.from_hdf5(group)`. File handles are opened lazily, once per process, so a
set can be pickled into data-loader workers.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import zipfile
from collections.abc import Iterator, Sequence

import h5py
import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class StimulusError(ValueError):
    """A stimulus set cannot be built or an image cannot be read."""


def _to_rgb_uint8(image: np.ndarray, where: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise StimulusError(f"{where}: image dtype is {image.dtype}, expected uint8")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    elif image.ndim == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    elif image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim != 3 or image.shape[-1] != 3:
        raise StimulusError(f"{where}: image shape is {image.shape}, expected (H, W, 3)")
    return np.ascontiguousarray(image)


def _decode(data: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises several unrelated types for corrupt files
        raise StimulusError(f"{where}: cannot decode image ({exc})") from exc


def _check_ids(ids: Sequence[str], where: str) -> list[str]:
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        seen, dups = set(), []
        for i in ids:
            if i in seen:
                dups.append(i)
            seen.add(i)
        raise StimulusError(f"{where}: duplicate stimulus ids {dups[:5]}")
    return ids


class StimulusSet:
    """Ordered id -> image mapping. Build it with one of the `from_*` constructors."""

    def __init__(self, kind: str, ids: Sequence[str], *, path: str | None = None, members=None,
                 dataset: str | None = None, pixels=None):
        self.kind = kind
        self._ids = _check_ids(ids, f"stimulus set ({kind}{': ' + str(path) if path else ''})")
        self._index = {i: k for k, i in enumerate(self._ids)}
        self.path = path
        self.members = members        # folder/zip: member name per id; brick: row index per id
        self.dataset = dataset        # brick / embedded: dataset path inside the HDF5 file
        self._pixels = pixels         # array kind: (N, H, W, 3) uint8 or list of arrays
        self._handle = None
        self._handle_pid = None
        n = len(self._ids)
        if members is not None and len(members) != n:
            raise StimulusError(f"stimulus set {path}: {len(members)} members for {n} ids")
        if pixels is not None and len(pixels) != n:
            raise StimulusError(f"in-memory stimulus set: {len(pixels)} images for {n} ids")

    # ---- constructors -------------------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, folder, ids: Sequence[str] | None = None, members: Sequence[str] | None = None,
                    *, recursive: bool = False) -> "StimulusSet":
        """Images in `folder`. By default every image file (sorted), id = file name without suffix.

        `members` are paths relative to the folder, one per id; `ids` default to their stems.
        """
        folder = pathlib.Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"stimulus folder not found: {folder}")
        if members is None:
            pattern = "**/*" if recursive else "*"
            members = sorted(p.relative_to(folder).as_posix() for p in folder.glob(pattern)
                             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not members:
                raise StimulusError(f"stimulus folder {folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        members = [str(m) for m in members]
        missing = [m for m in members if not (folder / m).is_file()]
        if missing:
            raise FileNotFoundError(f"stimulus folder {folder}: {len(missing)} image files missing, "
                                    f"e.g. {missing[:3]}")
        if ids is None:
            ids = [pathlib.PurePosixPath(m).stem for m in members]
        return cls("folder", ids, path=str(folder.resolve()), members=members)

    @classmethod
    def from_zip(cls, path, ids: Sequence[str] | None = None, members: Sequence[str] | None = None
                 ) -> "StimulusSet":
        """Images inside a zip archive. By default every image member (sorted), id = member stem."""
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"stimulus zip not found: {path}")
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile as exc:
            raise StimulusError(f"stimulus zip {path}: not a zip archive ({exc})") from exc
        if members is None:
            members = sorted(n for n in names if pathlib.PurePosixPath(n).suffix.lower() in IMAGE_SUFFIXES)
            if not members:
                raise StimulusError(f"stimulus zip {path}: no image members")
        members = [str(m) for m in members]
        present = set(names)
        missing = [m for m in members if m not in present]
        if missing:
            raise StimulusError(f"stimulus zip {path}: {len(missing)} members missing, e.g. {missing[:3]}")
        if ids is None:
            ids = [pathlib.PurePosixPath(m).stem for m in members]
        return cls("zip", ids, path=str(path.resolve()), members=members)

    @classmethod
    def from_brick(cls, path, dataset: str = "imgBrick", ids: Sequence[str] | None = None,
                   indices: Sequence[int] | None = None) -> "StimulusSet":
        """Rows of an HDF5 dataset shaped (N, H, W, 3) uint8 (NSD `nsd_stimuli.hdf5`, dataset `imgBrick`).

        `indices` are the rows to use (default all), `ids` their ids (default the row number as a string).
        """
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"stimulus brick not found: {path}")
        with h5py.File(path, "r") as f:
            if dataset not in f:
                raise StimulusError(f"stimulus brick {path}: no dataset {dataset!r} (has {list(f.keys())})")
            shape, dtype = f[dataset].shape, f[dataset].dtype
        if len(shape) != 4 or shape[-1] != 3 or dtype != np.uint8:
            raise StimulusError(f"stimulus brick {path}:{dataset}: shape {shape} dtype {dtype}, "
                                "expected (N, H, W, 3) uint8")
        rows = np.arange(shape[0]) if indices is None else np.asarray(indices, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= shape[0]):
            raise StimulusError(f"stimulus brick {path}:{dataset}: row indices outside 0..{shape[0] - 1}")
        if ids is None:
            ids = [str(int(r)) for r in rows]
        return cls("brick", ids, path=str(path.resolve()), members=rows, dataset=dataset)

    @classmethod
    def from_array(cls, images, ids: Sequence[str]) -> "StimulusSet":
        """In-memory images: uint8 (N, H, W, 3) (or (N, H, W)), or a list of HxWx3 uint8 arrays."""
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or images.ndim not in (3, 4):
                raise StimulusError(f"in-memory stimuli: shape {images.shape} dtype {images.dtype}, "
                                    "expected (N, H, W, 3) uint8")
        else:
            images = [_to_rgb_uint8(im, f"in-memory stimulus {k}") for k, im in enumerate(images)]
        return cls("array", ids, pixels=images)

    # ---- mapping interface --------------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, stimulus_id) -> bool:
        return str(stimulus_id) in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __repr__(self) -> str:
        return f"StimulusSet(kind={self.kind!r}, n={len(self)}, path={self.path!r})"

    def position(self, stimulus_id: str) -> int:
        try:
            return self._index[str(stimulus_id)]
        except KeyError:
            raise KeyError(f"stimulus id {stimulus_id!r} not in {self!r}") from None

    def subset(self, ids: Sequence[str]) -> "StimulusSet":
        """The same backing store restricted to `ids`, in that order."""
        pos = [self.position(i) for i in ids]
        members = None if self.members is None else (
            np.asarray(self.members)[pos] if isinstance(self.members, np.ndarray) else [self.members[p] for p in pos])
        pixels = None
        if self._pixels is not None:
            pixels = self._pixels[pos] if isinstance(self._pixels, np.ndarray) else [self._pixels[p] for p in pos]
        return StimulusSet(self.kind, ids, path=self.path, members=members, dataset=self.dataset, pixels=pixels)

    # ---- reading -------------------------------------------------------------------------------------------
    def _open(self):
        if self._handle is None or self._handle_pid != os.getpid():
            if not os.path.exists(self.path):
                raise FileNotFoundError(f"stimulus source not found: {self.path}")
            if self.kind == "zip":
                self._handle = zipfile.ZipFile(self.path)
            else:
                self._handle = h5py.File(self.path, "r")
            self._handle_pid = os.getpid()
        return self._handle

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"] = None
        state["_handle_pid"] = None
        return state

    def load(self, stimulus_id: str) -> np.ndarray:
        """The image of `stimulus_id` as uint8 (H, W, 3) RGB."""
        k = self.position(stimulus_id)
        if self.kind == "array":
            return _to_rgb_uint8(self._pixels[k], f"in-memory stimulus {stimulus_id!r}")
        if self.kind == "folder":
            file = pathlib.Path(self.path) / self.members[k]
            if not file.is_file():
                raise FileNotFoundError(f"stimulus {stimulus_id!r}: image file not found: {file}")
            return _decode(file.read_bytes(), str(file))
        if self.kind == "zip":
            zf = self._open()
            try:
                data = zf.read(self.members[k])
            except KeyError:
                raise StimulusError(f"stimulus {stimulus_id!r}: member {self.members[k]!r} not in zip "
                                    f"{self.path}") from None
            return _decode(data, f"{self.path}:{self.members[k]}")
        f = self._open()
        if self.dataset not in f:
            raise StimulusError(f"stimulus source {self.path}: no dataset {self.dataset!r}")
        if self.kind == "brick":
            return _to_rgb_uint8(f[self.dataset][int(self.members[k])], f"{self.path}:{self.dataset}")
        if self.kind == "encoded":
            return _decode(bytes(f[self.dataset][int(self.members[k])]), f"{self.path}:{self.dataset}[{k}]")
        raise StimulusError(f"unknown stimulus set kind {self.kind!r}")

    def load_many(self, ids: Sequence[str]) -> np.ndarray:
        """Images of `ids` stacked to (N, H, W, 3); they must share one size."""
        images = [self.load(i) for i in ids]
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise StimulusError(f"{self!r}: images differ in size {sorted(shapes)[:3]}; load them one by one")
        return np.stack(images)

    def _raw_bytes(self, k: int) -> bytes:
        if self.kind == "folder":
            return (pathlib.Path(self.path) / self.members[k]).read_bytes()
        if self.kind == "zip":
            return self._open().read(self.members[k])
        return bytes(self._open()[self.dataset][int(self.members[k])])

    def content_digest(self) -> str:
        """SHA-256 over every id and its decoded pixels, the same however the images are stored.

        Decodes every image; one StimulusError lists all that cannot be decoded.
        """
        digest, bad = hashlib.sha256(), []
        for stimulus_id in self._ids:
            try:
                image = self.load(stimulus_id)
            except (StimulusError, OSError) as err:
                bad.append(f"{stimulus_id} ({err})")
                continue
            digest.update(f"{stimulus_id}\x00{image.shape}".encode() + np.ascontiguousarray(image).tobytes())
        if bad:
            raise StimulusError(f"{self!r}: {len(bad)} stimulus image(s) cannot be decoded: " + "; ".join(bad[:20])
                                + (" ..." if len(bad) > 20 else ""))
        return digest.hexdigest()

    # ---- HDF5 serialisation --------------------------------------------------------------------------------
    def to_hdf5(self, group: h5py.Group, *, embed: bool = False) -> None:
        """Writes the set into `group`.

        embed=False stores the source path and the member/row of each id (in-memory sets are always embedded).
        embed=True copies the images: the original encoded bytes of folder/zip/encoded members, or a uint8 brick
        `pixels` (N, H, W, 3) for arrays and bricks whose images share one size (PNG bytes otherwise).
        """
        str_dt = h5py.string_dtype()
        group.create_dataset("ids", data=np.asarray(self._ids, dtype=object), dtype=str_dt)
        if self.kind == "array":
            embed = True
        if not embed:
            group.attrs["kind"] = self.kind
            group.attrs["path"] = self.path
            if self.kind in ("folder", "zip"):
                group.create_dataset("members", data=np.asarray(self.members, dtype=object), dtype=str_dt)
            else:
                group.attrs["dataset"] = self.dataset
                group.create_dataset("rows", data=np.asarray(self.members, dtype=np.int64))
            return
        if self.kind in ("folder", "zip", "encoded"):
            data = group.create_dataset("encoded", (len(self),), dtype=h5py.vlen_dtype(np.uint8))
            for k in range(len(self)):
                data[k] = np.frombuffer(self._raw_bytes(k), dtype=np.uint8)
            group.attrs["kind"] = "encoded"
            return
        images = [self.load(i) for i in self._ids]
        if len({im.shape for im in images}) == 1:
            group.create_dataset("pixels", data=np.stack(images), dtype=np.uint8)
            group.attrs["kind"] = "pixels"
        else:
            data = group.create_dataset("encoded", (len(self),), dtype=h5py.vlen_dtype(np.uint8))
            for k, im in enumerate(images):
                buf = io.BytesIO()
                Image.fromarray(im).save(buf, format="PNG")
                data[k] = np.frombuffer(buf.getvalue(), dtype=np.uint8)
            group.attrs["kind"] = "encoded"

    @classmethod
    def from_hdf5(cls, group: h5py.Group) -> "StimulusSet":
        """Reads a set written by `to_hdf5`. Embedded pixels stay in the file and are read on demand."""
        where = f"{group.file.filename}:{group.name}"
        if "ids" not in group or "kind" not in group.attrs:
            raise StimulusError(f"{where}: not a stimulus set (needs dataset 'ids' and attribute 'kind')")
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in group["ids"][()]]
        kind = str(group.attrs["kind"])
        file_path = str(pathlib.Path(group.file.filename).resolve())
        if kind in ("folder", "zip"):
            members = [s.decode() if isinstance(s, bytes) else str(s) for s in group["members"][()]]
            return cls(kind, ids, path=str(group.attrs["path"]), members=members)
        if kind == "brick":
            return cls("brick", ids, path=str(group.attrs["path"]), members=np.asarray(group["rows"][()]),
                       dataset=str(group.attrs["dataset"]))
        if kind == "pixels":
            return cls("brick", ids, path=file_path, members=np.arange(len(ids)), dataset=group["pixels"].name)
        if kind == "encoded":
            return cls("encoded", ids, path=file_path, members=np.arange(len(ids)), dataset=group["encoded"].name)
        raise StimulusError(f"{where}: unknown stimulus set kind {kind!r}")
