"""NeuralDataset: the trials builder, HDF5 layout and round trip, atomic writes, validation errors."""

import os

import h5py
import numpy as np
import pytest

from jaxbrain.data import neural
from jaxbrain.data.neural import NeuralDataError, from_trials
from jaxbrain.data.stimulus_set import StimulusSet


def _reference_nc(trials, inv_n):
    """float64 transcription of the Allen et al. (2021) estimator: z-score each (unit, repeat) over stimuli."""
    out = []
    for unit in trials:
        z = np.empty_like(unit)
        for r in range(unit.shape[1]):
            col = unit[:, r]
            z[:, r] = (col - col.mean()) / col.std()
        noise_var = np.mean([np.var(z[s], ddof=1) for s in range(z.shape[0])])
        signal_var = max(1.0 - noise_var, 0.0)
        snr = signal_var / noise_var
        out.append(100.0 * snr / (snr + inv_n))
    return np.array(out)


def _trials(units=4, stimuli=20, repeats=3, seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(units, stimuli, 1))
    return signal + 0.7 * rng.normal(size=(units, stimuli, repeats))


def _ids(n):
    return [f"s{k:03d}" for k in range(n)]


def _small(tmp_path=None, **kwargs):
    t = _trials()
    ids = _ids(20)
    split = ["test" if k % 5 == 0 else "train" for k in range(20)]
    trials = {("subj1", "V1"): t, ("subj1", "V4"): t[:2] * 2 + 1, ("subj2", "V1"): t[::-1], ("subj2", "V4"): t[1:]}
    return from_trials("toy", "ephys", trials, ids, split, **kwargs), t, ids, split


def test_from_trials_means_splits_and_ceilings():
    ds, t, ids, split = _small()
    assert ds.splits == ["train", "test"] and ds.subjects == ["subj1", "subj2"] and ds.rois == ["V1", "V4"]
    test_idx = [k for k in range(20) if split[k] == "test"]
    np.testing.assert_array_equal(ds.ids("test", "subj2"), [ids[k] for k in test_idx])
    np.testing.assert_allclose(ds.targets("test", "subj1", "V1"), t.mean(-1).T[test_idx], rtol=1e-6)
    np.testing.assert_allclose(ds.ceiling("subj1", "V1"), _reference_nc(t, 1 / 3), rtol=1e-10)
    assert ds.targets("train", "subj1", "V4").shape == (16, 2)


def test_variable_repeats_use_mean_inverse_count():
    t = _trials(units=3, stimuli=15, repeats=4, seed=2)
    n_i = np.array([4, 3, 2] * 5)
    for s, n in enumerate(n_i):
        t[:, s, n:] = np.nan
    ds = from_trials("v", "ephys", {("a", "r"): t}, _ids(15), ["train"] * 15)
    np.testing.assert_allclose(ds.targets("train", "a", "r"), np.nanmean(t, -1).T, rtol=1e-6)
    # transcription with NaN: z-score each repeat column over the stimuli that have it
    z = (t - np.nanmean(t, 1, keepdims=True)) / np.nanstd(t, 1, keepdims=True)
    noise = np.nanvar(z, axis=2, ddof=1).mean(1)
    snr = np.maximum(1 - noise, 0) / noise
    expected = 100 * snr / (snr + np.mean(1.0 / n_i))
    np.testing.assert_allclose(ds.ceiling("a", "r"), expected, rtol=1e-10)


def test_channel_time_trials_keep_shape_and_flatten():
    rng = np.random.default_rng(1)
    t = rng.normal(size=(2, 3, 12, 4)) + rng.normal(size=(2, 3, 12, 1))
    ds = from_trials("e", "eeg", {("p1", "O"): t}, _ids(12), ["train"] * 8 + ["test"] * 4, ceiling_split="test")
    assert ds.responses[("train", "p1", "O")].shape == (8, 2, 3)
    assert ds.targets("test", "p1", "O").shape == (4, 6)
    assert ds.ceiling("p1", "O").shape == (6,)
    flat = t.reshape(6, 12, 4)[:, 8:]
    np.testing.assert_allclose(ds.ceiling("p1", "O"), _reference_nc(flat, 1 / 4), rtol=1e-10)


def test_per_subject_ids_round_trip_layout(tmp_path):
    t = _trials(stimuli=10)
    ids = {"s1": _ids(10), "s2": [f"x{k}" for k in range(10)]}
    split_of = {i: ("test" if i.endswith("0") else "train") for v in ids.values() for i in v}
    ds = from_trials("nsdlike", "fmri", {("s1", "v"): t, ("s2", "v"): t + 1}, ids, split_of)
    path = neural.save(ds, tmp_path / "d.h5")
    with h5py.File(path) as f:
        assert list(f["test/stimulus_ids"]) == ["s1", "s2"]
        assert list(f["test/stimulus_ids/s2"].asstr()[()]) == ["x0"]
        assert list(f.attrs["subjects"]) == ["s1", "s2"] and f.attrs["max_nc"] == 100
    back = neural.load(path)
    np.testing.assert_array_equal(back.ids("train", "s2"), [f"x{k}" for k in range(1, 10)])


def test_save_load_round_trip_and_layout(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (20, 4, 4, 3), dtype=np.uint8)
    ds, *_ = _small(stimuli=StimulusSet.from_array(images, _ids(20)))
    path = neural.save(ds, tmp_path / "out" / "toy.h5")
    assert sorted(os.listdir(tmp_path / "out")) == ["toy.h5"]
    with h5py.File(path) as f:
        assert f.attrs["modality"] == "ephys"
        assert list(f.attrs["rois"]) == ["V1", "V4"] and list(f.attrs["splits"]) == ["train", "test"]
        assert f["train/neural_data/subj2/V4"].shape == (16, 3)
        assert f["noise_ceilings/subj1/V4"].shape == (2,)
        assert f["test/stimulus_ids"].asstr()[0] == "s000"
    for lazy in (False, True):
        back = neural.load(path, lazy=lazy)
        for key, value in ds.responses.items():
            np.testing.assert_array_equal(back.responses[key], value)
        for key, value in ds.noise_ceilings.items():
            np.testing.assert_array_equal(back.noise_ceilings[key], value)
        np.testing.assert_array_equal(back.stimuli.load("s007"), images[7])
    assert neural.is_valid_file(path)


def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch):
    ds, *_ = _small()

    def boom(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(neural, "_write", boom)
    with pytest.raises(RuntimeError):
        neural.save(ds, tmp_path / "x.h5")
    assert os.listdir(tmp_path) == []


def _broken(mutate):
    ds, *_ = _small()
    mutate(ds)
    return ds


def _set(mapping, key, value):
    mapping[key] = value


def _shorter(d):
    d.responses[("train", "subj1", "V1")] = d.responses[("train", "subj1", "V1")][:-1]


FAULTS = {
    "nan": (lambda d: d.responses[("test", "subj2", "V4")].__setitem__((1, 0), np.nan),
            "split 'test', subject 'subj2', ROI 'V4'.*NaN"),
    "inf": (lambda d: d.responses[("train", "subj1", "V1")].__setitem__((0, 0), np.inf),
            "subject 'subj1', ROI 'V1'.*non-finite"),
    "rows": (_shorter, "16 stimulus ids"),
    "ceiling_shape": (lambda d: _set(d.noise_ceilings, ("subj2", "V1"), np.ones(3)),
                      "subject 'subj2', ROI 'V1'.*targets \\(4,\\) vs noise ceilings \\(3,\\)"),
    "duplicate_ids": (lambda d: _set(d.stimulus_ids, "test", np.array(["s000", "s000", "s010", "s015"])),
                      "duplicate stimulus ids"),
    "ids_in_two_splits": (lambda d: _set(d.stimulus_ids, "test", np.array(["s001", "s005", "s010", "s015"])),
                          "'s001' is also in split"),
    "constant": (lambda d: d.responses[("train", "subj1", "V4")].__setitem__((slice(None), 1), 3.0),
                 "ROI 'V4'.*1 constant targets"),
    "ceiling_too_high": (lambda d: _set(d.noise_ceilings, ("subj1", "V4"), np.array([50.0, 100.5])),
                         "ROI 'V4'.*exceeds max_nc"),
    "no_ceiling": (lambda d: d.noise_ceilings.pop(("subj1", "V4")),
                   "subject 'subj1', ROI 'V4'.*missing noise ceilings"),
    "modality": (lambda d: setattr(d, "modality", "ecog"), "modality 'ecog'"),
    "missing_image": (lambda d: setattr(d, "stimuli", StimulusSet.from_array(np.zeros((1, 2, 2, 3), np.uint8),
                                                                         ["s000"])),
                      "no image in the stimulus set"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_validation_names_where_and_what(fault):
    mutate, message = FAULTS[fault]
    ds = _broken(mutate)
    with pytest.raises(NeuralDataError, match=message):
        ds.validate()


def test_builder_rejects_too_few_repeats_and_bad_values():
    t = _trials(stimuli=6)
    t[:, 2, 1:] = np.nan
    with pytest.raises(NeuralDataError, match="subject 'a', ROI 'r'.*1 stimuli have fewer than 2 repeats.*s002"):
        from_trials("x", "fmri", {("a", "r"): t}, _ids(6), ["train"] * 6)
    # the ceiling from the test split only needs repeats there
    ok = from_trials("x", "fmri", {("a", "r"): t}, _ids(6), ["test", "test", "train", "train", "test", "test"],
                     ceiling_split="test")
    assert ok.ceiling("a", "r").shape == (4,)
    t[0, 3, :] = np.nan
    with pytest.raises(NeuralDataError, match="no valid repeat.*s003"):
        from_trials("x", "fmri", {("a", "r"): t}, _ids(6), ["train"] * 6, ceiling_split="train")
    t = _trials(stimuli=6)
    t[1, 1, 1] = np.inf
    with pytest.raises(NeuralDataError, match="infinite"):
        from_trials("x", "fmri", {("a", "r"): t}, _ids(6), ["train"] * 6)
    with pytest.raises(NeuralDataError, match="trials shape"):
        from_trials("x", "fmri", {("a", "r"): _trials(stimuli=5)}, _ids(6), ["train"] * 6)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.h5"):
        neural.load(tmp_path / "absent.h5")
    ds, *_ = _small()
    path = neural.save(ds, tmp_path / "d.h5")
    with h5py.File(path, "a") as f:
        del f["noise_ceilings/subj2/V4"]
    with pytest.raises(NeuralDataError, match="d.h5.*subject 'subj2', ROI 'V4'.*noise_ceilings/subj2/V4"):
        neural.load(path)
    assert not neural.is_valid_file(path)
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(NeuralDataError, match="junk.h5.*not a readable HDF5"):
        neural.load(tmp_path / "junk.h5")


def test_splits_helpers():
    ids = _ids(200)
    a = neural.random_split(ids, 0.1, seed=42)
    assert a == neural.random_split(ids, 0.1, seed=42)
    assert sum(v == "test" for v in a.values()) == 20
    labels = ["x"] * 150 + ["y"] * 50
    s = neural.stratified_split(ids, labels, 0.1, seed=42)
    test = [k for k, i in enumerate(ids) if s[i] == "test"]
    assert sum(labels[k] == "x" for k in test) == 15 and sum(labels[k] == "y" for k in test) == 5


def test_stratified_order_is_train_test_splits_shuffled_order():
    from sklearn.model_selection import train_test_split

    labels = np.asarray(["a"] * 70 + ["b"] * 45 + ["c"] * 20)[np.random.default_rng(3).permutation(135)]
    train, test = neural.stratified_order(labels, 0.1, seed=42)
    ref_train, ref_test = train_test_split(np.arange(135), stratify=labels, test_size=0.1, random_state=42,
                                           shuffle=True)
    np.testing.assert_array_equal(train, ref_train)
    np.testing.assert_array_equal(test, ref_test)


def test_target_filter_decides_the_scored_targets_and_round_trips(tmp_path):
    ds, *_ = _small()
    ds.noise_ceilings[("subj1", "V1")] = np.array([5.0, 10.0, 0.5, 2.0])   # sqrt(NC/100) > 0.1 <=> NC > 1
    assert ds.scoring_filter == "noise_ceiling"
    np.testing.assert_array_equal(ds.scored_targets("subj1", "V1"), [False, True, False, False])
    np.testing.assert_array_equal(ds.scored_targets("subj1", "V1", min_ceiling=2.0), [True, True, False, True])
    for modality, target_filter, kept in (("eeg", None, [True, True, False, True]),
                                          ("ephys", "ceiling_root", [True, True, False, True]),
                                          ("ephys", "released", [True, True, True, True])):
        other = neural.NeuralDataset(**{**ds.__dict__, "modality": modality, "target_filter": target_filter})
        np.testing.assert_array_equal(other.scored_targets("subj1", "V1"), kept)
        back = neural.load(neural.save(other, tmp_path / f"{modality}_{target_filter}.h5"))
        assert back.scoring_filter == other.scoring_filter
        np.testing.assert_array_equal(back.scored_targets("subj1", "V1"), kept)
    with h5py.File(tmp_path / "ephys_released.h5", "a") as f:
        assert f.attrs["target_filter"] == "released" and not f.attrs["subject_specific_stimulus_set"]
        del f.attrs["target_filter"]  # a file written without it (and without checksums, e.g. by the reference
        del f.attrs["checksums"]      # code) is scored by modality
    assert neural.load(tmp_path / "ephys_released.h5").scoring_filter == "noise_ceiling"
    bad = neural.NeuralDataset(**{**ds.__dict__, "target_filter": "reliab"})
    with pytest.raises(NeuralDataError, match="target_filter 'reliab' not one of"):
        bad.validate()
