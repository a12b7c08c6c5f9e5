"""Generic reader: trials folders (.npy and long .csv), in-memory arrays, and RDM-only data."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.io import loadmat

from jaxbrain.data.neural import NeuralDataError
from jaxbrain.data.sources import generic


def _trials(units=3, n=10, reps=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(units, n, 1)) + 0.5 * rng.normal(size=(units, n, reps))


def _folder(tmp_path, with_split=True, images=True):
    ids = [f"im{k}" for k in range(10)]
    table = pd.DataFrame({"stimulus_id": ids})
    if with_split:
        table["split"] = ["test" if k in (2, 7) else "train" for k in range(10)]
    table.to_csv(tmp_path / "stimuli.csv", index=False)
    t = {("s1", "V1"): _trials(seed=1), ("s1", "IT"): _trials(units=2, seed=2)}
    t[("s1", "IT")][0, 4, 3] = np.nan
    for (s, r), a in t.items():
        np.save(tmp_path / f"trials_{s}_{r}.npy", a)
    if images:
        (tmp_path / "images").mkdir()
        for k, i in enumerate(ids):
            Image.fromarray(np.full((4, 4, 3), k, np.uint8)).save(tmp_path / "images" / f"{i}.png")
    return ids, t


def test_npy_folder(tmp_path):
    ids, t = _folder(tmp_path)
    ds = generic.load_generic(tmp_path)
    assert ds.subjects == ["s1"] and set(ds.rois) == {"V1", "IT"}
    assert list(ds.ids("test", "s1")) == ["im2", "im7"]
    np.testing.assert_allclose(ds.targets("test", "s1", "IT"), np.nanmean(t[("s1", "IT")], -1).T[[2, 7]], rtol=1e-6)
    assert ds.stimuli.load("im7")[0, 0, 0] == 7


def test_long_csv_equals_npy(tmp_path):
    (tmp_path / "a").mkdir()
    ids, t = _folder(tmp_path / "a")
    ds_npy = generic.load_generic(tmp_path / "a")
    b = tmp_path / "b"
    b.mkdir()
    (tmp_path / "a" / "stimuli.csv").rename(b / "stimuli.csv")
    rows = []
    for (s, r), a in t.items():
        for u, k, rep in zip(*np.nonzero(np.isfinite(a))):
            rows.append((s, r, f"u{u}", ids[k], rep, a[u, k, rep]))
    pd.DataFrame(rows, columns=["subject", "roi", "unit", "stimulus_id", "repeat", "value"]).to_csv(
        b / "trials.csv", index=False)
    ds_csv = generic.load_generic(b)
    for key, value in ds_npy.responses.items():
        np.testing.assert_allclose(ds_csv.responses[key], value, rtol=1e-6)
    for key, value in ds_npy.noise_ceilings.items():
        np.testing.assert_allclose(ds_csv.noise_ceilings[key], value, rtol=1e-9)


def test_random_and_stratified_splits(tmp_path):
    _folder(tmp_path, with_split=False, images=False)
    ds = generic.load_generic(tmp_path, test_fraction=0.2, seed=3)
    assert len(ds.ids("test", "s1")) == 2 and ds.stimuli is None
    labels = ["a"] * 5 + ["b"] * 5
    arr = generic.from_arrays({("x", "r"): _trials()}, [f"i{k}" for k in range(10)], labels=labels,
                              test_fraction=0.2, images=np.zeros((10, 2, 2, 3), np.uint8))
    test = [int(i[1:]) for i in arr.ids("test", "x")]
    assert sorted(labels[k] for k in test) == ["a", "b"]


@pytest.mark.parametrize("fault, message", [
    ("shape", "subject 's1', ROI 'V1': trials shape \\(3, 9, 4\\), expected \\(\\.\\.\\., 10 stimuli"),
    ("split", "stimuli.csv: split values must be train/test, found \\['validation'\\]"),
    ("dup", "stimuli.csv: duplicate stimulus ids \\['im0'\\]"),
    ("image", "images: no image for stimulus ids \\['im3'\\]"),
    ("one_repeat", "subject 's1', ROI 'V1'.*fewer than 2 repeats"),
    ("name", "trials_s_1_V1.npy: expected trials_<subject>_<roi>.npy"),
])
def test_malformed_folder(tmp_path, fault, message):
    ids, t = _folder(tmp_path)
    if fault == "shape":
        np.save(tmp_path / "trials_s1_V1.npy", t[("s1", "V1")][:, :9])
    if fault == "split":
        pd.DataFrame({"stimulus_id": ids, "split": ["validation"] + ["train"] * 9}).to_csv(tmp_path / "stimuli.csv")
    if fault == "dup":
        pd.DataFrame({"stimulus_id": ids[:9] + ["im0"]}).to_csv(tmp_path / "stimuli.csv")
    if fault == "image":
        (tmp_path / "images" / "im3.png").unlink()
    if fault == "one_repeat":
        np.save(tmp_path / "trials_s1_V1.npy", t[("s1", "V1")][..., :1])
    if fault == "name":
        np.save(tmp_path / "trials_s_1_V1.npy", t[("s1", "V1")])
    with pytest.raises(NeuralDataError, match=message):
        generic.load_generic(tmp_path)


def test_kriegeskorte92_rdms(realdata):
    folder = realdata / "rsatoolbox_92images"
    rdms = generic.load_kriegeskorte92(folder)
    assert len(rdms.stimulus_ids) == 92
    raw = loadmat(folder / "Kriegeskorte_Neuron2008_supplementalData.mat")
    monkey = raw["RDMs_mIT_hIT_fig1"][0, 0]["RDM"].reshape(-1)
    # squareform order: (0,1), (0,2), ..., (0,91), (1,2), ...
    assert rdms.rdms["mIT_674neurons"][0, 2] == monkey[1] and rdms.rdms["mIT_674neurons"][1, 2] == monkey[91]
    np.testing.assert_array_equal(rdms.condensed("mIT_674neurons"), monkey)
    assert len(rdms.groups["hIT_subject_sessions"]) == 8
    np.testing.assert_array_equal(rdms.stimuli.load("obj05"), raw["stimuli_92objs"][0, 4]["image"])


def test_rdm_folder_and_errors(tmp_path):
    pd.DataFrame({"stimulus_id": ["a", "b", "c"]}).to_csv(tmp_path / "stimuli.csv", index=False)
    np.save(tmp_path / "rdm_v1.npy", np.array([1.0, 2.0, 3.0]))
    rdms = generic.load_rdm_folder(tmp_path)
    np.testing.assert_array_equal(rdms.rdms["v1"], [[0, 1, 2], [1, 0, 3], [2, 3, 0]])
    np.save(tmp_path / "rdm_bad.npy", np.array([[0.0, 1.0, 2.0], [5.0, 0.0, 1.0], [2.0, 1.0, 0.0]]))
    with pytest.raises(NeuralDataError, match="rdm_bad.npy: not symmetric"):
        generic.load_rdm_folder(tmp_path)
    np.save(tmp_path / "rdm_bad.npy", np.arange(5.0))
    with pytest.raises(NeuralDataError, match="rdm_bad.npy: 5 values are neither"):
        generic.load_rdm_folder(tmp_path)


def test_split_half_similarity_folder_per_subject_and_roi(tmp_path):
    rng = np.random.default_rng(0)
    pd.DataFrame({"stimulus_id": ["a", "b", "c", "d"]}).to_csv(tmp_path / "stimuli.csv", index=False)
    mats = {(s, roi): rng.normal(size=(4, 4)) for s in ("s1", "s2", "s3") for roi in ("V1", "IT")}
    for (s, roi), m in mats.items():
        np.save(tmp_path / f"rsm_{s}_{roi}.npy", m)
    with pytest.raises(NeuralDataError, match=r"rsm_s1_IT\.npy: not symmetric \(load split-half matrices with "
                                              r"symmetric=False\)"):
        generic.load_rdm_folder(tmp_path)
    rdms = generic.load_rdm_folder(tmp_path, symmetric=False)
    assert rdms.kind == "similarity" and not rdms.symmetric
    assert sorted(rdms.groups) == ["IT", "V1"] and rdms.groups["V1"] == ["s1_V1", "s2_V1", "s3_V1"]
    np.testing.assert_array_equal(rdms.subject_matrices("IT"), np.stack([mats[(s, "IT")] for s in ("s1", "s2", "s3")]))
    with pytest.raises(KeyError, match="no group 'V4'"):
        rdms.subject_matrices("V4")
    np.save(tmp_path / "rsm_s4_V1.npy", np.arange(6.0))
    with pytest.raises(NeuralDataError, match="rsm_s4_V1.npy: shape \\(6,\\); a matrix that need not be symmetric"):
        generic.load_rdm_folder(tmp_path, symmetric=False)
    (tmp_path / "rsm_s4_V1.npy").unlink()
    np.save(tmp_path / "rdm_s4_V1.npy", np.zeros((4, 4)))
    with pytest.raises(NeuralDataError, match="both rdm_\\*.npy \\(dissimilarities\\) and rsm_\\*.npy"):
        generic.load_rdm_folder(tmp_path, symmetric=False)
    with pytest.raises(NeuralDataError, match="kind 'distance' not one of"):
        generic.RDMSet(name="x", stimulus_ids=["a", "b", "c"], rdms={}, kind="distance")
