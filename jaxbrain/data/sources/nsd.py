"""Natural Scenes Dataset (NSD) fMRI: single-trial betas of 8 subjects viewing COCO images at 7T.

Release: NSD (Allen et al. 2022, "A massive 7T fMRI dataset to bridge cognitive neuroscience and artificial
intelligence", Nature Neuroscience, https://doi.org/10.1038/s41593-021-00962-x), distributed on AWS
s3://natural-scenes-dataset (data manual: https://cvnlab.slite.page/p/X_7BBMgghj/NSD-Data-Manual).
Beta version 3 (`betas_fithrf_GLMdenoise_RR`), 1.8 mm volume space (`func1pt8mm`).

Files expected under `source_dir` (the bucket's layout; XX = subject 01-08, YY = session 01-40):
  nsddata/experiments/nsd/nsd_expdesign.mat
      masterordering (1, 30000): 1-based index into a subject's 10,000 images of every trial in order;
      subjectim (8, 10000): 1-based 73k-ids of each subject's images; sharedix (1, 1000): the shared 73k-ids.
  nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5
      imgBrick (73000, 425, 425, 3) uint8; row = 73k-id - 1.
  nsddata_betas/ppdata/subjXX/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionYY.hdf5
      betas int16, read by h5py as (750 trials, Z, Y, X), i.e. the transpose of the NIfTI volume (X, Y, Z);
      values are percent signal change x 300.
  nsddata_betas/ppdata/subjXX/func1pt8mm/betas_fithrf_GLMdenoise_RR/ncsnr.nii.gz   (X, Y, Z) float
  nsddata/ppdata/subjXX/func1pt8mm/roi/<name>.nii.gz                               (X, Y, Z) int labels
      (-1 outside the brain, 0 no label) for nsdgeneral and each ROI file named in `rois`
  nsddata/freesurfer/subjXX/label/<name>.mgz.ctab                                  "<value> <label>" lines

Preparation (as the paper's reference, preprocess_nsd.py, does it): betas / 300, z-scored per voxel across the
trials of each session (sample standard deviation, ddof=1), then the repeats of each image averaged (1-3 repeats;
subjects 3, 4, 6, 8 did fewer sessions, so some images have fewer repeats). Train = the subject's own images, test =
the shared 1,000 images the subject saw (subject-specific ids in both splits). The noise ceiling is the release's
ncsnr turned into percent explained variance with n = 3 repeats, NC = 100 * ncsnr^2 / (ncsnr^2 + 1/3); every ROI
keeps its voxels with NC >= `nc_threshold` percent. ROIs (Appendix A.1): the 27 labels of the streams,
prf-visualrois, nsdgeneral and floc-* label tables (every label but mfs-words, mTL-words, mTL-faces, aTL-faces,
mTL-bodies), each intersected with nsdgeneral except those in `outside_nsdgeneral` (RSC, which lies outside it),
plus "whole_brain": every voxel of the volume with NC >= `nc_threshold`, not intersected with nsdgeneral.
Stimulus ids are the 73k-ids (1-based, as in the NSD manual), zero-padded to 5 digits. The targets of an ROI
are its voxels in C order over the (X, Y, Z) volume. Sessions are read one at a time in chunks of trials, so memory
holds the per-image sums (the size of the output) plus one chunk, however many sessions there are. A voxel whose
betas are constant within a session (NSD marks invalid voxels with zeros) cannot be z-scored; it is excluded with a
warning naming how many.
"""

from __future__ import annotations

import logging
import pathlib
import re
import warnings
from collections.abc import Sequence

import h5py
import numpy as np

from jaxbrain.data.neural import NeuralDataError, NeuralDataset
from jaxbrain.data.stimulus_set import StimulusSet

log = logging.getLogger(__name__)

BETA_SCALE = 300.0
BETAS = "betas_fithrf_GLMdenoise_RR"
SPACE = "func1pt8mm"

WHOLE_BRAIN = "whole_brain"
ROI_LABELS = {  # label file -> its labels that are ROIs of the paper (Appendix A.1), in the reference's order
    "streams": ("early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal"),
    "prf-visualrois": ("V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"),
    "nsdgeneral": ("nsdgeneral",),
    "floc-words": ("OWFA", "VWFA-1", "VWFA-2"),
    "floc-places": ("OPA", "PPA", "RSC"),
    "floc-faces": ("OFA", "FFA-1", "FFA-2"),
    "floc-bodies": ("EBA", "FBA-1", "FBA-2"),
}
# name=file:label|label (labels from the file's ctab; "*" = every positive label), or WHOLE_BRAIN
DEFAULT_ROIS = tuple(f"{label}={file}:{label}" for file, labels in ROI_LABELS.items() for label in labels
                     ) + (WHOLE_BRAIN,)


class NSDFormatError(NeuralDataError):
    """An NSD release file is missing, malformed or inconsistent with the others."""


# ---------------------------------------------------------------------------------------------------------------
# file readers (small pure functions)

def read_expdesign(path) -> dict[str, np.ndarray]:
    """masterordering (n_trials,), subjectim (8, 10000), sharedix (1000,), all 1-based int64."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NSD experiment design not found: {path}")
    try:
        from scipy.io import loadmat

        mat = loadmat(path)
        get = lambda k: mat[k]  # noqa: E731
    except (NotImplementedError, ValueError):  # MATLAB v7.3 (HDF5): dimensions come transposed
        f = h5py.File(path, "r")
        mat = {k: f[k][()].T for k in f}
        f.close()
        get = lambda k: mat[k]  # noqa: E731
    out = {}
    for key in ("masterordering", "subjectim", "sharedix"):
        try:
            value = np.asarray(get(key))
        except KeyError:
            raise NSDFormatError(f"{path}: missing variable {key!r}") from None
        out[key] = value.astype(np.int64)
    out["masterordering"] = out["masterordering"].reshape(-1)
    out["sharedix"] = out["sharedix"].reshape(-1)
    if out["subjectim"].ndim != 2:
        raise NSDFormatError(f"{path}: subjectim has shape {out['subjectim'].shape}, expected (subjects, images)")
    n_im = out["subjectim"].shape[1]
    mo = out["masterordering"]
    if mo.size == 0 or mo.min() < 1 or mo.max() > n_im:
        raise NSDFormatError(f"{path}: masterordering values must lie in 1..{n_im} (1-based image index)")
    return out


def read_ctab(path) -> dict[str, int]:
    """Label name -> value from a FreeSurfer colour table with lines "<value> <name> [r g b a]"."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NSD ROI label table not found: {path}")
    labels = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            value = int(parts[0])
        except ValueError:
            raise NSDFormatError(f"{path}: line {n} {line!r} does not start with an integer label value") from None
        if len(parts) < 2:
            raise NSDFormatError(f"{path}: line {n} {line!r} has no label name")
        labels[parts[1]] = value
    if not labels:
        raise NSDFormatError(f"{path}: no labels")
    return labels


def read_volume(path) -> np.ndarray:
    """A NIfTI volume (X, Y, Z) as a numpy array in its stored dtype."""
    import nibabel as nib

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NSD volume not found: {path}")
    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as exc:
        raise NSDFormatError(f"{path}: not a readable NIfTI volume ({exc})") from exc
    if data.ndim != 3:
        raise NSDFormatError(f"{path}: volume has shape {data.shape}, expected (X, Y, Z)")
    return np.asarray(data)


def parse_roi(spec: str) -> tuple[str, str | None, list[str] | None]:
    """"name=file:label|label" -> (name, file, labels or None for every positive label); WHOLE_BRAIN -> (name,
    None, None)."""
    if spec.strip() == WHOLE_BRAIN:
        return WHOLE_BRAIN, None, None
    m = re.fullmatch(r"([^=/]+)=([^:]+):(.+)", spec.strip())
    if not m:
        raise ValueError(f"NSD ROI {spec!r}: expected name=file:label|label (e.g. V1=prf-visualrois:V1v|V1d)")
    name, file, labels = m.groups()
    return name, file, None if labels == "*" else labels.split("|")


def session_files(beta_dir: pathlib.Path, max_sessions: int = 0) -> list[pathlib.Path]:
    """betas_session01.hdf5, 02, ... (consecutive from 01; the design's trial order depends on it)."""
    found = {}
    for p in beta_dir.glob("betas_session*.hdf5"):
        m = re.fullmatch(r"betas_session(\d+)\.hdf5", p.name)
        if m:
            found[int(m.group(1))] = p
    if not found:
        raise FileNotFoundError(f"no betas_sessionYY.hdf5 files in {beta_dir}")
    n = max(found) if max_sessions <= 0 else max_sessions
    missing = [s for s in range(1, n + 1) if s not in found]
    if missing:
        raise FileNotFoundError(f"{beta_dir}: session files missing for sessions {missing[:5]} "
                                f"(sessions must be consecutive from 01)")
    return [found[s] for s in range(1, n + 1)]


# ---------------------------------------------------------------------------------------------------------------
# per-subject processing

def _roi_masks(root: pathlib.Path, sub: str, rois: Sequence[str], shape) -> dict[str, np.ndarray]:
    roi_dir = root / "nsddata" / "ppdata" / sub / SPACE / "roi"
    label_dir = root / "nsddata" / "freesurfer" / sub / "label"
    volumes, masks = {}, {}
    for spec in rois:
        name, file, labels = parse_roi(spec)
        if file is None:
            masks[name] = np.ones(shape, bool)
            continue
        if file not in volumes:
            vol = read_volume(roi_dir / f"{file}.nii.gz")
            if vol.shape != shape:
                raise NSDFormatError(f"{roi_dir / (file + '.nii.gz')}: shape {vol.shape} differs from the ncsnr "
                                     f"volume {shape}")
            volumes[file] = vol
        vol = volumes[file]
        if labels is None:
            masks[name] = vol > 0
            continue
        table = read_ctab(label_dir / f"{file}.mgz.ctab")
        unknown = [lab for lab in labels if lab not in table]
        if unknown:
            raise NSDFormatError(f"{label_dir / (file + '.mgz.ctab')}: no label {unknown} for ROI {name!r} "
                                 f"(labels: {sorted(table)})")
        masks[name] = np.isin(vol, [table[lab] for lab in labels])
    return masks


def _voxel_masks(root: pathlib.Path, sub: str, beta_dir: pathlib.Path, rois, nc_threshold, n_repeats_nc,
                 outside_nsdgeneral):
    """Per-voxel ceilings (percent) and each ROI's mask of reliable voxels, within nsdgeneral unless exempt."""
    ncsnr = read_volume(beta_dir / "ncsnr.nii.gz").astype(np.float64)
    shape = ncsnr.shape
    general_path = root / "nsddata" / "ppdata" / sub / SPACE / "roi" / "nsdgeneral.nii.gz"
    general = read_volume(general_path)
    if general.shape != shape:
        raise NSDFormatError(f"{general_path}: shape {general.shape} differs from the ncsnr volume {shape}")
    from jaxbrain.metrics import ncsnr_to_ceiling

    with np.errstate(invalid="ignore"):
        nc = np.where(np.isfinite(ncsnr), ncsnr_to_ceiling(np.nan_to_num(ncsnr), n_repeats_nc), np.nan)
        reliable = nc >= nc_threshold
    exempt = set(outside_nsdgeneral) | {WHOLE_BRAIN}
    masks = {name: m & reliable & ((general > 0) | (name in exempt))
             for name, m in _roi_masks(root, sub, rois, shape).items()}
    for name, m in masks.items():
        if not m.any():
            where = "" if name in exempt else " inside nsdgeneral"
            raise NSDFormatError(f"{root}: subject {sub!r}, ROI {name!r}: no voxel{where} with noise ceiling >= "
                                 f"{nc_threshold}%")
    return nc, masks


def _session_lengths(files, shape) -> list[int]:
    """Trials per session file, after checking each file's betas dataset against the volume."""
    lengths = []
    for p in files:
        with h5py.File(p, "r") as f:
            if "betas" not in f:
                raise NSDFormatError(f"{p}: no dataset 'betas' (has {list(f.keys())})")
            d = f["betas"]
            if d.ndim != 4 or d.shape[1:] != shape[::-1]:
                zyx = ", ".join(map(str, shape[::-1]))
                raise NSDFormatError(f"{p}: betas shape {d.shape}, expected (trials, {zyx}) = (trials, Z, Y, X) "
                                     f"of the ncsnr volume {shape}")
            if d.dtype != np.int16:
                raise NSDFormatError(f"{p}: betas dtype {d.dtype}, expected int16 (percent signal change x 300)")
            lengths.append(d.shape[0])
    return lengths


def _trial_images(design, subject: int, total: int, beta_dir: pathlib.Path, n_files: int):
    """The distinct images (73k ids) of the first `total` trials and each trial's index among them."""
    order_trials = design["masterordering"]
    if total > order_trials.size:
        raise NSDFormatError(f"{beta_dir}: {total} trials in {n_files} sessions but the design lists only "
                             f"{order_trials.size}")
    if subject > design["subjectim"].shape[0]:
        raise NSDFormatError(f"nsd_expdesign.mat: subjectim has no row for subject {subject}")
    kid = design["subjectim"][subject - 1, order_trials[:total] - 1]  # 73k-id (1-based) of every trial
    return np.unique(kid, return_inverse=True)


def _average_sessions(files, lengths, shape, flat_zyx, image_of_trial, n_images, trial_chunk, sub):
    """Betas z-scored per session and voxel, averaged per image; and which voxels were never constant."""
    n_voxels = flat_zyx.size
    sums = np.zeros((n_images, n_voxels), np.float32)
    counts = np.zeros(n_images, np.int64)
    valid = np.ones(n_voxels, bool)
    start = 0
    for p, n_trials in zip(files, lengths):
        session = np.empty((n_trials, n_voxels), np.float32)
        with h5py.File(p, "r") as f:
            d = f["betas"]
            for a in range(0, n_trials, trial_chunk):
                block = d[a:a + trial_chunk].reshape(-1, int(np.prod(shape)))
                session[a:a + block.shape[0]] = block[:, flat_zyx] / BETA_SCALE
        mean = session.mean(0, dtype=np.float64)
        std = session.std(0, dtype=np.float64, ddof=1)
        bad = ~(std > 0)
        if bad.any():
            valid &= ~bad
            warnings.warn(f"{p}: {int(bad.sum())} voxels have constant betas in this session and are excluded "
                          f"(subject {sub})", stacklevel=2)
        z = (session - mean) / np.where(bad, 1.0, std)
        np.add.at(sums, image_of_trial[start:start + n_trials], z)
        np.add.at(counts, image_of_trial[start:start + n_trials], 1)
        start += n_trials
        del session, z
        log.info("NSD %s: read %s", sub, p.name)
    return (sums / counts[:, None]).astype(np.float32), valid


def _subject(root: pathlib.Path, subject: int, design, rois, nc_threshold, n_repeats_nc, max_sessions,
             trial_chunk, outside_nsdgeneral):
    sub = f"subj{subject:02d}"
    beta_dir = root / "nsddata_betas" / "ppdata" / sub / SPACE / BETAS
    nc, masks = _voxel_masks(root, sub, beta_dir, rois, nc_threshold, n_repeats_nc, outside_nsdgeneral)
    shape = nc.shape
    union = np.zeros(shape, bool)
    for m in masks.values():
        union |= m
    xyz = np.argwhere(union)                                        # C order over (X, Y, Z)
    # betas are stored (trials, Z, Y, X): the flat index of voxel (x, y, z) there is (z * Y + y) * X + x
    flat_zyx = (xyz[:, 2] * shape[1] + xyz[:, 1]) * shape[0] + xyz[:, 0]
    files = session_files(beta_dir, max_sessions)
    lengths = _session_lengths(files, shape)
    images, image_of_trial = _trial_images(design, subject, sum(lengths), beta_dir, len(files))
    responses, valid = _average_sessions(files, lengths, shape, flat_zyx, image_of_trial, images.size, trial_chunk,
                                         sub)
    is_test = np.isin(images, design["sharedix"])
    voxel_nc = nc[tuple(xyz.T)]
    per_roi = {}
    for name, m in masks.items():
        cols = np.flatnonzero(m[tuple(xyz.T)] & valid)
        if cols.size == 0:
            raise NSDFormatError(f"{beta_dir}: subject {sub!r}, ROI {name!r}: every voxel was invalid in some session")
        per_roi[name] = cols
    import nibabel as nib

    volume = {"shape": shape, "affine": np.asarray(nib.load(str(beta_dir / "ncsnr.nii.gz")).affine)}
    return sub, images, is_test, responses, voxel_nc, {roi: (cols, xyz[cols]) for roi, cols in per_roi.items()}, \
        volume


def load_nsd(source_dir, subjects: Sequence[int] = (1, 2, 3, 4, 5, 6, 7, 8), sessions: int = 0,
             rois: Sequence[str] = DEFAULT_ROIS, nc_threshold: float = 10.0, n_repeats_nc: int = 3,
             trial_chunk: int = 50, outside_nsdgeneral: Sequence[str] = ("RSC",)) -> NeuralDataset:
    """Reads the NSD release under `source_dir` into a NeuralDataset (see the module docstring).

    subjects: subject numbers 1-8; sessions: how many sessions per subject (0 = every session file present);
    rois: "name=file:label|label" specs or "whole_brain" (DEFAULT_ROIS); nc_threshold: percent; n_repeats_nc: n in
    the ceiling; outside_nsdgeneral: ROI names not intersected with nsdgeneral.
    """
    root = pathlib.Path(source_dir)
    design = read_expdesign(root / "nsddata" / "experiments" / "nsd" / "nsd_expdesign.mat")
    brick = root / "nsddata_stimuli" / "stimuli" / "nsd" / "nsd_stimuli.hdf5"
    if not brick.is_file():
        raise FileNotFoundError(f"NSD stimuli not found: {brick}")
    roi_names = [parse_roi(s)[0] for s in rois]
    if len(set(roi_names)) != len(roi_names):
        raise ValueError(f"NSD rois: duplicate ROI names in {roi_names}")
    subject_names, stimulus_ids, responses, ceilings = [], {"train": {}, "test": {}}, {}, {}
    coordinates, volumes, all_images = {}, {}, set()
    for subject in (int(s) for s in subjects):
        sub, images, is_test, resp, voxel_nc, per_roi, volumes[f"subj{subject:02d}"] = _subject(
            root, subject, design, rois, nc_threshold, n_repeats_nc, sessions, trial_chunk, outside_nsdgeneral)
        subject_names.append(sub)
        all_images.update(images.tolist())
        ids = np.asarray([f"{k:05d}" for k in images])
        for split, rows in (("train", ~is_test), ("test", is_test)):
            stimulus_ids[split][sub] = ids[rows]
            for roi, (cols, _) in per_roi.items():
                responses[(split, sub, roi)] = np.ascontiguousarray(resp[rows][:, cols])
        for roi, (cols, xyz) in per_roi.items():
            ceilings[(sub, roi)] = voxel_nc[cols]
            coordinates[(sub, roi)] = xyz
    kids = np.asarray(sorted(all_images))
    stimuli = StimulusSet.from_brick(brick, "imgBrick", ids=[f"{k:05d}" for k in kids], indices=kids - 1)
    ds = NeuralDataset(name="nsd", modality="fmri", subjects=subject_names, rois=roi_names, splits=["train", "test"],
                       stimulus_ids=stimulus_ids, responses=responses, noise_ceilings=ceilings, stimuli=stimuli,
                       coordinates=coordinates, volumes=volumes)
    ds.validate(str(root))
    return ds
