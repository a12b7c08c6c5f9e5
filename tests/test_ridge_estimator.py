"""RidgeCV as a scikit-learn estimator: sklearn's own estimator checks, Pipeline + GridSearchCV, clone, the
precomputed kernel against sklearn.linear_model.RidgeCV, float64 handling and NotFittedError."""

import jax
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import RidgeCV as SkRidgeCV
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from jaxbrain.ridge import RidgeCV

ALPHAS = np.logspace(-2, 4, 9)

# Checks that report "skipped" rather than pass, each for a reason outside the estimator's contract:
# - check_array_api_input: RidgeCV does not declare array-API support (inputs become numpy, then JAX arrays);
#   scikit-learn skips it unless SCIPY_ARRAY_API=1 is set and the estimator's tags opt in.
# No check is expected to fail.


@parametrize_with_checks([RidgeCV(), RidgeCV(kernel="precomputed")])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _problem(n, d, t, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + 6, d)) + 2.0  # non-centred features exercise the intercept
    Y = 0.3 * X @ rng.standard_normal((d, t)) + rng.standard_normal((n + 6, t)) * np.linspace(0.5, 4, t) + 3.0
    return X[:n], Y[:n], X[n:]


def _rel_err(a, b):
    return np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b))


@pytest.mark.parametrize("gcv_mode", ["eigen", "svd"])  # the reference's two LOO paths (ours is the same for both)
@pytest.mark.parametrize("alpha_per_target", [False, True])
def test_precomputed_equals_linear_and_sklearn_float64(gcv_mode, alpha_per_target):
    X, Y, X_test = _problem(20, 35, 3)
    ref = SkRidgeCV(alphas=ALPHAS, gcv_mode=gcv_mode, alpha_per_target=alpha_per_target).fit(X, Y)
    linear = RidgeCV(alphas=ALPHAS, alpha_per_target=alpha_per_target).fit(X, Y)  # float64 with no global x64
    kernel = RidgeCV(alphas=ALPHAS, alpha_per_target=alpha_per_target, kernel="precomputed").fit(X @ X.T, Y)
    assert not jax.config.jax_enable_x64  # the float64 fit left the process-wide flag alone
    assert linear.coef_.dtype == np.float64 and kernel.dual_coef_.dtype == np.float64
    assert not hasattr(kernel, "coef_") and not hasattr(linear, "dual_coef_")
    for est in (linear, kernel):
        np.testing.assert_array_equal(np.asarray(est.alpha_), np.asarray(ref.alpha_))
        np.testing.assert_allclose(est.best_score_, ref.best_score_, rtol=1e-6)
    assert _rel_err(linear.predict(X_test), ref.predict(X_test)) < 1e-6
    assert _rel_err(kernel.predict(X_test @ X.T), ref.predict(X_test)) < 1e-6
    assert _rel_err(linear.coef_, ref.coef_) < 1e-6 and _rel_err(linear.intercept_, ref.intercept_) < 1e-6
    # the documented dual model: X^T dual_coef_ is the primal weight vector
    assert _rel_err((X.T @ kernel.dual_coef_).T, ref.coef_) < 1e-6


def test_float32_inputs_stay_float32():
    X, Y, X_test = _problem(20, 35, 2, seed=1)
    est = RidgeCV(alphas=ALPHAS).fit(X.astype(np.float32), Y.astype(np.float32))
    assert est.coef_.dtype == np.float32 and est.predict(X_test.astype(np.float32)).dtype == np.float32


def _grid_search(ridge):
    pipe = Pipeline([("scale", StandardScaler()), ("ridge", ridge)])
    grid = {"ridge__alphas": [(1e-2, 1e-1), (1.0, 10.0), (1e3, 1e4)]}
    return GridSearchCV(pipe, grid, cv=KFold(3))


def test_pipeline_in_grid_search_matches_sklearn():
    X, Y, X_test = _problem(36, 10, 2, seed=2)
    ours = _grid_search(RidgeCV()).fit(X, Y)
    ref = _grid_search(SkRidgeCV()).fit(X, Y)
    assert ours.best_params_ == ref.best_params_
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"], rtol=1e-6)
    np.testing.assert_allclose(ours.predict(X_test), ref.predict(X_test), rtol=1e-6)
    assert ours.score(X, Y) == pytest.approx(ref.score(X, Y), rel=1e-6)


def test_clone_is_unfitted_with_equal_params():
    X, Y, _ = _problem(12, 5, 1, seed=3)
    fitted = RidgeCV(alphas=(0.5, 5.0), alpha_per_target=True, kernel="precomputed").fit(X @ X.T, Y)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "dual_coef_")
    with pytest.raises(NotFittedError):
        copy.predict(X @ X.T)


@pytest.mark.parametrize("kernel", ["linear", "precomputed"])
def test_predict_before_fit_raises_not_fitted(kernel):
    with pytest.raises(NotFittedError, match="fit"):
        RidgeCV(kernel=kernel).predict(np.ones((3, 3)))


def test_bad_kernel_raises():
    with pytest.raises(ValueError, match="kernel must be one of"):
        RidgeCV(kernel="rbf").fit(np.ones((4, 2)), np.ones(4))
