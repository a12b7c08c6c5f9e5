"""THINGS-EEG1: raw EEG of 50 subjects viewing 22,248 THINGS images in rapid serial visual presentation.

Release: OpenNeuro ds003825 (versions 1.x and 2.0.0), Grootswagers, Zhou, Robinson, Hebart & Carlson (2022),
"Human EEG recordings for 1,854 concepts presented in rapid serial visual presentation streams", Scientific Data
9:3, https://doi.org/10.1038/s41597-021-01102-7 ; data https://openneuro.org/datasets/ds003825.

Files expected under `source_dir` (the BIDS root):
  sub-XX/eeg/sub-XX_task-rsvp_eeg.vhdr (+ .vmrk, .eeg)   BrainVision, 1000 Hz, online reference Cz (not
                                                          recorded); 63 EEG channels (127 for sub-49, sub-50,
                                                          recorded against FCz); one marker "E  1" (as MNE reads
                                                          it with ignore_marker_types) at every image onset
  sub-XX/eeg/sub-XX_task-rsvp_events.tsv                  one row per image presentation, in marker order;
      stim    image path, e.g. "stimuli\\aardvark\\aardvark_01b.jpg"; the stimulus id is the file stem.
      teststimnumber   0..199 for the 200 validation images (12 repeats each), -1 otherwise (or `isteststim`).
      stimnumber       >= 0 for the 22,248 images shown once, -1 otherwise (rows in neither split are skipped,
                       as the reference does; without the column every non-test row is a training row).
  test_images.csv (optional, dataset root)  the 200 validation images as "concept/file.jpg", used only when an
              events table has neither teststimnumber nor isteststim.

Pipeline per subject, with MNE, as the paper's reference notebook (things_eeg1.ipynb) does it: the recording
reference is added back as a flat channel (Cz; for sub-49 and sub-50 their first 63 channels are kept and FCz is
added); average reference; notch filters at 50, 100, 150, 200 and 250 Hz; high-pass 0.1 Hz and low-pass 100 Hz
(zero-phase FIR, MNE's defaults); epochs -0.2..0.8 s around the "E  1" markers with baseline -0.2..0 s; resampling to
100 Hz (MNE's anti-aliased FFT resampling); crop 0..0.8 s (80 samples with MNE); data in µV. Train = the 22,248
images shown once; test = the 200 validation images, responses averaged over their 12 repeats; noise ceiling per
channel x time from the test repeats (n = 12). Subjects are read one at a time; only the best `n_keep` (default
10) by mean noise ceiling over the occipital-parietal ("OP") channel x time targets are kept, in that ranking
(best first), so memory holds at most n_keep + 1 subjects. ROIs: `jaxbrain.data.eeg.EEG_ROIS`.
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
MARKER = "E  1"
NOTCH = (50.0, 100.0, 150.0, 200.0, 250.0)


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
    """Columns stimulus_id, split ("train", "test" or "" for rows in neither), one row per presentation."""
    table = pd.read_csv(path, sep="\t")
    if "stim" not in table.columns:
        raise eeg.SensorDataError(f"{path}: missing column(s) ['stim']; has {list(table.columns)}")
    if table["stim"].isna().any():
        raise eeg.SensorDataError(f"{path}: {int(table['stim'].isna().sum())} rows without a 'stim' image path")
    ids = table["stim"].map(eeg.stimulus_stem)
    if "teststimnumber" in table.columns:
        is_test = table["teststimnumber"].astype(int) > -1
    elif "isteststim" in table.columns:
        is_test = table["isteststim"].astype(int) == 1
    elif test_images is not None:
        is_test = ids.isin(test_images)
    else:
        raise eeg.SensorDataError(f"{path}: cannot tell validation images apart: no teststimnumber/isteststim "
                                  "column and no test_images.csv in the dataset root")
    is_train = ~is_test & (table["stimnumber"].astype(int) > -1 if "stimnumber" in table.columns else True)
    split = np.where(is_test, "test", np.where(is_train, "train", ""))
    return pd.DataFrame({"stimulus_id": ids.to_numpy(), "split": split})


def add_reference_channel(raw, subject: str):
    """Adds the recording reference back as a flat channel: FCz after the first 63 channels for sub-49 and
    sub-50 (recorded with 127 channels), Cz otherwise (in place)."""
    import mne

    if int(subject.split("-")[1]) in (49, 50):
        if len(raw.ch_names) < 63:
            raise eeg.SensorDataError(f"{subject}: {len(raw.ch_names)} channels, expected at least 63")
        raw.pick(raw.ch_names[:63])
        reference = "FCz"
    else:
        reference = "Cz"
    if reference in raw.ch_names:
        raise eeg.SensorDataError(f"{subject}: the recording already has a channel {reference!r}")
    mne.add_reference_channels(raw, [reference], copy=False)
    return raw


def marker_onsets(raw, marker: str, source: str) -> np.ndarray:
    """Sample (from the first sample) of every annotation named `marker`, in time order."""
    import mne

    events, event_id = mne.events_from_annotations(raw, verbose="error")
    if marker not in event_id:
        raise eeg.SensorDataError(f"{source}: no marker {marker!r}; markers: {sorted(event_id)}")
    return events[events[:, 2] == event_id[marker], 0] - raw.first_samp


def read_subject(source_dir: pathlib.Path, subject: str, *, test_images: set[str] | None = None,
                 restore: bool = True, reference="average", notch=NOTCH, l_freq: float | None = 0.1,
                 h_freq: float | None = 100.0, sfreq: float = eeg.TARGET_SFREQ, resample: str = "mne",
                 marker: str = MARKER, chunk: int = 1000) -> eeg.SensorSubject:
    """One subject through the EEG1 pipeline (see the module docstring)."""
    import mne

    vhdr, events_path = subject_files(source_dir, subject)
    events = read_events(events_path, test_images)
    try:
        raw = mne.io.read_raw_brainvision(vhdr, ignore_marker_types=True, preload=True, verbose="error")
    except Exception as exc:  # MNE raises several types for malformed headers / missing binaries
        raise eeg.SensorDataError(f"{vhdr}: cannot read BrainVision recording ({type(exc).__name__}: {exc})"
                                  ) from exc
    onsets = marker_onsets(raw, marker, str(vhdr))
    if onsets.size != len(events):
        raise eeg.SensorDataError(f"{vhdr}: {onsets.size} {marker!r} markers but {len(events)} rows in "
                                  f"{events_path.name}")
    if restore:
        add_reference_channel(raw, subject)
    eeg.set_reference(raw, reference)
    if notch:
        raw.notch_filter(np.asarray(notch, dtype=float), verbose="error")
    eeg.filter_raw(raw, l_freq, h_freq)
    used = events["split"].to_numpy() != ""
    onsets, ids = onsets[used], events["stimulus_id"].to_numpy(str)[used]
    is_test = events["split"].to_numpy()[used] == "test"
    train, test = eeg.MeanAccumulator(), eeg.TrialCollector()
    times = None
    for pos, data, times in eeg.epoch_chunks(raw, onsets, sfreq=sfreq, crop=eeg.EEG_CROP, resample=resample,
                                             units="uV", chunk=chunk, source=str(vhdr)):
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
                     n_keep: int = 10, rois: Sequence[str] = eeg.EEG_ROIS, restore_reference: bool = True,
                     reference: str | None = "average", notch: tuple[float, ...] = NOTCH,
                     l_freq: float | None = 0.1, h_freq: float | None = 100.0, sfreq: float = eeg.TARGET_SFREQ,
                     resample: str = "mne", marker: str = MARKER, chunk: int = 1000, images=None,
                     progress: bool = False):
    """THINGS-EEG1 as a NeuralDataset (modality "eeg"), keeping the `n_keep` subjects with the highest
    occipital-parietal noise ceiling (all subjects when n_keep is None or <= 0), best first.

    `subjects`: BIDS labels such as "sub-01" (default every sub-*/eeg folder); a string may join several with
    '+'. `restore_reference`, `reference`, `notch` (Hz, empty for none), `l_freq`, `h_freq`, `resample` ("mne" or
    "polyphase"): the pipeline steps of the module docstring. `images`: None, a StimulusSet, or the THINGS image
    folder / zip (ids = file stems).
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
        sub = read_subject(source_dir, s, test_images=test_images, restore=bool(restore_reference),
                           reference=reference, notch=tuple(notch or ()), l_freq=l_freq, h_freq=h_freq,
                           sfreq=float(sfreq), resample=resample, marker=marker, chunk=int(chunk))
        score = occipital_parietal_score(sub)
        if progress:
            print(f"THINGS-EEG1 {s}: mean OP noise ceiling {score:.2f} %")
        item = (score, -order, s, sub)
        if keep_all or len(kept) < int(n_keep):
            heapq.heappush(kept, item)
        else:
            heapq.heappushpop(kept, item)
        del sub, item
    chosen = {s: sub for _, _, s, sub in sorted(kept, reverse=True, key=lambda t: t[:2])}
    return eeg.build_sensor_dataset(NAME, "eeg", chosen, eeg.eeg_roi_channels, list(rois), images=images,
                                    source=str(source_dir))
