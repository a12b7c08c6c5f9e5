"""RidgeCV and fit_predict_splits against scikit-learn's RidgeCV (exact leave-one-out, cv=None)."""

import jax
import numpy as np
import pytest
from sklearn.linear_model import RidgeCV as SkRidgeCV
from sklearn.model_selection import KFold

from jaxbrain import metrics
from jaxbrain.ridge import RidgeCV, fit_predict_splits

ALPHAS = np.logspace(-2, 4, 9)

# (n_samples, n_features, n_targets): dual form (n <= d) and primal form (n > d), each with few targets and with
# more targets than the eigen-basis size (where a shared alpha uses the second-moment criterion).
SHAPES = {
    "dual": (24, 40, 3),
    "primal": (40, 12, 3),
    "dual_many_targets": (24, 40, 30),
    "primal_many_targets": (40, 12, 20),
}


def _problem(shape, seed=0, dtype=np.float64):
    n, d, t = shape
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + 7, d)) + 2.0  # non-centred features exercise the intercept
    Y = 0.2 * X @ rng.standard_normal((d, t)) + rng.standard_normal((n + 7, t)) * np.linspace(0.5, 5, t) + 3.0
    return X[:n].astype(dtype), Y[:n].astype(dtype), X[n:].astype(dtype), Y[n:].astype(dtype)


def _rel_err(a, b):
    return np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha_per_target", [False, True])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_ridgecv_matches_sklearn_float64(shape, alpha_per_target, fit_intercept):
    X, Y, X_test, _ = _problem(SHAPES[shape])
    ref = SkRidgeCV(alphas=ALPHAS, alpha_per_target=alpha_per_target, fit_intercept=fit_intercept).fit(X, Y)
    with jax.enable_x64(True):
        est = RidgeCV(alphas=ALPHAS, alpha_per_target=alpha_per_target, fit_intercept=fit_intercept).fit(X, Y)
        gram = RidgeCV(alphas=ALPHAS, alpha_per_target=alpha_per_target, fit_intercept=fit_intercept,
                       kernel="precomputed")
        gram.fit(X @ X.T, Y)
        gram_pred = gram.predict(X_test @ X.T)
    assert est.coef_.dtype == np.float64
    np.testing.assert_array_equal(np.asarray(est.alpha_), np.asarray(ref.alpha_))
    np.testing.assert_array_equal(np.asarray(gram.alpha_), np.asarray(ref.alpha_))
    assert _rel_err(est.predict(X_test), ref.predict(X_test)) < 1e-6
    assert _rel_err(gram_pred, ref.predict(X_test)) < 1e-6
    assert _rel_err(est.coef_, ref.coef_) < 1e-6
    assert _rel_err(est.intercept_, ref.intercept_) < 1e-6 if fit_intercept else np.all(est.intercept_ == 0)
    np.testing.assert_allclose(est.best_score_, ref.best_score_, rtol=1e-6)


@pytest.mark.parametrize("shape", ["dual", "primal_many_targets"])
def test_ridgecv_float32_pearson_matches_sklearn(shape):
    X, Y, X_test, Y_test = _problem(SHAPES[shape], seed=1)
    ref = SkRidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X, Y)
    est = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X.astype(np.float32), Y.astype(np.float32))
    assert est.coef_.dtype == np.float32
    pred = est.predict(X_test.astype(np.float32))
    r_ref = np.asarray(metrics.pearson_r(Y_test, ref.predict(X_test)))
    r_est = np.asarray(metrics.pearson_r(Y_test, pred))
    np.testing.assert_allclose(r_est, r_ref, atol=1e-3)


def test_ridgecv_one_target_and_chunking():
    X, Y, X_test, _ = _problem(SHAPES["dual_many_targets"], seed=2)
    ref = SkRidgeCV(alphas=ALPHAS).fit(X, Y[:, 0])
    with jax.enable_x64(True):
        single = RidgeCV(alphas=ALPHAS).fit(X, Y[:, 0])
        whole = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X, Y)
        chunked = RidgeCV(alphas=ALPHAS, alpha_per_target=True, target_chunk=7).fit(X, Y)  # 30 = 7+7+7+7+2 padded
        shared_chunked = RidgeCV(alphas=ALPHAS, target_chunk=7).fit(X, Y)
        shared = RidgeCV(alphas=ALPHAS).fit(X, Y)
    assert isinstance(single.alpha_, float) and single.alpha_ == ref.alpha_
    assert single.coef_.shape == (40,) and isinstance(single.intercept_, float)
    assert _rel_err(single.predict(X_test), ref.predict(X_test)) < 1e-6
    np.testing.assert_array_equal(chunked.alpha_, whole.alpha_)
    np.testing.assert_allclose(chunked.coef_, whole.coef_, rtol=1e-10, atol=1e-12)
    assert shared_chunked.alpha_ == shared.alpha_
    np.testing.assert_allclose(shared_chunked.coef_, shared.coef_, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gram", [True, False])
@pytest.mark.parametrize("alpha_per_target", [False, True])
def test_fit_predict_splits_matches_sklearn_on_each_split(gram, alpha_per_target):
    rng = np.random.default_rng(3)
    n, d, t = 33, 20, 4  # 28 train stimuli -> folds of unequal size (two shape groups) + the final fit
    X = rng.standard_normal((n, d)) + 1.0
    Y = 0.3 * X @ rng.standard_normal((d, t)) + rng.standard_normal((n, t)) + 2.0
    splits = list(KFold(5).split(np.arange(28))) + [(np.arange(28), np.arange(28, n))]
    with jax.enable_x64(True):
        fits = fit_predict_splits(X @ X.T if gram else X, Y, splits, ALPHAS, gram=gram,
                                  alpha_per_target=alpha_per_target)
    assert len(fits) == len(splits)
    for (train, test), fit in zip(splits, fits):
        ref = SkRidgeCV(alphas=ALPHAS, alpha_per_target=alpha_per_target).fit(X[train], Y[train])
        np.testing.assert_array_equal(np.asarray(fit.alpha), np.asarray(ref.alpha_))
        assert fit.predictions.shape == (len(test), t)
        assert _rel_err(fit.predictions, ref.predict(X[test])) < 1e-6
        np.testing.assert_allclose(-np.asarray(fit.loo_mse), ref.best_score_, rtol=1e-6)


@pytest.mark.parametrize("gram", [True, False])
def test_target_groups_share_one_alpha_per_group(gram):
    rng = np.random.default_rng(4)
    n, d = 45, 30
    X = rng.standard_normal((n, d)) + 1.0
    # two "ROIs" with very different signal-to-noise ratios, so their shared alphas differ
    Y = np.concatenate([X @ rng.standard_normal((d, 3)) + 0.1 * rng.standard_normal((n, 3)),
                        0.05 * X @ rng.standard_normal((d, 5)) + 3 * rng.standard_normal((n, 5))], axis=1)
    groups = [np.array([0, 1, 2]), np.array([3, 4, 5, 6, 7])]
    splits = list(KFold(5).split(np.arange(36))) + [(np.arange(36), np.arange(36, n))]
    with jax.enable_x64(True):
        fits = fit_predict_splits(X @ X.T if gram else X, Y, splits, ALPHAS, gram=gram, target_groups=groups)
    chosen = set()
    for (train, test), fit in zip(splits, fits):
        for group in groups:
            ref = SkRidgeCV(alphas=ALPHAS).fit(X[train], Y[train][:, group])
            np.testing.assert_array_equal(fit.alpha[group], ref.alpha_)
            assert _rel_err(fit.predictions[:, group], ref.predict(X[test])) < 1e-6
            chosen.add(float(ref.alpha_))
    assert len(chosen) > 1
    with pytest.raises(ValueError, match="partition"):
        fit_predict_splits(X, Y, splits, ALPHAS, gram=False, target_groups=[np.arange(3)])


def test_fit_predict_splits_float32_with_features_wider_than_samples():
    # every train part is no larger than D, so one kernel is computed from X and indexed per split
    X, Y, _, _ = _problem((30, 40, 3), seed=4, dtype=np.float32)
    splits = list(KFold(3).split(np.arange(30)))
    fits = fit_predict_splits(X, Y, splits, ALPHAS, gram=False)
    for (train, test), fit in zip(splits, fits):
        ref = SkRidgeCV(alphas=ALPHAS).fit(X[train], Y[train])
        assert fit.predictions.dtype == np.float32
        r_ref = np.asarray(metrics.pearson_r(Y[test], ref.predict(X[test])))
        np.testing.assert_allclose(np.asarray(metrics.pearson_r(Y[test], fit.predictions)), r_ref, atol=1e-3)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: RidgeCV(alphas=[1.0, -1.0]).fit(np.ones((5, 2)), np.ones(5)), "positive"),
        (lambda: RidgeCV().fit(np.ones((5, 2)), np.ones(4)), "5 samples but y has 4"),
        (lambda: RidgeCV().fit(np.full((5, 2), np.nan), np.ones(5)), "X contains NaN"),
        (lambda: RidgeCV(kernel="precomputed").fit(np.ones((5, 4)), np.ones(5)), "square"),
        (lambda: fit_predict_splits(np.eye(4), np.ones((4, 1)), [([0, 1], [9])], gram=True), "split 0: test index"),
        (lambda: fit_predict_splits(np.ones((4, 3)), np.ones((4, 1)), [([0, 1], [2])], gram=True), "square"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_nan_in_training_rows_names_the_split_and_rows_outside_splits_are_ignored():
    X = np.random.default_rng(6).standard_normal((9, 4))
    Y = np.ones((9, 2))
    Y[:, 1] = np.arange(9.0)
    Y[8, 0] = np.nan  # in no split's training part
    splits = [(np.arange(4), np.array([4])), (np.arange(3, 7), np.array([7]))]
    assert len(fit_predict_splits(X, Y, splits, gram=False)) == 2
    Y[5, 1] = np.inf  # a training row of split 1 only
    with pytest.raises(ValueError, match="split 1: Y has NaN or inf in training rows"):
        fit_predict_splits(X, Y, splits, gram=False)


def test_predict_before_fit_raises():
    with pytest.raises(AttributeError, match="fit"):
        RidgeCV().predict(np.ones((2, 2)))
    with pytest.raises(AttributeError, match="fit"):
        RidgeCV(kernel="precomputed").predict(np.ones((2, 2)))


def test_host_blas_products_match_sklearn(monkeypatch):
    # float32 shapes used nowhere else, so these traces route every product through the CPU BLAS callback
    from jaxbrain.ridge import _core

    monkeypatch.setattr(_core, "_HOST_BLAS_MIN_FLOPS", 0.0)
    X, Y, X_test, Y_test = _problem((26, 45, 3), seed=5, dtype=np.float32)
    ref = SkRidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X, Y)
    est = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X, Y)
    np.testing.assert_allclose(np.asarray(metrics.pearson_r(Y_test, est.predict(X_test))),
                               np.asarray(metrics.pearson_r(Y_test, ref.predict(X_test))), atol=1e-3)
    splits = list(KFold(2).split(np.arange(26)))
    for (train, test), fit in zip(splits, fit_predict_splits(X, Y, splits, ALPHAS, gram=False)):
        split_ref = SkRidgeCV(alphas=ALPHAS).fit(X[train], Y[train])
        assert _rel_err(fit.predictions, split_ref.predict(X[test])) < 1e-3
