"""THINGS-EEG2: raw EEG of 10 subjects, 16,540 training images x 4 repeats and 200 test images x 80 repeats.

Release: OSF project 3jk45 (https://osf.io/3jk45/), Gifford, Dwivedi, Roig & Cichy (2022), "A large and rich EEG
dataset for modeling human visual object recognition", NeuroImage 264:119754,
https://doi.org/10.1016/j.neuroimage.2022.119754 . Code: https://github.com/gifale95/eeg_encoding .

Files expected under `source_dir`:
  sub-XX/ses-YY/raw_eeg_training.npy, sub-XX/ses-YY/raw_eeg_test.npy   ("Raw EEG data", 4 sessions per subject)
      Each is a pickled dict (np.save of a dict; read with allow_pickle=True, so only open files you trust):
      'raw_eeg_data' (n_channels, n_samples) float, 'ch_names' (63 EEG channels + 'stim'), 'ch_types'
      ('eeg' ... 'stim'), 'sfreq' (1000), 'highpass', 'lowpass'. The 'stim' channel holds, at each image onset,
      the image condition number (1..16,540 training, 1..200 test) and 99999 for target (catch) trials, which
      are dropped. These files are the authors' conversion of the BrainVision recordings (source_to_raw.py in
      the code repository) with the trigger samples joined to the behavioural image numbers.
  image_metadata.npy (in `source_dir` or `source_dir/image_set`)   pickled dict with 'train_img_files' (16,540
      names such as "aardvark_01b.jpg", condition k is entry k-1), 'test_img_files' (200), and the concept names.
      The stimulus id is the file stem.

Pipeline per session (DESIGN.md section 3; the dataset authors' preprocessing without multivariate noise
normalisation, i.e. no whitening): EEG channels only; optional re-reference and filters (default none, as the
authors'); epochs -0.2..0.8 s; baseline -0.2..0 s; resample to 100 Hz with anti-aliasing (MNE's, as the paper's
reference); crop 0..0.8 s; data in µV. Sessions
are read one at a time: training epochs are folded into a running mean per image (memory independent of the
number of sessions), test epochs are kept for the noise ceiling (per channel x time, n = the 80 repeats averaged).
ROIs: `jaxbrain.data.eeg.EEG_ROIS`.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Sequence

import numpy as np

from jaxbrain.data import eeg

NAME = "things_eeg2"
TARGET_CODE = 99999
PARTS = {"train": "raw_eeg_training.npy", "test": "raw_eeg_test.npy"}
N_CONDITIONS = {"train": 16540, "test": 200}


def find_subjects(source_dir: pathlib.Path) -> list[str]:
    subs = sorted(p.name for p in source_dir.glob("sub-*") if p.is_dir() and any(p.glob("ses-*")))
    if not subs:
        raise FileNotFoundError(f"THINGS-EEG2: no sub-*/ses-* folders under {source_dir}")
    return subs


def find_sessions(source_dir: pathlib.Path, subject: str) -> list[pathlib.Path]:
    sessions = sorted(p for p in (source_dir / subject).glob("ses-*") if p.is_dir())
    if not sessions:
        raise FileNotFoundError(f"THINGS-EEG2 {subject}: no ses-* folders under {source_dir / subject}")
    return sessions


def read_image_names(source_dir: pathlib.Path) -> dict[str, np.ndarray]:
    """split -> stimulus id of each image condition (index k-1 for condition k), from image_metadata.npy."""
    candidates = [source_dir / "image_metadata.npy", source_dir / "image_set" / "image_metadata.npy"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise FileNotFoundError("THINGS-EEG2: image_metadata.npy not found at " + " or ".join(map(str, candidates)))
    meta = _load_pickled_dict(path)
    out = {}
    for split, key in (("train", "train_img_files"), ("test", "test_img_files")):
        if key not in meta:
            raise eeg.SensorDataError(f"{path}: no key {key!r}; has {sorted(meta)}")
        out[split] = np.asarray([eeg.stimulus_stem(f) for f in meta[key]])
        if len(set(out[split])) != len(out[split]):
            raise eeg.SensorDataError(f"{path}: duplicate image names in {key!r}")
    return out


def _load_pickled_dict(path: pathlib.Path) -> dict:
    try:
        obj = np.load(path, allow_pickle=True)
    except Exception as exc:
        raise eeg.SensorDataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise eeg.SensorDataError(f"{path}: expected a pickled dict (np.save of a dict), got {type(obj).__name__}")
    return obj


def load_raw(path: pathlib.Path):
    """An mne RawArray (EEG channels + 'stim') from one raw_eeg_*.npy file, checked."""
    import mne

    if not path.is_file():
        raise FileNotFoundError(f"THINGS-EEG2: file not found: {path}")
    d = _load_pickled_dict(path)
    missing = [k for k in ("raw_eeg_data", "ch_names", "ch_types", "sfreq") if k not in d]
    if missing:
        raise eeg.SensorDataError(f"{path}: missing key(s) {missing}; has {sorted(d)}")
    data = np.asarray(d["raw_eeg_data"], dtype=np.float64)
    names, types = list(d["ch_names"]), list(d["ch_types"])
    if data.ndim != 2 or data.shape[0] != len(names) or len(names) != len(types):
        raise eeg.SensorDataError(f"{path}: raw_eeg_data shape {data.shape} does not match {len(names)} "
                                  f"ch_names and {len(types)} ch_types")
    if "stim" not in names:
        raise eeg.SensorDataError(f"{path}: no 'stim' channel among ch_names")
    if not np.isfinite(data).all():
        raise eeg.SensorDataError(f"{path}: raw_eeg_data has NaN or inf")
    info = mne.create_info(names, float(d["sfreq"]), types, verbose="error")
    return mne.io.RawArray(data, info, verbose="error")


def read_session_part(path: pathlib.Path, split: str, names: np.ndarray, accumulate, *, reference=None,
                      l_freq=None, h_freq=None, sfreq: float = eeg.TARGET_SFREQ, resample: str = "mne",
                      chunk: int = 1000):
    """Epochs one raw_eeg_*.npy file and feeds (ids, data) to `accumulate`; returns (ch_names, times)."""
    import mne

    raw = load_raw(path)
    # index-based picks: the trigger channel is *named* "stim", which MNE's string picks find ambiguous
    onsets, codes = eeg.onset_samples_from_stim(raw.get_data(picks=[raw.ch_names.index("stim")])[0])
    keep = codes != TARGET_CODE
    onsets, codes = onsets[keep], codes[keep]
    if onsets.size == 0:
        raise eeg.SensorDataError(f"{path}: no image events in the 'stim' channel")
    bad = (codes < 1) | (codes > len(names))
    if bad.any():
        raise eeg.SensorDataError(f"{path}: image condition {int(codes[bad][0])} outside 1..{len(names)} "
                                  f"({split} images)")
    raw.pick(mne.pick_types(raw.info, eeg=True, exclude=[]))
    eeg.set_reference(raw, reference)
    eeg.filter_raw(raw, l_freq, h_freq)
    ids = names[codes - 1]
    times = None
    for pos, data, times in eeg.epoch_chunks(raw, onsets, sfreq=sfreq, crop=eeg.EEG_CROP, resample=resample,
                                             units="uV", chunk=chunk, source=str(path)):
        accumulate(ids[pos], data)
    return raw.ch_names, times


def read_subject(source_dir: pathlib.Path, subject: str, names: dict[str, np.ndarray], *,
                 sessions: Sequence[str] | None = None, reference=None, l_freq=None, h_freq=None,
                 sfreq: float = eeg.TARGET_SFREQ, resample: str = "mne", chunk: int = 1000) -> eeg.SensorSubject:
    """One subject, session by session (see the module docstring)."""
    folders = find_sessions(source_dir, subject) if sessions is None else [source_dir / subject / s
                                                                          for s in sessions]
    train, test = eeg.MeanAccumulator(), eeg.TrialCollector()
    ch_names = times = None
    for folder in folders:
        for split, acc in (("train", train), ("test", test)):
            chans, t = read_session_part(folder / PARTS[split], split, names[split], acc.add, reference=reference,
                                         l_freq=l_freq, h_freq=h_freq, sfreq=sfreq, resample=resample,
                                         chunk=chunk)
            if ch_names is None:
                ch_names, times = chans, t
            elif list(chans) != list(ch_names):
                raise eeg.SensorDataError(f"{folder / PARTS[split]}: channels differ from the first session "
                                          f"({chans} vs {ch_names})")
    return eeg.subject_from_collections(ch_names, times, train, test, source=str(source_dir / subject))


def load_things_eeg2(source_dir: str | os.PathLike, *, subjects: Sequence[str] | str | None = None,
                     sessions: Sequence[str] | str | None = None, rois: Sequence[str] = eeg.EEG_ROIS,
                     reference: str | None = None, l_freq: float | None = None, h_freq: float | None = None,
                     sfreq: float = eeg.TARGET_SFREQ, resample: str = "mne", chunk: int = 1000, images=None,
                     progress: bool = False):
    """THINGS-EEG2 as a NeuralDataset (modality "eeg").

    `subjects`: labels such as "sub-01" (default all); `sessions`: such as "ses-01" (default all of each
    subject); strings may join several with '+'. `images`: None, a StimulusSet, or the image folder / zip
    (training_images/ and test_images/; ids = file stems).
    """
    source_dir = pathlib.Path(source_dir)
    if not source_dir.is_dir():
        raise FileNotFoundError(f"THINGS-EEG2: source folder not found: {source_dir}")
    names = read_image_names(source_dir)
    subjects = eeg.name_list(subjects) or find_subjects(source_dir)
    data = {}
    for s in subjects:
        if not re.fullmatch(r"sub-\d+", s):
            raise ValueError(f"THINGS-EEG2: subject labels look like 'sub-01', got {s!r}")
        data[s] = read_subject(source_dir, s, names, sessions=eeg.name_list(sessions), reference=reference,
                               l_freq=l_freq, h_freq=h_freq, sfreq=float(sfreq), resample=resample,
                               chunk=int(chunk))
        if progress:
            print(f"THINGS-EEG2 {s}: {len(data[s].ids['train'])} train / {len(data[s].ids['test'])} test images")
    return eeg.build_sensor_dataset(NAME, "eeg", data, eeg.eeg_roi_channels, list(rois), images=images,
                                    source=str(source_dir))
