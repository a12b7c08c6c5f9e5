"""Noise ceilings of neural responses from repeated trials.

Trials are arrays shaped (units, stimuli, repeats); NaN marks a missing repeat, so stimuli may have been
shown a different number of times.

Unequal repeat counts. The ceiling of responses averaged over n repeats is NC = 100 snr / (snr + 1/n). When
stimulus i was averaged over n_i repeats, the noise variance left in the scored responses is noise_var / n_i,
so the matching 1/n is the mean over stimuli of 1/n_i ("mean_inverse", the default here and for generic and
planted data). The paper's reference code instead uses n = the number of repeat slots (the largest count), which
overstates n for stimuli shown fewer times and so overstates the ceiling; `unequal_repeats="slots"` reproduces
it and is what the readers of the paper's benchmarks pass. Both agree when every stimulus has the same count.

Which targets are scored is the `target_filter` of a dataset (`scored_target_mask`): "noise_ceiling" keeps
NC >= min_ceiling percent (fMRI, electrophysiology), "ceiling_root" keeps sqrt(NC/100) > 0.1 (channel x time
targets of EEG/MEG), "released" keeps every target because the release's own reliability filter was applied
when the dataset was prepared (TVSD: mean `reliab` >= 0.1).
"""

from __future__ import annotations

import numpy as np

__all__ = ["noise_ceiling", "split_half_reliability", "reliable", "ncsnr_to_ceiling", "ncsnr_from_trials",
           "scored_target_mask", "TARGET_FILTERS", "UNEQUAL_REPEATS"]

_ZSCORE_MODES = ("repeat", "unit")
UNEQUAL_REPEATS = ("mean_inverse", "slots")
TARGET_FILTERS = ("noise_ceiling", "ceiling_root", "released")


def _check_trials(trials) -> np.ndarray:
    trials = np.asarray(trials, dtype=np.float64)
    if trials.ndim != 3:
        raise ValueError(f"trials must be (units, stimuli, repeats); got shape {trials.shape}")
    units, stimuli, _ = trials.shape
    if units == 0 or stimuli < 2:
        raise ValueError(f"trials need at least 1 unit and 2 stimuli; got shape {trials.shape}")
    if np.isinf(trials).any():
        unit = int(np.argwhere(np.isinf(trials))[0, 0])
        raise ValueError(f"trials contain inf (first at unit {unit}); use NaN for missing repeats")
    finite = np.isfinite(trials)
    empty_units = np.flatnonzero(~finite.any(axis=(1, 2)))
    if empty_units.size:
        raise ValueError(f"trials of unit(s) {empty_units.tolist()} are all NaN")
    counts = finite.sum(axis=2)
    short = np.argwhere(counts < 2)
    if short.size:
        unit, stim = short[0]
        raise ValueError(
            f"noise ceiling needs at least 2 repeats per stimulus: {len(short)} (unit, stimulus) pairs have fewer, "
            f"first unit {unit} stimulus {stim} with {counts[unit, stim]} repeat(s)"
        )
    spread = np.nanmax(trials, axis=(1, 2)) - np.nanmin(trials, axis=(1, 2))
    constant = np.flatnonzero(spread == 0)
    if constant.size:
        raise ValueError(f"unit(s) {constant.tolist()} have constant responses across all trials")
    return trials


def _zscore(trials: np.ndarray, mode: str) -> np.ndarray:
    """Standardise each (unit, repeat) column across stimuli, or each unit over all its trials.

    In "repeat" mode a repeat column with fewer than 2 values or zero spread cannot be standardised on its
    own (e.g. the 10th repeat slot when only a handful of stimuli had 10 repeats); such a column is
    standardised with its unit's pooled mean and standard deviation instead.
    """
    if mode not in _ZSCORE_MODES:
        raise ValueError(f"zscore must be one of {_ZSCORE_MODES}; got {mode!r}")
    unit_mean = np.nanmean(trials, axis=(1, 2), keepdims=True)
    unit_std = np.nanstd(trials, axis=(1, 2), keepdims=True)
    if mode == "unit":
        return (trials - unit_mean) / unit_std
    count = np.isfinite(trials).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"), _quiet_nan_warnings():
        mean = np.nanmean(trials, axis=1, keepdims=True)
        std = np.nanstd(trials, axis=1, keepdims=True)
    degenerate = (count < 2) | ~(std > 0)
    mean = np.where(degenerate, unit_mean, mean)
    std = np.where(degenerate, unit_std, std)
    return (trials - mean) / std


class _quiet_nan_warnings:
    """Silence numpy's 'Mean of empty slice' warnings for all-NaN repeat columns (handled explicitly)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def ncsnr_from_trials(trials, *, zscore: str = "repeat") -> np.ndarray:
    """Noise-ceiling signal-to-noise ratio per unit (Allen et al. 2021): sqrt(signal_var) / sqrt(noise_var).

    Each (unit, repeat) is z-scored across stimuli; noise_var is the mean over stimuli of the across-repeat
    variance (ddof=1); signal_var = max(1 - noise_var, 0). Returns ``inf`` for a unit without noise.
    """
    trials = _check_trials(trials)
    z = _zscore(trials, zscore)
    noise_var = np.nanvar(z, axis=2, ddof=1).mean(axis=1)
    signal_var = np.maximum(1.0 - noise_var, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(noise_var > 0, np.sqrt(signal_var) / np.sqrt(noise_var), np.inf)


def ncsnr_to_ceiling(ncsnr, n) -> np.ndarray:
    """Noise ceiling in percent explained variance from the ncsnr and the number of averaged repeats.

    NC = 100 * snr / (snr + 1/n) with snr = ncsnr**2. ``n`` may be a number, an array broadcastable against
    ``ncsnr``, or already the effective value (see :func:`noise_ceiling` for variable repeat counts).
    """
    ncsnr = np.asarray(ncsnr, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if np.any(n <= 0):
        raise ValueError(f"number of averaged repeats must be positive; got {n}")
    snr = ncsnr**2
    with np.errstate(invalid="ignore"):
        return np.where(np.isinf(snr), 100.0, 100.0 * snr / (snr + 1.0 / n))


def noise_ceiling(trials, n_averaged=None, *, zscore: str = "repeat",
                  unequal_repeats: str = "mean_inverse") -> np.ndarray:
    """Variance-based noise ceiling (percent explained variance, 0..100) of each unit.

    Args:
      trials: (units, stimuli, repeats) responses; NaN = missing repeat. Every (unit, stimulus) needs at least
        2 repeats.
      n_averaged: number of repeats averaged in the responses that are scored. When None, it follows from the
        trials by `unequal_repeats`.
      zscore: "repeat" (default, the published method) z-scores each (unit, repeat) across stimuli;
        "unit" z-scores over all trials of a unit, for layouts where repeat slots are not sessions.
      unequal_repeats: with n_averaged None, "mean_inverse" uses mean_i(1/n_i) in place of 1/n (the noise
        variance actually left in the averaged responses), "slots" uses n = trials.shape[-1], the number of repeat
        slots, as the paper's reference code does (see the module docstring).

    Returns:
      float64 array (units,) of NC% = 100 * snr / (snr + 1/n), snr = signal_var / noise_var.
    """
    trials = _check_trials(trials)
    ncsnr = ncsnr_from_trials(trials, zscore=zscore)
    if unequal_repeats not in UNEQUAL_REPEATS:
        raise ValueError(f"unequal_repeats must be one of {UNEQUAL_REPEATS}; got {unequal_repeats!r}")
    if n_averaged is None and unequal_repeats == "slots":
        inv_n = np.full(trials.shape[0], 1.0 / trials.shape[2])
    elif n_averaged is None:
        counts = np.isfinite(trials).sum(axis=2)
        inv_n = (1.0 / counts).mean(axis=1)
    else:
        if np.any(np.asarray(n_averaged) < 1):
            raise ValueError(f"n_averaged must be >= 1; got {n_averaged}")
        inv_n = 1.0 / np.asarray(n_averaged, dtype=np.float64)
    return ncsnr_to_ceiling(ncsnr, 1.0 / inv_n)


def split_half_reliability(trials, n_splits: int = 100, seed: int = 0) -> np.ndarray:
    """Split-half reliability per unit, Spearman-Brown corrected and averaged over random splits.

    For each split the available repeats of every stimulus are shuffled and cut into two halves (sizes
    floor(n_i/2) and ceil(n_i/2)); the half means are correlated across stimuli (Pearson) and corrected
    with 2r / (1 + r). The same shuffle is used for all units whose repeats are missing in the same places.
    """
    trials = _check_trials(trials)
    if n_splits < 1:
        raise ValueError(f"n_splits must be >= 1; got {n_splits}")
    rng = np.random.default_rng(seed)
    finite = np.isfinite(trials)
    counts = finite.sum(axis=2, keepdims=True)
    values = np.where(finite, trials, 0.0)
    _, stimuli, repeats = trials.shape
    total = np.zeros(trials.shape[0])
    for _ in range(n_splits):
        keys = rng.random((stimuli, repeats))
        keys = np.where(finite, keys[None], np.inf)  # missing repeats sort last
        rank = np.argsort(np.argsort(keys, axis=2), axis=2)
        first = finite & (rank < counts // 2)
        second = finite & ~first
        mean_a = (values * first).sum(axis=2) / first.sum(axis=2)
        mean_b = (values * second).sum(axis=2) / second.sum(axis=2)
        r = _pearson_rows(mean_a, mean_b)
        total += 2 * r / (1 + r)
    return total / n_splits


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))


def reliable(nc, threshold: float = 10.0) -> np.ndarray:
    """Boolean mask of targets whose noise ceiling (percent) is at least ``threshold`` (NaN is unreliable)."""
    nc = np.asarray(nc, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return nc >= threshold


def scored_target_mask(ceiling_percent, target_filter: str, min_ceiling: float = 10.0) -> np.ndarray:
    """Boolean mask of the targets that are scored under `target_filter` (see the module docstring).

    "noise_ceiling": finite NC >= `min_ceiling` percent; "ceiling_root": finite NC with sqrt(NC/100) > 0.1;
    "released": every finite NC (the release's filter was applied when the data were prepared).
    """
    nc = np.asarray(ceiling_percent, dtype=np.float64)
    finite = np.isfinite(nc)
    if target_filter == "noise_ceiling":
        return finite & (np.nan_to_num(nc, nan=-np.inf) >= min_ceiling)
    if target_filter == "ceiling_root":
        return finite & (np.sqrt(np.clip(np.nan_to_num(nc), 0, None) / 100.0) > 0.1)
    if target_filter == "released":
        return finite
    raise ValueError(f"target_filter must be one of {TARGET_FILTERS}; got {target_filter!r}")
