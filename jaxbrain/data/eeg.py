"""Shared M/EEG steps: channel-group ROIs, MNE preprocessing, chunked epoching, repeat bookkeeping.

The readers of THINGS-EEG1, THINGS-EEG2 and THINGS-MEG (`jaxbrain.data.sources`) are built from these small
functions. Targets of EEG/MEG benchmarks are channel x time: responses are stored as (n_stimuli, n_channels,
n_times) and the noise ceiling as (n_channels, n_times), computed per channel and time point from the
repeated test presentations with `jaxbrain.metrics.noise_ceiling`.

Memory stays bounded by one continuous recording plus one chunk of epochs: epochs are cut, resampled and cropped
`chunk` events at a time (`epoch_chunks`), training presentations are folded into a running sum per stimulus
(`MeanAccumulator`, size independent of the number of sessions) and only the repeated test trials are kept whole
(`TrialCollector`). Every epoch is processed on its own (baseline, resampling, crop), so chunking changes nothing.

Resampling (`resample_and_crop`) is MNE's `Epochs.resample` (FFT, the paper's reference) by default: frequencies
above the new Nyquist frequency are cut in the Fourier domain, and the output length is round(n * ratio), so a
1,001-sample epoch at 1 kHz becomes 100 samples at 100 Hz and the epoch is stretched by 0.1 % in time; then MNE's
crop, inclusive of its end. The sample counts are whatever MNE gives: 80 for [0, 0.8] s (EEG, resample then crop)
and 130 for [0, 1.3] s (MEG, crop then resample), as the fixtures assert. `resample="polyphase"` is the
exact-ratio alternative (scipy's resample_poly: Kaiser-windowed FIR anti-aliasing, output sample j exactly at
tmin + j / sfreq; crop half-open), which gives the same counts without the stretch.

Channel groups (the reference's rule): an EEG channel belongs to lobe O, P, T, F or C when its name starts with
that capital letter (case-sensitive), so Fp, FC and FT go to F, CP to C, PO to P and TP to T, while AF*, Iz and
names such as EOG or M1 are in no lobe. "OP" is O plus P (on the THINGS-EEG2 montage exactly the 17 occipital and
parietal channels the dataset authors select) and "whole_brain" is every channel.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

WHOLE_BRAIN = "whole_brain"
LOBES = ("O", "P", "T", "F", "C")
EEG_ROIS: tuple[str, ...] = (*LOBES, "OP", WHOLE_BRAIN)
EPOCH_WINDOW = (-0.2, 0.8)          # seconds around stimulus onset
BASELINE = (None, 0.0)              # mean of the pre-stimulus part
TARGET_SFREQ = 100.0
EEG_CROP = (0.0, 0.8)
RESAMPLERS = ("mne", "polyphase")


class SensorDataError(ValueError):
    """M/EEG input that cannot be turned into a benchmark (names the file and the fault)."""


def eeg_channel_group(name: str) -> str | None:
    """The lobe ("O", "P", "T", "F", "C") whose capital letter starts the channel name, or None."""
    return name[:1] if name[:1] in LOBES else None


def eeg_roi_channels(ch_names: Sequence[str], rois: Sequence[str] = EEG_ROIS, *, source: str = "<memory>"
                     ) -> dict[str, np.ndarray]:
    """ROI name -> sorted channel indices into `ch_names`, for the ROIs of `EEG_ROIS`.

    Raises SensorDataError naming `source` when a requested ROI is unknown or has no channel.
    """
    groups = [eeg_channel_group(n) for n in ch_names]
    out = {}
    for roi in rois:
        if roi == WHOLE_BRAIN:
            idx = np.arange(len(ch_names))
        elif roi == "OP":
            idx = np.flatnonzero([g in ("O", "P") for g in groups])
        elif roi in LOBES:
            idx = np.flatnonzero([g == roi for g in groups])
        else:
            raise SensorDataError(f"{source}: unknown EEG ROI {roi!r}; known: {', '.join(EEG_ROIS)}")
        if idx.size == 0:
            raise SensorDataError(f"{source}: ROI {roi!r} has no channel among {list(ch_names)}")
        out[roi] = idx
    return out


# ---- options as they arrive from the command line ------------------------------------------------------------

def name_list(value) -> list[str] | None:
    """None, a sequence of names, or one string of names joined by '+', ',' or spaces (as a CLI gives them)."""
    if value is None:
        return None
    if isinstance(value, str):
        names = [v for v in value.replace("+", " ").replace(",", " ").split() if v]
        return names or None
    return [str(v) for v in value]


def optional_float(value, name: str) -> float | None:
    """None (also "none" / "" from a command line) or the value as a float."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or None, got {value!r}") from None


def stimulus_set_for(images, ids, *, source: str):
    """The StimulusSet of `ids`: None, a StimulusSet, or a folder (searched recursively) / zip of image files
    whose stems are the stimulus ids (e.g. the THINGS images "<concept>/<concept>_01b.jpg")."""
    if images is None or (isinstance(images, str) and not images.strip()):
        return None
    from jaxbrain.data.stimulus_set import StimulusSet

    if not isinstance(images, StimulusSet):
        path = pathlib.Path(images)
        images = (StimulusSet.from_zip(path) if path.suffix.lower() == ".zip"
                  else StimulusSet.from_folder(path, recursive=True))
    missing = [i for i in ids if i not in images]
    if missing:
        raise SensorDataError(f"{source}: {len(missing)} stimulus ids have no image in {images!r}, "
                              f"e.g. {missing[:3]}")
    return images.subset(list(ids))


# ---- MNE steps ------------------------------------------------------------------------------------------------

def set_reference(raw, reference: str | Sequence[str] | None):
    """Re-reference EEG in place: None keeps the recording reference, "average" or channel names."""
    if reference is None or (isinstance(reference, str) and reference.lower() in ("", "none")):
        return raw
    ref = "average" if reference == "average" else name_list(reference)
    raw.set_eeg_reference(ref, projection=False, verbose="error")
    return raw


def filter_raw(raw, l_freq: float | None, h_freq: float | None):
    """Zero-phase FIR filter of the continuous data in place (MNE defaults); None, None does nothing."""
    l_freq, h_freq = optional_float(l_freq, "l_freq"), optional_float(h_freq, "h_freq")
    if l_freq is None and h_freq is None:
        return raw
    raw.filter(l_freq=l_freq, h_freq=h_freq, picks="data", verbose="error")
    return raw


def onset_samples_from_stim(stim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sample, code) of each event in a trigger channel: a sample that is non-zero and differs from the last."""
    stim = np.asarray(stim).ravel()
    prev = np.concatenate([[0], stim[:-1]])
    idx = np.flatnonzero((stim != 0) & (stim != prev))
    return idx, stim[idx].astype(np.int64)


def epoch_chunks(raw, onsets: np.ndarray, *, tmin: float = EPOCH_WINDOW[0], tmax: float = EPOCH_WINDOW[1],
                 baseline=BASELINE, sfreq: float = TARGET_SFREQ, crop: tuple[float, float] = EEG_CROP,
                 resample: str = "mne", units: str | None = None, chunk: int = 1000, source: str = "<memory>"
                 ) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Cuts epochs around `onsets` (samples from the first sample of `raw`), `chunk` events at a time.

    Each chunk is baseline-corrected, resampled to `sfreq` and then cropped to `crop` (`resample_and_crop`).
    Yields (positions into `onsets`, data float32 (n, n_channels, n_times) in `units` (e.g. "uV"; None = SI),
    times). An epoch that does not fit inside the recording is an error, never a silent drop.
    """
    import mne

    onsets = np.asarray(onsets, dtype=np.int64)
    n_samples = raw.n_times
    lo = onsets + int(np.floor(tmin * raw.info["sfreq"]))
    hi = onsets + int(np.ceil(tmax * raw.info["sfreq"]))
    bad = np.flatnonzero((lo < 0) | (hi >= n_samples))
    if bad.size:
        raise SensorDataError(f"{source}: {bad.size} epochs ({tmin}..{tmax} s) fall outside the recording of "
                              f"{n_samples} samples, e.g. onset sample {int(onsets[bad[0]])}")
    for start in range(0, len(onsets), chunk):
        pos = slice(start, min(start + chunk, len(onsets)))
        events = np.column_stack([onsets[pos] + raw.first_samp, np.zeros(pos.stop - start, np.int64),
                                  np.ones(pos.stop - start, np.int64)])
        epochs = mne.Epochs(raw, events, event_id={"stim": 1}, tmin=tmin, tmax=tmax, baseline=baseline,
                            picks="data", preload=True, reject=None, flat=None, reject_by_annotation=False,
                            event_repeated="error", verbose="error")
        if len(epochs) != len(events):
            raise SensorDataError(f"{source}: MNE dropped {len(events) - len(epochs)} of {len(events)} epochs "
                                  f"({[d for d in epochs.drop_log if d][:3]})")
        yield pos, *resample_and_crop(epochs, sfreq=sfreq, crop=crop, method=resample, units=units)
        del epochs


def resample_and_crop(epochs, *, sfreq: float = TARGET_SFREQ, crop: tuple[float, float] = EEG_CROP,
                      method: str = "mne", crop_first: bool = False, units: str | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Resamples loaded epochs to `sfreq` and crops them to `crop`; returns (float32 data, times).

    method "mne": MNE's Epochs.resample (FFT) and Epochs.crop (inclusive end), in place, cropping before
    resampling when `crop_first` (as the reference does for MEG); "polyphase": exact-ratio resampling, then the
    half-open crop [crop[0], crop[1]) (see the module docstring). `units` is passed to get_data (e.g. "uV").
    """
    if method == "mne":
        if crop_first:
            _crop(epochs, crop)
        epochs.resample(sfreq, verbose="error")
        if not crop_first:
            _crop(epochs, crop)
        return np.ascontiguousarray(epochs.get_data(units=units), dtype=np.float32), epochs.times.copy()
    if method != "polyphase":
        raise ValueError(f"resample must be one of {RESAMPLERS}, got {method!r}")
    from fractions import Fraction

    from scipy.signal import resample_poly

    data = epochs.get_data(units=units, copy=False)
    old = float(epochs.info["sfreq"])
    times = epochs.times
    if abs(old - sfreq) > 1e-9:
        ratio = Fraction(sfreq / old).limit_denominator(10000)
        data = resample_poly(data, ratio.numerator, ratio.denominator, axis=-1, padtype="edge")
        times = times[0] + np.arange(data.shape[-1]) / sfreq
    k = np.rint(times * sfreq)
    keep = (k >= round(crop[0] * sfreq)) & (k < round(crop[1] * sfreq))
    return np.ascontiguousarray(data[..., keep], dtype=np.float32), times[keep]


def _crop(epochs, crop: tuple[float, float]) -> None:
    """MNE's crop to [crop[0], crop[1]] with the end clipped to the last sample (no warning when it is past it)."""
    epochs.crop(crop[0], min(crop[1], epochs.tmax), verbose="error")


# ---- repeat bookkeeping ---------------------------------------------------------------------------------------

class MeanAccumulator:
    """Running sum and count per stimulus id: the trial average without keeping the trials."""

    def __init__(self):
        self._sum: dict[str, np.ndarray] = {}
        self._count: dict[str, int] = {}

    def add(self, ids: Sequence[str], data: np.ndarray) -> None:
        for sid, x in zip(ids, data):
            if sid in self._sum:
                self._sum[sid] += x
                self._count[sid] += 1
            else:
                self._sum[sid] = x.astype(np.float64)
                self._count[sid] = 1

    @property
    def ids(self) -> list[str]:
        return sorted(self._sum)

    def counts(self, ids: Sequence[str]) -> np.ndarray:
        return np.asarray([self._count[i] for i in ids])

    def means(self, ids: Sequence[str]) -> np.ndarray:
        return np.stack([self._sum[i] / self._count[i] for i in ids]).astype(np.float32)


class TrialCollector:
    """Every trial per stimulus id, for the repeated test presentations (noise ceiling and averages)."""

    def __init__(self):
        self._trials: dict[str, list[np.ndarray]] = {}

    def add(self, ids: Sequence[str], data: np.ndarray) -> None:
        for sid, x in zip(ids, data):
            self._trials.setdefault(sid, []).append(np.array(x, dtype=np.float32))

    @property
    def ids(self) -> list[str]:
        return sorted(self._trials)

    def counts(self, ids: Sequence[str]) -> np.ndarray:
        return np.asarray([len(self._trials[i]) for i in ids])

    def array(self, ids: Sequence[str]) -> np.ndarray:
        """(n_stimuli, max_repeats, *trial_shape) float32 with NaN for missing repeats."""
        reps = max(len(self._trials[i]) for i in ids)
        shape = self._trials[ids[0]][0].shape
        out = np.full((len(ids), reps, *shape), np.nan, dtype=np.float32)
        for k, sid in enumerate(ids):
            out[k, : len(self._trials[sid])] = np.stack(self._trials[sid])
        return out


def channel_time_ceiling(trials: np.ndarray) -> np.ndarray:
    """Noise ceiling (percent) per channel and time from trials (n_stimuli, repeats, n_channels, n_times).

    The trials are reshaped to (n_channels * n_times, n_stimuli, repeats) for `jaxbrain.metrics.noise_ceiling`
    (n = the number of repeat slots, as the paper's reference; equal to every stimulus's count in the releases)
    and the result is shaped back to (n_channels, n_times).
    """
    from jaxbrain import metrics

    n_stim, reps, n_ch, n_t = trials.shape
    units = np.transpose(trials, (2, 3, 0, 1)).reshape(n_ch * n_t, n_stim, reps)
    return np.asarray(metrics.noise_ceiling(units, unequal_repeats="slots"), dtype=np.float32).reshape(n_ch, n_t)


# ---- assembling a benchmark -----------------------------------------------------------------------------------

@dataclasses.dataclass
class SensorSubject:
    """One subject's channel x time benchmark data before ROI slicing."""
    ch_names: list[str]
    times: np.ndarray
    ids: dict[str, np.ndarray]                 # split -> stimulus ids (str), sorted
    responses: dict[str, np.ndarray]           # split -> (n_stimuli, n_channels, n_times) float32 trial means
    ceiling: np.ndarray                        # (n_channels, n_times) percent


def subject_from_collections(ch_names, times, train: MeanAccumulator, test: TrialCollector, *,
                             min_test_repeats: int = 2, source: str = "<memory>") -> SensorSubject:
    """Trial means of both splits and the channel x time ceiling from the test repeats."""
    if not train.ids:
        raise SensorDataError(f"{source}: no training presentations")
    if not test.ids:
        raise SensorDataError(f"{source}: no repeated test presentations")
    test_ids = test.ids
    counts = test.counts(test_ids)
    if counts.min() < min_test_repeats:
        worst = test_ids[int(np.argmin(counts))]
        raise SensorDataError(f"{source}: test stimulus {worst!r} has {counts.min()} repeat(s); the noise "
                              f"ceiling needs at least {min_test_repeats}")
    overlap = sorted(set(train.ids) & set(test_ids))
    if overlap:
        raise SensorDataError(f"{source}: {len(overlap)} stimuli are both train and test, e.g. {overlap[:3]}")
    trials = test.array(test_ids)
    return SensorSubject(
        ch_names=list(ch_names), times=np.asarray(times),
        ids={"train": np.asarray(train.ids), "test": np.asarray(test_ids)},
        responses={"train": train.means(train.ids), "test": np.nanmean(trials, axis=1).astype(np.float32)},
        ceiling=channel_time_ceiling(trials))


def build_sensor_dataset(name: str, modality: str, subjects: Mapping[str, SensorSubject],
                         roi_channels, rois: Sequence[str], *, images=None, source: str = "<memory>"):
    """A NeuralDataset with responses (n_stimuli, n_channels_in_roi, n_times) per (split, subject, ROI).

    `roi_channels(ch_names, rois, source=...)` maps a subject's channel names to ROI channel indices. Stimulus
    ids are shared across subjects when they agree, per subject otherwise. `images`: see `stimulus_set_for`.
    """
    from jaxbrain.data.neural import NeuralDataset

    if not subjects:
        raise SensorDataError(f"{source}: no subject to build {name!r} from")
    splits = ["train", "test"]
    names = list(subjects)
    stimulus_ids: dict = {}
    for split in splits:
        per = {s: subjects[s].ids[split] for s in names}
        first = per[names[0]]
        same = all(len(v) == len(first) and np.array_equal(v, first) for v in per.values())
        stimulus_ids[split] = np.asarray(first, dtype=str) if same else {s: np.asarray(v, dtype=str)
                                                                          for s, v in per.items()}
    responses, ceilings = {}, {}
    for s in names:
        sub = subjects[s]
        idx = roi_channels(sub.ch_names, rois, source=f"{source} ({s})")
        for roi in rois:
            ceilings[(s, roi)] = np.ascontiguousarray(sub.ceiling[idx[roi]])
            for split in splits:
                responses[(split, s, roi)] = np.ascontiguousarray(sub.responses[split][:, idx[roi]])
    all_ids = sorted({str(i) for s in names for split in splits for i in subjects[s].ids[split]})
    stimuli = stimulus_set_for(images, all_ids, source=source)
    ds = NeuralDataset(name=name, modality=modality, subjects=names, rois=list(rois), splits=splits,
                       stimulus_ids=stimulus_ids, responses=responses, noise_ceilings=ceilings, stimuli=stimuli)
    ds.validate(source=source)
    return ds


def stimulus_stem(path: str) -> str:
    """Stimulus id of an image path from any OS: the file name without its suffix."""
    name = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name
