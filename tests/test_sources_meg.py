"""THINGS-MEG reader on tiny `-epo.fif` files in the released layout (EpochsArray with sample_attributes metadata).

The fixture plants a smooth waveform w(t) = sin(pi t / 1.3)^2 on 0..1.3 s per stimulus and sensor at 200 Hz; the
reader must crop to 0..1.3 s, resample to 100 Hz with MNE (130 samples) and return scale x w on the 10 ms grid (to
within what MNE's FFT resampling leaves, ~2 % of a unit scale).
"""

import pathlib

import numpy as np
import pandas as pd
import pytest

from jaxbrain.data import eeg
from jaxbrain.data.sources import things_meg

SENSORS = ["MLO11-1609", "MRO11-1609", "MZO01-1609", "MLT11-1609", "MRT21-1609", "MLP11-1609", "MRP22-1609",
           "MZP01-1609", "MLF11-1609", "MRF12-1609", "MZF01-1609", "MLC11-1609", "MRC13-1609", "MZC01-1609"]
GRID = np.arange(130) / 100.0


def template(t):
    t = np.asarray(t, dtype=np.float64)
    return np.where((t >= 0) & (t <= 1.3), np.sin(np.pi * t / 1.3) ** 2, 0.0)


def nsd_ceiling(trials):
    """float64 NSD noise ceiling of trials (units, stimuli, reps), n = reps (written independently)."""
    z = (trials - trials.mean(axis=1, keepdims=True)) / trials.std(axis=1, keepdims=True)
    noise_var = z.var(axis=2, ddof=1).mean(axis=1)
    snr = np.maximum(1 - noise_var, 0) / noise_var
    return 100 * snr / (snr + 1 / trials.shape[2])


def make_meg(folder: pathlib.Path, participant: str, rng, *, n_exp=5, n_test=6, reps=3, metadata=True):
    """preprocessed_P{n}-epo.fif: -0.1..1.3 s at 200 Hz, 'mag' sensors, sample_attributes as metadata."""
    import mne

    folder.mkdir(parents=True, exist_ok=True)
    exp_ids = [f"concept{k}_{k:02d}b" for k in range(n_exp)]
    test_ids = [f"testc{k}_{k:02d}s" for k in range(n_test)]
    a_exp = rng.standard_normal((n_exp, len(SENSORS)))
    trial_scale = rng.standard_normal((n_test, 1, len(SENSORS))) + 0.5 * rng.standard_normal(
        (n_test, reps, len(SENSORS)))
    rows, scales = [], []
    for k in range(n_exp):
        rows.append(("exp", exp_ids[k], k + 1))
        scales.append(a_exp[k])
    for r in range(reps):
        for k in rng.permutation(n_test):
            rows.append(("test", test_ids[k], r + 1))
            scales.append(trial_scale[k, r])
        rows.append(("catch", "catch_images/catch_001.jpg", r + 1))
        scales.append(10 * np.ones(len(SENSORS)))
    times = -0.1 + np.arange(281) / 200.0
    data = np.asarray(scales)[:, :, None] * template(times)[None, None, :]
    data += 0.003 * rng.standard_normal(data.shape)
    info = mne.create_info(SENSORS, 200.0, "mag")
    events = np.column_stack([np.arange(len(rows)) * 300, np.zeros(len(rows), int), np.ones(len(rows), int)])
    meta = pd.DataFrame({
        "trial_type": [r[0] for r in rows],
        "image_path": [f"images_meg/{r[1].split('_')[0]}/{r[1]}.jpg" if r[0] != "catch" else r[1] for r in rows],
        "session_nr": [r[2] for r in rows],
        "things_category_nr": np.arange(len(rows)) + 1})
    epochs = mne.EpochsArray(data, info, events=events, tmin=-0.1, metadata=meta if metadata else None,
                             verbose="error")
    epochs.save(folder / f"preprocessed_{participant}-epo.fif", overwrite=True, verbose="error")
    return {"exp_ids": exp_ids, "test_ids": test_ids, "a_exp": a_exp, "trial_scale": trial_scale}


def test_sensor_groups_are_left_hemisphere_lobes_or_both_sides():
    rois = things_meg.meg_roi_channels(SENSORS, ["O", "P", "OP", "whole_brain"])
    assert [SENSORS[i] for i in rois["O"]] == ["MLO11-1609"]
    assert [SENSORS[i] for i in rois["P"]] == ["MLP11-1609"]
    assert [SENSORS[i] for i in rois["OP"]] == ["MLO11-1609", "MLP11-1609"]
    assert rois["whole_brain"].size == len(SENSORS)
    reference = {roi: [k for k, n in enumerate(SENSORS) if n.startswith(prefix)]      # the reference's rule
                 for roi, prefix in (("O", "MLO"), ("P", "MLP"), ("T", "MLT"), ("F", "MLF"), ("C", "MLC"))}
    left = things_meg.meg_roi_channels(SENSORS, list(reference))
    assert {roi: idx.tolist() for roi, idx in left.items()} == reference
    both = things_meg.meg_roi_channels(SENSORS, ["O", "OP"], sides="both")
    assert [SENSORS[i] for i in both["O"]] == ["MLO11-1609", "MRO11-1609", "MZO01-1609"]
    assert both["OP"].size == 6
    assert things_meg.ctf_sensor_group("MRT21-1609") == ("R", "T")
    assert things_meg.ctf_sensor_group("BG1-1609") is None
    with pytest.raises(ValueError, match="sides must be one of"):
        things_meg.meg_roi_channels(SENSORS, ["O"], sides="right")


def test_things_meg_recovers_planted_responses_and_ceilings(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "derivatives" / "preprocessed"
    t1 = make_meg(folder, "P1", rng)
    make_meg(folder, "P2", rng)
    ds = things_meg.load_things_meg(tmp_path, chunk=7)        # chunks cut across the split boundary
    assert ds.modality == "meg" and ds.subjects == ["P1", "P2"] and ds.rois == list(things_meg.MEG_ROIS)
    w = template(GRID)
    np.testing.assert_array_equal(ds.ids("train", "P1"), sorted(t1["exp_ids"]))
    got = ds.responses[("train", "P1", "whole_brain")]
    assert got.shape == (5, len(SENSORS), 130)
    np.testing.assert_allclose(got, t1["a_exp"][:, :, None] * w, atol=0.05)
    order = np.argsort(t1["test_ids"])
    trials = t1["trial_scale"][order]
    np.testing.assert_allclose(ds.responses[("test", "P1", "whole_brain")], trials.mean(axis=1)[:, :, None] * w,
                               atol=0.05)
    nc = ds.noise_ceilings[("P1", "whole_brain")]
    ok = w > 0.5
    np.testing.assert_allclose(nc[:, ok], np.repeat(nsd_ceiling(np.transpose(trials, (2, 0, 1)))[:, None],
                                                    ok.sum(), 1), atol=1.5)
    assert ds.responses[("test", "P2", "O")].shape == (6, 1, 130)
    assert ds.responses[("test", "P2", "OP")].shape == (6, 2, 130)
    assert "catch_001" not in set(ds.ids("train", "P1")) | set(ds.ids("test", "P1"))
    ds.validate()


def test_things_meg_pools_both_hemispheres_as_an_option(tmp_path):
    make_meg(tmp_path, "P3", np.random.default_rng(1))
    ds = things_meg.load_things_meg(tmp_path, rois=["O", "OP"], sides="both")
    assert ds.responses[("train", "P3", "O")].shape[1] == 3 and ds.responses[("train", "P3", "OP")].shape[1] == 6


def test_things_meg_malformed_files_raise_naming_file_and_fault(tmp_path):
    make_meg(tmp_path, "P1", np.random.default_rng(2), metadata=False)
    with pytest.raises(eeg.SensorDataError, match=r"preprocessed_P1-epo\.fif: epochs carry no metadata"):
        things_meg.load_things_meg(tmp_path)
    (tmp_path / "preprocessed_P2-epo.fif").write_bytes(b"not a fif file")
    with pytest.raises(eeg.SensorDataError, match=r"preprocessed_P2-epo\.fif: cannot read MNE epochs"):
        things_meg.load_things_meg(tmp_path, subjects=["P2"])
    with pytest.raises(FileNotFoundError, match="preprocessed_P4-epo.fif"):
        things_meg.load_things_meg(tmp_path, subjects=["P4"])


def test_prepare_round_trips_channel_by_time_targets(tmp_path):
    from configs import prepare as prepare_config
    from jaxbrain.data import neural
    from jaxbrain.experiments import prepare

    make_meg(tmp_path / "release", "P1", np.random.default_rng(3))
    config = prepare_config.get_config(f"dataset=things_meg,source_dir={tmp_path / 'release'},rois=OP+whole_brain")
    prepare.run(config, tmp_path / "work")
    ds = neural.load(tmp_path / "work" / "things_meg.h5")
    assert ds.rois == ["OP", "whole_brain"] and ds.responses[("test", "P1", "OP")].shape == (6, 2, 130)
    assert ds.noise_ceilings[("P1", "OP")].shape == (2, 130) and ds.targets("test", "P1", "OP").shape == (6, 260)
    assert ds.target_filter == "ceiling_root"                     # the M/EEG rule is recorded in the file
