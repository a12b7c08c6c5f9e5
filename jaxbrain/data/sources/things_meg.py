"""THINGS-MEG: preprocessed MEG epochs of 4 participants, 22,248 THINGS images once and 200 test images x 12.

Release: THINGS-data, Hebart, Contier, Teichmann et al. (2023), "THINGS-data, a multimodal collection of
large-scale datasets for investigating object representations in human brain and behavior", eLife 12:e82580,
https://doi.org/10.7554/eLife.82580 ; raw BIDS data OpenNeuro ds004212, preprocessed epochs on figshare
("THINGS-data: MEG preprocessed dataset", https://doi.org/10.25452/figshare.plus.21215246); preprocessing code
https://github.com/ViCCo-Group/THINGS-data (MEG/step1_preprocessing.py).

Files expected under `source_dir` (or `source_dir/derivatives/preprocessed`):
  preprocessed_P{1..4}-epo.fif   MNE epochs, 271 CTF axial gradiometers (type 'mag'; MRO11-1609 removed),
      -0.1..1.3 s at 200 Hz, filtered 0.1-40 Hz, z-scored to the pre-stimulus baseline, with the participant's
      sample_attributes_P{n}.csv as epochs.metadata. Metadata columns used: trial_type ('exp' = the 22,248
      images shown once, 'test' = the 200 images shown 12 times, 'catch' = dropped) and image_path (the stimulus
      id is its file stem, e.g. "aardvark_01b").

Pipeline (as the paper's reference notebook, things_meg.ipynb): epochs are read lazily and processed `chunk` at a
time (a participant's file holds ~27,000 epochs, about 16 GB as float64): crop 0..1.3 s, then MNE's anti-aliased
resampling to 100 Hz (130 samples with MNE); train responses are the single presentations, test responses the mean
of 12 repeats; noise ceiling per sensor x time from the test repeats (n = 12). Subjects are "P1".."P4".

Sensor-group ROIs from CTF sensor names "M" + hemisphere + lobe + number, e.g. MLO11: the third letter gives the
lobe (O occipital, T temporal, P parietal, F frontal, C central) and the second the hemisphere (L left, R right,
Z midline). As in the reference (and Table S1), each lobe ROI holds the LEFT-hemisphere sensors of its lobe (names
starting MLO, MLP, MLT, MLF, MLC), "OP" is MLO + MLP and "whole_brain" every sensor: 7 ROIs. `sides="both"`
pools the left, right and midline sensors of each lobe instead, as the dataset authors' noise-ceiling analysis
groups them (MEG/step2c_data_quality-noiseceiling.py).
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
from collections.abc import Sequence

import numpy as np

from jaxbrain.data import eeg

NAME = "things_meg"
MEG_ROIS: tuple[str, ...] = eeg.EEG_ROIS
MEG_CROP = (0.0, 1.3)
SIDES = {"left": ("L",), "both": ("L", "R", "Z")}
_CTF = re.compile(r"^M([LRZ])([OTPFC])")


def ctf_sensor_group(name: str) -> tuple[str, str] | None:
    """(hemisphere L/R/Z, lobe O/T/P/F/C) of a CTF sensor name such as "MLO11-1609", or None."""
    m = _CTF.match(name)
    return (m.group(1), m.group(2)) if m else None


def _check_sides(sides: str) -> None:
    if sides not in SIDES:
        raise ValueError(f"THINGS-MEG sides must be one of {sorted(SIDES)}, got {sides!r}")


def meg_roi_channels(ch_names: Sequence[str], rois: Sequence[str] = MEG_ROIS, *, sides: str = "left",
                     source: str = "<memory>") -> dict[str, np.ndarray]:
    """ROI -> sensor indices: a lobe ("O", ...) or "OP" holds the sensors of `sides` ("left" or "both")."""
    _check_sides(sides)
    groups = [ctf_sensor_group(n) for n in ch_names]
    lobe_of = [g[1] if g is not None and g[0] in SIDES[sides] else None for g in groups]
    out = {}
    for roi in rois:
        if roi == eeg.WHOLE_BRAIN:
            idx = np.arange(len(ch_names))
        elif roi in eeg.LOBES or roi == "OP":
            idx = np.flatnonzero([lobe is not None and lobe in roi for lobe in lobe_of])
        else:
            raise eeg.SensorDataError(f"{source}: unknown MEG ROI {roi!r}; known: {', '.join(MEG_ROIS)}")
        if idx.size == 0:
            raise eeg.SensorDataError(f"{source}: ROI {roi!r} has no sensor among {list(ch_names)[:8]}...")
        out[roi] = idx
    return out


def epochs_file(source_dir: pathlib.Path, subject: str) -> pathlib.Path:
    if not re.fullmatch(r"P\d+", subject):
        raise ValueError(f"THINGS-MEG: subject labels look like 'P1', got {subject!r}")
    name = f"preprocessed_{subject}-epo.fif"
    candidates = [source_dir / name, source_dir / "derivatives" / "preprocessed" / name]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError("THINGS-MEG: file not found: " + " or ".join(map(str, candidates)))


def find_subjects(source_dir: pathlib.Path) -> list[str]:
    files = list(source_dir.glob("preprocessed_P*-epo.fif")) + list(
        (source_dir / "derivatives" / "preprocessed").glob("preprocessed_P*-epo.fif"))
    subs = sorted({re.search(r"preprocessed_(P\d+)-epo", f.name).group(1) for f in files},
                  key=lambda s: int(s[1:]))
    if not subs:
        raise FileNotFoundError(f"THINGS-MEG: no preprocessed_P*-epo.fif under {source_dir}")
    return subs


def read_subject(source_dir: pathlib.Path, subject: str, *, sfreq: float = eeg.TARGET_SFREQ,
                 crop: tuple[float, float] = MEG_CROP, resample: str = "mne", chunk: int = 512
                 ) -> eeg.SensorSubject:
    """One participant's epochs file, chunk by chunk (see the module docstring)."""
    import mne

    path = epochs_file(source_dir, subject)
    try:
        epochs = mne.read_epochs(path, preload=False, verbose="error")
    except Exception as exc:
        raise eeg.SensorDataError(f"{path}: cannot read MNE epochs ({type(exc).__name__}: {exc})") from exc
    meta = epochs.metadata
    if meta is None:
        raise eeg.SensorDataError(f"{path}: epochs carry no metadata (expected sample_attributes with "
                                  "trial_type and image_path)")
    missing = [c for c in ("trial_type", "image_path") if c not in meta.columns]
    if missing:
        raise eeg.SensorDataError(f"{path}: metadata lacks column(s) {missing}; has {list(meta.columns)}")
    if crop[1] > epochs.tmax + 1e-9 or crop[0] < epochs.tmin - 1e-9:
        raise eeg.SensorDataError(f"{path}: epochs span {epochs.tmin}..{epochs.tmax} s, crop {crop} does not fit")
    trial_type = meta["trial_type"].astype(str).to_numpy()
    unknown = sorted(set(trial_type) - {"exp", "test", "catch"})
    if unknown:
        raise eeg.SensorDataError(f"{path}: unknown trial_type value(s) {unknown}")
    keep = np.flatnonzero(trial_type != "catch")
    ids = np.asarray([eeg.stimulus_stem(p) for p in meta["image_path"].astype(str).to_numpy()])
    sensors = mne.pick_types(epochs.info, meg="mag", ref_meg=False, exclude=[])
    if sensors.size == 0:
        raise eeg.SensorDataError(f"{path}: no MEG 'mag' sensors (CTF axial gradiometers) in the epochs")
    ch_names = [epochs.ch_names[i] for i in sensors]
    train, test = eeg.MeanAccumulator(), eeg.TrialCollector()
    times = None
    for start in range(0, keep.size, chunk):
        idx = keep[start:start + chunk]
        part = epochs[idx]
        part.load_data()
        part.pick(sensors)
        data, times = eeg.resample_and_crop(part, sfreq=sfreq, crop=crop, method=resample, crop_first=True)
        is_test = trial_type[idx] == "test"
        train.add(ids[idx][~is_test], data[~is_test])
        test.add(ids[idx][is_test], data[is_test])
        del part, data
    repeated = [i for i, n in zip(train.ids, train.counts(train.ids)) if n > 1]
    if repeated:
        raise eeg.SensorDataError(f"{path}: {len(repeated)} 'exp' images occur more than once, e.g. {repeated[:3]}")
    return eeg.subject_from_collections(ch_names, times, train, test, source=str(path))


def load_things_meg(source_dir: str | os.PathLike, *, subjects: Sequence[str] | str | None = None,
                    rois: Sequence[str] = MEG_ROIS, sides: str = "left", sfreq: float = eeg.TARGET_SFREQ,
                    crop: tuple[float, float] = MEG_CROP, resample: str = "mne", chunk: int = 512, images=None,
                    progress: bool = False):
    """THINGS-MEG as a NeuralDataset (modality "meg").

    `subjects`: such as "P1" (default all files found; a string may join several with '+'). `sides`: "left"
    (the paper's sensor groups) or "both". `images`: None, a StimulusSet, or the THINGS image folder / zip
    (ids = file stems).
    """
    source_dir = pathlib.Path(source_dir)
    if not source_dir.is_dir():
        raise FileNotFoundError(f"THINGS-MEG: source folder not found: {source_dir}")
    subjects = eeg.name_list(subjects) or find_subjects(source_dir)
    _check_sides(sides)
    data = {}
    for s in subjects:
        data[s] = read_subject(source_dir, s, sfreq=float(sfreq), crop=(float(crop[0]), float(crop[1])),
                               resample=resample, chunk=int(chunk))
        if progress:
            print(f"THINGS-MEG {s}: {len(data[s].ids['train'])} train / {len(data[s].ids['test'])} test images")
    return eeg.build_sensor_dataset(NAME, "meg", data, functools.partial(meg_roi_channels, sides=sides),
                                    list(rois), images=images, source=str(source_dir))
