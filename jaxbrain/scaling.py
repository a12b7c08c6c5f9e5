"""Scaling laws of brain alignment: power-law fits with bootstrap bands, all starts in one compiled call.

Misalignment L = 1 - S is fitted as a function of a resource X (compute, pretraining samples, parameters,
fitting samples) with the law

    shifted:  L = E + A (X + 10^lambda)^-alpha
    reduced:  L = E + A X^-alpha               (the same law without the shift term 10^lambda)

in log-sum-exp form, log L = LSE(e, a - alpha log(X + 10^lambda)) with E = exp(e), A = exp(a), by minimising
the sum of Huber(delta) losses of the log L residuals from every start of a grid. One jitted call runs a BFGS
optimiser vmapped over all starts of both forms and over all bootstrap resamples of the rows; resamples are
encoded as row counts (weights), so every problem has the same static shape.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import pathlib
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxbrain import results

# Axis name -> (divisor applied to X before fitting, whether the law has the 10^lambda shift).
AXES: dict[str, tuple[float, bool]] = {
    "compute": (1e12, True),          # C = pretraining samples x forward FLOPs per image
    "samples": (1e2, True),           # pretraining samples D
    "params": (1e2, False),           # parameter count
    "fitting_samples": (1e1, False),  # stimuli used to fit the mapping (the mapping law)
    "neural_fraction": (1.0, False),  # percent of the neural train split used for fine-tuning (Fig. 5)
}

DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "lambda": (0.0, 0.5, 1.0, 1.5, 2.0),
}
PARAMS = ("e", "a", "alpha", "lambda")
DELTA = 1e-3            # Huber delta of pretrained-model laws
DELTA_FINETUNE = 1e-5   # Huber delta of fine-tuning laws
_LN10 = math.log(10.0)


# --------------------------------------------------------------------------------------------- the law


def law(x, E, A, alpha, lam=None):
    """Misalignment L(x) = E + A (x + 10^lam)^-alpha; `lam=None` is the reduced law E + A x^-alpha."""
    x = np.asarray(x, dtype=np.float64)
    shift = 0.0 if lam is None else 10.0 ** lam
    return E + A * (x + shift) ** (-alpha)


def mapping_law(f, E, A, alpha):
    """The mapping law S(F) = E - A F^-alpha (score against the number of fitting samples F, scaled)."""
    return E - A * np.asarray(f, dtype=np.float64) ** (-alpha)


def start_grid(shift: bool, grid: Mapping[str, Sequence[float]] | None = None) -> np.ndarray:
    """Starts (n, 4) in (e, a, alpha, lambda) order; the reduced law ignores lambda (set to 0)."""
    grid = dict(DEFAULT_GRID, **(grid or {}))
    lams = grid["lambda"] if shift else (0.0,)
    return np.array(list(itertools.product(grid["e"], grid["a"], grid["alpha"], lams)), dtype=np.float64)


def bootstrap_weights(n_rows: int, n_bootstrap: int, seed: int = 42) -> np.ndarray:
    """Row counts (n_bootstrap, n_rows) of resamples drawn with replacement.

    Drawn as `default_rng(seed).integers(0, n, (n_bootstrap, n))`, the reference's resampling, so the same
    seed selects the same rows; the Huber loss of a resample equals the count-weighted loss over the rows.
    """
    idx = np.random.default_rng(seed).integers(0, n_rows, size=(n_bootstrap, n_rows))
    return np.stack([np.bincount(i, minlength=n_rows) for i in idx]).astype(np.float64)


# ----------------------------------------------------------------------------------- the jitted core


def _loss_and_grad(theta, shifted, x, logy, w, delta):
    """Weighted Huber loss of log-L residuals and its analytic gradient for one parameter vector."""
    e, a, alpha, lam = theta[0], theta[1], theta[2], theta[3]
    s = shifted * jnp.exp(lam * _LN10)
    z = x + s
    lz = jnp.log(z)
    u = a - alpha * lz
    d = u - e
    t = jnp.exp(-jnp.abs(d))
    lse = jnp.maximum(u, e) + jnp.log1p(t)
    p = jnp.where(d > 0, 1.0, t) / (1.0 + t)      # d lse / d u; 1 - p = d lse / d e
    r = lse - logy
    ar = jnp.abs(r)
    f = jnp.sum(w * jnp.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta)))
    hp = w * jnp.clip(r, -delta, delta)
    q = hp * p
    g = jnp.stack([jnp.sum(hp) - jnp.sum(q), jnp.sum(q), -jnp.sum(q * lz),
                   -alpha * _LN10 * s * jnp.sum(q / z)])
    return f, g


def _cubic_step(t0, f0, d0, t1, f1, d1):
    """Minimiser of the cubic through (t0, f0, d0) and (t1, f1, d1), kept inside the middle 80 % of the
    interval (bisection when the cubic has no usable minimiser)."""
    d1p = d0 + d1 - 3.0 * (f0 - f1) / jnp.where(t0 == t1, 1.0, t0 - t1)
    rad = d1p * d1p - d0 * d1
    d2 = jnp.sign(t1 - t0) * jnp.sqrt(jnp.maximum(rad, 0.0))
    den = d1 - d0 + 2.0 * d2
    t = t1 - (t1 - t0) * (d1 + d2 - d1p) / jnp.where(den == 0, 1.0, den)
    lo, hi = jnp.minimum(t0, t1), jnp.maximum(t0, t1)
    width = hi - lo
    usable = (rad >= 0) & (den != 0) & jnp.isfinite(t) & (t > lo + 0.1 * width) & (t < hi - 0.1 * width)
    return jnp.where(usable, t, 0.5 * (t0 + t1))


def _matvec(h, v):
    """h @ v for a 4 x 4 matrix as an elementwise product and sum (vectorises better than a batched dot)."""
    return jnp.sum(h * v[None, :], axis=1)


def _bfgs(theta0, shifted, x, logy, w, delta, gtol, max_iter):
    """BFGS with a strong-Wolfe line search (Nocedal & Wright alg. 3.5/3.6, c1 1e-4, c2 0.9, as scipy).

    Written for one problem and vmapped: each loop iteration makes exactly one loss+gradient evaluation and
    advances that problem's line search by one state transition (bracketing, zooming, or accepting the step
    and updating the inverse Hessian), so vmapped problems never wait on each other's line searches.
    `max_iter` counts evaluations. Lambda stays frozen for the reduced law (`shifted` = 0).
    """
    c1, c2, max_ls = 1e-4, 0.9, 30
    dtype = theta0.dtype
    mask = jnp.array([1.0, 1.0, 1.0, 0.0], dtype) + jnp.array([0.0, 0.0, 0.0, 1.0], dtype) * shifted
    h0 = jnp.diag(mask)
    f0, g0 = _loss_and_grad(theta0, shifted, x, logy, w, delta)
    g0 = g0 * mask
    zero = jnp.zeros((), dtype)

    def new_direction(st):
        p = -_matvec(st["h"], st["g"])
        slope = jnp.sum(st["g"] * p)
        bad = jnp.logical_not(slope < 0)
        h = jnp.where(bad, h0, st["h"])
        p = jnp.where(bad, -mask * st["g"], p)
        slope = jnp.where(bad, -jnp.sum(mask * st["g"] ** 2), slope)
        # scipy's first trial step: 1.01 x the step a quadratic model of the last decrease suggests, at most 1.
        guess = 1.01 * 2.0 * (st["f"] - st["f_old"]) / slope
        t = jnp.where(jnp.isfinite(guess) & (guess > 0), jnp.minimum(1.0, guess), 1.0)
        return dict(st, h=h, p=p, slope=slope, t=t, phase=jnp.asarray(0), n_ls=jnp.asarray(0),
                    t_prev=zero, f_prev=st["f"], d_prev=slope,
                    t_lo=zero, f_lo=st["f"], d_lo=slope, g_lo=st["g"],
                    t_hi=zero, f_hi=st["f"], d_hi=slope, fresh=jnp.asarray(False))

    def cond(st):
        return jnp.logical_and(st["it"] < max_iter, jnp.logical_not(st["done"]))

    def body(st):
        st = jax.tree.map(lambda a, b: jnp.where(st["fresh"], a, b), new_direction(st), st)
        t, p, slope, f = st["t"], st["p"], st["slope"], st["f"]
        ft, gt = _loss_and_grad(st["theta"] + t * p, shifted, x, logy, w, delta)
        gt = gt * mask
        dt = jnp.sum(gt * p)
        finite = jnp.isfinite(ft) & jnp.all(jnp.isfinite(gt))
        armijo = finite & (ft <= f + c1 * t * slope)
        curvature = jnp.abs(dt) <= -c2 * slope
        bracketing = st["phase"] == 0

        # Bracketing phase: grow the step until the minimiser is bracketed.
        b_hi = jnp.logical_not(armijo) | ((st["n_ls"] > 0) & (ft >= st["f_prev"]))
        b_accept = jnp.logical_not(b_hi) & curvature
        b_flip = jnp.logical_not(b_hi) & jnp.logical_not(curvature) & (dt >= 0)
        # Zoom phase: shrink [lo, hi] around a point meeting the strong Wolfe conditions.
        z_hi = jnp.logical_not(armijo) | (ft >= st["f_lo"])
        z_accept = jnp.logical_not(z_hi) & curvature
        z_swap = jnp.logical_not(z_hi) & jnp.logical_not(curvature) & (dt * (st["t_hi"] - st["t_lo"]) >= 0)

        accept = jnp.where(bracketing, b_accept, z_accept)
        # New bracket ends.
        lo_is_prev = bracketing & b_hi
        lo_is_t = jnp.where(bracketing, b_flip, jnp.logical_not(z_hi))
        hi_is_t = jnp.where(bracketing, b_hi, z_hi)
        hi_is_prev = bracketing & b_flip
        hi_is_lo = jnp.logical_not(bracketing) & z_swap
        t_lo = jnp.where(lo_is_prev, st["t_prev"], jnp.where(lo_is_t, t, st["t_lo"]))
        f_lo = jnp.where(lo_is_prev, st["f_prev"], jnp.where(lo_is_t, ft, st["f_lo"]))
        d_lo = jnp.where(lo_is_prev, st["d_prev"], jnp.where(lo_is_t, dt, st["d_lo"]))
        g_lo = jnp.where(lo_is_prev, st["g_lo"], jnp.where(lo_is_t, gt, st["g_lo"]))
        t_hi = jnp.where(hi_is_t, t, jnp.where(hi_is_prev, st["t_prev"], jnp.where(hi_is_lo, st["t_lo"], st["t_hi"])))
        f_hi = jnp.where(hi_is_t, ft, jnp.where(hi_is_prev, st["f_prev"], jnp.where(hi_is_lo, st["f_lo"], st["f_hi"])))
        d_hi = jnp.where(hi_is_t, dt, jnp.where(hi_is_prev, st["d_prev"], jnp.where(hi_is_lo, st["d_lo"], st["d_hi"])))
        to_zoom = bracketing & (b_hi | b_flip)
        phase = jnp.where(to_zoom, 1, st["phase"])
        # In the bracketing phase the previous point is the last Armijo-satisfying trial: keep its gradient.
        g_lo = jnp.where(bracketing & jnp.logical_not(b_hi) & jnp.logical_not(b_flip), gt, g_lo)
        next_t = jnp.where(phase == 0, jnp.minimum(2.0 * t, 1e4),
                           _cubic_step(t_lo, f_lo, d_lo, t_hi, f_hi, d_hi))
        n_ls = st["n_ls"] + 1
        # A line search that cannot finish takes its best Armijo point, or fails when that is the start.
        give_up = jnp.logical_not(accept) & ((n_ls >= max_ls) | (jnp.abs(t_hi - t_lo) * jnp.max(jnp.abs(p)) < 1e-15)
                                             & (phase == 1))
        take_lo = give_up & (t_lo > 0)
        failed = give_up & (t_lo <= 0)

        t_acc = jnp.where(accept, t, t_lo)
        f_acc = jnp.where(accept, ft, f_lo)
        g_acc = jnp.where(accept, gt, g_lo)
        moved = accept | take_lo
        s = t_acc * p
        y = g_acc - st["g"]
        sy = jnp.sum(s * y)
        rho = 1.0 / jnp.where(sy > 0, sy, 1.0)
        # (I - rho s y^T) H (I - rho y s^T) + rho s s^T, expanded (H symmetric) to avoid tiny batched matmuls.
        hy = _matvec(st["h"], y)
        h_new = (st["h"] - rho * (s[:, None] * hy[None, :] + hy[:, None] * s[None, :])
                 + (rho * rho * jnp.sum(y * hy) + rho) * s[:, None] * s[None, :])
        h = jnp.where(moved & (sy > 0), h_new, st["h"])
        # A failed search from a curved model retries along the gradient; from the gradient it stops.
        at_h0 = jnp.all(st["h"] == h0)
        h = jnp.where(failed, h0, h)
        theta = jnp.where(moved, st["theta"] + s, st["theta"])
        g = jnp.where(moved, g_acc, st["g"])
        done = (moved & (jnp.max(jnp.abs(g)) <= gtol)) | (failed & at_h0)
        return dict(st, theta=theta, f=jnp.where(moved, f_acc, f), g=g, h=h,
                    f_old=jnp.where(moved, f, st["f_old"]),
                    t=next_t, phase=phase, n_ls=n_ls,
                    t_prev=t, f_prev=ft, d_prev=dt,
                    t_lo=t_lo, f_lo=f_lo, d_lo=d_lo, g_lo=g_lo, t_hi=t_hi, f_hi=f_hi, d_hi=d_hi,
                    fresh=moved | failed, it=st["it"] + 1, done=done)

    st = dict(theta=theta0, f=f0, g=g0, h=h0, f_old=f0 + jnp.sqrt(g0 @ g0) / 2.0,
              p=jnp.zeros_like(theta0), slope=zero, t=jnp.ones((), dtype), phase=jnp.asarray(0),
              n_ls=jnp.asarray(0), t_prev=zero, f_prev=f0, d_prev=zero, t_lo=zero, f_lo=f0, d_lo=zero, g_lo=g0,
              t_hi=zero, f_hi=f0, d_hi=zero, fresh=jnp.asarray(True), it=jnp.asarray(0),
              done=jnp.max(jnp.abs(g0)) <= gtol)
    st = jax.lax.while_loop(cond, body, st)
    return st["theta"], st["f"], st["it"]


def _solve_chunks(theta0, flags, x, logy, weights, delta, gtol, max_iter, chunk):
    """BFGS for problems theta0 (R, K, 4) / flags (R, K) with weight rows (R, n), `chunk` rows at a time."""
    n_rows, k = theta0.shape[:2]
    pad = (-n_rows) % chunk
    padded = lambda a: jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)]).reshape(
        (-1, chunk) + a.shape[1:])
    solve = jax.vmap(_bfgs, in_axes=(0, 0, None, None, 0, None, None, None))

    def one_chunk(args):
        th, fl, w = args
        theta, f, it = solve(th.reshape(-1, 4), fl.reshape(-1), x, logy, jnp.repeat(w, k, axis=0), delta, gtol,
                             max_iter)
        return theta.reshape(chunk, k, 4), f.reshape(chunk, k), it.reshape(chunk, k)

    out = jax.lax.map(one_chunk, (padded(theta0), padded(flags), padded(weights)))
    return tuple(a.reshape((-1,) + a.shape[2:])[:n_rows] for a in out)


_loss_all = jax.vmap(jax.vmap(lambda th, fl, x, logy, w, d: _loss_and_grad(th, fl, x, logy, w, d)[0],
                              in_axes=(0, 0, None, None, None, None)), in_axes=(0, None, None, None, 0, None))


@functools.partial(jax.jit, static_argnames=("n_shifted", "top", "max_iter", "polish_iter", "chunk"))
def _fit_all(x, logy, weights, starts, delta, gtol, *, n_shifted: int, top: int | None, max_iter: int,
             polish_iter: int, chunk: int):
    """Every start x every weight row: params (R, S, 4), float64 losses (R, S), evaluations (R, S).

    Starts [:n_shifted] use the shifted law, the rest the reduced law. Stage 1 runs BFGS from every start in
    float32 (the bulk of the work, cheaper than float64 on CPU); stage 2 polishes in float64 the `top` best
    stage-1 solutions of each form per row (every solution when `top` is None), so the optima carry float64
    accuracy; the other starts keep their stage-1 parameters, with losses evaluated in float64.
    """
    n_rows, n_starts = weights.shape[0], starts.shape[0]
    flags = (jnp.arange(n_starts) < n_shifted).astype(x.dtype)
    f32 = jnp.float32
    th32, _, it1 = _solve_chunks(
        jnp.broadcast_to(starts.astype(f32), (n_rows, n_starts, 4)),
        jnp.broadcast_to(flags.astype(f32), (n_rows, n_starts)), x.astype(f32), logy.astype(f32),
        weights.astype(f32), delta.astype(f32), jnp.maximum(gtol, 1e-6).astype(f32), max_iter, chunk)
    theta = th32.astype(x.dtype)
    losses = _loss_all(theta, flags, x, logy, weights, delta)
    losses = jnp.where(jnp.isfinite(losses), losses, jnp.inf)

    if top is None:
        pick = jnp.broadcast_to(jnp.arange(n_starts), (n_rows, n_starts))
    else:
        groups = [(0, n_shifted), (n_shifted, n_starts)]
        picks = [lo + jax.lax.top_k(-losses[:, lo:hi], min(top, hi - lo))[1] for lo, hi in groups if hi > lo]
        pick = jnp.concatenate(picks, axis=1)
    rows = jnp.arange(n_rows)[:, None]
    polish_chunk = max(1, min(n_rows, chunk * n_starts // pick.shape[1]))
    th64, f64, it2 = _solve_chunks(theta[rows, pick], flags[pick], x, logy, weights, delta, gtol, polish_iter,
                                   polish_chunk)
    f64 = jnp.where(jnp.isfinite(f64), f64, jnp.inf)
    better = f64 <= losses[rows, pick]
    theta = theta.at[rows, pick].set(jnp.where(better[..., None], th64, theta[rows, pick]))
    losses = losses.at[rows, pick].set(jnp.minimum(f64, losses[rows, pick]))
    evals = it1.at[rows, pick].add(it2)
    return theta, losses, evals


def minimize_from_starts(x, y, starts, shifted, weights=None, *, delta=DELTA, gtol=1e-10, max_iter=150,
                         polish_iter=300, top: int | None = None, chunk=32):
    """Minimises the Huber log-loss of L = `y` from every start, for every weight row, in one jitted call.

    Args:
      x: (n,) scaled resource values (> 0 for the reduced law, > -10^lambda for the shifted one).
      y: (n,) misalignment L = 1 - S, all > 0.
      starts: (s, 4) initial (e, a, alpha, lambda).
      shifted: (s,) or scalar, 1 for the shifted law, 0 for the reduced one (lambda then frozen and unused).
      weights: (r, n) row counts; None = one row of ones (the data as given).
      top: float64 polishing of the best `top` starts of each form per row; None polishes every start.
      max_iter, polish_iter: loss+gradient evaluations per start of the float32 stage and of the float64 polish.
      gtol: stop when the largest gradient component is below this (float32 stage: at least 1e-6).
      chunk: weight rows solved together (memory ~ chunk x starts x n).
    Returns:
      numpy arrays params (r, s, 4), losses (r, s) (float64), loss+gradient evaluations (r, s).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    weights = np.ones((1, len(x))) if weights is None else np.asarray(weights, np.float64)
    starts = np.asarray(starts, np.float64).reshape(-1, 4)
    shifted = np.broadcast_to(np.asarray(shifted, np.float64), (len(starts),))
    _check_xy(x, y, reduced=bool(np.any(shifted == 0)))
    if weights.ndim != 2 or weights.shape[1] != len(x):
        raise ValueError(f"scaling fit: weights must be (resamples, {len(x)}), got {weights.shape}")
    order = np.argsort(-shifted, kind="stable")      # shifted starts first
    inverse = np.argsort(order)
    chunk = max(1, min(chunk, len(weights)))
    with jax.enable_x64(True):
        theta, f, it = _fit_all(jnp.asarray(x), jnp.asarray(np.log(y)), jnp.asarray(weights),
                                jnp.asarray(starts[order]), jnp.asarray(float(delta)), jnp.asarray(float(gtol)),
                                n_shifted=int(np.sum(shifted != 0)), top=top, max_iter=int(max_iter),
                                polish_iter=int(polish_iter), chunk=int(chunk))
        return np.asarray(theta)[:, inverse], np.asarray(f)[:, inverse], np.asarray(it)[:, inverse]


def _check_xy(x, y, reduced: bool) -> None:
    if x.ndim != 1 or y.shape != x.shape:
        raise ValueError(f"scaling fit: x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    if len(x) < 3:
        raise ValueError(f"scaling fit: need at least 3 rows, got {len(x)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("scaling fit: x and y must be finite (found NaN or inf)")
    if np.any(y <= 0):
        raise ValueError(f"scaling fit: misalignment L = 1 - S must be > 0; min is {y.min():.4g} "
                         "(a score of 1 or more cannot be fitted in log form)")
    if reduced and np.any(x <= 0):
        raise ValueError(f"scaling fit: the reduced law needs x > 0; min is {x.min():.4g}")


# ------------------------------------------------------------------------------------------ results


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """A fitted law L = E + A (x + 10^lambda)^-alpha (lambda None: reduced) on x = X / x_scale.

    `bootstrap` holds the best parameters (E, A, alpha, lambda) of the chosen form for every resample
    (lambda NaN for the reduced form); `bootstrap_losses` their losses.
    """

    form: str                 # "shifted" or "reduced" (= without the 10^lambda shift)
    E: float
    A: float
    alpha: float
    lam: float | None
    loss: float
    x_scale: float
    delta: float
    losses_by_form: dict
    bootstrap: np.ndarray     # (B, 4)
    bootstrap_losses: np.ndarray
    n_rows: int

    def misalignment(self, X):
        """L at raw (unscaled) X."""
        return law(np.asarray(X, np.float64) / self.x_scale, self.E, self.A, self.alpha, self.lam)

    def score(self, X):
        """S = 1 - L at raw (unscaled) X."""
        return 1.0 - self.misalignment(X)

    def band(self, X, level: float = 95.0):
        """Percentile band (lo, hi) of S at raw X over the bootstrap fits."""
        xs = np.asarray(X, np.float64) / self.x_scale
        b = self.bootstrap
        shift = np.where(np.isnan(b[:, 3]), 0.0, 10.0 ** np.nan_to_num(b[:, 3]))
        curves = 1.0 - (b[:, :1] + b[:, 1:2] * (xs[None, :] + shift[:, None]) ** (-b[:, 2:3]))
        tail = (100.0 - level) / 2.0
        with np.errstate(invalid="ignore"):
            return np.nanpercentile(curves, tail, axis=0), np.nanpercentile(curves, 100.0 - tail, axis=0)

    def intervals(self, level: float = 95.0) -> dict[str, tuple[float, float]]:
        """Percentile intervals of E, A, alpha (and lambda for the shifted form) over the resamples."""
        tail = (100.0 - level) / 2.0
        names = ("E", "A", "alpha", "lambda") if self.form == "shifted" else ("E", "A", "alpha")
        return {n: (float(np.nanpercentile(self.bootstrap[:, i], tail)),
                    float(np.nanpercentile(self.bootstrap[:, i], 100 - tail))) for i, n in enumerate(names)}

    def summary(self) -> dict:
        """Flat dict of the point estimates, losses and 95 % intervals (for CSV/JSON)."""
        out = dict(form=self.form, E=self.E, A=self.A, alpha=self.alpha, lam=self.lam, loss=self.loss,
                   x_scale=self.x_scale, delta=self.delta, n_rows=self.n_rows, n_bootstrap=len(self.bootstrap),
                   **{f"loss_{k}": v for k, v in self.losses_by_form.items()})
        for name, (lo, hi) in self.intervals().items():
            out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
        return out


def _natural(theta: np.ndarray, shifted: bool) -> np.ndarray:
    """(e, a, alpha, lambda) -> (E, A, alpha, lambda or NaN)."""
    return np.stack([np.exp(theta[..., 0]), np.exp(theta[..., 1]), theta[..., 2],
                     theta[..., 3] if shifted else np.full(theta.shape[:-1], np.nan)], axis=-1)


FORMS = ("auto", "shifted", "reduced")


def fit_power_law(X, score, *, shift: bool = True, form: str = "auto", x_scale: float = 1.0, delta: float = DELTA,
                  n_bootstrap: int = 1000, seed: int = 42, grid: Mapping[str, Sequence[float]] | None = None,
                  gtol: float = 1e-10, max_iter: int = 150, polish_iter: int = 300, top: int | None = 4,
                  chunk: int = 32) -> PowerLawFit:
    """Fits misalignment 1 - `score` against resource `X` (raw units; divided by `x_scale`).

    `form="auto"` follows the paper's text (Section 3): with `shift=True` both the shifted law and the reduced
    law (no 10^lambda term) are fitted and the reduced form is reported when its loss on the rows is no higher
    than the shifted form's; with `shift=False` only the reduced law is fitted. `form="shifted"` or `"reduced"`
    fixes the form, as the reference configs do. Every start of the form's grid (5 x 6 x 5 x 5 = 750 and
    5 x 6 x 5 = 150 starts by default) is fitted on the rows and on `n_bootstrap` resamples of the rows (seed
    `seed`), all in one compiled call; the bootstrap fits of the reported form give the bands. The optimiser
    (see `minimize_from_starts`) runs BFGS from every start in float32 and polishes the best `top` starts of each
    form per resample in float64 (`top=None` polishes every start).
    """
    if form not in FORMS:
        raise ValueError(f"scaling fit: form must be one of {FORMS}, got {form!r}")
    X = np.asarray(X, np.float64)
    y = 1.0 - np.asarray(score, np.float64)
    x = X / float(x_scale)
    fitted = {"auto": ("shifted", "reduced") if shift else ("reduced",), "shifted": ("shifted",),
              "reduced": ("reduced",)}[form]
    parts = [(start_grid(name == "shifted", grid), float(name == "shifted")) for name in fitted]
    starts = np.concatenate([p[0] for p in parts])
    flags = np.concatenate([np.full(len(p[0]), p[1]) for p in parts])
    weights = np.concatenate([np.ones((1, len(x))), bootstrap_weights(len(x), n_bootstrap, seed)])
    theta, losses, _ = minimize_from_starts(x, y, starts, flags, weights, delta=delta, gtol=gtol,
                                            max_iter=max_iter, polish_iter=polish_iter, top=top, chunk=chunk)
    losses = np.where(np.isfinite(losses), losses, np.inf)

    best = {}
    for name, flag in (("shifted", 1.0), ("reduced", 0.0)):
        cols = np.flatnonzero(flags == flag)
        if len(cols) == 0:
            continue
        pick = cols[np.argmin(losses[:, cols], axis=1)]
        rows = np.arange(len(weights))
        best[name] = (_natural(theta[rows, pick], name == "shifted"), losses[rows, pick])
    losses_by_form = {name: float(v[1][0]) for name, v in best.items()}
    form = min(losses_by_form, key=lambda name: (losses_by_form[name], name != "reduced"))
    params, form_losses = best[form]
    E, A, alpha, lam = params[0]
    return PowerLawFit(form=form, E=float(E), A=float(A), alpha=float(alpha),
                       lam=None if form == "reduced" else float(lam), loss=float(form_losses[0]),
                       x_scale=float(x_scale), delta=float(delta), losses_by_form=losses_by_form,
                       bootstrap=params[1:], bootstrap_losses=form_losses[1:], n_rows=len(x))


def fit_axis(X, score, axis: str, **kwargs) -> PowerLawFit:
    """`fit_power_law` with the scale and shift of a named axis (see AXES: compute, samples, params,
    fitting_samples); `form=` fixes the form."""
    if axis not in AXES:
        raise ValueError(f"unknown scaling axis {axis!r}; known: {', '.join(AXES)}")
    scale, shift = AXES[axis]
    return fit_power_law(X, score, shift=shift, x_scale=scale, **kwargs)


def fit_mapping_law(fitting_samples, score, **kwargs) -> PowerLawFit:
    """The mapping law S(F) = E_S - A F^-alpha, fitted as the reduced law on L = 1 - S with F / 1e1.

    E_S = 1 - fit.E; `fit.score(F)` evaluates S(F) directly.
    """
    kwargs.setdefault("x_scale", AXES["fitting_samples"][0])
    return fit_power_law(fitting_samples, score, shift=False, **kwargs)


# --------------------------------------------------------------------------------------- aggregation


def aggregate_scores(table: pd.DataFrame, level: str = "model", *, stage: str = "test",
                     metric: str = "r_nc") -> pd.DataFrame:
    """Hierarchical means of results.csv rows: subjects -> ROI -> benchmark -> model.

    Rows of `stage`/`metric` are averaged over subjects per (model, benchmark, roi) (cross-subject rows,
    subject "all", are used alone when present so they are not counted twice), then over ROIs per
    (model, benchmark), then over benchmarks per model. `level` picks where to stop: "roi", "benchmark" or
    "model". Returns columns model[, benchmark[, roi]], score.
    """
    levels = {"roi": ["model", "benchmark", "roi"], "benchmark": ["model", "benchmark"], "model": ["model"]}
    if level not in levels:
        raise ValueError(f"aggregate_scores: unknown level {level!r}; known: {', '.join(levels)}")
    missing = {"model", "benchmark", "subject", "roi", "stage", "metric", "value"} - set(table.columns)
    if missing:
        raise ValueError(f"aggregate_scores: results table lacks columns {sorted(missing)}")
    rows = table[(table["stage"] == stage) & (table["metric"] == metric)]
    if rows.empty:
        raise ValueError(f"aggregate_scores: no rows with stage={stage!r} and metric={metric!r}")
    out = results.cross_subject_mean(rows, ["model", "benchmark", "roi"])
    if level in ("benchmark", "model"):
        out = out.groupby(["model", "benchmark"], as_index=False)["value"].mean()
    if level == "model":
        out = out.groupby(["model"], as_index=False)["value"].mean()
    return out.rename(columns={"value": "score"})


# ------------------------------------------------------------------------------ fits over a results table

AVERAGE = "average"  # the group of model-level means over benchmarks


def scaling_points(table: pd.DataFrame, inventory: pd.DataFrame, *, stage: str = "test",
                   metric: str = "r_nc") -> pd.DataFrame:
    """Rows (model, group, score, params, flops, samples, compute): one per model and benchmark, plus the
    model-level mean over benchmarks as group "average"."""
    by_bench = aggregate_scores(table, "benchmark", stage=stage, metric=metric).rename(columns={"benchmark": "group"})
    by_model = aggregate_scores(table, "model", stage=stage, metric=metric).assign(group=AVERAGE)
    points = pd.concat([by_bench, by_model], ignore_index=True)
    return points.merge(inventory, on="model", how="left")


def fit_groups(points: pd.DataFrame, axis: str, *, min_models: int = 4, **fit_kwargs) -> dict[str, PowerLawFit]:
    """group -> fit for every group with at least `min_models` models with a positive value of `axis`."""
    fits = {}
    for group, rows in points.groupby("group", sort=False):
        rows = rows[np.isfinite(rows[axis].astype(float)) & (rows[axis].astype(float) > 0)]
        if len(rows) >= min_models:
            fits[group] = fit_axis(rows[axis].to_numpy(float), rows["score"].to_numpy(float), axis, **fit_kwargs)
    return fits


def bands_frame(fits: Mapping[str, PowerLawFit], points: pd.DataFrame, axis: str, n: int = 100) -> pd.DataFrame:
    """Curve and 95 % band of each group's fit on a log grid over the group's range of `axis`."""
    frames = []
    for group, fit in fits.items():
        x = points.loc[points["group"] == group, axis].astype(float)
        grid = np.logspace(np.log10(x.min()), np.log10(x.max()), n)
        lo, hi = fit.band(grid)
        frames.append(pd.DataFrame(dict(axis=axis, group=group, x=grid, score=fit.score(grid), lo=lo, hi=hi)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["axis", "group", "x", "score", "lo", "hi"])


@dataclasses.dataclass
class ScalingFits:
    """The fits of every axis over one results table: points, fits[axis][group], and their tables.

    `points` are the rows the laws were fitted on; `held_out` the rows of held-out models (e.g. timm), whose
    residuals against the fitted curves `holdout_residuals()` reports.
    """

    points: pd.DataFrame
    fits: dict[str, dict[str, PowerLawFit]]
    held_out: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)

    def holdout_residuals(self) -> pd.DataFrame:
        """score - fitted score of every held-out model with a value of each fitted axis and group."""
        rows = []
        for axis, by_group in self.fits.items():
            for group, fit in by_group.items():
                held = self.held_out[self.held_out["group"] == group] if len(self.held_out) else self.held_out
                for _, row in held.iterrows():
                    x = float(row[axis])
                    if np.isfinite(x) and x > 0:
                        predicted = float(fit.score(np.array([x]))[0])
                        rows.append(dict(axis=axis, group=group, model=row["model"], x=x, score=row["score"],
                                         fitted=predicted, residual=row["score"] - predicted))
        return pd.DataFrame(rows, columns=["axis", "group", "model", "x", "score", "fitted", "residual"])

    def fits_frame(self) -> pd.DataFrame:
        return pd.DataFrame([dict(axis=axis, group=group, **fit.summary())
                             for axis, by_group in self.fits.items() for group, fit in by_group.items()])

    def bands(self) -> pd.DataFrame:
        return pd.concat([bands_frame(by_group, self.points, axis) for axis, by_group in self.fits.items()],
                         ignore_index=True)

    def summary(self) -> dict:
        return {f"{axis}/{group}": {k: fit.summary()[k] for k in ("form", "E", "A", "alpha", "lam", "loss")}
                for axis, by_group in self.fits.items() for group, fit in by_group.items()}


EXCLUDED_OBJECTIVES = ("SSL", "adversarial")  # the paper fits its laws without these
HELD_OUT_SOURCES = ("timm",)                  # the paper's external validation set


def fit_all(table: pd.DataFrame, inventory: pd.DataFrame, *, axes=("compute",), min_models: int = 4,
            exclude_objectives=EXCLUDED_OBJECTIVES, holdout_sources=HELD_OUT_SOURCES, stage: str = "test",
            metric: str = "r_nc", **fit_kwargs) -> ScalingFits:
    """Fits every axis for every benchmark and for the benchmark average, as the paper does (Section 3): models
    of `exclude_objectives` are left out, models of `holdout_sources` are held out for validation."""
    unknown = [axis for axis in axes if axis not in AXES]
    if unknown:
        raise ValueError(f"fit_scaling: unknown axis {unknown[0]!r}; known: {', '.join(AXES)}")
    points = scaling_points(table, inventory, stage=stage, metric=metric)
    if "control" in points:  # fine-tuning sweeps: the permutation controls are not points of the law
        points = points[points["control"].fillna("none").astype(str).isin(["none", ""])]
    source = points.get("source", pd.Series("", index=points.index)).fillna("").astype(str)
    objective = points.get("objective", pd.Series("", index=points.index)).fillna("").astype(str)
    held = source.isin(holdout_sources)
    fitted = points[~held & ~objective.isin(exclude_objectives)].reset_index(drop=True)
    return ScalingFits(fitted, {axis: fit_groups(fitted, axis, min_models=min_models, **fit_kwargs)
                                for axis in axes}, points[held].reset_index(drop=True))


def write_fits(result: ScalingFits, workdir) -> dict[str, str]:
    """fits.csv, bands.csv, points.csv and scaling_<axis>.png in `workdir`; returns axis -> plot path."""
    from jaxbrain import plots

    workdir = pathlib.Path(workdir)
    results.write_csv(workdir / "fits.csv", result.fits_frame())
    results.write_csv(workdir / "bands.csv", result.bands())
    results.write_csv(workdir / "points.csv", result.points)
    results.write_csv(workdir / "holdout.csv", result.holdout_residuals())
    paths = {}
    for axis, fits in result.fits.items():
        if not fits:
            continue
        usable = result.points[np.isfinite(result.points[axis].astype(float)) & (result.points[axis].astype(float) > 0)]
        shown = usable.assign(x=usable[axis].astype(float))[["x", "score", "group"]]
        paths[axis] = str(plots.scaling_curves(shown, fits, workdir / f"scaling_{axis}.png",
                                               xlabel=plots.AXIS_LABELS[axis], title=f"Scaling: {axis}"))
    return paths
