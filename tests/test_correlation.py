"""Pearson r per target against a float64 numpy transcription and scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jaxbrain import metrics


def _pearson_numpy(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    out = np.empty(a.shape[1])
    for t in range(a.shape[1]):
        x = a[:, t] - a[:, t].mean()
        y = b[:, t] - b[:, t].mean()
        out[t] = (x @ y) / np.sqrt((x @ x) * (y @ y))
    return out


def test_pearson_r_matches_transcription_and_scipy():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((30, 6)) + 4.0
    p = 0.5 * y + rng.standard_normal((30, 6))
    r = np.asarray(metrics.pearson_r(y.astype(np.float32), p.astype(np.float32)))
    assert r.shape == (6,)
    np.testing.assert_allclose(r, _pearson_numpy(y, p), atol=1e-5)
    np.testing.assert_allclose(r[2], scipy.stats.pearsonr(y[:, 2], p[:, 2])[0], atol=1e-5)


def test_pearson_r_one_dimensional_and_batched():
    rng = np.random.default_rng(1)
    y = rng.standard_normal((4, 25, 3)).astype(np.float32)
    p = (y + rng.standard_normal((4, 25, 3))).astype(np.float32)
    batched = np.asarray(jax.vmap(metrics.pearson_r)(jnp.asarray(y), jnp.asarray(p)))
    for i in range(4):
        np.testing.assert_allclose(batched[i], _pearson_numpy(y[i], p[i]), atol=1e-5)
    scalar = metrics.pearson_r(y[0, :, 0], p[0, :, 0])
    assert np.ndim(scalar) == 0
    np.testing.assert_allclose(float(scalar), _pearson_numpy(y[0], p[0])[0], atol=1e-5)


def test_pearson_r_constant_column_is_nan_and_shape_mismatch_raises():
    y = np.ones((10, 2), np.float32)
    y[:, 1] = np.arange(10)
    r = np.asarray(metrics.pearson_r(y, y))
    assert np.isnan(r[0]) and r[1] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="shape"):
        metrics.pearson_r(np.zeros((10, 2)), np.zeros((10, 3)))
