"""Per-target outputs: NIfTI maps in the subject's space (nibabel round trip) and r(t) curves of M/EEG ROIs."""

import nibabel as nib
import numpy as np
import pytest

from jaxbrain import maps, pipeline
from jaxbrain.data import neural

N_TRAIN, N_TEST = 40, 20


def _dataset(modality, shape, rng):
    ids = [f"s{i:02d}" for i in range(N_TRAIN + N_TEST)]
    features = rng.standard_normal((len(ids), 10))
    signal = features @ rng.standard_normal((10, int(np.prod(shape))))
    trials = {("sub1", "R"): signal.T.reshape(*shape, len(ids), 1) + rng.standard_normal((*shape, len(ids), 3))}
    ds = neural.from_trials("toy", modality, trials, ids, ["train"] * N_TRAIN + ["test"] * N_TEST)
    return ds, {"layer": features}


def test_nifti_maps_put_each_score_at_its_voxel(tmp_path):
    rng = np.random.default_rng(0)
    ds, feats = _dataset("fmri", (6,), rng)
    xyz = np.array([[0, 0, 0], [1, 2, 3], [4, 4, 1], [2, 0, 2], [3, 3, 3], [0, 4, 4]])
    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    ds.coordinates = {("sub1", "R"): xyz}
    ds.volumes = {"sub1": {"shape": (5, 5, 5), "affine": affine}}
    back = neural.load(neural.save(ds, tmp_path / "toy.h5"))
    np.testing.assert_array_equal(back.coordinates[("sub1", "R")], xyz)
    scores = pipeline.score_layers(feats, back, pipeline.ScoringConfig(alphas=(1.0, 10.0), min_ceiling=0.0))
    written = maps.write_outputs(scores, back, 0.0, tmp_path / "out")
    image = nib.load(written["nifti"][0])
    np.testing.assert_allclose(image.affine, affine)
    data = image.get_fdata()
    expected = scores.per_layer["layer"][("sub1", "R")].test_r_nc
    np.testing.assert_allclose(data[tuple(xyz.T)], expected, rtol=1e-6)
    assert np.isnan(data).sum() == 125 - 6


def test_time_courses_average_channels_at_each_sample(tmp_path):
    rng = np.random.default_rng(1)
    ds, feats = _dataset("eeg", (3, 4), rng)
    ds.channels = {("sub1", "R"): ["O1", "Oz", "O2"]}
    ds.times = np.array([0.0, 0.01, 0.02, 0.03])
    scores = pipeline.score_layers(feats, ds, pipeline.ScoringConfig(alphas=(1.0, 10.0), min_ceiling=0.0))
    frame = maps.target_frame(scores, ds, 0.0)
    assert set(frame.channel) == {"O1", "Oz", "O2"}
    curves = maps.time_courses(frame)
    r = scores.per_layer["layer"][("sub1", "R")].test_r.reshape(3, 4)
    mine = curves[curves.subject == "sub1"].sort_values("sample")
    np.testing.assert_allclose(mine.r, r.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(mine.time, ds.times)
    with pytest.raises(neural.NeuralDataError, match="2 channel names"):
        neural.NeuralDataset(**{**ds.__dict__, "channels": {("sub1", "R"): ["O1", "O2"]}}).validate()
