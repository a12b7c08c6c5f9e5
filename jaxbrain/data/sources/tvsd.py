"""TVSD: the THINGS Ventral-Stream Spiking Dataset, multi-unit activity of 2 macaques in V1, V4 and IT.

Release: Papale, Wang, Morgan et al. (2025), "An extensive dataset of spiking activity to reveal the syntax of
the ventral stream", Neuron, https://doi.org/10.1016/j.neuron.2024.12.003; data on G-Node GIN,
https://gin.g-node.org/paolo_papale/TVSD (normalised MUA).

Files expected in `source_dir`, M = F or N:
  monkeyM/THINGS_normMUA.mat    MATLAB v7.3 (HDF5), as read by h5py:
      train_MUA (22248, 1024)   normalised, time-averaged MUA per train image (each shown once)
      test_MUA_reps (30, 100, 1024)  every repeat of the 100 test images
      reliab (435, 1024)        pairwise correlations between test repeats per channel
  monkeyM/_logs/things_imgs.mat MATLAB v7.3: structs train_imgs / test_imgs with field `things_path`
      (cell array of strings such as "aardvark/aardvark_01b.jpg"), in the order of the MUA rows.
Images (optional): the THINGS object-image folder given as `images_dir` (default `source_dir/object_images` when
it exists); without it the dataset has no stimulus set and a warning says so.

Channels (0-based, after the release's physical-order remapping): monkey N: V1 0-511, V4 512-767, IT 768-1023;
monkey F: V1 0-511, IT 512-831, V4 832-1023 (from the release's norm_MUA.m ROI assignment).
Preparation (as the paper's reference code): channels whose mean reliability (mean of `reliab` over the repeat
pairs; a NaN pair makes it NaN, so the channel is dropped) is >= `reliability_threshold` (0.1; the paper's "more
than 10 %"); train = train_MUA; test = mean over the 30 repeats; noise ceiling from the 30 repeats by
`jaxbrain.metrics.noise_ceiling` with n = 30; stimulus ids = image file stems; subjects monkeyN, monkeyF.
This release filter is the only one: the dataset's `target_filter` is "released", so scoring adds no NC >= 10 %
filter on top.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import h5py
import numpy as np

from jaxbrain.data.neural import NeuralDataError, NeuralDataset
from jaxbrain.data.sources.things_fmri import things_stimuli

CHANNEL_RANGES = {
    "F": {"V1": (0, 512), "V4": (832, 1024), "IT": (512, 832)},
    "N": {"V1": (0, 512), "V4": (512, 768), "IT": (768, 1024)},
}
N_CHANNELS = 1024


class TVSDFormatError(NeuralDataError):
    """A TVSD release file is missing, malformed or inconsistent."""


def _dataset(f: h5py.File, key: str, path) -> h5py.Dataset:
    if key not in f:
        raise TVSDFormatError(f"{path}: missing variable {key!r} (has {sorted(f.keys())})")
    return f[key]


def _strings(f: h5py.File, refs, path, what) -> list[str]:
    """A MATLAB v7.3 cell array of char arrays -> list of str."""
    out = []
    for ref in np.asarray(refs).reshape(-1):
        try:
            chars = np.asarray(f[ref][()]).reshape(-1)
        except (TypeError, ValueError, KeyError) as exc:
            raise TVSDFormatError(f"{path}: {what} is not a cell array of strings ({exc})") from exc
        out.append("".join(map(chr, chars)))
    return out


def read_image_paths(path) -> dict[str, list[str]]:
    """{"train": [...], "test": [...]} THINGS paths "<concept>/<file>" from `_logs/things_imgs.mat`."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TVSD release: expected file not found: {path}")
    out = {}
    with h5py.File(path, "r") as f:
        for split in ("train", "test"):
            group = f"{split}_imgs"
            if group not in f or "things_path" not in f[group]:
                raise TVSDFormatError(f"{path}: missing {group}.things_path")
            raw = _strings(f, f[group]["things_path"][()], path, f"{group}.things_path")
            out[split] = ["/".join(p.replace("\\", "/").split("/")[-2:]) for p in raw]
    return out


def _monkey(folder: pathlib.Path, monkey: str, reliability_threshold: float):
    from jaxbrain.metrics import noise_ceiling

    path = folder / f"monkey{monkey}" / "THINGS_normMUA.mat"
    if not path.is_file():
        raise FileNotFoundError(f"TVSD release: expected file not found: {path}")
    paths = read_image_paths(folder / f"monkey{monkey}" / "_logs" / "things_imgs.mat")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise TVSDFormatError(f"{path}: not a MATLAB v7.3 (HDF5) file ({exc})") from exc
    with f:
        train = np.asarray(_dataset(f, "train_MUA", path)[()], np.float64)
        reps = np.asarray(_dataset(f, "test_MUA_reps", path)[()], np.float64)
        reliab = np.asarray(_dataset(f, "reliab", path)[()], np.float64)
    n_train, n_test = len(paths["train"]), len(paths["test"])
    if train.shape != (n_train, N_CHANNELS):
        raise TVSDFormatError(f"{path}: train_MUA shape {train.shape}, expected ({n_train} images from "
                              f"things_imgs.mat, {N_CHANNELS} channels)")
    if reps.ndim != 3 or reps.shape[1:] != (n_test, N_CHANNELS):
        raise TVSDFormatError(f"{path}: test_MUA_reps shape {reps.shape}, expected (repeats, {n_test}, "
                              f"{N_CHANNELS})")
    if reps.shape[0] < 2:
        raise TVSDFormatError(f"{path}: test_MUA_reps has {reps.shape[0]} repeat(s); a noise ceiling needs >= 2")
    if reliab.ndim != 2 or reliab.shape[1] != N_CHANNELS:
        raise TVSDFormatError(f"{path}: reliab shape {reliab.shape}, expected (pairs, {N_CHANNELS})")
    for name, a in (("train_MUA", train), ("test_MUA_reps", reps)):
        if not np.isfinite(a).all():
            raise TVSDFormatError(f"{path}: {name} has {int((~np.isfinite(a)).sum())} NaN/inf values")
    reliability = reliab.mean(axis=0)
    keep = np.nan_to_num(reliability, nan=-np.inf) >= reliability_threshold
    trials = np.transpose(reps, (2, 1, 0))                       # (channels, images, repeats)
    out = {}
    for roi, (a, b) in CHANNEL_RANGES[monkey].items():
        channels = np.arange(a, b)[keep[a:b]]
        if channels.size == 0:
            raise TVSDFormatError(f"{path}: monkey {monkey}, ROI {roi!r}: no channel with reliability >= "
                                  f"{reliability_threshold}")
        nc = noise_ceiling(trials[channels], n_averaged=reps.shape[0])
        out[roi] = (train[:, channels], reps[:, :, channels].mean(0), nc)
    return paths, out


def load_tvsd(source_dir, monkeys: Sequence[str] = ("N", "F"), reliability_threshold: float = 0.1,
              images_dir: str = "") -> NeuralDataset:
    """Reads the TVSD normalised-MUA release into a NeuralDataset (see the module docstring)."""
    folder = pathlib.Path(source_dir)
    subjects, ids, responses, ceilings, all_paths = [], {"train": {}, "test": {}}, {}, {}, {}
    for monkey in monkeys:
        monkey = str(monkey).upper().removeprefix("MONKEY")
        if monkey not in CHANNEL_RANGES:
            raise ValueError(f"TVSD monkey {monkey!r}: known monkeys {sorted(CHANNEL_RANGES)}")
        sub = f"monkey{monkey}"
        paths, per_roi = _monkey(folder, monkey, reliability_threshold)
        subjects.append(sub)
        for split in ("train", "test"):
            stems = [pathlib.PurePosixPath(p).stem for p in paths[split]]
            ids[split][sub] = np.asarray(stems)
            all_paths.update(zip(stems, paths[split]))
        for roi, (train, test, nc) in per_roi.items():
            responses[("train", sub, roi)] = train.astype(np.float32)
            responses[("test", sub, roi)] = test.astype(np.float32)
            ceilings[(sub, roi)] = nc
    for split in ("train", "test"):
        first = next(iter(ids[split].values()))
        if all(np.array_equal(first, v) for v in ids[split].values()):
            ids[split] = first
    if not images_dir and (folder / "object_images").is_dir():
        images_dir = str(folder / "object_images")
    stems = sorted(all_paths)
    stimuli = things_stimuli(images_dir, [all_paths[s] for s in stems], stems, f"TVSD {source_dir}")
    ds = NeuralDataset(name="tvsd", modality="ephys", subjects=subjects, rois=["V1", "V4", "IT"],
                       splits=["train", "test"], stimulus_ids=ids, responses=responses, noise_ceilings=ceilings,
                       stimuli=stimuli, target_filter="released")
    ds.validate(str(folder))
    return ds
