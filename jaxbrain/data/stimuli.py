"""Grain input pipelines over a StimulusSet: decode, resize, centre-crop and normalise images in id order.

The pipeline walks a list of stimulus ids in order, in fixed-size batches. Every batch has the same shape: the
rows past the last id are zero images with ``mask`` False, so one compiled forward serves every batch and the
features of row ``index`` belong to ``ids[index]``. With several processes, each loads only its own rows of
every global batch (``rows=(start, stop)`` from :func:`jaxbrain.sharding.process_rows`).

Preprocessing is the torchvision/timm evaluation transform, pixel for pixel (tested against torchvision on real
images): resize the shorter side to ``resize`` (PIL, antialiased, long side ``int(resize * long / short)``, with the
model's interpolation: bilinear, bicubic, or lanczos, which is what the paper's reference gets for its own models
because its interpolation lookup always returns PIL code 1), centre crop ``crop`` x ``crop`` (offsets rounded as
torchvision's ``CenterCrop``), scale to [0, 1] and normalise in float32 in torchvision's order, (x / 255 - mean) /
std. Images reach it as RGB: grayscale files (MajajHong2015's) are replicated to three channels when decoded, as
PIL's ``convert("RGB")`` in the reference does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import grain
import numpy as np
from PIL import Image

_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class Stimuli(Protocol):
    """What the pipeline needs of a StimulusSet."""

    def __len__(self) -> int: ...

    def load(self, stimulus_id: str) -> np.ndarray: ...


def resize_shorter_side(image: np.ndarray, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """``image`` (H, W, 3) uint8 resized so its shorter side is ``size`` (torchvision's Resize(int))."""
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose from {sorted(_INTERPOLATIONS)}")
    h, w = image.shape[:2]
    short, long = (h, w) if h <= w else (w, h)
    new_short, new_long = size, int(size * long / short)
    new_h, new_w = (new_short, new_long) if h <= w else (new_long, new_short)
    if (new_h, new_w) == (h, w):
        return image
    resized = Image.fromarray(image).resize((new_w, new_h), _INTERPOLATIONS[interpolation])
    return np.asarray(resized)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` window (torchvision's CenterCrop offsets); too small raises."""
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ValueError(f"center_crop: image {h}x{w} is smaller than the crop {size}")
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return image[top:top + size, left:left + size]


def preprocess(image: np.ndarray, preprocessing: Any) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (crop, crop, 3) normalised by ``preprocessing`` (a registry.Preprocessing)."""
    return normalise(resize_and_crop(image, preprocessing), preprocessing)


def resize_and_crop(image: np.ndarray, preprocessing: Any) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (crop, crop, 3): the resize and centre crop of ``preprocessing``."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"preprocess: expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    image = resize_shorter_side(image, preprocessing.resize, preprocessing.interpolation)
    return center_crop(image, preprocessing.crop)


def normalise(image: np.ndarray, preprocessing: Any) -> np.ndarray:
    """uint8 (crop, crop, 3) -> float32 scaled to [0, 1] and normalised (ToTensor, then Normalize)."""
    scaled = np.asarray(image).astype(np.float32) / np.float32(255)
    return (scaled - np.asarray(preprocessing.mean, np.float32)) / np.asarray(preprocessing.std, np.float32)


def geometry(preprocessing: Any) -> tuple[int, int, str]:
    """What decides the pixels before normalisation: (resize, crop, interpolation)."""
    return int(preprocessing.resize), int(preprocessing.crop), str(preprocessing.interpolation)


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """Which ids go into which batch row: ``n`` ids from ``start``, global batches of ``batch_size``,
    of which this process loads rows ``rows[0]:rows[1]``."""

    n: int
    batch_size: int
    start: int = 0
    rows: tuple[int, int] | None = None

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.start <= self.n:
            raise ValueError(f"start {self.start} outside 0..{self.n}")
        lo, hi = self.local_rows
        if not 0 <= lo < hi <= self.batch_size:
            raise ValueError(f"process rows {self.rows} outside a batch of {self.batch_size}")

    @property
    def local_rows(self) -> tuple[int, int]:
        return self.rows if self.rows is not None else (0, self.batch_size)

    @property
    def num_batches(self) -> int:
        return -(-(self.n - self.start) // self.batch_size)

    def global_index(self, flat: int) -> int:
        """Position in ``ids`` of this process's ``flat``-th row (>= n for padding rows)."""
        lo, hi = self.local_rows
        batch, row = divmod(flat, hi - lo)
        return self.start + batch * self.batch_size + lo + row


@dataclasses.dataclass
class _LoadRow:
    """Grain map: this process's flat row number -> {"image", "mask", "index"} (picklable for workers)."""

    stimuli: Any
    ids: tuple[str, ...]
    preprocessing: Any
    layout: BatchLayout

    def __call__(self, flat: int) -> dict[str, np.ndarray]:
        index = self.layout.global_index(int(flat))
        crop = self.preprocessing.crop
        if index >= len(self.ids):
            return {"image": np.zeros((crop, crop, 3), np.float32), "mask": np.bool_(False),
                    "index": np.int64(index)}
        if hasattr(self.stimuli, "geometry"):  # a CroppedStimuli of this geometry (checked in _rows_dataset)
            image = normalise(self.stimuli.cropped(self.ids[index]), self.preprocessing)
        else:
            image = preprocess(self.stimuli.load(self.ids[index]), self.preprocessing)
        return {"image": image, "mask": np.bool_(True), "index": np.int64(index)}


def _rows_dataset(stimuli: Stimuli, ids: Sequence[str], preprocessing: Any, batch_size: int,
                  start: int, rows: tuple[int, int] | None) -> tuple[grain.MapDataset, int]:
    ids = tuple(str(i) for i in ids)
    if hasattr(stimuli, "__contains__"):
        missing = [i for i in ids if i not in stimuli]
        if missing:
            raise KeyError(f"{len(missing)} stimulus ids not in the stimulus set {stimuli!r}, "
                           f"e.g. {missing[:5]}")
    if hasattr(stimuli, "geometry") and stimuli.geometry != geometry(preprocessing):
        raise ValueError(f"{stimuli!r} was resized and cropped as {stimuli.geometry}, but this model's "
                         f"preprocessing is {geometry(preprocessing)}")
    layout = BatchLayout(len(ids), batch_size, start, rows)
    lo, hi = layout.local_rows
    per_batch = hi - lo
    dataset = grain.MapDataset.range(layout.num_batches * per_batch).map(
        _LoadRow(stimuli, ids, preprocessing, layout))
    return dataset, per_batch


def stimulus_dataset(stimuli: Stimuli, ids: Sequence[str], preprocessing: Any, batch_size: int, *,
                     start: int = 0, rows: tuple[int, int] | None = None) -> grain.MapDataset:
    """A Grain MapDataset of batches {"image" (b, crop, crop, 3) float32, "mask" (b,) bool, "index" (b,)}.

    Batch ``k`` holds ``ids[start + k*batch_size : start + (k+1)*batch_size]`` (rows ``rows`` of it on this
    process, all by default), padded past the end with zero images whose ``mask`` is False.
    """
    dataset, per_batch = _rows_dataset(stimuli, ids, preprocessing, batch_size, start, rows)
    return dataset.batch(per_batch, drop_remainder=False)


def iterate_batches(stimuli: Stimuli, ids: Sequence[str], preprocessing: Any, batch_size: int, *,
                    start: int = 0, rows: tuple[int, int] | None = None, num_threads: int = 4,
                    prefetch: int = 2, num_workers: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Iterate the batches of :func:`stimulus_dataset` in order, decoding with threads or worker processes.

    ``num_threads`` threads decode images of this process in parallel (PIL releases the GIL while
    resizing); with ``num_workers`` > 0, Grain worker processes build whole batches instead (the calling
    script needs a ``__main__`` guard). Batches and their rows come in the same order either way.
    """
    if num_workers > 0:
        _mark_flags_parsed()
        dataset = stimulus_dataset(stimuli, ids, preprocessing, batch_size, start=start, rows=rows)
        it = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                         per_worker_buffer_size=max(1, prefetch)))
    else:
        rows_ds, per_batch = _rows_dataset(stimuli, ids, preprocessing, batch_size, start, rows)
        threads = max(1, num_threads)
        it = rows_ds.to_iter_dataset(grain.ReadOptions(
            num_threads=threads, prefetch_buffer_size=max(threads, prefetch * per_batch)))
        it = it.batch(per_batch, drop_remainder=False)
    return iter(it)


def _mark_flags_parsed() -> None:
    try:
        from absl import flags
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
    except ImportError:  # absl is a dependency of grain; nothing to do without it
        pass
