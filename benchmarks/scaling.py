"""Scaling-law fits: jaxbrain's one compiled call against the reference procedure (scipy BFGS, serially).

  python benchmarks/scaling.py [--rows 60] [--bootstraps 1000] [--ref-resamples 2]

Both fit the shifted law L = E + A (X + 10^lambda)^-alpha (log-sum-exp form, Huber delta 1e-3 on log L) from all
750 starts of the paper's grid to the rows and to `--bootstraps` resamples of the rows (seed 42). The reference
way, as the published fitting code does it, calls scipy.optimize.minimize(method="BFGS") with finite-difference
gradients once per start and resample, serially; it takes hours at full size, so it is timed on the first
`--ref-resamples` fits and its time is scaled linearly to all fits (printed as such). Losses are compared on
the fits both ran.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import scipy.optimize

from jaxbrain import scaling


def reference_loss(params, x, y, delta):
    e, a, lam, alpha = params          # the reference's parameter order
    yhat = np.log(np.exp(a - alpha * np.log(x + 10 ** lam)) + np.exp(e))
    r = yhat - np.log(y)
    return np.sum(np.where(np.abs(r) <= delta, 0.5 * r ** 2, delta * (np.abs(r) - 0.5 * delta)))


def reference_fit(x, y, starts, delta):
    """Best loss and per-start losses of scipy BFGS from every start (serial, as the reference does)."""
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in starts:
            init = np.array([s[0], s[1], s[3], s[2]])     # (e, a, alpha, lambda) -> (e, a, lambda, alpha)
            losses.append(scipy.optimize.minimize(reference_loss, init, args=(x, y, delta), method="BFGS").fun)
    losses = np.where(np.isfinite(losses), losses, np.inf)
    return losses.min(), losses


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60, help="models in the aggregated table")
    parser.add_argument("--bootstraps", type=int, default=1000)
    parser.add_argument("--ref-resamples", type=int, default=2, help="fits the reference is timed on")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    X = 10 ** rng.uniform(13, 19, args.rows)                       # compute C in FLOPs
    x = X / scaling.AXES["compute"][0]
    y = scaling.law(x, 0.42, 0.9, 0.22, 1.5) * np.exp(rng.normal(0, 0.01, args.rows))
    starts = scaling.start_grid(True)
    weights = np.concatenate([np.ones((1, args.rows)), scaling.bootstrap_weights(args.rows, args.bootstraps,
                                                                                   args.seed)])
    n_fits = len(weights)
    print(f"rows {args.rows}, starts {len(starts)}, fits {n_fits} (data + {args.bootstraps} resamples), "
          f"problems {n_fits * len(starts):,}")

    t0 = time.perf_counter()
    _, jax_losses, evals = scaling.minimize_from_starts(x, y, starts, 1.0, weights, top=4, chunk=32)
    jax_time = time.perf_counter() - t0
    jax_best = jax_losses.min(axis=1)
    print(f"jaxbrain: {jax_time:.1f} s wall for all {n_fits} fits, one compiled call including compilation "
          f"(mean {evals.mean():.0f} loss+gradient evaluations per start)")

    n_ref = min(args.ref_resamples, n_fits)
    ref_best, ref_all = [], []
    t0 = time.perf_counter()
    for r in range(n_ref):
        rows = np.repeat(np.arange(args.rows), weights[r].astype(int))    # the resample as rows
        best, per_start = reference_fit(x[rows], y[rows], starts, 1e-3)
        ref_best.append(best)
        ref_all.append(per_start)
    ref_sub = time.perf_counter() - t0
    ref_time = ref_sub / n_ref * n_fits
    print(f"reference (scipy BFGS, serial): {ref_sub:.1f} s measured on {n_ref} of {n_fits} fits; "
          f"scaled linearly to {n_fits} fits: {ref_time:.0f} s ({ref_time / 3600:.2f} h)")
    print(f"speed-up: {ref_time / jax_time:.0f}x")
    diff = jax_best[:n_ref] - np.array(ref_best)
    rel = diff / np.array(ref_best)
    print(f"best loss, jaxbrain - reference, on the {n_ref} common fits: {', '.join(f'{d:+.3e}' for d in diff)} "
          f"(relative {', '.join(f'{v:+.2e}' for v in rel)}; negative = jaxbrain lower)")
    ref_all = np.array(ref_all)
    tol = ref_all * 1e-7 + 1e-12
    print(f"per start, as fitted (float32 stage, best 4 starts per fit polished in float64): jaxbrain equal or "
          f"lower on {np.mean(jax_losses[:n_ref] <= ref_all + tol) * 100:.1f} % of {ref_all.size} (start, fit) pairs")
    _, polished, _ = scaling.minimize_from_starts(x, y, starts, 1.0, weights[:n_ref], top=None)
    print(f"per start, every start polished in float64 (top=None): jaxbrain equal or lower on "
          f"{np.mean(polished <= ref_all + tol) * 100:.1f} %, and lower by more than 1e-6 relative on "
          f"{np.mean(polished < ref_all * (1 - 1e-6)) * 100:.1f} %, reference lower by more than 1e-6 relative on "
          f"{np.mean(ref_all < polished * (1 - 1e-6)) * 100:.1f} %")


if __name__ == "__main__":
    main()
