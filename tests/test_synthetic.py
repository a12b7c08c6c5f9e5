"""Planted benchmarks: the generative pieces against closed-form expectations."""

import numpy as np

from jaxbrain import metrics
from jaxbrain.data import synthetic


def test_generated_images_are_deterministic_uint8():
    a = synthetic.generated_images(5, size=16, seed=1)
    b = synthetic.generated_images(5, size=16, seed=1)
    assert a.dtype == np.uint8 and a.shape == (5, 16, 16, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, synthetic.generated_images(5, size=16, seed=2))
    assert a.min() == 0 and a.max() == 255


def test_principal_signal_lies_in_the_top_components():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((200, 50)) @ rng.standard_normal((50, 80))
    signal = synthetic.mixed_signal(synthetic.principal_scores(features, 5), 7, rng)
    np.testing.assert_allclose(signal.std(axis=0), 1.0, rtol=1e-10)
    centred = features - features.mean(axis=0)
    u = np.linalg.svd(centred, full_matrices=False)[0][:, :5]
    residual = signal - u @ (u.T @ signal)
    assert np.abs(residual).max() < 1e-8


def test_true_ceiling_matches_the_estimator_on_many_stimuli():
    rng = np.random.default_rng(0)
    n_stim, n_targets = 4000, 6
    signal = rng.standard_normal((n_stim, n_targets))
    signal = (signal - signal.mean(0)) / signal.std(0)
    noise_sd = np.linspace(0.5, 3.0, n_targets)
    repeats = rng.integers(4, 9, n_stim)
    trials = synthetic.noisy_trials(signal, noise_sd, repeats, 8, rng)
    assert np.array_equal(np.isnan(trials[0]).sum(axis=1), 8 - repeats)
    expected = 100.0 / (1.0 + noise_sd**2 * np.mean(1.0 / repeats))
    np.testing.assert_allclose(synthetic.true_ceiling(noise_sd, repeats), expected)
    np.testing.assert_allclose(metrics.noise_ceiling(trials), expected, atol=2.5)
