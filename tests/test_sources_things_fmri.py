"""THINGS-fMRI reader on fixture files in the table-format release layout."""

import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from jaxbrain.data.neural import NeuralDataError
from jaxbrain.data.sources import things_fmri

ROIS = ("V1=V1", "V4=hV4", "IT=glasser-FFC|glasser-VVC")
PAPER_ROIS = ["whole_brain", "V1", "V2", "V3", "V4", "VO1", "VO2", "LO1", "LO2", "TO1", "TO2", "V3b", "V3a", "lEBA",
              "rEBA", "lFFA", "rFFA", "lOFA", "rOFA", "lPPA", "rPPA", "lRSC", "rRSC", "lTOS", "rTOS", "lLOC", "rLOC",
              "IT", "IT_glasser"]                       # Appendix A.2: 27 + Whole Brain, and the Glasser union
RELEASE_COLUMNS = sorted({c for cols in things_fmri.parse_rois(things_fmri.DEFAULT_ROIS).values() for c in cols})


def write_release(folder, subjects=(1, 2), n_train=10, n_test=4, reps=3, n_vox=12, seed=0, images=True):
    rng = np.random.default_rng(seed)
    betas_dir = folder / "betas_csv"
    betas_dir.mkdir(parents=True)
    concepts = [f"c{k}" for k in range(n_train + n_test)]
    train = [f"{c}_01b.jpg" for c in concepts[:n_train]]
    test = [f"{c}_02s.jpg" for c in concepts[n_train:]]
    out = {}
    for s in subjects:
        sub = f"sub-{s:02d}"
        stim = [(n, "train") for n in train] + [(n, "test") for n in test * reps] + [("catch_01.jpg", "catch")] * 2
        order = rng.permutation(len(stim))
        stim = [stim[k] for k in order]
        table = pd.DataFrame({"subject_id": sub, "trial_id": np.arange(len(stim)),
                              "session": np.arange(len(stim)) % 2 + 1, "run": 1,
                              "stimulus": [n for n, _ in stim], "concept": [n.rsplit("_", 1)[0] for n, _ in stim],
                              "trial_type": [t for _, t in stim]})
        table.to_csv(betas_dir / f"{sub}_StimulusMetadata.csv", index=False)
        vox = pd.DataFrame({"voxel_id": np.arange(n_vox) * 7 + 3, "voxel_x": 0, "voxel_y": 0, "voxel_z": 0,
                            "nc_testset": rng.uniform(15, 60, n_vox)})
        vox.loc[0, "nc_testset"] = 5.0  # below threshold
        for col in RELEASE_COLUMNS:
            vox[col] = rng.integers(0, 2, n_vox) if col not in ("V1", "hV4", "glasser-FFC", "glasser-VVC") else 0
        vox.loc[0:3, "V1"] = 1
        vox.loc[4:7, "hV4"] = 1
        vox.loc[8:9, "glasser-FFC"] = 1
        vox.loc[10:11, "glasser-VVC"] = 1
        vox.to_csv(betas_dir / f"{sub}_VoxelMetadata.csv", index=False)
        data = rng.normal(size=(n_vox, len(stim)))
        frame = pd.DataFrame(data, columns=range(len(stim)))
        frame.insert(0, "voxel_id", vox["voxel_id"].to_numpy())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame.to_hdf(betas_dir / f"{sub}_ResponseData.h5", key="ResponseData")
        out[sub] = (table, vox, data)
    if images:
        for name in train + test:
            d = folder / "object_images" / name.rsplit("_", 1)[0]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (5, 5, 3), dtype=np.uint8)).save(d / name)
    return out


def _expected(table, data, split, voxels):
    """The reference's order: average each image's repeats, then z-score every voxel across the split's images."""
    cols = np.flatnonzero(table["trial_type"].to_numpy() == split)
    x = data[voxels][:, cols].T
    stems = table["stimulus"].to_numpy()[cols]
    ids = sorted(set(s[:-4] for s in stems))
    mean = np.stack([x[[s[:-4] == i for s in stems]].mean(0) for i in ids])
    return ids, (mean - mean.mean(0)) / mean.std(0)


def test_reads_release_layout(tmp_path):
    info = write_release(tmp_path)
    ds = things_fmri.load_things_fmri(tmp_path, subjects=(1, 2), rois=ROIS)
    assert ds.subjects == ["sub-01", "sub-02"] and ds.rois == ["V1", "V4", "IT"]
    for sub, (table, vox, data) in info.items():
        roi_voxels = {"V1": [1, 2, 3], "V4": [4, 5, 6, 7], "IT": [8, 9, 10, 11]}  # voxel 0 has NC 5 %
        for roi, voxels in roi_voxels.items():
            for split in ("train", "test"):
                ids, want = _expected(table, data, split, voxels)
                assert list(ds.ids(split, sub)) == ids
                np.testing.assert_allclose(ds.targets(split, sub, roi), want, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(ds.ceiling(sub, roi), vox["nc_testset"].to_numpy()[voxels])
    assert ds.stimuli.load("c11_02s").shape == (5, 5, 3)
    assert len(ds.ids("test", "sub-01")) == 4 and len(ds.ids("train", "sub-02")) == 10


def test_paper_rois_whole_brain_and_glasser_union(tmp_path):
    info = write_release(tmp_path, subjects=(1,), images=False)
    with pytest.warns(UserWarning, match="no THINGS image folder"):
        ds = things_fmri.load_things_fmri(tmp_path, subjects=(1,))
    assert ds.rois == PAPER_ROIS
    table, vox, data = info["sub-01"]
    reliable = vox["nc_testset"].to_numpy() >= 10
    glasser = [f"glasser-{area}" for area in ("TE1p", "TE2p", "FFC", "VVC", "VMV2", "VMV3", "PHA1", "PHA2", "PHA3")]
    for roi, columns in (("whole_brain", None), ("LO1", ["LO1 (prf)"]), ("lRSC", ["lRSC"]), ("IT", ["IT"]),
                         ("IT_glasser", glasser)):
        member = np.ones(len(vox), bool) if columns is None else vox[columns].to_numpy().any(axis=1)
        voxels = np.flatnonzero(member & reliable)
        _, want = _expected(table, data, "test", voxels)
        np.testing.assert_allclose(ds.targets("test", "sub-01", roi), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ds.ceiling("sub-01", roi), vox["nc_testset"].to_numpy()[voxels])
    assert ds.targets("test", "sub-01", "whole_brain").shape[1] == len(vox) - 1     # voxel 0 has NC 5 %


def test_other_pandas_layouts_are_read_whole(tmp_path):
    """A table whose voxel_id is stored as float (one block) takes the pandas path and gives the same values."""
    info = write_release(tmp_path, subjects=(1,))
    fast = things_fmri.load_things_fmri(tmp_path, subjects=(1,), rois=ROIS)
    table, vox, data = info["sub-01"]
    frame = pd.DataFrame(data, columns=range(data.shape[1]))
    frame.insert(0, "voxel_id", vox["voxel_id"].to_numpy().astype(float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame.to_hdf(tmp_path / "betas_csv" / "sub-01_ResponseData.h5", key="ResponseData")
    slow = things_fmri.load_things_fmri(tmp_path, subjects=(1,), rois=ROIS)
    for key, value in fast.responses.items():
        np.testing.assert_array_equal(slow.responses[key], value)


def test_without_images_warns(tmp_path):
    write_release(tmp_path, subjects=(1,), images=False)
    with pytest.warns(UserWarning, match="no THINGS image folder"):
        ds = things_fmri.load_things_fmri(tmp_path, subjects=(1,), rois=ROIS)
    assert ds.stimuli is None


@pytest.mark.parametrize("fault, message", [
    ("no_nc", "VoxelMetadata.csv: missing column 'nc_testset'"),
    ("voxel_ids", "ResponseData.h5: voxel_id column differs"),
    ("trials", "ResponseData.h5: 24 trial columns, but the stimulus metadata lists 22 trials"),
    ("missing", "sub-01_StimulusMetadata.csv"),
    ("no_reliable", "ROI 'V1': no voxel with nc_testset >= 10"),
])
def test_malformed_release(tmp_path, fault, message):
    info = write_release(tmp_path, subjects=(1,))
    d = tmp_path / "betas_csv"
    table, vox, data = info["sub-01"]
    if fault == "no_nc":
        vox.drop(columns=["nc_testset"]).to_csv(d / "sub-01_VoxelMetadata.csv", index=False)
    if fault == "voxel_ids":
        vox.assign(voxel_id=vox["voxel_id"] + 1).to_csv(d / "sub-01_VoxelMetadata.csv", index=False)
    if fault == "trials":
        table.iloc[:-2].to_csv(d / "sub-01_StimulusMetadata.csv", index=False)
    if fault == "missing":
        (d / "sub-01_StimulusMetadata.csv").unlink()
    if fault == "no_reliable":
        vox.assign(nc_testset=np.where(vox["V1"] > 0, 1.0, 50.0)).to_csv(d / "sub-01_VoxelMetadata.csv", index=False)
    with pytest.raises((NeuralDataError, FileNotFoundError), match=message):
        things_fmri.load_things_fmri(tmp_path, subjects=(1,), rois=ROIS)
