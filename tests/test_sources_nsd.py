"""NSD reader on fixture files written in the release's layout (tiny volumes and sessions)."""

import pathlib
import tracemalloc

import h5py
import nibabel as nib
import numpy as np
import pytest
from scipy.io import savemat

from jaxbrain.data.neural import NeuralDataError
from jaxbrain.data.sources import nsd

SHAPE = (5, 4, 3)  # (X, Y, Z) of the NIfTI volumes
LABELS = {  # the release's label tables (ctab), including the labels that are not ROIs of the paper
    "streams": ("early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal"),
    "prf-visualrois": ("V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"),
    "floc-words": ("OWFA", "VWFA-1", "VWFA-2", "mfs-words", "mTL-words"),
    "floc-places": ("OPA", "PPA", "RSC"),
    "floc-faces": ("OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"),
    "floc-bodies": ("EBA", "FBA-1", "FBA-2", "mTL-bodies"),
}
ROIS = ("V1=prf-visualrois:V1v|V1d", "hV4=prf-visualrois:hV4", "faces=floc-faces:*")
PAPER_ROIS = ["early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal", "V1v", "V1d",
              "V2v", "V2d", "V3v", "V3d", "hV4", "nsdgeneral", "OWFA", "VWFA-1", "VWFA-2", "OPA", "PPA", "RSC", "OFA",
              "FFA-1", "FFA-2", "EBA", "FBA-1", "FBA-2", "whole_brain"]    # Appendix A.1, 27 + Whole Brain


def _nifti(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))


def write_release(root: pathlib.Path, subjects=(1, 2), n_sessions=3, trials=12, n_images=8, shape=SHAPE,
                  seed=0, transpose=True, beta_dtype=np.int16):
    """Writes an NSD-shaped release; returns the ground-truth betas (X, Y, Z, trials) per subject in float."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    n_trials = n_sessions * trials
    # subject s sees 73k-ids [shared 1..3] + own images; the design's masterordering cycles over n_images
    subjectim = np.zeros((8, n_images), np.int64)
    for s in range(8):
        subjectim[s] = np.r_[1, 2, 3, 10 + 10 * s + np.arange(n_images - 3)]
    masterordering = (np.arange(n_trials) % n_images + 1)[rng.permutation(n_trials)]
    design_dir = root / "nsddata" / "experiments" / "nsd"
    design_dir.mkdir(parents=True)
    savemat(design_dir / "nsd_expdesign.mat", {"masterordering": masterordering[None].astype(float),
                                               "subjectim": subjectim.astype(float),
                                               "sharedix": np.array([[1.0, 2.0, 3.0]])})
    stim_dir = root / "nsddata_stimuli" / "stimuli" / "nsd"
    stim_dir.mkdir(parents=True)
    with h5py.File(stim_dir / "nsd_stimuli.hdf5", "w") as f:
        f["imgBrick"] = rng.integers(0, 255, (100, 4, 4, 3), dtype=np.uint8)
    truth = {}
    for s in subjects:
        sub = f"subj{s:02d}"
        beta_dir = root / "nsddata_betas" / "ppdata" / sub / "func1pt8mm" / "betas_fithrf_GLMdenoise_RR"
        roi_dir = root / "nsddata" / "ppdata" / sub / "func1pt8mm" / "roi"
        label_dir = root / "nsddata" / "freesurfer" / sub / "label"
        label_dir.mkdir(parents=True)
        for file, labels in {**LABELS, "nsdgeneral": ("nsdgeneral",)}.items():
            ctab = "".join(f"{k + 1} {label}\n" for k, label in enumerate(labels))
            (label_dir / f"{file}.mgz.ctab").write_text("0 Unknown\n" + ctab)
            if file != "nsdgeneral":
                _nifti(roi_dir / f"{file}.nii.gz", rng.integers(0, len(labels) + 1, shape).astype(np.int16))
        general = np.ones(shape, np.int16)
        general[0] = -1
        general[1, 0] = 0
        _nifti(roi_dir / "nsdgeneral.nii.gz", general)
        ncsnr = rng.uniform(0.0, 1.0, shape).astype(np.float32)
        _nifti(beta_dir / "ncsnr.nii.gz", ncsnr)
        signal = rng.normal(size=(*shape, n_images))
        image_of_trial = masterordering - 1
        betas = 2.0 * signal[..., image_of_trial] + rng.normal(size=(*shape, n_trials)) + 5
        betas = np.round(betas * 300).astype(np.int16)
        truth[sub] = betas.astype(np.float64) / 300
        for k in range(n_sessions):
            block = betas[..., k * trials:(k + 1) * trials]  # (X, Y, Z, trials)
            stored = np.transpose(block, (3, 2, 1, 0)) if transpose else np.moveaxis(block, -1, 0)
            with h5py.File(beta_dir / f"betas_session{k + 1:02d}.hdf5", "w") as f:
                f.create_dataset("betas", data=stored.astype(beta_dtype))
    return {"truth": truth, "masterordering": masterordering, "subjectim": subjectim, "trials": trials}


def _expected(root, sub, info, roi_labels, roi_file, sessions, in_nsdgeneral=True):
    """Independent float64 transcription: z-score per session (ddof=1, as the reference's scipy zscore), average
    repeats, select the ROI's voxels with NC >= 10 % (inside nsdgeneral unless told otherwise) in C order."""
    betas = info["truth"][sub]
    T = info["trials"]
    z = np.empty_like(betas)
    for k in range(sessions):
        b = betas[..., k * T:(k + 1) * T]
        z[..., k * T:(k + 1) * T] = (b - b.mean(-1, keepdims=True)) / b.std(-1, ddof=1, keepdims=True)
    s = int(sub[4:]) - 1
    kid = info["subjectim"][s, info["masterordering"][:sessions * T] - 1]
    vol = lambda p: np.asarray(nib.load(str(p)).dataobj)  # noqa: E731
    roi_dir = root / "nsddata" / "ppdata" / sub / "func1pt8mm" / "roi"
    ncsnr = vol(root / "nsddata_betas" / "ppdata" / sub / "func1pt8mm" / "betas_fithrf_GLMdenoise_RR"
                / "ncsnr.nii.gz").astype(np.float64)
    nc = 100 * ncsnr ** 2 / (ncsnr ** 2 + 1 / 3)
    region = np.ones(nc.shape, bool) if roi_file is None else np.isin(vol(roi_dir / roi_file), roi_labels)
    mask = ((vol(roi_dir / "nsdgeneral.nii.gz") > 0) | (not in_nsdgeneral)) & (nc >= 10) & region
    out = {}
    for k in np.unique(kid):
        out[f"{k:05d}"] = z[..., kid == k].mean(-1)[mask]
    return out, nc[mask]


def test_reads_release_layout(tmp_path):
    root = tmp_path / "nsd"
    info = write_release(root)
    ds = nsd.load_nsd(root, subjects=(1, 2), rois=ROIS)
    assert ds.subjects == ["subj01", "subj02"] and ds.rois == ["V1", "hV4", "faces"] and ds.modality == "fmri"
    assert list(ds.ids("test", "subj02")) == ["00001", "00002", "00003"]
    assert set(ds.ids("train", "subj01")) == {f"{k:05d}" for k in 10 + np.arange(5)}
    assert set(ds.ids("train", "subj02")) == {f"{k:05d}" for k in 20 + np.arange(5)}
    for sub in ds.subjects:
        for roi, labels, file in (("V1", [1, 2], "prf-visualrois.nii.gz"),
                                  ("faces", [1, 2, 3, 4, 5], "floc-faces.nii.gz")):
            expected, nc = _expected(root, sub, info, labels, file, 3)
            np.testing.assert_allclose(ds.ceiling(sub, roi), nc, rtol=1e-5)
            for split in ("train", "test"):
                got = ds.targets(split, sub, roi)
                want = np.stack([expected[i] for i in ds.ids(split, sub)])
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    img = ds.stimuli.load("00020")
    with h5py.File(root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5") as f:
        np.testing.assert_array_equal(img, f["imgBrick"][19])


def test_paper_rois_within_nsdgeneral_except_rsc_and_whole_brain_by_ceiling_only(tmp_path):
    root = tmp_path / "nsd"
    info = write_release(root, subjects=(1,))
    ds = nsd.load_nsd(root, subjects=(1,))
    assert ds.rois == PAPER_ROIS
    # (ROI, label file, label values, restricted to nsdgeneral): RSC (value 3 of floc-places) and whole_brain are not
    cases = [("V1d", "prf-visualrois.nii.gz", [2], True), ("VWFA-2", "floc-words.nii.gz", [3], True),
             ("RSC", "floc-places.nii.gz", [3], False), ("whole_brain", None, None, False)]
    for roi, file, labels, inside in cases:
        expected, nc = _expected(root, "subj01", info, labels, file, 3, in_nsdgeneral=inside)
        np.testing.assert_allclose(ds.ceiling("subj01", roi), nc, rtol=1e-5)
        want = np.stack([expected[i] for i in ds.ids("train", "subj01")])
        np.testing.assert_allclose(ds.targets("train", "subj01", roi), want, rtol=1e-4, atol=1e-5)
        outside = _expected(root, "subj01", info, labels, file, 3, in_nsdgeneral=True)[1].size < nc.size
        assert outside == (not inside)          # the fixture has reliable RSC / brain voxels outside nsdgeneral


def test_memory_stays_bounded_as_sessions_are_added(tmp_path):
    peaks = {}
    for n in (2, 6):
        write_release(tmp_path / f"n{n}", subjects=(1,), n_sessions=n, trials=40, n_images=8, shape=(20, 20, 16),
                      seed=1)
    read = lambda n: nsd.load_nsd(tmp_path / f"n{n}", subjects=(1,), rois=("all=prf-visualrois:*",),  # noqa: E731
                                  nc_threshold=0.0, trial_chunk=10)
    read(2)  # imports and caches outside the measurement
    for n in (2, 6):
        tracemalloc.start()
        read(n)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    one_session = 40 * 20 * 20 * 16 * 4  # one session of float32 betas
    assert peaks[2] > one_session  # the measurement sees the session buffers
    assert peaks[6] < peaks[2] + one_session, peaks  # 4 more sessions held at once would add 4x this


@pytest.mark.parametrize("fault, message", [
    ("untransposed", "betas shape \\(12, 5, 4, 3\\), expected \\(trials, 3, 4, 5\\)"),
    ("float_betas", "betas dtype float32, expected int16"),
    ("missing_session", "session files missing for sessions \\[2\\]"),
    ("bad_label", "no label \\['hV5'\\] for ROI 'hV4'"),
    ("short_design", "trials in 3 sessions but the design lists only"),
])
def test_malformed_release(tmp_path, fault, message):
    root = tmp_path / "nsd"
    rois = ROIS
    if fault == "untransposed":
        write_release(root, subjects=(1,), transpose=False)
    elif fault == "float_betas":
        write_release(root, subjects=(1,), beta_dtype=np.float32)
    else:
        write_release(root, subjects=(1,))
    beta_dir = root / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"
    if fault == "missing_session":
        (beta_dir / "betas_session02.hdf5").unlink()
    if fault == "bad_label":
        rois = ("V1=prf-visualrois:V1v", "hV4=prf-visualrois:hV5")
    if fault == "short_design":
        path = root / "nsddata/experiments/nsd/nsd_expdesign.mat"
        from scipy.io import loadmat

        mat = loadmat(path)
        savemat(path, {"masterordering": mat["masterordering"][:, :20], "subjectim": mat["subjectim"],
                       "sharedix": mat["sharedix"]})
    with pytest.raises((NeuralDataError, FileNotFoundError), match=message) as err:
        nsd.load_nsd(root, subjects=(1,), rois=rois)
    assert "nsd" in str(err.value)  # names the file
