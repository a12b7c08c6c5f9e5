"""Per-target outputs: where in cortex (voxels, neurons) or when (channel x time) a model predicts well.

From the per-target test scores at each ROI's committed layer: a tidy table (one row per subject, ROI and scored
target, with the target's voxel indices or channel and time when the dataset records them), NIfTI maps of r_NC
in each subject's volume for fMRI datasets with voxel coordinates (the paper's Figs. S3-S5 layout), and for
channel x time targets the curve r(t), the mean over an ROI's channels at each sample (Figs. S17-S19).
"""

from __future__ import annotations

import gzip
import pathlib

import numpy as np
import pandas as pd

from jaxbrain import results
from jaxbrain.features import store
from jaxbrain.data import neural


def target_frame(scores, dataset: neural.NeuralDataset, min_ceiling: float) -> pd.DataFrame:
    """One row per (subject, roi, scored target) at the committed layer: r, r_nc, nc and where the target is."""
    frames = []
    for roi, layer in scores.committed.items():
        for subject in scores.subjects:
            score = scores.per_layer[layer][(subject, roi)]
            index = np.flatnonzero(dataset.scored_targets(subject, roi, min_ceiling))
            frame = pd.DataFrame(dict(subject=subject, roi=roi, layer=layer, target=index, r=score.test_r,
                                      r_nc=score.test_r_nc, nc=scores.ceilings[(subject, roi)]))
            if (subject, roi) in dataset.coordinates:
                xyz = np.asarray(dataset.coordinates[(subject, roi)])[index]
                frame = frame.assign(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2])
            shape = dataset.target_shape(subject, roi)
            if len(shape) == 2:
                channel, sample = np.divmod(index, shape[1])
                names = dataset.channels.get((subject, roi))
                frame = frame.assign(channel=[names[c] for c in channel] if names else channel, sample=sample,
                                     time=dataset.times[sample] if dataset.times is not None else sample)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def time_courses(frame: pd.DataFrame) -> pd.DataFrame:
    """r(t): per subject and ROI the mean r and r_nc over channels at each sample, plus the subject mean."""
    per_subject = frame.groupby(["roi", "subject", "sample", "time"], as_index=False)[["r", "r_nc"]].mean()
    mean = per_subject.groupby(["roi", "sample", "time"], as_index=False)[["r", "r_nc"]].mean().assign(subject="all")
    return pd.concat([per_subject, mean], ignore_index=True)


def write_nifti(frame: pd.DataFrame, dataset: neural.NeuralDataset, folder: pathlib.Path) -> list[pathlib.Path]:
    """One NIfTI volume of r_NC per (subject, ROI) in the subject's space (NaN outside the ROI's voxels)."""
    import nibabel as nib

    paths = []
    for (subject, roi), rows in frame.groupby(["subject", "roi"], sort=False):
        volume = dataset.volumes.get(subject)
        if volume is None or "x" not in rows:
            continue
        data = np.full(tuple(int(v) for v in volume["shape"]), np.nan, np.float32)
        data[rows.x.to_numpy(int), rows.y.to_numpy(int), rows.z.to_numpy(int)] = rows.r_nc.to_numpy(np.float32)
        path = folder / f"r_nc_{subject}_{roi}.nii.gz"
        folder.mkdir(parents=True, exist_ok=True)
        image = nib.Nifti1Image(data, np.asarray(volume["affine"], np.float64))
        payload = gzip.compress(image.to_bytes(), mtime=0)
        store.atomic_write(path, lambda handle, payload=payload: handle.write(payload))
        paths.append(path)
    return paths


def write_outputs(scores, dataset: neural.NeuralDataset, min_ceiling: float, folder: pathlib.Path) -> dict:
    """targets.csv, and r_t.csv with its plot for channel x time targets, or NIfTI maps for voxels."""
    from jaxbrain import plots

    frame = target_frame(scores, dataset, min_ceiling)
    if frame.empty:
        return {}
    results.write_csv(folder / "targets.csv", frame)
    written = {"targets": str(folder / "targets.csv")}
    if "sample" in frame:
        curves = time_courses(frame)
        results.write_csv(folder / "r_t.csv", curves)
        written["r_t"] = str(plots.time_courses(curves, folder / "r_t.png", title=dataset.name))
    written["nifti"] = [str(p) for p in write_nifti(frame, dataset, folder)]
    return written
