"""Labelled image folders -> prepared tensorflow-datasets ArrayRecord directories, read back with random access.

Source layouts (ImageNet/Ecoset style; class index = position in the sorted class names, torchvision's
``ImageFolder`` convention, which also gives the CIFAR-10 label order):

* ``root/<class>/<image>``: one pool; a validation split is held out per class with a fixed seed
  (``round(validation_fraction * n_class)`` images of each class with two or more images);
* ``root/train/<class>/...`` and ``root/val|validation/<class>/...`` (optionally ``test``): splits as given;
* ``root/<anything>.zip`` in place of class folders, each member ``.../<class>/<image>`` (the member's parent
  folder names its class; members at the top level take the zip's stem).

:func:`prepare_image_folder` decodes every image once to check it (all undecodable files are listed in one
error), then writes the encoded bytes unchanged with a small ``tfds.core.GeneratorBasedBuilder`` (ArrayRecord,
no TensorFlow; records in listing order) into a temporary directory that is renamed into place only when
complete (what a killed build leaves is removed by the next). Beside tfds's files the prepared directory holds ``prepared.json`` (class names, split sizes, the
content fingerprint: sha256 over every (split, class, name, sha256 of bytes) and the split settings) and
``labels-<split>.npy`` (the label of each record, for subsets without reading images). A rerun with the same
content and settings is skipped; different content is an error unless ``overwrite``.

:func:`load_prepared` opens it: ``prepared.source(split)`` is a random-access source (``len``, ``[i] ->
{"image": encoded bytes, "label": int}``, ``.labels``) over ``builder.as_data_source``; :func:`class_subset`
takes a per-class subset of it as an index view (no copy) whose ``len`` is D, the pretraining dataset size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence

import numpy as np

from jaxbrain import results
from jaxbrain.train import augment
from jaxbrain.features import store

log = logging.getLogger(__name__)

FORMAT = "jaxbrain.prepared_images/1"
PAPER_SAMPLES_PER_CLASS = (1, 3, 10, 30, 100, 300, None)  # None: all images
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"})
_SPLIT_FOLDERS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


class ImageFolderError(ValueError):
    """A source folder or prepared directory that cannot be used, with what is wrong in one line."""


@dataclasses.dataclass(frozen=True)
class ImageFile:
    """One source image: a file, or a member of a zip archive; ``name`` is relative to the source root."""

    class_name: str
    name: str
    path: str
    member: str | None = None


def _read_all(files: Sequence[ImageFile]) -> Iterator[tuple[ImageFile, bytes | OSError]]:
    """``(file, bytes)`` for each file in order (or the error reading it), keeping one zip open at a time."""
    archive = None
    try:
        for f in files:
            try:
                if f.member is None:
                    yield f, pathlib.Path(f.path).read_bytes()
                    continue
                if archive is None or archive.filename != f.path:
                    if archive is not None:
                        archive.close()
                    archive = zipfile.ZipFile(f.path)
                yield f, archive.read(f.member)
            except (OSError, KeyError, zipfile.BadZipFile) as err:
                yield f, OSError(str(err))
    finally:
        if archive is not None:
            archive.close()


def _is_image(name: str) -> bool:
    return pathlib.PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def _zip_images(path: pathlib.Path) -> list[ImageFile]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = sorted(m for m in archive.namelist() if not m.endswith("/") and _is_image(m))
    except zipfile.BadZipFile as err:
        raise ImageFolderError(f"not a readable zip archive: {path} ({err})") from None
    return [ImageFile(pathlib.PurePosixPath(m).parent.name or path.stem, f"{path.name}:{m}", str(path), m)
            for m in members]


def _scan_classes(root: pathlib.Path) -> list[ImageFile]:
    """Every image under ``root``'s class folders and class zips; empty classes raise, listing them all."""
    files, empty = [], []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found = [ImageFile(entry.name, p.relative_to(root).as_posix(), str(p))
                     for p in sorted(entry.rglob("*")) if p.is_file() and _is_image(p.name)]
        elif entry.suffix.lower() == ".zip":
            found = _zip_images(entry)
        else:
            continue
        if not found:
            empty.append(entry.name)
        files.extend(found)
    if empty:
        raise ImageFolderError(f"{len(empty)} empty class folder(s) or zip(s) in {root}: {', '.join(empty)}")
    if not files:
        loose = sum(1 for p in root.iterdir() if p.is_file() and _is_image(p.name))
        hint = f" (found {loose} images at the top level; put each class in its own folder)" if loose else ""
        raise ImageFolderError(f"no class folders or class zips in {root}{hint}")
    return files


def scan_image_folder(root: str | os.PathLike) -> dict[str, list[ImageFile]]:
    """``{split: images}``: ``{"": images}`` for a single pool, or the split folders' contents."""
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    split_dirs = {_SPLIT_FOLDERS[p.name]: p for p in sorted(root.iterdir())
                  if p.is_dir() and p.name in _SPLIT_FOLDERS}
    if not split_dirs:
        return {"": _scan_classes(root)}
    if "train" not in split_dirs:
        raise ImageFolderError(f"{root} has split folders {sorted(split_dirs)} but no train/")
    return {split: _scan_classes(path) for split, path in split_dirs.items()}


def copy_subset(source: str | os.PathLike, dest: str | os.PathLike, per_class: int) -> pathlib.Path:
    """The first ``per_class`` images (by name) of every class of ``source`` copied to ``dest/<class>/``.

    A labelled folder small enough for a quick pretraining or fine-tuning run; files already in ``dest`` stay.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    dest = pathlib.Path(dest).expanduser()
    pools = scan_image_folder(source)
    files = pools.get("train", pools.get(""))
    for class_name in sorted({f.class_name for f in files}):
        chosen = sorted((f for f in files if f.class_name == class_name), key=lambda f: f.name)[:per_class]
        for file, data in _read_all(chosen):
            if isinstance(data, OSError):
                raise ImageFolderError(f"cannot read {file.path}{'!' + file.member if file.member else ''}: {data}")
            target = dest / class_name / pathlib.PurePosixPath(file.member or file.name).name
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                store.atomic_write(target, lambda f, data=data: f.write(data))
    return dest


def _by_class(files: Sequence[ImageFile], class_names: Sequence[str]) -> list[list[ImageFile]]:
    groups = {name: [] for name in class_names}
    for f in files:
        groups[f.class_name].append(f)
    return [groups[name] for name in class_names]


def _hold_out(files: list[ImageFile], class_names: Sequence[str], fraction: float,
              seed: int) -> dict[str, list[ImageFile]]:
    """Per class, ``round(fraction * n)`` images (fixed seed; none for one-image classes) go to validation."""
    if not 0.0 <= fraction < 1.0:
        raise ImageFolderError(f"validation_fraction must be in [0, 1), got {fraction}")
    by_class = _by_class(files, class_names)
    splits = {"train": [], "validation": []}
    for index, members in enumerate(by_class):
        n_val = int(round(fraction * len(members))) if len(members) > 1 else 0
        n_val = min(n_val, len(members) - 1)
        held = set(np.random.default_rng([seed, index]).permutation(len(members))[:n_val].tolist())
        for k, f in enumerate(members):
            splits["validation" if k in held else "train"].append(f)
    return splits if fraction > 0 else {"train": splits["train"]}


def plan_splits(root: str | os.PathLike, validation_fraction: float = 0.1,
                split_seed: int = 0) -> tuple[dict[str, list[ImageFile]], tuple[str, ...]]:
    """The splits a prepared directory will hold and the sorted class names (train defines the classes)."""
    scanned = scan_image_folder(root)
    pool = scanned.get("", scanned.get("train"))
    class_names = tuple(sorted({f.class_name for f in pool}))
    if "" in scanned:
        return _hold_out(scanned[""], class_names, validation_fraction, split_seed), class_names
    for split, files in scanned.items():
        unknown = sorted({f.class_name for f in files} - set(class_names))
        if unknown:
            raise ImageFolderError(f"split {split!r} of {root} has classes missing from train: {unknown}")
    return scanned, class_names


def _fingerprint(splits: dict[str, list[ImageFile]], settings: dict, check_decoding: bool) -> str:
    """sha256 of the settings and every image's (split, class, name, sha256 of bytes); with ``check_decoding``
    also decode each image, listing every failure in one error."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    bad = []
    for split, files in splits.items():
        for f, data in _read_all(files):
            try:
                if isinstance(data, OSError):
                    raise data
                if check_decoding:
                    augment.decode(data)
            except (OSError, augment.ImageDecodeError) as err:
                bad.append(f"{f.name} ({err})")
                continue
            item = [split, f.class_name, f.name, hashlib.sha256(data).hexdigest()]
            digest.update(json.dumps(item).encode())
    if bad:
        raise ImageFolderError(f"{len(bad)} unreadable or undecodable image(s): {'; '.join(bad)}")
    return digest.hexdigest()


def _builder_class():
    """The tfds builder, defined on first use so that importing this module does not import tfds."""
    import tensorflow_datasets as tfds

    class JaxbrainImageFolder(tfds.core.GeneratorBasedBuilder):
        """Encoded images with integer labels, one ArrayRecord file set per split, in listing order."""

        VERSION = tfds.core.Version("1.0.0")

        def __init__(self, *, splits: dict[str, list[ImageFile]], class_names: Sequence[str], **kwargs):
            self._splits = splits
            self._class_names = list(class_names)
            super().__init__(**kwargs)

        def _info(self):
            features = tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(names=self._class_names),
                "file_name": tfds.features.Text(),
            })
            return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True,
                                         description="A labelled image folder prepared by jaxbrain.")

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(files) for split, files in self._splits.items()}

        def _generate_examples(self, files):
            index = {name: i for i, name in enumerate(self._class_names)}
            for key, (f, data) in enumerate(_read_all(files)):
                if isinstance(data, OSError):
                    raise ImageFolderError(f"cannot read {f.name} while writing: {data}")
                yield key, {"image": data, "label": index[f.class_name], "file_name": f.name}

    return JaxbrainImageFolder


_BUILDER = None


def _builder(**kwargs):
    global _BUILDER
    if _BUILDER is None:
        _BUILDER = _builder_class()
    return _BUILDER(**kwargs)


def _manifest(path: pathlib.Path) -> dict | None:
    try:
        return json.loads((path / "prepared.json").read_text())
    except (OSError, ValueError):
        return None


def _write_prepared(tmp: pathlib.Path, splits: dict[str, list[ImageFile]], class_names: Sequence[str],
                    manifest: dict) -> pathlib.Path:
    """Build the tfds files and the sidecars under ``tmp``; returns the finished dataset directory."""
    builder = _builder(splits=splits, class_names=class_names, data_dir=str(tmp / "tfds"),
                       file_format="array_record")
    builder.download_and_prepare(download_dir=str(tmp / "downloads"))
    built = pathlib.Path(str(builder.data_dir))
    index = {name: i for i, name in enumerate(class_names)}
    for split, files in splits.items():
        np.save(built / f"labels-{split}.npy", np.asarray([index[f.class_name] for f in files], np.int32))
    results.write_json(built / "prepared.json", manifest)
    return built


def _remove_stale(output: pathlib.Path) -> None:
    """Delete what a killed earlier build left beside ``output`` (its temporary and swapped-out folders)."""
    for pattern in (f".{output.name}.tmp-*", f".{output.name}.old-*"):
        for stale in output.parent.glob(pattern):
            log.info("removing %s left by an interrupted build", stale)
            shutil.rmtree(stale, ignore_errors=True)


def _replace_dir(built: pathlib.Path, output: pathlib.Path) -> None:
    """Move ``built`` to ``output``; an existing ``output`` is swapped out first and deleted after."""
    old = None
    if output.exists():
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        os.replace(output, old)
    os.replace(built, output)
    if old is not None:
        shutil.rmtree(old)


def prepare_image_folder(source: str | os.PathLike, output: str | os.PathLike, *,
                         validation_fraction: float = 0.1, split_seed: int = 0,
                         overwrite: bool = False) -> "PreparedImages":
    """Prepare ``source`` (a labelled image folder) as ``output`` (a tfds ArrayRecord directory); see the module
    docstring. Returns the opened :class:`PreparedImages`; skips the work when ``output`` holds the same content
    prepared with the same settings."""
    output = pathlib.Path(output).expanduser()
    splits, class_names = plan_splits(source, validation_fraction, split_seed)
    settings = {"format": FORMAT, "class_names": list(class_names), "validation_fraction": validation_fraction,
                "split_seed": split_seed, "splits": sorted(splits)}
    _remove_stale(output)
    existing = _manifest(output) if output.exists() else None
    if existing is not None and existing.get("fingerprint") == _fingerprint(splits, settings, False):
        log.info("%s already holds this content and settings; skipping", output)
        return load_prepared(output)
    if output.exists() and not overwrite:
        why = "was prepared from other content or settings" if existing else "exists and is not a prepared directory"
        raise ImageFolderError(f"{output} {why}; pass overwrite=True to replace it")
    fingerprint = _fingerprint(splits, settings, True)
    manifest = {**settings, "fingerprint": fingerprint, "source": str(pathlib.Path(source).resolve()),
                "split_sizes": {s: len(f) for s, f in splits.items()},
                "class_counts": {s: [len(g) for g in _by_class(files, class_names)] for s, files in splits.items()}}
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.tmp-", dir=output.parent) as tmp:
        built = _write_prepared(pathlib.Path(tmp), splits, class_names, manifest)
        _replace_dir(built, output)
    log.info("prepared %s: %s", output, manifest["split_sizes"])
    return load_prepared(output)


# ---------------------------------------------------------------- reading


@dataclasses.dataclass
class ImageSource:
    """Random access to one split: ``len``, ``[i] -> {"image": encoded bytes, "label": int}``, ``labels``."""

    path: str
    split: str
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self):
        self._records = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _data_source(self):
        if self._records is None:
            import tensorflow_datasets as tfds

            builder = tfds.builder_from_directory(self.path)
            self._records = builder.as_data_source(self.split, decoders={"image": tfds.decode.SkipDecoding()})
            if len(self._records) != len(self.labels):
                raise ImageFolderError(f"{self.path}: split {self.split!r} has {len(self._records)} records but "
                                       f"labels-{self.split}.npy has {len(self.labels)}")
        return self._records

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        record = self._data_source()[int(index)]
        return {"image": record["image"], "label": int(record["label"])}

    def __getstate__(self):  # the tfds reader is reopened in each worker process
        return {**self.__dict__, "_records": None}


@dataclasses.dataclass(frozen=True)
class PreparedImages:
    """An opened prepared directory: class names, split sizes, fingerprint, and a source per split."""

    path: str
    class_names: tuple[str, ...]
    split_sizes: dict
    fingerprint: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def source(self, split: str = "train") -> ImageSource:
        if split not in self.split_sizes:
            raise ImageFolderError(f"{self.path} has no split {split!r}; it has {sorted(self.split_sizes)}")
        labels = np.load(pathlib.Path(self.path) / f"labels-{split}.npy")
        return ImageSource(self.path, split, labels, self.class_names)


def load_prepared(path: str | os.PathLike) -> PreparedImages:
    """Open a directory written by :func:`prepare_image_folder`."""
    path = pathlib.Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"prepared image directory not found: {path}")
    manifest = _manifest(path)
    if manifest is None or manifest.get("format") != FORMAT:
        raise ImageFolderError(f"{path} is not a prepared image directory (no readable prepared.json of format "
                               f"{FORMAT}); build it with configs/prepare_images.py")
    return PreparedImages(str(path), tuple(manifest["class_names"]), dict(manifest["split_sizes"]),
                          manifest["fingerprint"])


# ---------------------------------------------------------------- subsets


@dataclasses.dataclass
class SubsetView:
    """Records ``indices`` of ``source`` as a random-access source (no copy); ``len`` is D."""

    source: ImageSource | SubsetView
    indices: np.ndarray
    samples_per_class: int | None = None
    seed: int = 0

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels[self.indices]

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.source.class_names

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def num_images(self) -> int:
        """D, the number of training images in the subset (Eq. 8)."""
        return len(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        return self.source[int(self.indices[index])]


def class_subset(source: ImageSource, samples_per_class: int | str | None, seed: int = 0) -> SubsetView:
    """The first ``samples_per_class`` images of each class in a fixed per-class order drawn from ``seed``
    (all of a class that has fewer; ``None`` or ``"all"``: every image). Orders do not depend on the size, so
    smaller subsets of one seed are contained in larger ones. Indices are sorted."""
    if samples_per_class in (None, "all"):
        return SubsetView(source, np.arange(len(source)), None, seed)
    k = int(samples_per_class)
    if k < 1:
        raise ValueError(f"samples_per_class must be >= 1 or 'all', got {samples_per_class}")
    labels = np.asarray(source.labels)
    chosen = []
    for label in range(source.num_classes):
        members = np.flatnonzero(labels == label)
        chosen.append(members[np.random.default_rng([seed, label]).permutation(len(members))[:k]])
    return SubsetView(source, np.sort(np.concatenate(chosen)), k, seed)
