"""Noise ceilings and split-half reliability against float64 numpy transcriptions and real V4 data."""

import numpy as np
import pytest

from jaxbrain import metrics


def _noise_ceiling_transcription(trials, n_averaged=None):
    """DESIGN.md section 3, written out loop by loop in float64.

    z-score every (unit, repeat) across the stimuli that have it (a repeat column with < 2 values or no spread
    uses the unit's pooled mean/std); noise_var = mean over stimuli of the ddof=1 variance across repeats;
    signal_var = max(1 - noise_var, 0); NC = 100 snr / (snr + 1/n) with 1/n = mean over stimuli of 1/n_i.
    """
    units, stimuli, repeats = trials.shape
    out = np.empty(units)
    for u in range(units):
        x = trials[u]
        pooled = x[np.isfinite(x)]
        z = np.full_like(x, np.nan)
        for k in range(repeats):
            col = x[:, k]
            ok = np.isfinite(col)
            vals = col[ok]
            if vals.size >= 2 and vals.std() > 0:
                z[ok, k] = (vals - vals.mean()) / vals.std()
            else:
                z[ok, k] = (vals - pooled.mean()) / pooled.std()
        variances = []
        inv_n = []
        for s in range(stimuli):
            vals = z[s][np.isfinite(z[s])]
            variances.append(np.sum((vals - vals.mean()) ** 2) / (vals.size - 1))
            inv_n.append(1.0 / vals.size)
        noise_var = np.mean(variances)
        signal_var = max(1.0 - noise_var, 0.0)
        snr = signal_var / noise_var
        one_over_n = np.mean(inv_n) if n_averaged is None else 1.0 / n_averaged
        out[u] = 100.0 * snr / (snr + one_over_n)
    return out


def _planted_trials(rng, units=4, stimuli=400, repeats=4, signal_sd=1.0, noise_sd=1.0):
    signal = rng.standard_normal((units, stimuli, 1)) * signal_sd
    return 3.0 + signal + rng.standard_normal((units, stimuli, repeats)) * noise_sd


def test_noise_ceiling_matches_transcription_with_missing_repeats():
    rng = np.random.default_rng(0)
    trials = _planted_trials(rng, units=3, stimuli=40, repeats=5, signal_sd=np.array([[[0.3]], [[1.0]], [[2.0]]]))
    trials[:, :10, 4] = np.nan  # stimuli 0-9 have 4 repeats
    trials[:, 5:8, 3] = np.nan  # stimuli 5-7 have 3
    np.testing.assert_allclose(metrics.noise_ceiling(trials), _noise_ceiling_transcription(trials), rtol=1e-12)
    np.testing.assert_allclose(metrics.noise_ceiling(trials, n_averaged=2),
                               _noise_ceiling_transcription(trials, n_averaged=2), rtol=1e-12)


def test_unequal_repeats_slots_use_the_number_of_repeat_slots():
    rng = np.random.default_rng(4)
    trials = _planted_trials(rng, units=3, stimuli=30, repeats=6)
    trials[:, :12, 5] = np.nan
    trials[:, 3:9, 4] = np.nan
    slots = metrics.noise_ceiling(trials, unequal_repeats="slots")
    np.testing.assert_allclose(slots, _noise_ceiling_transcription(trials, n_averaged=6), rtol=1e-12)
    assert (slots > metrics.noise_ceiling(trials)).all()        # n = slots overstates n, so the ceiling
    equal = trials[:, :, :4]
    np.testing.assert_allclose(metrics.noise_ceiling(equal, unequal_repeats="slots"), metrics.noise_ceiling(equal))
    with pytest.raises(ValueError, match="unequal_repeats must be one of"):
        metrics.noise_ceiling(trials, unequal_repeats="max")


def test_scored_target_mask_per_filter():
    nc = np.array([0.5, 1.0, 1.01, 9.99, 10.0, 80.0, np.nan])
    mask = lambda f, m=10.0: metrics.scored_target_mask(nc, f, m).tolist()  # noqa: E731
    assert mask("noise_ceiling") == [False, False, False, False, True, True, False]
    assert mask("noise_ceiling", 1.0) == [False, True, True, True, True, True, False]
    assert mask("ceiling_root") == [False, False, True, True, True, True, False]     # sqrt(NC/100) > 0.1
    assert mask("released") == [True] * 6 + [False]
    with pytest.raises(ValueError, match="target_filter must be one of"):
        metrics.scored_target_mask(nc, "reliab")


def test_noise_ceiling_recovers_planted_value():
    rng = np.random.default_rng(1)
    trials = _planted_trials(rng, units=2, stimuli=4000, repeats=4, signal_sd=1.0, noise_sd=1.5)
    snr = 1.0 / 1.5**2
    expected = 100 * snr / (snr + 1 / 4)
    np.testing.assert_allclose(metrics.noise_ceiling(trials), expected, atol=2.0)
    # pure noise: signal_var clipped at 0
    noise_only = rng.standard_normal((2, 500, 3))
    assert np.all(metrics.noise_ceiling(noise_only) < 5.0)


def test_split_half_converges_to_average_over_all_assignments():
    # With 2 repeats each split picks, per stimulus, which repeat goes to the first half; with 7 stimuli all
    # 2**7 assignments can be enumerated, and the mean over many random splits must approach their average.
    rng = np.random.default_rng(2)
    trials = _planted_trials(rng, units=2, stimuli=7, repeats=2, signal_sd=1.0, noise_sd=0.7)
    expected = np.zeros(2)
    for code in range(2**7):
        swap = np.array([(code >> s) & 1 for s in range(7)], bool)
        half_a = np.where(swap, trials[:, :, 1], trials[:, :, 0])
        half_b = np.where(swap, trials[:, :, 0], trials[:, :, 1])
        r = np.array([np.corrcoef(half_a[u], half_b[u])[0, 1] for u in range(2)])
        expected += 2 * r / (1 + r) / 2**7
    np.testing.assert_allclose(metrics.split_half_reliability(trials, n_splits=4000, seed=5), expected, atol=0.01)


def test_split_half_recovers_planted_reliability():
    rng = np.random.default_rng(3)
    trials = _planted_trials(rng, units=2, stimuli=3000, repeats=4, signal_sd=1.0, noise_sd=2.0)
    # Spearman-Brown of two 2-repeat halves = reliability of the 4-repeat mean
    expected = 1.0 / (1.0 + 4.0 / 4)
    np.testing.assert_allclose(metrics.split_half_reliability(trials, n_splits=5), expected, atol=0.03)


@pytest.mark.parametrize(
    "fault, match",
    [
        ("one_repeat", "at least 2 repeats.*unit 1 stimulus 3"),
        ("nan_unit", r"unit\(s\) \[2\] are all NaN"),
        ("constant_unit", r"unit\(s\) \[0\] have constant"),
        ("inf", "inf"),
        ("shape", "units, stimuli, repeats"),
    ],
)
def test_bad_trials_raise(fault, match):
    trials = _planted_trials(np.random.default_rng(4), units=3, stimuli=6, repeats=3)
    if fault == "one_repeat":
        trials[1, 3, 1:] = np.nan
    elif fault == "nan_unit":
        trials[2] = np.nan
    elif fault == "constant_unit":
        trials[0] = 7.0
    elif fault == "inf":
        trials[0, 0, 0] = np.inf
    elif fault == "shape":
        trials = trials[0]
    for fn in (metrics.noise_ceiling, metrics.split_half_reliability):
        with pytest.raises(ValueError, match=match):
            fn(trials)


def test_reliable_and_ncsnr_to_ceiling():
    np.testing.assert_array_equal(metrics.reliable([5.0, 10.0, 50.0, np.nan]), [False, True, True, False])
    np.testing.assert_array_equal(metrics.reliable([5.0, 30.0], threshold=40.0), [False, False])
    ncsnr = np.array([0.0, 0.5, 2.0])
    np.testing.assert_allclose(metrics.ncsnr_to_ceiling(ncsnr, 3), 100 * ncsnr**2 / (ncsnr**2 + 1 / 3))


def test_cowley_v4_reliability_and_ceiling(realdata):
    trials = np.load(realdata / "cowley2023_v4" / "responses_raw_210325.npy")
    reliability = metrics.split_half_reliability(trials)
    assert reliability.shape == (50,)
    # published with the data: median 0.77, range 0.54-0.93
    assert np.median(reliability) == pytest.approx(0.77, abs=0.03)
    assert reliability.min() == pytest.approx(0.54, abs=0.05)
    assert reliability.max() == pytest.approx(0.93, abs=0.05)
    nc = metrics.noise_ceiling(trials)
    np.testing.assert_allclose(nc, _noise_ceiling_transcription(trials), rtol=1e-10)
    assert np.all((nc > 0) & (nc <= 100))
