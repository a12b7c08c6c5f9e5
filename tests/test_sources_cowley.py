"""Cowley et al. 2023 V4 reader: the real session 210325 and malformed releases."""

import zipfile

import numpy as np
import pytest

from jaxbrain.data import neural
from jaxbrain.data.neural import NeuralDataError
from jaxbrain.data.sources.cowley2023 import load_cowley2023


def test_real_session(realdata, tmp_path):
    folder = realdata / "cowley2023_v4"
    raw = np.load(folder / "responses_raw_210325.npy")
    avg = np.load(folder / "responses_repeat_averaged_210325.npy")
    ds = load_cowley2023(folder)
    assert ds.subjects == ["monkey_PE"] and ds.rois == ["V4"] and ds.modality == "ephys"
    test_ids, train_ids = ds.ids("test", "monkey_PE"), ds.ids("train", "monkey_PE")
    assert len(test_ids) == 64 and len(train_ids) == 576
    # responses equal the release's own repeat-averaged array, row for row
    idx = np.array([int(i[5:]) - 1 for i in test_ids])
    np.testing.assert_allclose(ds.targets("test", "monkey_PE", "V4"), avg[:, idx].T, rtol=1e-6)
    # ceiling: float64 transcription with per-image repeat counts 6-10 (mean of 1/n_i)
    counts = np.isfinite(raw[0]).sum(-1)
    assert counts.min() == 6 and counts.max() == 10
    # (a repeat slot that is constant across the few images that have it uses the neuron's pooled mean and SD)
    with np.errstate(invalid="ignore"):
        mean, sd = np.nanmean(raw, 1, keepdims=True), np.nanstd(raw, 1, keepdims=True)
    pooled = ~(sd > 0)
    assert pooled.sum() < 5
    mean = np.where(pooled, np.nanmean(raw, (1, 2), keepdims=True), mean)
    sd = np.where(pooled, np.nanstd(raw, (1, 2), keepdims=True), sd)
    z = (raw - mean) / sd
    noise = np.nanvar(z, axis=2, ddof=1).mean(1)
    snr = np.maximum(1 - noise, 0) / noise
    np.testing.assert_allclose(ds.ceiling("monkey_PE", "V4"), 100 * snr / (snr + np.mean(1 / counts)), rtol=1e-6)
    # image i is image%04d.jpg % (i + 1), 112 x 112 RGB
    img = ds.stimuli.load(test_ids[0])
    assert img.shape == (112, 112, 3) and img.dtype == np.uint8
    back = neural.load(neural.save(ds, tmp_path / "cowley.h5"))
    np.testing.assert_array_equal(back.stimuli.load(test_ids[0]), img)


def _release(folder, trials, n_images=None):
    folder.mkdir()
    np.save(folder / "responses_raw_210325.npy", trials)
    with zipfile.ZipFile(folder / "images_210325.zip", "w") as zf:
        for i in range(n_images if n_images is not None else trials.shape[1]):
            zf.writestr(f"image{i + 1:04d}.jpg", b"")
    return folder


def test_malformed_releases(tmp_path):
    rng = np.random.default_rng(0)
    trials = rng.poisson(3, size=(3, 20, 4)).astype(float)
    ds = load_cowley2023(_release(tmp_path / "ok", trials), test_fraction=0.2)
    assert len(ds.ids("test", "monkey_PE")) == 4
    with pytest.raises(FileNotFoundError, match="images_210325.zip"):
        (tmp_path / "ok" / "images_210325.zip").unlink()
        load_cowley2023(tmp_path / "ok")
    with pytest.raises(Exception, match="image0020.jpg"):
        load_cowley2023(_release(tmp_path / "short_zip", trials, n_images=19))
    bad = trials.copy()
    bad[:, 5, 1:] = np.nan
    with pytest.raises(NeuralDataError, match="responses_raw_210325.npy.*fewer than 2 repeats.*image0006"):
        load_cowley2023(_release(tmp_path / "one_repeat", bad))
    with pytest.raises(NeuralDataError, match="responses_raw_210325.npy.*expected float \\(neurons, images"):
        load_cowley2023(_release(tmp_path / "flat", trials[:, :, 0]))
