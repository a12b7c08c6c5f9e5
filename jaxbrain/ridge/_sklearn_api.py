"""scikit-learn estimator over the LOO ridge solver: :class:`RidgeCV` (docs/method.md, "Ridge estimator and
solvers")."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from jaxbrain.ridge import _core
from jaxbrain.ridge._solvers import DEFAULT_ALPHAS, LooProblem, check_alphas, solve_ridge_loo

_KERNELS = ("linear", "precomputed")
_FITTED = ("alpha_", "loo_mse_", "best_score_", "coef_", "intercept_", "dual_coef_", "kernel_col_mean_",
           "kernel_grand_mean_")


def _compute_dtype(*arrays) -> np.dtype:
    """float64 when every input is float64 (computed under a scoped ``jax.enable_x64``), float32 otherwise."""
    return np.dtype(np.float64 if all(a.dtype == np.float64 for a in arrays) else np.float32)


def _precision(dtype: np.dtype):
    # thread-local and scoped: the process-wide jax_enable_x64 flag is left as it is
    return jax.enable_x64(True) if dtype == np.float64 else contextlib.nullcontext()


class RidgeCV(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Ridge regression with the penalty chosen by exact leave-one-out, like ``sklearn.linear_model.RidgeCV``.

    Args:
      alphas: candidate penalties (default: the reference grid ``logspace(1, 7, 10)``).
      alpha_per_target: choose one penalty per target instead of one shared by all targets.
      fit_intercept: centre X and y on the training samples and fit an unpenalised intercept.
      kernel: ``"linear"`` (X holds features) or ``"precomputed"`` (``fit`` takes the uncentred Gram matrix
        K = X X^T (n_samples, n_samples) of the training samples, ``predict`` the cross kernel
        X_test X_train^T (n_test, n_samples)).
      target_chunk: targets processed at a time (default: bounded so samples x targets <= 2**23).

    Attributes after ``fit``: ``alpha_`` (float, or (n_targets,) array with ``alpha_per_target``), ``best_score_``
    (negative LOO mean squared error, as scikit-learn), ``loo_mse_``, ``n_features_in_``, ``intercept_`` and

    * linear kernel: ``coef_`` ((n_targets, n_features), or (n_features,) for 1-D y);
    * precomputed kernel: ``dual_coef_`` ((n_samples, n_targets) or (n_samples,)); the model is
      ``centred(K_cross) @ dual_coef_ + intercept_``, the cross kernel centred with the training kernel's column
      means ``kernel_col_mean_`` and grand mean ``kernel_grand_mean_`` (zeros without intercept), and
      ``intercept_`` the training target means. There is no ``coef_``: the features are never seen.

    float64 inputs are computed in float64 (JAX 64-bit mode enabled for the call only), anything else in float32.
    """

    def __init__(self, alphas=tuple(DEFAULT_ALPHAS.tolist()), *, alpha_per_target: bool = False,
                 fit_intercept: bool = True, kernel: str = "linear", target_chunk: int | None = None):
        self.alphas = alphas
        self.alpha_per_target = alpha_per_target
        self.fit_intercept = fit_intercept
        self.kernel = kernel
        self.target_chunk = target_chunk

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = self.kernel == "precomputed"
        return tags

    def _validate_fit(self, X, y):
        if self.kernel not in _KERNELS:
            raise ValueError(f"kernel must be one of {_KERNELS}; got {self.kernel!r}")
        if y is None:
            raise ValueError("RidgeCV requires y to be passed, but the target y is None")
        floats = [np.float64, np.float32]
        X = validate_data(self, X, reset=True, dtype=floats, ensure_min_samples=2)
        y = check_array(y, ensure_2d=False, dtype=floats, input_name="y")
        if y.ndim not in (1, 2):
            raise ValueError(f"y must be 1-D or 2-D (n_samples, n_targets); got shape {y.shape}")
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}")
        if self.kernel == "precomputed" and X.shape[0] != X.shape[1]:
            raise ValueError(f"K must be square (n_samples, n_samples) with kernel='precomputed'; got {X.shape}")
        return X, y

    def fit(self, X, y):
        """Fit on X (features (n_samples, n_features), or the Gram matrix with kernel="precomputed") and targets
        y (n_samples,) or (n_samples, n_targets)."""
        X, y = self._validate_fit(X, y)
        for name in _FITTED:
            self.__dict__.pop(name, None)
        alphas = check_alphas(self.alphas)
        dtype = _compute_dtype(X, y)
        Y = y[:, None] if y.ndim == 1 else y
        with _precision(dtype):
            alphas_j = jnp.asarray(alphas.astype(dtype))
            X_j = jnp.asarray(X.astype(dtype, copy=False))
            if self.kernel == "precomputed":
                coef, intercept, sol = self._fit_gram(X_j, Y.astype(dtype, copy=False), alphas_j)
            else:
                coef, intercept, sol = self._fit_features(X_j, Y.astype(dtype, copy=False), alphas_j)
        self._set_alpha(alphas, sol, Y.shape[1])
        squeeze = y.ndim == 1
        if self.kernel == "precomputed":
            self.dual_coef_ = coef[:, 0] if squeeze else coef
        else:
            self.coef_ = coef.T[0] if squeeze else coef.T
        self.intercept_ = float(intercept[0]) if squeeze else intercept
        return self

    def _fit_features(self, X, Y, alphas):
        n, d = X.shape
        Xc, x_mean = _core._centre_columns_jit(X, fit_intercept=self.fit_intercept)
        (basis, diag), V = _core._setup_features_jit(Xc, alphas, fit_intercept=self.fit_intercept)
        dual = V is None
        coef = np.zeros((d, Y.shape[1]), Y.dtype)
        y_means = np.zeros(Y.shape[1], Y.dtype)

        def on_result(cols, c, y_mean):
            # primal weights from the kept coefficients: X^T c (dual) or V (w R) (primal)
            coef[:, cols] = np.asarray(_core._transpose_product(Xc, c[0]) if dual else _core._plain_product(V, c[0]))
            y_means[cols] = y_mean[0]

        sol = solve_ridge_loo(LooProblem(basis, diag, dual, self.fit_intercept), alphas, lambda cols: Y[None, :, cols],
                              Y.shape[1], on_result, alpha_per_target=self.alpha_per_target, chunk=self.target_chunk)
        intercept = y_means - np.asarray(x_mean) @ coef if self.fit_intercept else np.zeros_like(y_means)
        return coef, intercept, sol

    def _fit_gram(self, K, Y, alphas):
        (basis, diag), col_mean, grand_mean = _core._setup_gram_jit(K, alphas, fit_intercept=self.fit_intercept)
        dual_coef = np.zeros(Y.shape, Y.dtype)
        y_means = np.zeros(Y.shape[1], Y.dtype)

        def on_result(cols, c, y_mean):
            dual_coef[:, cols] = c[0]
            y_means[cols] = y_mean[0]

        sol = solve_ridge_loo(LooProblem(basis, diag, True, self.fit_intercept), alphas, lambda cols: Y[None, :, cols],
                              Y.shape[1], on_result, alpha_per_target=self.alpha_per_target, chunk=self.target_chunk)
        self.kernel_col_mean_ = np.asarray(col_mean)
        self.kernel_grand_mean_ = float(grand_mean)
        return dual_coef, y_means, sol

    def _set_alpha(self, alphas: np.ndarray, sol, n_targets: int):
        idx = sol.alpha_idx[0]
        mse = sol.loo_mse[0]
        if self.alpha_per_target and n_targets > 1:
            self.alpha_ = alphas[idx]
            self.loo_mse_ = mse
        else:
            if self.alpha_per_target:  # one target: scikit-learn reports a float
                idx, mse = idx[0], mse[0]
            self.alpha_ = float(alphas[int(idx)])
            self.loo_mse_ = float(mse)
        self.best_score_ = -self.loo_mse_

    def predict(self, X):
        """Predictions (n_samples,) or (n_samples, n_targets) for features X, or for the cross kernel
        X_test X_train^T (n_test, n_train) with kernel="precomputed"."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        if hasattr(self, "dual_coef_"):
            return self._predict_gram(X)
        coef = np.asarray(self.coef_)
        return X.astype(coef.dtype) @ (coef.T if coef.ndim == 2 else coef) + self.intercept_

    def _predict_gram(self, K_cross):
        dual_coef = np.asarray(self.dual_coef_)
        n = dual_coef.shape[0]
        with _precision(dual_coef.dtype):
            Kx = jnp.asarray(K_cross.astype(dual_coef.dtype, copy=False))
            if self.fit_intercept:
                Kx = _core._centre_cross_jit(Kx, jnp.asarray(self.kernel_col_mean_),
                                             jnp.asarray(self.kernel_grand_mean_, dual_coef.dtype))
            out = np.asarray(_core._plain_product(Kx, jnp.asarray(dual_coef.reshape(n, -1)))) + self.intercept_
        return out[:, 0] if dual_coef.ndim == 1 else out
