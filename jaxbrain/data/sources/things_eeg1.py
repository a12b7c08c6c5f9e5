"""THINGS-EEG1: raw EEG of 50 subjects viewing 22,248 THINGS images in rapid serial visual presentation.

Release: OpenNeuro ds003825 (versions 1.x and 2.0.0), Grootswagers, Zhou, Robinson, Hebart & Carlson (2022),
"Human EEG recordings for 1,854 concepts presented in rapid serial visual presentation streams", Scientific Data
9:3, https://doi.org/10.1038/s41597-021-01102-7 ; data https://openneuro.org/datasets/ds003825.

Files expected under `source_dir` (the BIDS root):
  sub-XX/eeg/sub-XX_task-rsvp_eeg.vhdr (+ .vmrk, .eeg)   BrainVision, 1000 Hz, online reference Cz (not
                                                          recorded); 63 EEG channels (127 for sub-49, sub-50)
  sub-XX/eeg/sub-XX_task-rsvp_events.tsv                  one row per image presentation, in order; columns used:
      onset   presentation onset. The released files give it in samples of the 1000 Hz recording (not the
              BIDS seconds); `onset_unit="auto"` reads it as samples when its maximum exceeds the recording
              length in seconds (true of every real recording), as seconds otherwise.
      stim    image path, e.g. "stimuli\\aardvark\\aardvark_01b.jpg"; the stimulus id is the file stem.
      isteststim / teststimnumber   1 / 0..199 for the 200 validation images (12 repeats each), 0 / -1 otherwise.
  test_images.csv (optional, dataset root)  the 200 validation images as "concept/file.jpg"; when present it
              decides the split (sub-01's events.tsv lacks the test columns), else `isteststim`/`teststimnumber`.

Pipeline per subject (DESIGN.md section 3): EEG channels only; optional re-reference (default: keep the
recording reference); high-pass 0.1 Hz (zero-phase FIR); epochs -0.2..0.8 s; baseline -0.2..0 s; resample to
100 Hz with anti-aliasing; crop 0..0.8 s (80 samples). Train = the 22,248 images shown once; test = the 200
validation images, responses averaged over their 12 repeats; noise ceiling per channel x time from the test
repeats. Subjects are read one at a time; only the best `n_keep` (default 10) by mean noise ceiling over the
occipital-parietal ("OP") channel x time targets are kept, so memory holds at most n_keep + 1 subjects.
ROIs: `jaxbrain.data.eeg.EEG_ROIS` (O, P, T, F, C, OP, all).
"""

from __future__ import annotations

import heapq
import os
import pathlib
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from jaxbrain.data import eeg

NAME = "things_eeg1"


def subject_files(source_dir: pathlib.Path, subject: str) -> tuple[pathlib.Path, pathlib.Path]:
    folder = source_dir / subject / "eeg"
    vhdr = folder / f"{subject}_task-rsvp_eeg.vhdr"
    events = folder / f"{subject}_task-rsvp_events.tsv"
    for f in (vhdr, events):
        if not f.is_file():
            raise FileNotFoundError(f"THINGS-EEG1 {subject}: file not found: {f}")
    return vhdr, events


def find_subjects(source_dir: pathlib.Path) -> list[str]:
    subs = sorted(p.name for p in source_dir.glob("sub-*") if (p / "eeg").is_dir())
    if not subs:
        raise FileNotFoundError(f"THINGS-EEG1: no sub-*/eeg folders under {source_dir}")
    return subs


def read_test_images(source_dir: pathlib.Path) -> set[str] | None:
    """Stems of the 200 validation images from test_images.csv, or None when the file is absent."""
    path = source_dir / "test_images.csv"
    if not path.is_file():
        return None
    stems = {eeg.stimulus_stem(line.strip()) for line in path.read_text().splitlines() if line.strip()}
    if not stems:
        raise eeg.SensorDataError(f"{path}: no image names")
    return stems


def read_events(path: pathlib.Path, test_images: set[str] | None) -> pd.DataFrame:
    """Columns onset (as released), stimulus_id, is_test, one row per presentation in file order."""
    table = pd.read_csv(path, sep="\t")
    missing = [c for c in ("onset", "stim") if c not in table.columns]
    if missing:
        raise eeg.SensorDataError(f"{path}: missing column(s) {missing}; has {list(table.columns)}")
    if table["stim"].isna().any():
        raise eeg.SensorDataError(f"{path}: {int(table['stim'].isna().sum())} rows without a 'stim' image path")
    onset = pd.to_numeric(table["onset"], errors="coerce")
    if onset.isna().any():
        raise eeg.SensorDataError(f"{path}: non-numeric onset in row {int(np.flatnonzero(onset.isna())[0])}")
    ids = table["stim"].map(eeg.stimulus_stem)
    if test_images is not None:
        is_test = ids.isin(test_images)
    elif "isteststim" in table.columns:
        is_test = table["isteststim"].astype(int) == 1
    elif "teststimnumber" in table.columns:
        is_test = table["teststimnumber"].astype(int) >= 0
    else:
        raise eeg.SensorDataError(f"{path}: cannot tell validation images apart: no isteststim/teststimnumber "
                                  "column and no test_images.csv in the dataset root")
    return pd.DataFrame({"onset": onset.to_numpy(), "stimulus_id": ids.to_numpy(), "is_test": is_test.to_numpy()})


def onsets_to_samples(onset: np.ndarray, sfreq: float, n_times: int, onset_unit: str, source: str) -> np.ndarray:
    if onset_unit == "auto":
        onset_unit = "samples" if onset.max() > n_times / sfreq else "seconds"
    if onset_unit == "samples":
        samples = np.rint(onset).astype(np.int64)
    elif onset_unit == "seconds":
        samples = np.rint(onset * sfreq).astype(np.int64)
    else:
        raise ValueError(f"onset_unit must be 'auto', 'samples' or 'seconds', got {onset_unit!r}")
    if samples.min() < 0 or samples.max() >= n_times:
        raise eeg.SensorDataError(f"{source}: onsets ({onset_unit}) run outside the recording of {n_times} "
                                  f"samples (range {samples.min()}..{samples.max()})")
    return samples


def read_subject(source_dir: pathlib.Path, subject: str, *, test_images: set[str] | None = None,
                 reference=None, l_freq: float | None = 0.1, h_freq: float | None = None,
                 sfreq: float = eeg.TARGET_SFREQ, onset_unit: str = "auto", chunk: int = 1000
                 ) -> eeg.SensorSubject:
    """One subject through the EEG1 pipeline (see the module docstring)."""
    import mne

    vhdr, events_path = subject_files(source_dir, subject)
    events = read_events(events_path, test_images)
    try:
        raw = mne.io.read_raw_brainvision(vhdr, preload=True, verbose="error")
    except Exception as exc:  # MNE raises several types for malformed headers / missing binaries
        raise eeg.SensorDataError(f"{vhdr}: cannot read BrainVision recording ({type(exc).__name__}: {exc})"
                                  ) from exc
    raw.pick(mne.pick_types(raw.info, eeg=True, exclude=[]))
    eeg.set_reference(raw, reference)
    eeg.filter_raw(raw, l_freq, h_freq)
    onsets = onsets_to_samples(events["onset"].to_numpy(), raw.info["sfreq"], raw.n_times, onset_unit,
                               str(events_path))
    ids = events["stimulus_id"].to_numpy(dtype=str)
    is_test = events["is_test"].to_numpy(dtype=bool)
    train, test = eeg.MeanAccumulator(), eeg.TrialCollector()
    times = None
    for pos, data, times in eeg.epoch_chunks(raw, onsets, sfreq=sfreq, crop=eeg.EEG_CROP, chunk=chunk,
                                             source=str(vhdr)):
        chunk_test = is_test[pos]
        train.add(ids[pos][~chunk_test], data[~chunk_test])
        test.add(ids[pos][chunk_test], data[chunk_test])
    repeated = [i for i, n in zip(train.ids, train.counts(train.ids)) if n > 1]
    if repeated:
        raise eeg.SensorDataError(f"{events_path}: {len(repeated)} training images are shown more than once, "
                                  f"e.g. {repeated[:3]}; expected each once")
    return eeg.subject_from_collections(raw.ch_names, times, train, test, source=str(vhdr))


def occipital_parietal_score(subject: eeg.SensorSubject) -> float:
    """Mean noise ceiling over the OP channel x time targets (the subject ranking of the paper)."""
    idx = eeg.eeg_roi_channels(subject.ch_names, ["OP"])["OP"]
    return float(np.mean(subject.ceiling[idx]))


def load_things_eeg1(source_dir: str | os.PathLike, *, subjects: Sequence[str] | str | None = None,
                     n_keep: int = 10, rois: Sequence[str] = eeg.EEG_ROIS, reference: str | None = None,
                     l_freq: float | None = 0.1, h_freq: float | None = None, sfreq: float = eeg.TARGET_SFREQ,
                     onset_unit: str = "auto", chunk: int = 1000, images=None, progress: bool = False):
    """THINGS-EEG1 as a NeuralDataset (modality "eeg"), keeping the `n_keep` subjects with the highest
    occipital-parietal noise ceiling (all subjects when n_keep is None or <= 0).

    `subjects`: BIDS labels such as "sub-01" (default every sub-*/eeg folder); a string may join several with
    '+'. `images`: None, a StimulusSet, or the THINGS image folder / zip (ids = file stems).
    """
    source_dir = pathlib.Path(source_dir)
    if not source_dir.is_dir():
        raise FileNotFoundError(f"THINGS-EEG1: source folder not found: {source_dir}")
    subjects = eeg.name_list(subjects) or find_subjects(source_dir)
    for s in subjects:
        if not re.fullmatch(r"sub-\d+", s):
            raise ValueError(f"THINGS-EEG1: subject labels look like 'sub-01', got {s!r}")
    keep_all = n_keep is None or int(n_keep) <= 0
    test_images = read_test_images(source_dir)
    kept: list[tuple[float, int, str, eeg.SensorSubject]] = []     # min-heap on score
    for order, s in enumerate(subjects):
        sub = read_subject(source_dir, s, test_images=test_images, reference=reference, l_freq=l_freq,
                           h_freq=h_freq, sfreq=float(sfreq), onset_unit=onset_unit, chunk=int(chunk))
        score = occipital_parietal_score(sub)
        if progress:
            print(f"THINGS-EEG1 {s}: mean OP noise ceiling {score:.2f} %")
        item = (score, -order, s, sub)
        if keep_all or len(kept) < int(n_keep):
            heapq.heappush(kept, item)
        else:
            heapq.heappushpop(kept, item)
        del sub, item
    chosen = {s: sub for _, _, s, sub in sorted(kept, key=lambda t: subjects.index(t[2]))}
    return eeg.build_sensor_dataset(NAME, "eeg", chosen, eeg.eeg_roi_channels, list(rois), images=images,
                                    source=str(source_dir))
