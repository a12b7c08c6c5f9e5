"""THINGS-EEG1 / THINGS-EEG2 readers and the shared M/EEG steps, on tiny files in the released layouts.

The fixtures plant a smooth evoked waveform w(t) = sin(pi t / 0.8)^2 on 0..0.8 s (zero elsewhere, so the baseline
is zero) scaled per stimulus and channel (scales ~N(0, 1)); after the pipeline (for THINGS-EEG1: reference channel added back,
average reference, notch and band-pass filters, epoching, MNE's resampling to 100 Hz and the crop to 0..0.8 s) the
reader must return that scale, re-referenced to the average, times w on the 10 ms grid, in µV, to within what MNE's
FFT resampling leaves (up to ~2 % of a unit scale: sinc ringing and its 0.1 % stretch of time). THINGS-EEG1
recordings are BrainVision files written with pybv, with an "E  1" marker at every onset and line noise that only
the notch filters remove. Ceilings are checked against a float64 numpy transcription of the NSD formula.
"""

import pathlib
import re
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from jaxbrain.data import eeg
from jaxbrain.data.sources import things_eeg1, things_eeg2

SFREQ = 1000
SOA = 1.2                       # seconds between onsets in the fixtures (epochs do not overlap)
CHANNELS = ["Fp1", "Fz", "FC1", "C3", "Cz", "CP2", "T7", "TP9", "P3", "Pz", "PO3", "O1", "Oz", "EOG"]
EEG1_CHANNELS = ["Fp1", "AF3", "Fz", "FC1", "FT9", "C3", "CP2", "T7", "TP9", "P3", "Pz", "PO3", "O1", "Oz", "Iz"]
MONTAGE_63 = ["Fp1", "Fp2", "AF7", "AF3", "AFz", "AF4", "AF8", "F7", "F5", "F3", "F1", "F2", "F4", "F6", "F8",
              "FT9", "FT7", "FC5", "FC3", "FC1", "FC2", "FC4", "FC6", "FT8", "FT10", "T7", "C5", "C3", "C1", "Cz",
              "C2", "C4", "C6", "T8", "TP9", "TP7", "CP5", "CP3", "CP1", "CPz", "CP2", "CP4", "CP6", "TP8", "TP10",
              "P7", "P5", "P3", "P1", "Pz", "P2", "P4", "P6", "P8", "PO7", "PO3", "POz", "PO4", "PO8", "O1", "Oz",
              "O2", "Fz"]
GRID = np.arange(80) / 100.0    # 0 .. 0.79 s
PAD = 20.0                      # seconds of recording before the first and after the last onset (filter edges)
NO_FILTERS = {"notch": (), "l_freq": None, "h_freq": None}   # for tests of other steps: faster


def template(t):
    t = np.asarray(t, dtype=np.float64)
    return np.where((t >= 0) & (t <= 0.8), np.sin(np.pi * t / 0.8) ** 2, 0.0)


def nsd_ceiling(trials):
    """float64 NSD noise ceiling of trials (units, stimuli, reps), n = reps (written independently)."""
    z = (trials - trials.mean(axis=1, keepdims=True)) / trials.std(axis=1, keepdims=True)
    noise_var = z.var(axis=2, ddof=1).mean(axis=1)
    signal_var = np.maximum(1 - noise_var, 0)
    snr = signal_var / noise_var
    return 100 * snr / (snr + 1 / trials.shape[2])


def continuous(onsets, scales, n_samples, rng, noise=0.003, line=0.0):
    """(channels, samples): sum over events of scale[event, ch] * w(t - onset), white noise and, with `line`,
    50 and 150 Hz line noise of a different amplitude and phase on every channel."""
    n_ch = scales.shape[1]
    x = noise * rng.standard_normal((n_ch, n_samples))
    t = np.arange(n_samples) / SFREQ
    for f in (50, 150) if line else ():
        x += line * rng.uniform(0.5, 1.5, (n_ch, 1)) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3, (n_ch, 1)))
    w = template(np.arange(int(0.8 * SFREQ) + 1) / SFREQ)
    for onset, s in zip(onsets, scales):
        x[:, onset:onset + w.size] += s[:, None] * w[None, :]
    return x


def average_referenced(scales):
    """Scales (..., channels) with the flat reference channel appended, minus their mean over channels."""
    full = np.concatenate([scales, np.zeros((*scales.shape[:-1], 1))], axis=-1)
    return full - full.mean(axis=-1, keepdims=True)


def write_brainvision(folder: pathlib.Path, stem: str, data_uv: np.ndarray, ch_names, onsets, marker="E  1"):
    """A BrainVision recording written by pybv, with one `marker` (a Comment marker, as MNE reads it with
    ignore_marker_types) at every onset sample."""
    import pybv

    events = [{"onset": int(o), "duration": 1, "description": marker, "type": "Comment"} for o in onsets]
    pybv.write_brainvision(data=data_uv * 1e-6, sfreq=SFREQ, ch_names=list(ch_names), fname_base=stem,
                           folder_out=folder, events=events, unit="µV", overwrite=True)


def make_eeg1_subject(root: pathlib.Path, subject: str, rng, *, test_noise: float, n_train=6, n_test=8, reps=3,
                      channels=EEG1_CHANNELS, line=0.0, pad=PAD,
                      events_columns=("onset", "duration", "object", "objectnumber", "stim", "stimnumber",
                                      "isteststim", "teststimnumber")):
    """One ds003825 subject (µV); returns the planted train scales, test trial scales and their stimulus ids.

    The last presentation is in neither split (stimnumber and teststimnumber -1), as the reader must skip it.
    """
    train_ids = [f"concept{k}_{k:02d}b" for k in range(n_train)]
    test_ids = [f"testc{k}_{k:02d}s" for k in range(n_test)]
    a_train = rng.standard_normal((n_train, len(channels)))
    a_test = rng.standard_normal((n_test, len(channels)))
    trial_scale = a_test[:, None, :] + test_noise * rng.standard_normal((n_test, reps, len(channels)))
    order = [("train", k, 0) for k in range(n_train)]
    order += [("test", k, r) for r in range(reps) for k in rng.permutation(n_test)] + [("none", 0, 0)]
    onsets = (pad * SFREQ + np.arange(len(order)) * SOA * SFREQ).astype(int)
    scales = np.stack([a_train[k] if split == "train" else trial_scale[k, r] if split == "test"
                       else 5 * np.ones(len(channels)) for split, k, r in order])
    x = continuous(onsets, scales, int(onsets[-1] + pad * SFREQ), rng, line=line)
    folder = root / subject / "eeg"
    write_brainvision(folder, f"{subject}_task-rsvp_eeg", x, channels, onsets)
    rows = []
    for (split, k, _), onset in zip(order, onsets):
        sid = train_ids[k] if split == "train" else test_ids[k] if split == "test" else "other_01b"
        concept = sid.split("_")[0]
        rows.append({"onset": onset, "duration": 50, "object": concept, "objectnumber": k,
                     "stim": f"stimuli\\{concept}\\{sid}.jpg", "stimnumber": k if split == "train" else -1,
                     "isteststim": int(split == "test"), "teststimnumber": k if split == "test" else -1})
    pd.DataFrame(rows)[list(events_columns)].to_csv(folder / f"{subject}_task-rsvp_events.tsv", sep="\t",
                                                    index=False)
    return {"train_ids": train_ids, "test_ids": test_ids, "a_train": a_train, "trial_scale": trial_scale}


# ---- shared steps ---------------------------------------------------------------------------------------------

def test_channel_groups_are_the_case_sensitive_first_letter():
    expected = {"Fp1": "F", "Fpz": "F", "AF7": None, "AFz": None, "F3": "F", "FC5": "F", "FT9": "F", "FCz": "F",
                "C3": "C", "Cz": "C", "CP1": "C", "T7": "T", "TP10": "T", "T5": "T", "P7": "P", "Pz": "P",
                "PO3": "P", "POz": "P", "O1": "O", "Oz": "O", "Iz": None, "EOG": None, "M1": None, "oz": None}
    assert {n: eeg.eeg_channel_group(n) for n in expected} == expected


def test_op_roi_is_the_occipital_and_parietal_selection_of_the_eeg2_authors():
    reference = [k for k, n in enumerate(MONTAGE_63) if re.match(r"^O *|^P *", n)]   # the authors' regex
    rois = eeg.eeg_roi_channels(MONTAGE_63)
    assert rois["OP"].tolist() == reference and len(reference) == 17
    assert rois["whole_brain"].tolist() == list(range(len(MONTAGE_63)))
    assert set(rois["O"]) | set(rois["P"]) == set(rois["OP"])
    in_a_lobe = set().union(*(set(rois[lobe].tolist()) for lobe in eeg.LOBES))
    assert sorted(MONTAGE_63[k] for k in set(range(63)) - in_a_lobe) == ["AF3", "AF4", "AF7", "AF8", "AFz"]
    with pytest.raises(eeg.SensorDataError, match="ROI 'O' has no channel"):
        eeg.eeg_roi_channels(["Fz", "Cz"], ["O"], source="file.vhdr")


def test_stim_channel_onsets():
    stim = np.array([0, 5, 5, 0, 0, 7, 0, 99999, 3, 0])
    idx, codes = eeg.onset_samples_from_stim(stim)
    assert idx.tolist() == [1, 5, 7, 8] and codes.tolist() == [5, 7, 99999, 3]


@pytest.mark.parametrize("method", ["mne", "polyphase"])
def test_resampling_gives_80_eeg_and_130_meg_samples(method):
    import mne

    info = mne.create_info(["Oz"], 1000.0, "eeg")
    eeg_epochs = mne.EpochsArray(np.ones((2, 1, 1001)), info, tmin=-0.2, verbose="error")
    data, times = eeg.resample_and_crop(eeg_epochs, crop=eeg.EEG_CROP, method=method)
    assert data.shape == (2, 1, 80) and np.allclose(times, GRID)
    meg_epochs = mne.EpochsArray(np.ones((2, 1, 281)), mne.create_info(["MLO11"], 200.0, "mag"), tmin=-0.1,
                                 verbose="error")
    data, times = eeg.resample_and_crop(meg_epochs, crop=(0.0, 1.3), method=method, crop_first=True)
    assert data.shape == (2, 1, 130) and np.allclose(times, np.arange(130) / 100)


# ---- THINGS-EEG1 ----------------------------------------------------------------------------------------------

def test_things_eeg1_recovers_planted_responses_and_ceilings_after_the_reference_pipeline(tmp_path):
    rng = np.random.default_rng(0)
    truth = make_eeg1_subject(tmp_path, "sub-01", rng, test_noise=0.5, line=3.0)
    ds = things_eeg1.load_things_eeg1(tmp_path, n_keep=None)
    assert ds.modality == "eeg" and ds.subjects == ["sub-01"] and ds.rois == list(eeg.EEG_ROIS)
    w = template(GRID)
    order = np.argsort(truth["train_ids"])
    np.testing.assert_array_equal(ds.ids("train", "sub-01"), np.asarray(truth["train_ids"])[order])
    got = ds.responses[("train", "sub-01", "whole_brain")]
    assert got.shape == (6, len(EEG1_CHANNELS) + 1, 80)            # + the restored reference channel Cz
    expected = average_referenced(truth["a_train"][order])[:, :, None] * w
    np.testing.assert_allclose(got, expected, atol=0.1)            # µV; planted scales ~1, line noise 1.5-4.5
    test_order = np.argsort(truth["test_ids"])
    trials = average_referenced(truth["trial_scale"][test_order])  # (stim, reps, ch)
    np.testing.assert_allclose(ds.responses[("test", "sub-01", "whole_brain")],
                               trials.mean(axis=1)[:, :, None] * w, atol=0.1)
    # where the waveform dominates; the filters leave ~0.05 µV, a few % of the re-referenced Cz's small scales
    t_ok = w > 0.5
    expected_nc = nsd_ceiling(np.transpose(trials, (2, 0, 1)))
    nc = ds.noise_ceilings[("sub-01", "whole_brain")]
    assert nc.shape == (len(EEG1_CHANNELS) + 1, 80)
    np.testing.assert_allclose(nc[:, t_ok], np.repeat(expected_nc[:, None], t_ok.sum(), 1), atol=3.0)
    assert ds.responses[("train", "sub-01", "OP")].shape[1] == 5  # P3, Pz, PO3, O1, Oz (not Iz)
    assert ds.responses[("train", "sub-01", "F")].shape[1] == 4   # Fp1, Fz, FC1, FT9 (not AF3)
    assert ds.responses[("train", "sub-01", "C")].shape[1] == 3   # C3, CP2 and the restored Cz
    without_notch = things_eeg1.load_things_eeg1(tmp_path, notch=())
    assert np.abs(without_notch.responses[("train", "sub-01", "whole_brain")] - expected).max() > 0.5


def test_things_eeg1_keeps_first_63_channels_and_adds_fcz_for_subjects_49_and_50(tmp_path):
    rng = np.random.default_rng(5)
    truth = make_eeg1_subject(tmp_path, "sub-49", rng, test_noise=0.5, channels=MONTAGE_63 + ["X1", "X2"], pad=1)
    ds = things_eeg1.load_things_eeg1(tmp_path, n_keep=None, **NO_FILTERS)
    assert ds.subjects == ["sub-49"]
    got = ds.responses[("train", "sub-49", "whole_brain")]
    assert got.shape == (6, 64, 80)
    a = truth["a_train"][np.argsort(truth["train_ids"])][:, :63]   # X1, X2 dropped before re-referencing
    np.testing.assert_allclose(got, average_referenced(a)[:, :, None] * template(GRID), atol=0.05)


def test_things_eeg1_keeps_the_best_subjects_by_occipital_parietal_ceiling_best_first(tmp_path):
    rng = np.random.default_rng(1)
    for subject, noise in (("sub-01", 1.0), ("sub-02", 0.1), ("sub-03", 3.0)):
        make_eeg1_subject(tmp_path, subject, rng, test_noise=noise, pad=1)
    ds = things_eeg1.load_things_eeg1(tmp_path, n_keep=2, **NO_FILTERS)
    assert ds.subjects == ["sub-02", "sub-01"]
    assert ds.responses[("test", "sub-02", "whole_brain")].shape == (8, len(EEG1_CHANNELS) + 1, 80)


def test_things_eeg1_uses_test_images_csv_when_events_lack_test_columns(tmp_path):
    rng = np.random.default_rng(2)
    truth = make_eeg1_subject(tmp_path, "sub-01", rng, test_noise=0.5, events_columns=("onset", "duration", "stim"),
                              pad=1)
    with pytest.raises(eeg.SensorDataError, match="cannot tell validation images apart"):
        things_eeg1.load_things_eeg1(tmp_path)
    (tmp_path / "test_images.csv").write_text(
        "\n".join(f"{i.split('_')[0]}/{i}.jpg" for i in truth["test_ids"]) + "\n")
    ds = things_eeg1.load_things_eeg1(tmp_path, **NO_FILTERS)
    assert sorted(ds.ids("test", "sub-01")) == sorted(truth["test_ids"])
    assert sorted(ds.ids("train", "sub-01")) == sorted(truth["train_ids"] + ["other_01b"])  # no stimnumber column


def test_things_eeg1_malformed_files_raise_naming_file_and_fault(tmp_path):
    rng = np.random.default_rng(3)
    make_eeg1_subject(tmp_path, "sub-01", rng, test_noise=0.5, pad=1)
    folder = tmp_path / "sub-01" / "eeg"
    events = folder / "sub-01_task-rsvp_events.tsv"
    table = pd.read_csv(events, sep="\t")
    table.drop(columns=["stim"]).to_csv(events, sep="\t", index=False)
    with pytest.raises(eeg.SensorDataError, match=r"sub-01_task-rsvp_events\.tsv: missing column\(s\) \['stim'\]"):
        things_eeg1.load_things_eeg1(tmp_path)
    table.iloc[:-1].to_csv(events, sep="\t", index=False)
    with pytest.raises(eeg.SensorDataError, match=r"sub-01_task-rsvp_eeg\.vhdr: 31 'E  1' markers but 30 rows"):
        things_eeg1.load_things_eeg1(tmp_path)
    table.to_csv(events, sep="\t", index=False)
    with pytest.raises(eeg.SensorDataError, match=r"sub-01_task-rsvp_eeg\.vhdr: no marker 'S  1'"):
        things_eeg1.load_things_eeg1(tmp_path, marker="S  1")
    (folder / "sub-01_task-rsvp_eeg.eeg").unlink()
    with pytest.raises(eeg.SensorDataError, match=r"sub-01_task-rsvp_eeg\.vhdr: cannot read BrainVision"):
        things_eeg1.load_things_eeg1(tmp_path)
    with pytest.raises(FileNotFoundError, match="sub-07_task-rsvp_eeg.vhdr"):
        things_eeg1.load_things_eeg1(tmp_path, subjects=["sub-07"])


# ---- THINGS-EEG2 ----------------------------------------------------------------------------------------------

def make_eeg2(root: pathlib.Path, rng, *, n_sessions=2, n_train=6, n_test=4, test_reps=2, subject="sub-01",
              train_seconds_pad=0.0, channels=CHANNELS[:-1]):
    """OSF 'Raw EEG data' files; returns planted scales (train: per session, test: per trial)."""
    train_files = [f"tr{k}_{k:02d}b.jpg" for k in range(n_train)]
    test_files = [f"te{k}_{k:02d}s.jpg" for k in range(n_test)]
    np.save(root / "image_metadata.npy", {
        "train_img_files": train_files, "test_img_files": test_files,
        "train_img_concepts": [f"{k + 1:05d}_tr{k}" for k in range(n_train)],
        "test_img_concepts": [f"{k + 1:05d}_te{k}" for k in range(n_test)]}, allow_pickle=True)
    n_ch = len(channels)
    a_train = rng.standard_normal((n_train, n_ch))
    a_test = rng.standard_normal((n_test, n_ch))
    train_scales, test_trials = [], []
    for s in range(n_sessions):
        folder = root / subject / f"ses-{s + 1:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        # training part: every image once, plus one target (catch) trial coded 99999
        codes = list(rng.permutation(n_train) + 1) + [99999]
        sess_scale = a_train + 0.3 * rng.standard_normal(a_train.shape)
        scales = np.stack([sess_scale[c - 1] if c != 99999 else 5 * np.ones(n_ch) for c in codes])
        train_scales.append(sess_scale)
        _save_raw(folder / "raw_eeg_training.npy", codes, scales, channels, rng, pad=train_seconds_pad)
        codes = [k + 1 for r in range(test_reps) for k in rng.permutation(n_test)]
        trial = a_test[np.asarray(codes) - 1] + 0.5 * rng.standard_normal((len(codes), n_ch))
        _save_raw(folder / "raw_eeg_test.npy", codes, trial, channels, rng)
        test_trials.append((np.asarray(codes), trial))
    return {"train_ids": [f[:-4] for f in train_files], "test_ids": [f[:-4] for f in test_files],
            "train_scales": train_scales, "test_trials": test_trials}


def _save_raw(path, codes, scales, channels, rng, pad=0.0):
    onsets = (SFREQ + np.arange(len(codes)) * SOA * SFREQ).astype(int)
    n = int(onsets[-1] + 2 * SFREQ + pad * SFREQ)
    x = continuous(onsets, scales, n, rng)
    stim = np.zeros((1, n))
    stim[0, onsets] = codes
    np.save(path, {"raw_eeg_data": np.concatenate([x, stim]), "ch_names": list(channels) + ["stim"],
                   "ch_types": ["eeg"] * len(channels) + ["stim"], "sfreq": SFREQ, "highpass": 0.01,
                   "lowpass": 100}, allow_pickle=True)


def test_things_eeg2_averages_sessions_and_drops_targets(tmp_path):
    rng = np.random.default_rng(5)
    truth = make_eeg2(tmp_path, rng)
    ds = things_eeg2.load_things_eeg2(tmp_path)
    w = template(GRID)
    train_mean = np.mean(truth["train_scales"], axis=0)            # (img, ch), image k = condition k+1
    np.testing.assert_array_equal(ds.ids("train", "sub-01"), sorted(truth["train_ids"]))
    np.testing.assert_allclose(ds.responses[("train", "sub-01", "whole_brain")],
                               1e6 * train_mean[:, :, None] * w, atol=0.05e6)   # volts in the files, µV out
    # test trials regrouped per image (80 repeats in the release; 2 sessions x 2 here)
    per_image = [[] for _ in truth["test_ids"]]
    for codes, trial in truth["test_trials"]:
        for c, s in zip(codes, trial):
            per_image[c - 1].append(s)
    trials = np.asarray(per_image)                                 # (img, reps, ch)
    np.testing.assert_allclose(ds.responses[("test", "sub-01", "whole_brain")],
                               1e6 * trials.mean(axis=1)[:, :, None] * w, atol=0.05e6)
    t_ok = w > 0.5
    nc = ds.noise_ceilings[("sub-01", "whole_brain")]
    np.testing.assert_allclose(nc[:, t_ok], np.repeat(nsd_ceiling(np.transpose(trials, (2, 0, 1)))[:, None],
                                                      t_ok.sum(), 1), atol=1.0)


def test_things_eeg2_memory_stays_bounded_as_sessions_are_added(tmp_path):
    rng = np.random.default_rng(6)
    few, many = tmp_path / "few", tmp_path / "many"
    few.mkdir(), many.mkdir()
    make_eeg2(few, rng, n_sessions=2, train_seconds_pad=20)
    make_eeg2(many, rng, n_sessions=6, train_seconds_pad=20)
    session_bytes = np.load(few / "sub-01" / "ses-01" / "raw_eeg_training.npy",
                            allow_pickle=True).item()["raw_eeg_data"].nbytes

    def peak(root):                        # memory does not depend on the resampler; polyphase is faster here
        tracemalloc.start()
        things_eeg2.load_things_eeg2(root, resample="polyphase")
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    things_eeg2.load_things_eeg2(few, resample="polyphase")   # warm-up: lazy imports are not the reader's memory
    p_few, p_many = peak(few), peak(many)
    assert p_many < p_few + 0.5 * session_bytes, (p_few, p_many, session_bytes)
    assert p_many < 4 * session_bytes      # about one session in memory at a time, not six


def test_things_eeg2_malformed_files_raise_naming_file_and_fault(tmp_path):
    rng = np.random.default_rng(7)
    make_eeg2(tmp_path, rng)
    path = tmp_path / "sub-01" / "ses-02" / "raw_eeg_test.npy"
    d = np.load(path, allow_pickle=True).item()
    d["ch_names"] = d["ch_names"][:-1] + ["trigger"]
    np.save(path, d, allow_pickle=True)
    with pytest.raises(eeg.SensorDataError, match=r"ses-02.raw_eeg_test\.npy: no 'stim' channel"):
        things_eeg2.load_things_eeg2(tmp_path)
    d["ch_names"][-1] = "stim"
    stim = d["raw_eeg_data"][-1]
    stim[np.flatnonzero(stim)[0]] = 201
    np.save(path, d, allow_pickle=True)
    with pytest.raises(eeg.SensorDataError, match=r"raw_eeg_test\.npy: image condition 201 outside 1\.\.4"):
        things_eeg2.load_things_eeg2(tmp_path)
    (tmp_path / "image_metadata.npy").unlink()
    with pytest.raises(FileNotFoundError, match="image_metadata.npy"):
        things_eeg2.load_things_eeg2(tmp_path)


def test_readers_registry_takes_command_line_style_options_and_an_image_folder(tmp_path):
    from PIL import Image

    from jaxbrain.data import sources

    rng = np.random.default_rng(8)
    truth = make_eeg2(tmp_path, rng)
    images = tmp_path / "images"
    for split, ids in (("training_images", truth["train_ids"]), ("test_images", truth["test_ids"])):
        for i in ids:
            (images / split / i.split("_")[0]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(images / split / i.split("_")[0] / f"{i}.jpg")
    ds = sources.READERS["things_eeg2"](tmp_path, subjects="sub-01", sessions="ses-01+ses-02", l_freq="none",
                                        rois=("OP", "whole_brain"), images=str(images))
    assert ds.rois == ["OP", "whole_brain"] and sorted(ds.stimuli.ids) == sorted(truth["train_ids"] + truth["test_ids"])
    assert ds.stimuli.load(truth["test_ids"][0]).shape == (3, 3, 3)
    (images / "test_images" / truth["test_ids"][0].split("_")[0] / f"{truth['test_ids'][0]}.jpg").unlink()
    with pytest.raises(eeg.SensorDataError, match="1 stimulus ids have no image"):
        sources.READERS["things_eeg2"](tmp_path, images=str(images))
