"""THINGS-fMRI: single-trial fMRI responses of 3 subjects to THINGS object images (THINGS-data).

Release: THINGS-data (Hebart, Contier, Teichmann et al. 2023, eLife 12:e82580,
https://doi.org/10.7554/eLife.82580), "fMRI single trial responses (table format)", figshare+
https://doi.org/10.25452/figshare.plus.20492835 (`betas_csv.zip`, version 2).

Files expected in `source_dir` (or in its `betas_csv/` subfolder), X = subject 1-3:
  sub-0X_ResponseData.h5      pandas HDF (fixed format, key "ResponseData"): one row per voxel, a `voxel_id`
                              column and one float column per trial, columns in the order of the
                              StimulusMetadata rows.
  sub-0X_StimulusMetadata.csv one row per trial: `stimulus` (file name, e.g. aardvark_01b.jpg), `concept`,
                              `trial_type` ("train": 8,640 images shown once, "test": 100 images x 12, "catch").
  sub-0X_VoxelMetadata.csv    one row per voxel, same order: `voxel_id`, `nc_testset` (noise ceiling of the
                              12-repeat test average, percent), and one 0/1 column per ROI (V1, V2, V3, hV4,
                              VO1, VO2, "LO1 (prf)", "LO2 (prf)", TO1, TO2, V3a, V3b, lEBA, rEBA, ..., IT,
                              glasser-* ...).
Images (optional): the THINGS object-image folder `<concept>/<stimulus>` given as `images_dir` (default
`source_dir/object_images` when it exists); without it the dataset has no stimulus set and a warning says so.

Preparation (as the paper's reference, things_fmri.ipynb): catch trials dropped; the 12 test repeats of each image
averaged, then each split z-scored per voxel across its images (population SD); stimulus ids are the file stems,
sorted; every ROI keeps its voxels with nc_testset >= `nc_threshold` percent. ROIs (Appendix A.2): "whole_brain"
(every voxel), the release's V1, V2, V3, V4 (= hV4), VO1, VO2, LO1, LO2, TO1, TO2, V3b, V3a and the left/right
category-selective ROIs lEBA ... rLOC, IT (the release's own IT column), and "IT_glasser", the union of nine Glasser
areas (TE1p, TE2p, FFC, VVC, VMV2, VMV3, PHA1-3) that Brain-Score's packaging calls IT, kept as an extra ROI;
each `name=col|col` over VoxelMetadata columns. The ceiling is the release's nc_testset.
"""

from __future__ import annotations

import pathlib
import re
import warnings
from collections.abc import Sequence

import h5py
import numpy as np
import pandas as pd

from jaxbrain.data.neural import NeuralDataError, NeuralDataset
from jaxbrain.data.stimulus_set import StimulusSet

WHOLE_BRAIN = "whole_brain"
_CATEGORY_ROIS = tuple(f"{side}{roi}" for roi in ("EBA", "FFA", "OFA", "PPA", "RSC", "TOS", "LOC") for side in "lr")
DEFAULT_ROIS = (
    WHOLE_BRAIN, "V1=V1", "V2=V2", "V3=V3", "V4=hV4", "VO1=VO1", "VO2=VO2", "LO1=LO1 (prf)", "LO2=LO2 (prf)",
    "TO1=TO1", "TO2=TO2", "V3b=V3b", "V3a=V3a", *(f"{roi}={roi}" for roi in _CATEGORY_ROIS), "IT=IT",
    "IT_glasser=glasser-TE1p|glasser-TE2p|glasser-FFC|glasser-VVC|glasser-VMV2|glasser-VMV3|glasser-PHA1"
    "|glasser-PHA2|glasser-PHA3",
)
ROW_CHUNK = 4096


class ThingsFormatError(NeuralDataError):
    """A THINGS release file is missing, malformed or inconsistent."""


def parse_rois(specs: Sequence[str]) -> dict[str, list[str]]:
    """("name=col|col", ...) -> {name: [col, ...]}; WHOLE_BRAIN -> {WHOLE_BRAIN: []} (every voxel)."""
    out = {}
    for spec in specs:
        if spec.strip() == WHOLE_BRAIN:
            out[WHOLE_BRAIN] = []
            continue
        m = re.fullmatch(r"([^=/]+)=(.+)", spec.strip())
        if not m:
            raise ValueError(f"ROI {spec!r}: expected name=column|column")
        out[m.group(1)] = m.group(2).split("|")
    if len(out) != len(specs):
        raise ValueError(f"duplicate ROI names in {list(specs)}")
    return out


def things_stimuli(images_dir, relative_paths: Sequence[str], ids: Sequence[str], what: str):
    """A StimulusSet over THINGS object images `<concept>/<file>`; None (with a warning) without a folder."""
    if not images_dir:
        warnings.warn(f"{what}: no THINGS image folder given (images_dir); the dataset has no stimulus images",
                      stacklevel=3)
        return None
    return StimulusSet.from_folder(images_dir, ids=ids, members=relative_paths)


def _read_responses(path: pathlib.Path, rows: np.ndarray, n_trials: int, voxel_ids: np.ndarray) -> np.ndarray:
    """(len(rows), n_trials) float32 of the selected voxel rows of the pandas table.

    The release's layout (one float block of trial columns, one integer voxel_id block) is read row chunk by row
    chunk with h5py; any other pandas layout is read whole with pandas.read_hdf.
    """
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ThingsFormatError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with f:
        groups = [k for k in f if isinstance(f[k], h5py.Group) and "nblocks" in f[k].attrs]
        if len(groups) != 1:
            raise ThingsFormatError(f"{path}: expected one pandas table, found groups {list(f)}")
        g = f[groups[0]]
        blocks = [g[f"block{i}_values"] for i in range(int(g.attrs["nblocks"]))]
        floats = [b for b in blocks if np.issubdtype(b.dtype, np.floating)]
        others = [b for b in blocks if not np.issubdtype(b.dtype, np.floating)]
        fast = (len(floats) == 1 and floats[0].ndim == 2 and floats[0].shape[0] == voxel_ids.size
                and len(others) == 1 and others[0].shape == (voxel_ids.size, 1))
        if fast:
            if floats[0].shape[1] != n_trials:
                raise ThingsFormatError(f"{path}: {floats[0].shape[1]} trial columns, but the stimulus metadata "
                                        f"lists {n_trials} trials")
            if not np.array_equal(others[0][:, 0], voxel_ids):
                raise ThingsFormatError(f"{path}: voxel_id column differs from VoxelMetadata.csv voxel_id")
            values = floats[0]
            out = np.empty((rows.size, n_trials), np.float32)
            for a in range(0, values.shape[0], ROW_CHUNK):
                sel = (rows >= a) & (rows < a + ROW_CHUNK)
                if sel.any():
                    out[sel] = values[a:a + ROW_CHUNK][rows[sel] - a]
            return out
    table = pd.read_hdf(path)
    if "voxel_id" not in table.columns:
        raise ThingsFormatError(f"{path}: no voxel_id column")
    if not np.array_equal(table["voxel_id"].to_numpy(), voxel_ids):
        raise ThingsFormatError(f"{path}: voxel_id column differs from VoxelMetadata.csv voxel_id")
    values = table.drop(columns=["voxel_id"]).to_numpy()
    if values.shape[1] != n_trials:
        raise ThingsFormatError(f"{path}: {values.shape[1]} trial columns, but the stimulus metadata lists "
                                f"{n_trials} trials")
    return values[rows].astype(np.float32)


def _zscore(x: np.ndarray, where: str) -> np.ndarray:
    """Each column standardised across rows (population SD, as scipy.stats.zscore)."""
    mean, std = x.mean(0), x.std(0)
    if (std == 0).any():
        raise ThingsFormatError(f"{where}: {int((std == 0).sum())} voxels are constant across the images")
    return (x - mean) / std


def _subject(folder: pathlib.Path, sub: str, rois: dict[str, list[str]], nc_threshold: float):
    stim_path = folder / f"{sub}_StimulusMetadata.csv"
    vox_path = folder / f"{sub}_VoxelMetadata.csv"
    resp_path = folder / f"{sub}_ResponseData.h5"
    for p in (stim_path, vox_path, resp_path):
        if not p.is_file():
            raise FileNotFoundError(f"THINGS-fMRI release: expected file not found: {p}")
    stim = pd.read_csv(stim_path)
    vox = pd.read_csv(vox_path)
    for col in ("stimulus", "concept", "trial_type"):
        if col not in stim.columns:
            raise ThingsFormatError(f"{stim_path}: missing column {col!r} (has {list(stim.columns)[:8]})")
    for col in ["voxel_id", "nc_testset"] + [c for cols in rois.values() for c in cols]:
        if col not in vox.columns:
            raise ThingsFormatError(f"{vox_path}: missing column {col!r}")
    unknown = set(stim["trial_type"]) - {"train", "test", "catch"}
    if unknown:
        raise ThingsFormatError(f"{stim_path}: unknown trial_type values {sorted(unknown)}")
    nc = vox["nc_testset"].to_numpy(np.float64)
    if np.nanmax(nc) > 100 or np.nanmin(nc) < -100:
        raise ThingsFormatError(f"{vox_path}: nc_testset outside [-100, 100]; expected percent")
    keep = np.nan_to_num(nc, nan=-np.inf) >= nc_threshold
    masks = {}
    for name, cols in rois.items():
        in_roi = (vox[cols].to_numpy() > 0).any(axis=1) if cols else np.ones(len(vox), bool)
        masks[name] = in_roi & keep
        if not masks[name].any():
            raise ThingsFormatError(f"{vox_path}: subject {sub!r}, ROI {name!r}: no voxel with nc_testset >= "
                                    f"{nc_threshold}%")
    union = np.zeros(len(vox), bool)
    for m in masks.values():
        union |= m
    rows = np.flatnonzero(union)
    betas = _read_responses(resp_path, rows, len(stim), vox["voxel_id"].to_numpy())   # (voxels, trials)
    if not np.isfinite(betas).all():
        raise ThingsFormatError(f"{resp_path}: subject {sub!r}: NaN/inf in the responses of selected voxels")
    names = stim["stimulus"].astype(str).to_numpy()
    stems = np.asarray([pathlib.PurePosixPath(n).stem for n in names])
    split_data, ids, paths = {}, {}, {}
    for split in ("train", "test"):
        trials = np.flatnonzero(stim["trial_type"].to_numpy() == split)
        if trials.size == 0:
            raise ThingsFormatError(f"{stim_path}: no {split!r} trials")
        uniq, inverse, counts = np.unique(stems[trials], return_inverse=True, return_counts=True)
        if split == "train" and (counts > 1).any():
            raise ThingsFormatError(f"{stim_path}: train images shown more than once, e.g. "
                                    f"{uniq[counts > 1][:3].tolist()}")
        sums = np.zeros((uniq.size, rows.size))
        np.add.at(sums, inverse, betas[:, trials].T.astype(np.float64))
        split_data[split] = _zscore(sums / counts[:, None], f"{resp_path}, subject {sub!r}, split {split!r}"
                                    ).astype(np.float32)
        ids[split] = uniq
        first = {s: k for k, s in zip(trials[::-1], stems[trials][::-1])}
        paths.update({s: f"{stim['concept'].iloc[first[s]]}/{names[first[s]]}" for s in uniq})
    col_of = {r: k for k, r in enumerate(rows)}
    per_roi = {name: np.asarray([col_of[r] for r in np.flatnonzero(m)]) for name, m in masks.items()}
    return ids, split_data, per_roi, nc[rows], paths


def load_things_fmri(source_dir, subjects: Sequence[int] = (1, 2, 3), rois: Sequence[str] = DEFAULT_ROIS,
                     nc_threshold: float = 10.0, images_dir: str = "") -> NeuralDataset:
    """Reads the THINGS-fMRI table-format release into a NeuralDataset (see the module docstring)."""
    folder = pathlib.Path(source_dir)
    if (folder / "betas_csv").is_dir():
        folder = folder / "betas_csv"
    roi_cols = parse_rois(rois)
    names, stimulus_ids, responses, ceilings, all_paths = [], {"train": {}, "test": {}}, {}, {}, {}
    for s in (int(s) for s in subjects):
        sub = f"sub-{s:02d}"
        ids, data, per_roi, nc, paths = _subject(folder, sub, roi_cols, nc_threshold)
        names.append(sub)
        all_paths.update(paths)
        for split in ("train", "test"):
            stimulus_ids[split][sub] = ids[split]
            for roi, cols in per_roi.items():
                responses[(split, sub, roi)] = np.ascontiguousarray(data[split][:, cols])
        for roi, cols in per_roi.items():
            ceilings[(sub, roi)] = nc[cols]
    for split in ("train", "test"):
        first = next(iter(stimulus_ids[split].values()))
        if all(np.array_equal(first, v) for v in stimulus_ids[split].values()):
            stimulus_ids[split] = first
    if not images_dir and (pathlib.Path(source_dir) / "object_images").is_dir():
        images_dir = str(pathlib.Path(source_dir) / "object_images")
    stems = sorted(all_paths)
    stimuli = things_stimuli(images_dir, [all_paths[s] for s in stems], stems, f"THINGS-fMRI {source_dir}")
    ds = NeuralDataset(name="things_fmri", modality="fmri", subjects=names, rois=list(roi_cols),
                       splits=["train", "test"], stimulus_ids=stimulus_ids, responses=responses,
                       noise_ceilings=ceilings, stimuli=stimuli)
    ds.validate(str(folder))
    return ds
