"""Bootstrap intervals of test scores and paired comparisons between models or layers.

A test score is a mean over targets of Pearson r (raw, or normalised by the ceiling) between predicted and
observed responses over the test stimuli. Its sampling distribution is estimated by resampling the test stimuli
with replacement: a resample is a vector of counts (how often each stimulus is drawn), and Pearson r on the
resampled rows is the count-weighted Pearson r, so every replicate is computed from count-weighted sums without
copying rows. The counts are drawn from a seed and the benchmark and subject names only, so every model and
layer scored on the same stimuli sees the same resamples; the difference of two models' replicates is then a
paired bootstrap of their difference (common random numbers). Cross-subject scores resample subjects too
(hierarchical bootstrap): replicate b averages the replicates b of a resample of the subjects. Intervals are
percentile intervals (95 % by default); docs/method.md (Uncertainty) states the choices.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

N_BOOTSTRAP = 1000
LEVEL = 95.0


def _generator(seed: int, *names: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), *(zlib.crc32(name.encode()) for name in names)])


def resample_counts(n: int, n_bootstrap: int, seed: int, *names: str) -> np.ndarray:
    """(n_bootstrap, n) counts of each of n items in resamples drawn with replacement; same names, same draws."""
    if n_bootstrap < 1 or n < 1:
        return np.zeros((0, n), np.float32)
    draws = _generator(seed, *names).integers(0, n, size=(n_bootstrap, n))
    counts = np.zeros((n_bootstrap, n), np.float32)
    np.add.at(counts, (np.arange(n_bootstrap)[:, None], draws), 1.0)
    return counts


@jax.jit
def _weighted_r(counts, y, p):
    """Count-weighted Pearson r per target for every resample: (B, n) counts, (n, T) y and p -> (B, T)."""
    y, p = y - y.mean(axis=0), p - p.mean(axis=0)  # centring first keeps the float32 sums well conditioned
    hi = jax.lax.Precision.HIGHEST
    w = counts / counts.sum(axis=1, keepdims=True)
    my, mp = jnp.matmul(w, y, precision=hi), jnp.matmul(w, p, precision=hi)
    cov = jnp.matmul(w, y * p, precision=hi) - my * mp
    vy = jnp.matmul(w, y * y, precision=hi) - my * my
    vp = jnp.matmul(w, p * p, precision=hi) - mp * mp
    return cov / jnp.sqrt(vy * vp)


def bootstrap_scores(y: np.ndarray, predictions: np.ndarray, norm: np.ndarray, counts: np.ndarray,
                     target_chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Replicates (B,) of the mean r and of the mean r / `norm` over targets, for resamples `counts` (B, n).

    Targets whose r is undefined in a resample (constant there) are left out of that replicate's mean.
    """
    n_boot = counts.shape[0]
    sums = np.zeros((2, n_boot))
    valid = np.zeros(n_boot)
    for lo in range(0, y.shape[1], target_chunk):
        cols = slice(lo, lo + target_chunk)
        r = np.asarray(_weighted_r(jnp.asarray(counts), jnp.asarray(y[:, cols], jnp.float32),
                                   jnp.asarray(predictions[:, cols], jnp.float32)), np.float64)
        finite = np.isfinite(r)
        sums[0] += np.where(finite, r, 0).sum(axis=1)
        sums[1] += np.where(finite, r / norm[cols], 0).sum(axis=1)
        valid += finite.sum(axis=1)
    with np.errstate(invalid="ignore"):
        return sums[0] / valid, sums[1] / valid


def across_subjects(replicates: Sequence[np.ndarray], seed: int, *names: str) -> np.ndarray:
    """Hierarchical replicates (B,) of a cross-subject mean: replicate b averages replicate b of a resample of
    the subjects (one subject: its own replicates)."""
    stacked = np.stack([np.asarray(r, np.float64) for r in replicates])
    n_subjects, n_boot = stacked.shape
    if n_subjects == 1:
        return stacked[0]
    pick = _generator(seed, "subjects", *names).integers(0, n_subjects, size=(n_boot, n_subjects))
    return stacked[pick, np.arange(n_boot)[:, None]].mean(axis=1)


def interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates; NaN when there are none."""
    values = np.asarray(replicates, np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (100.0 - level) / 2.0
    return float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))


def paired_difference(point_a: float, point_b: float, replicates_a: np.ndarray, replicates_b: np.ndarray,
                      level: float = LEVEL) -> dict[str, float]:
    """a - b with the percentile interval of the paired replicates and the share of replicates where b >= a."""
    diff = np.asarray(replicates_a, np.float64) - np.asarray(replicates_b, np.float64)
    lo, hi = interval(diff, level)
    finite = diff[np.isfinite(diff)]
    return {"difference": float(point_a - point_b), "ci_low": lo, "ci_high": hi,
            "p_not_greater": float(np.mean(finite <= 0)) if finite.size else float("nan")}


def compare(a: Mapping[tuple[str, str], Any], b: Mapping[tuple[str, str], Any], seed: int, benchmark: str,
            level: float = LEVEL) -> list[dict]:
    """Paired differences a - b of test r_NC per (subject, ROI) and across subjects per ROI.

    `a` and `b` map (subject, roi) to `scoring.LayerScore`s of two models or two layers on the same benchmark
    (their bootstrap replicates share resamples); keys present in both are compared.
    """
    keys = [key for key in a if key in b]
    rows = []
    for subject, roi in keys:
        sa, sb = a[(subject, roi)], b[(subject, roi)]
        rows.append(dict(benchmark=benchmark, subject=subject, roi=roi, a=float(np.nanmean(sa.test_r_nc)),
                         b=float(np.nanmean(sb.test_r_nc)),
                         **paired_difference(np.nanmean(sa.test_r_nc), np.nanmean(sb.test_r_nc),
                                             sa.test_bootstrap_r_nc, sb.test_bootstrap_r_nc, level)))
    for roi in dict.fromkeys(r for _, r in keys):
        subjects = [s for s, r in keys if r == roi]
        point = {side: float(np.mean([np.nanmean(m[(s, roi)].test_r_nc) for s in subjects])) for side, m in
                 (("a", a), ("b", b))}
        reps = {side: across_subjects([m[(s, roi)].test_bootstrap_r_nc for s in subjects], seed, benchmark, roi)
                for side, m in (("a", a), ("b", b))}
        rows.append(dict(benchmark=benchmark, subject="all", roi=roi, **point,
                         **paired_difference(point["a"], point["b"], reps["a"], reps["b"], level)))
    return rows
