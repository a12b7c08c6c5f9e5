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

Pipeline: epochs are read lazily and processed `chunk` at a time (a participant's file holds ~27,000 epochs, about
16 GB as float64): resample to 100 Hz with anti-aliasing, crop 0..1.3 s (130 samples); train responses are the
single presentations, test responses the mean of 12 repeats; noise ceiling per sensor x time from the test
repeats. Subjects are "P1".."P4".

Sensor-group ROIs from CTF sensor names "M" + hemisphere + lobe + number, e.g. MLO11: the third letter gives the
lobe (O occipital, T temporal, P parietal, F frontal, C central) and the second the hemisphere (L left, R right,
Z midline). Each lobe ROI pools BOTH hemispheres and the midline (L, R and Z sensors), as the dataset authors'
noise-ceiling analysis groups them (MEG/step2c_data_quality-noiseceiling.py); "all" is every sensor. With
`hemispheres=True` the readers add per-hemisphere ROIs "O_L", "O_R", ... (left / right sensors only; midline
sensors are in neither).
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Sequence

import numpy as np

from jaxbrain.data import eeg

NAME = "things_meg"
MEG_LOBES = ("O", "T", "P", "F", "C")
MEG_ROIS: tuple[str, ...] = (*MEG_LOBES, "all")
MEG_CROP = (0.0, 1.3)
_CTF = re.compile(r"^M([LRZ])([OTPFC])\w*")


def ctf_sensor_group(name: str) -> tuple[str, str] | None:
    """(hemisphere L/R/Z, lobe O/T/P/F/C) of a CTF sensor name such as "MLO11-1609", or None."""
    m = _CTF.match(name)
    return (m.group(1), m.group(2)) if m else None


def meg_roi_channels(ch_names: Sequence[str], rois: Sequence[str] = MEG_ROIS, *, source: str = "<memory>"
                     ) -> dict[str, np.ndarray]:
    """ROI -> sensor indices. Lobe ROIs ("O", ...) pool L, R and Z sensors; "O_L"/"O_R" one hemisphere."""
    groups = [ctf_sensor_group(n) for n in ch_names]
    out = {}
    for roi in rois:
        if roi == "all":
            idx = np.arange(len(ch_names))
        elif roi in MEG_LOBES:
            idx = np.flatnonzero([g is not None and g[1] == roi for g in groups])
        elif re.fullmatch(r"[OTPFC]_[LR]", roi):
            idx = np.flatnonzero([g is not None and g[1] == roi[0] and g[0] == roi[2] for g in groups])
        else:
            raise eeg.SensorDataError(f"{source}: unknown MEG ROI {roi!r}; known: {', '.join(MEG_ROIS)} and "
                                      "per-hemisphere O_L, O_R, ...")
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
                 crop: tuple[float, float] = MEG_CROP, chunk: int = 512) -> eeg.SensorSubject:
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
        data, times = eeg.resample_and_crop(part, sfreq=sfreq, crop=crop)
        is_test = trial_type[idx] == "test"
        train.add(ids[idx][~is_test], data[~is_test])
        test.add(ids[idx][is_test], data[is_test])
        del part, data
    repeated = [i for i, n in zip(train.ids, train.counts(train.ids)) if n > 1]
    if repeated:
        raise eeg.SensorDataError(f"{path}: {len(repeated)} 'exp' images occur more than once, e.g. {repeated[:3]}")
    return eeg.subject_from_collections(ch_names, times, train, test, source=str(path))


def load_things_meg(source_dir: str | os.PathLike, *, subjects: Sequence[str] | str | None = None,
                    rois: Sequence[str] = MEG_ROIS, hemispheres: bool = False, sfreq: float = eeg.TARGET_SFREQ,
                    crop: tuple[float, float] = MEG_CROP, chunk: int = 512, images=None, progress: bool = False):
    """THINGS-MEG as a NeuralDataset (modality "meg").

    `subjects`: such as "P1" (default all files found; a string may join several with '+'). `images`: None, a
    StimulusSet, or the THINGS image folder / zip (ids = file stems).
    """
    source_dir = pathlib.Path(source_dir)
    if not source_dir.is_dir():
        raise FileNotFoundError(f"THINGS-MEG: source folder not found: {source_dir}")
    subjects = eeg.name_list(subjects) or find_subjects(source_dir)
    rois = list(rois)
    if hemispheres:
        rois += [f"{lobe}_{h}" for lobe in MEG_LOBES for h in "LR"]
    data = {}
    for s in subjects:
        data[s] = read_subject(source_dir, s, sfreq=float(sfreq), crop=(float(crop[0]), float(crop[1])),
                               chunk=int(chunk))
        if progress:
            print(f"THINGS-MEG {s}: {len(data[s].ids['train'])} train / {len(data[s].ids['test'])} test images")
    return eeg.build_sensor_dataset(NAME, "meg", data, meg_roi_channels, rois, images=images,
                                    source=str(source_dir))
