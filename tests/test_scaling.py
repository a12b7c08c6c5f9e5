"""Scaling-law fits: parameter recovery, parity with scipy BFGS from the same starts, bootstrap bands, aggregation."""

import warnings

import jax
import numpy as np
import pandas as pd
import pytest
import scipy.optimize

from jaxbrain import scaling

# A small start grid keeps the compile and the run short; the production grid has the same structure.
GRID = {"e": (-1.0, 0.0), "a": (0.0, 5.0), "alpha": (0.0, 1.0), "lambda": (0.0, 1.0)}
TRUE = dict(E=0.40, A=0.50, alpha=0.35, lam=0.8)


def reference_loss(params, x, y, delta, shift):
    """The reference's objective, transcribed in float64 numpy: sum Huber(log-sum-exp law - log L)."""
    e, a, alpha = params[:3]
    z = x + (10.0 ** params[3] if shift else 0.0)
    r = np.log(np.exp(a - alpha * np.log(z)) + np.exp(e)) - np.log(y)
    return np.sum(np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)))


def scipy_best(starts, x, y, delta, shift):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [scipy.optimize.minimize(reference_loss, s, args=(x, y, delta, shift), method="BFGS").fun
                for s in starts]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    X = 10 ** rng.uniform(12, 18, 30)          # compute in FLOPs; fitted as X / 1e12
    L = scaling.law(X / 1e12, TRUE["E"], TRUE["A"], TRUE["alpha"], TRUE["lam"]) * np.exp(rng.normal(0, 0.005, 30))
    return X, 1.0 - L


@pytest.fixture(scope="module")
def fit(data):
    X, S = data
    return scaling.fit_power_law(X, S, x_scale=1e12, n_bootstrap=15, grid=GRID)


def test_recovers_known_parameters(fit):
    assert fit.form == "shifted"
    assert fit.E == pytest.approx(TRUE["E"], abs=0.01)
    assert fit.alpha == pytest.approx(TRUE["alpha"], abs=0.05)
    assert fit.A == pytest.approx(TRUE["A"], rel=0.25)
    assert fit.lam == pytest.approx(TRUE["lam"], abs=0.2)
    X = np.logspace(12, 18, 50)
    truth = 1.0 - scaling.law(X / 1e12, TRUE["E"], TRUE["A"], TRUE["alpha"], TRUE["lam"])
    np.testing.assert_allclose(fit.score(X), truth, atol=0.005)


def test_best_loss_not_above_scipy_bfgs_from_same_starts(fit, data):
    X, S = data
    x, y = X / 1e12, 1.0 - S
    shifted = scipy_best(scaling.start_grid(True, GRID), x, y, 1e-3, True)
    reduced = scipy_best(scaling.start_grid(False, GRID), x, y, 1e-3, False)
    assert fit.losses_by_form["shifted"] <= min(shifted) * (1 + 1e-9) + 1e-15
    assert fit.losses_by_form["reduced"] <= min(reduced) * (1 + 1e-9) + 1e-15


def test_band_brackets_the_fit_and_intervals_are_ordered(fit):
    X = np.logspace(12, 18, 20)
    lo, hi = fit.band(X)
    assert fit.bootstrap.shape == (15, 4) and np.all(np.isfinite(fit.bootstrap_losses))
    assert np.all(lo <= hi)
    inside = (fit.score(X) >= lo - 1e-9) & (fit.score(X) <= hi + 1e-9)
    assert inside.mean() >= 0.9
    for name, (a, b) in fit.intervals().items():
        assert a <= b, name
    assert fit.intervals()["E"][0] <= TRUE["E"] + 0.01 and fit.intervals()["E"][1] >= TRUE["E"] - 0.01


def test_each_start_and_resample_matches_or_beats_scipy():
    rng = np.random.default_rng(3)
    x = 10 ** rng.uniform(0, 5, 25)
    y = scaling.law(x, 0.5, 0.8, 0.4, 1.2) * np.exp(rng.normal(0, 0.01, 25))
    starts = np.array([[-1.0, 0.0, 0.5, 0.0], [0.0, 5.0, 1.0, 1.0], [0.5, 10.0, 0.0, 2.0], [-0.5, 0.0, 0.5, 0.0]])
    shifted = np.array([1.0, 1.0, 1.0, 0.0])
    weights = np.concatenate([np.ones((1, 25)), scaling.bootstrap_weights(25, 1, seed=42)])
    _, losses, _ = scaling.minimize_from_starts(x, y, starts, shifted, weights, top=None)
    # The resample as the reference draws it: rows picked with replacement by default_rng(42).
    rows = np.random.default_rng(42).integers(0, 25, size=(1, 25))[0]
    for r, (xr, yr) in enumerate([(x, y), (x[rows], y[rows])]):
        for s, start in enumerate(starts):
            ref = scipy_best([start], xr, yr, 1e-3, bool(shifted[s]))[0]
            assert losses[r, s] <= ref * (1 + 1e-7) + 1e-12, (r, s, losses[r, s], ref)


def test_analytic_gradient_matches_autodiff():
    rng = np.random.default_rng(0)
    x, logy, w = 10 ** rng.uniform(0, 4, 12), np.log(rng.uniform(0.3, 0.7, 12)), rng.integers(0, 3, 12) * 1.0
    theta = np.array([-0.7, 1.3, 0.4, 0.9])

    def plain(t):
        z = x + 10.0 ** t[3]
        r = jax.numpy.logaddexp(t[0], t[1] - t[2] * jax.numpy.log(z)) - logy
        return jax.numpy.sum(w * jax.numpy.where(abs(r) <= 0.05, 0.5 * r * r, 0.05 * (abs(r) - 0.025)))

    with jax.enable_x64(True):
        f, g = scaling._loss_and_grad(jax.numpy.asarray(theta), 1.0, x, logy, w, 0.05)
        np.testing.assert_allclose(float(f), float(plain(theta)), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(g), np.asarray(jax.grad(plain)(jax.numpy.asarray(theta))), rtol=1e-9)


def test_reduced_form_chosen_when_it_fits_better():
    rng = np.random.default_rng(5)
    F = np.array([10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120.0])
    S = scaling.mapping_law(F / 10.0, 0.7, 0.5, 0.6) + rng.normal(0, 0.002, F.size)
    fit = scaling.fit_mapping_law(F, S, n_bootstrap=4, grid=GRID)
    assert fit.form == "reduced" and fit.lam is None
    assert 1.0 - fit.E == pytest.approx(0.7, abs=0.02)
    assert fit.alpha == pytest.approx(0.6, abs=0.1)
    np.testing.assert_allclose(fit.score(F), scaling.mapping_law(F / 10.0, 0.7, 0.5, 0.6), atol=0.01)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="must be > 0"):
        scaling.fit_power_law([1.0, 2.0, 3.0], [0.2, 1.0, 0.5], n_bootstrap=2)
    with pytest.raises(ValueError, match="unknown scaling axis"):
        scaling.fit_axis([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], "tokens")


def test_hierarchical_aggregation():
    rows = []
    # model m1: benchmark b1 has ROIs V1 (subjects 0.2, 0.4) and V4 (0.6); benchmark b2 ROI IT (0.9).
    for bench, roi, subject, value in [("b1", "V1", "s1", 0.2), ("b1", "V1", "s2", 0.4), ("b1", "V4", "s1", 0.6),
                                       ("b2", "IT", "s1", 0.9)]:
        rows.append(dict(model="m1", benchmark=bench, subject=subject, roi=roi, stage="test", metric="r_nc",
                         value=value))
    rows.append(dict(model="m1", benchmark="b2", subject="all", roi="IT", stage="test", metric="r_nc", value=0.8))
    rows.append(dict(model="m1", benchmark="b1", subject="s1", roi="V1", stage="cv", metric="r_nc", value=9.0))
    table = pd.DataFrame(rows)
    by_roi = scaling.aggregate_scores(table, "roi").set_index(["benchmark", "roi"])["score"]
    assert by_roi[("b1", "V1")] == pytest.approx(0.3)
    assert by_roi[("b2", "IT")] == pytest.approx(0.8)          # the cross-subject row replaces the subjects
    by_bench = scaling.aggregate_scores(table, "benchmark").set_index("benchmark")["score"]
    assert by_bench["b1"] == pytest.approx((0.3 + 0.6) / 2)
    model = scaling.aggregate_scores(table, "model")["score"].iloc[0]
    assert model == pytest.approx(((0.3 + 0.6) / 2 + 0.8) / 2)


def test_polishing_the_best_four_starts_finds_the_optimum_of_polishing_all(data):
    """The reference refits (polishes) every start; jaxbrain polishes the best 4 per form and resample. On planted
    curves of both forms the optimum is the same."""
    X, S = data
    rng = np.random.default_rng(5)
    X2 = 10 ** rng.uniform(2, 6, 20)
    S2 = 1.0 - scaling.law(X2 / 1e2, 0.3, 0.6, 0.5) * np.exp(rng.normal(0, 0.005, 20))
    for x, s, kw in ((X, S, dict(x_scale=1e12)), (X2, S2, dict(x_scale=1e2, shift=False))):
        best4 = scaling.fit_power_law(x, s, n_bootstrap=6, grid=GRID, top=4, **kw)
        every = scaling.fit_power_law(x, s, n_bootstrap=6, grid=GRID, top=None, **kw)
        assert best4.form == every.form
        assert best4.loss == pytest.approx(every.loss, rel=1e-9, abs=1e-14)
        np.testing.assert_allclose(best4.bootstrap_losses, every.bootstrap_losses, rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose([best4.E, best4.alpha], [every.E, every.alpha], rtol=1e-5)


def test_form_can_be_fixed(data):
    X, S = data
    reduced = scaling.fit_power_law(X, S, x_scale=1e12, n_bootstrap=4, grid=GRID, form="reduced")
    assert reduced.form == "reduced" and reduced.lam is None and set(reduced.losses_by_form) == {"reduced"}
    with pytest.raises(ValueError, match="form must be one of"):
        scaling.fit_power_law(X, S, form="both")


def test_fits_leave_out_ssl_and_hold_out_timm():
    models = [f"m{i}" for i in range(7)]
    compute = np.logspace(14, 19, 7)
    score = 1 - scaling.law(compute / 1e12, 0.4, 0.5, 0.3)
    table = pd.DataFrame(dict(model=models, benchmark="b", subject="all", roi="V1", stage="test", metric="r_nc",
                              value=score))
    inventory = pd.DataFrame(dict(model=models, compute=compute, source=["own"] * 5 + ["timm", "own"],
                                  objective=["SUP"] * 6 + ["SSL"]))
    fits = scaling.fit_all(table, inventory, axes=("compute",), n_bootstrap=4, grid=GRID)
    assert set(fits.points["model"]) == set(models[:5])
    residuals = fits.holdout_residuals()
    assert set(residuals["model"]) == {"m5"} and set(residuals["group"]) == {"b", "average"}
    np.testing.assert_allclose(residuals["residual"], 0, atol=0.01)
