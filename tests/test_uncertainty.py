"""Bootstrap intervals of test scores: count-weighted replicates equal resampled rows; intervals agree with
scipy.stats.bootstrap; paired differences of common-random-number replicates."""

import numpy as np
import pytest
from scipy import stats

from jaxbrain import uncertainty


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((60, 7))
    p = y + rng.standard_normal((60, 7)) * np.linspace(0.5, 3, 7)
    norm = np.sqrt(rng.uniform(40, 90, 7) / 100 + 1e-6)
    return y, p, norm


def _mean_r(y, p, norm):
    yc, pc = y - y.mean(0), p - p.mean(0)
    r = (yc * pc).sum(0) / np.sqrt((yc * yc).sum(0) * (pc * pc).sum(0))
    return r.mean(), (r / norm).mean()


def test_replicates_equal_scores_on_resampled_rows(case):
    y, p, norm = case
    counts = uncertainty.resample_counts(len(y), 20, 0, "bench", "s1")
    mean_r, mean_r_nc = uncertainty.bootstrap_scores(y, p, norm, counts)
    for b in range(20):
        rows = np.repeat(np.arange(len(y)), counts[b].astype(int))
        expected = _mean_r(y[rows], p[rows], norm)
        np.testing.assert_allclose((mean_r[b], mean_r_nc[b]), expected, atol=1e-5)
    np.testing.assert_array_equal(counts, uncertainty.resample_counts(len(y), 20, 0, "bench", "s1"))
    assert not np.array_equal(counts, uncertainty.resample_counts(len(y), 20, 0, "bench", "s2"))


def test_interval_agrees_with_scipy_bootstrap(case):
    y, p, norm = case
    counts = uncertainty.resample_counts(len(y), 4000, 1, "bench")
    _, replicates = uncertainty.bootstrap_scores(y, p, norm, counts)
    ours = uncertainty.interval(replicates)
    theirs = stats.bootstrap((np.arange(len(y)),), lambda i: _mean_r(y[i], p[i], norm)[1], method="percentile",
                             n_resamples=4000, random_state=7, vectorized=False).confidence_interval
    np.testing.assert_allclose(ours, (theirs.low, theirs.high), atol=0.02)
    assert ours[0] < _mean_r(y, p, norm)[1] < ours[1]


def test_paired_differences_use_the_same_resamples(case):
    y, p, norm = case
    rng = np.random.default_rng(3)
    worse = p + 2.0 * rng.standard_normal(p.shape)
    counts = uncertainty.resample_counts(len(y), 2000, 0, "bench")
    _, a = uncertainty.bootstrap_scores(y, p, norm, counts)
    _, b = uncertainty.bootstrap_scores(y, worse, norm, counts)
    same = uncertainty.paired_difference(0.5, 0.5, a, a)
    assert same["difference"] == 0 and same["ci_low"] == same["ci_high"] == 0
    better = uncertainty.paired_difference(_mean_r(y, p, norm)[1], _mean_r(y, worse, norm)[1], a, b)
    assert better["ci_low"] > 0 and better["p_not_greater"] < 0.025
    # unpaired replicates would give a wider interval than the paired ones
    _, b_other = uncertainty.bootstrap_scores(y, worse, norm, uncertainty.resample_counts(len(y), 2000, 9, "x"))
    unpaired = uncertainty.interval(a - b_other)
    assert unpaired[1] - unpaired[0] > better["ci_high"] - better["ci_low"]


def test_subjects_are_resampled_hierarchically():
    reps = [np.full(500, 0.2), np.full(500, 0.6)]
    pooled = uncertainty.across_subjects(reps, 0, "bench", "V4")
    assert set(np.round(np.unique(pooled), 6)) <= {0.2, 0.4, 0.6}
    assert 0.2 <= pooled.mean() <= 0.6 and pooled.std() > 0
    np.testing.assert_array_equal(uncertainty.across_subjects(reps[:1], 0, "b"), reps[0])
