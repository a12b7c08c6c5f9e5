"""Ridge regression with exact leave-one-out selection of the penalty, in JAX.

The core is a set of small pure jitted functions; :class:`RidgeCV` (scikit-learn's interface) and
:func:`fit_predict_splits` (one kernel per layer serving every outer fold and the final fit) sit on top.

Method (Rifkin & Lippert 2007; scikit-learn's ``_RidgeGCV``). With centred X (n x d) and Y (n x T):

* dual form (n <= d, or a precomputed Gram matrix): ``K = X X^T = Q diag(s) Q^T``; for a penalty a,
  ``w = 1 / (s + a)``, dual coefficients ``c = Q diag(w) Q^T Y``, ``diag(G^-1) = (Q * Q) w`` and the
  leave-one-out residuals are ``c / diag``;
* primal form (n > d): ``X^T X = V diag(s) V^T``, ``Z = X V``; ``a c = Y - Z diag(w) Z^T Y``,
  ``a diag = 1 - (Z * Z) w``; the primal coefficients are ``V diag(w) Z^T Y``.

With an intercept the constant direction is left unpenalised through scikit-learn's correction
``diag <- diag - (G^-1 1) / n``, which equals removing the penalty on the eigenvector most aligned with the
ones vector (the null direction of the centred kernel) and stays exact when the kernel has other null
directions. One eigendecomposition serves the whole alpha grid; no per-alpha primal coefficients are formed;
targets are processed in chunks so memory stays bounded for very many targets.

Shared alpha (``alpha_per_target=False``) minimises the mean squared LOO residual over all samples and targets.
When targets outnumber the basis size m (n in dual form, d in primal form) the sum over targets is computed from
the projected second moments ``S = (U^T Y)(U^T Y)^T`` (m x m) instead of the residuals: in dual form
``sum_t e_it^2 = (M S M^T)_ii / diag_i^2`` with ``M = Q diag(w)``; in primal form the residual also carries
``Y`` itself, so ``||Y_i||^2 - 2 (Z diag(w) P)_ii + (Z diag(w) S diag(w) Z^T)_ii`` with ``P = (Z^T Y) Y^T``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DEFAULT_ALPHAS",
    "RidgeCV",
    "SplitFit",
    "fit_predict_splits",
    "centre_gram",
    "centre_cross_gram",
]

DEFAULT_ALPHAS = np.logspace(1, 7, 10)
"""The reference grid: 10 penalties from 1e1 to 1e7."""

_CHUNK_ELEMENTS = 2**23  # samples x targets per chunk (32 MiB in float32)


# --------------------------------------------------------------------------------------------------------------
# Pure functional core. Every array has a leading batch axis (splits, folds or layers of equal shape); the
# single-problem functions below are vmapped over it.
# --------------------------------------------------------------------------------------------------------------


class Basis(NamedTuple):
    """Eigen-basis shared by every penalty: eigenvalues ``s`` (m,), ``vectors`` U (n, m) and ``U^T 1`` (m,).

    Dual form: U = Q (eigenvectors of the centred Gram). Primal form: U = Z = X V.
    """

    eigvals: jax.Array
    vectors: jax.Array
    ones_proj: jax.Array


def centre_gram(K: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Centre a Gram matrix of the training samples: H K H with H = I - 11^T/n.

    Returns the centred matrix, the column means of K and the grand mean (needed by :func:`centre_cross_gram`).
    """
    col_mean = K.mean(axis=0)
    grand_mean = col_mean.mean()
    return K - col_mean[None, :] - K.mean(axis=1)[:, None] + grand_mean, col_mean, grand_mean


def centre_cross_gram(K_cross: jax.Array, train_col_mean: jax.Array, train_grand_mean: jax.Array) -> jax.Array:
    """Centre a (test, train) kernel block with the training mean: <x_a - mu, x_b - mu>."""
    return K_cross - K_cross.mean(axis=1, keepdims=True) - train_col_mean[None, :] + train_grand_mean


# Opt-in (JAXBRAIN_HOST_BLAS=1): on a dedicated CPU numpy's BLAS multiplies faster than XLA's own matmul, but
# on an oversubscribed machine its spinning threads made fits erratic and up to several times slower.
_HOST_BLAS_MIN_FLOPS = 2e8 if os.environ.get("JAXBRAIN_HOST_BLAS") == "1" else math.inf


def _xla_matmul(a, b, trans_a=False, trans_b=False):
    # full float32 precision also where the backend would default to reduced-precision (TF32) products
    return jnp.matmul(a.T if trans_a else a, b.T if trans_b else b, precision=jax.lax.Precision.HIGHEST)


def _host_blas_matmul(a, b, trans_a=False, trans_b=False):
    m = a.shape[1] if trans_a else a.shape[0]
    n = b.shape[0] if trans_b else b.shape[1]

    def product(x, y):  # transposed views cost nothing: BLAS reads them with its transpose flags
        return np.matmul(np.swapaxes(x, -1, -2) if trans_a else x, np.swapaxes(y, -1, -2) if trans_b else y)

    out = jax.ShapeDtypeStruct((m, n), jnp.result_type(a, b))
    return jax.pure_callback(product, out, a, b, vmap_method="expand_dims")


def _dot(a: jax.Array, b: jax.Array, trans_a: bool = False, trans_b: bool = False) -> jax.Array:
    """Matrix product op(a) @ op(b) of 2-D arrays (batched under vmap), op = transpose where asked.

    On a quiet CPU, XLA's own matmul reached about two thirds of the rate of the BLAS that numpy links, and these
    products are nearly all of the work; with JAXBRAIN_HOST_BLAS=1 large float32 ones are handed to numpy's
    BLAS through a pure callback (transposes passed as flags, not copies). Otherwise, and on other backends,
    XLA's matmul at full precision.
    """
    m = a.shape[1] if trans_a else a.shape[0]
    k = a.shape[0] if trans_a else a.shape[1]
    n = b.shape[0] if trans_b else b.shape[1]
    # float64 stays in XLA: a callback thread does not see a thread-local ``jax.enable_x64`` context
    if 2.0 * m * k * n < _HOST_BLAS_MIN_FLOPS or jnp.result_type(a, b) != jnp.float32:
        return _xla_matmul(a, b, trans_a, trans_b)
    return jax.lax.platform_dependent(
        a, b, cpu=functools.partial(_host_blas_matmul, trans_a=trans_a, trans_b=trans_b),
        default=functools.partial(_xla_matmul, trans_a=trans_a, trans_b=trans_b))


def _eigh(A: jax.Array) -> tuple[jax.Array, jax.Array]:
    # A is symmetric by construction; LAPACK reads one triangle, so skip the (A + A^T)/2 pass.
    vectors, values = jax.lax.linalg.eigh(A, symmetrize_input=False)
    return values, vectors


def _dual_basis(K_centred: jax.Array, fit_intercept: bool) -> Basis:
    eigvals, Q = _eigh(K_centred)
    ones_proj = Q.sum(axis=0) if fit_intercept else jnp.zeros_like(eigvals)
    return Basis(eigvals, Q, ones_proj)


def _primal_basis(X_centred: jax.Array, fit_intercept: bool) -> tuple[Basis, jax.Array]:
    eigvals, V = _eigh(_dot(X_centred, X_centred, trans_a=True))
    Z = _dot(X_centred, V)
    ones_proj = Z.sum(axis=0) if fit_intercept else jnp.zeros_like(eigvals)
    return Basis(eigvals, Z, ones_proj), V


def _filters(eigvals: jax.Array, alphas: jax.Array) -> jax.Array:
    """1 / (s + a) for every eigenvalue and penalty, (m, A)."""
    return 1.0 / (eigvals[:, None] + alphas[None, :])


def _loo_diagonals(basis: Basis, alphas: jax.Array, dual: bool, fit_intercept: bool) -> jax.Array:
    """Leave-one-out denominators (n, A): diag(G^-1) in dual form, alpha * diag(G^-1) in primal form."""
    U = basis.vectors
    W = _filters(basis.eigvals, alphas)
    n = U.shape[0]
    diag = _dot(U * U, W)
    if dual:
        if fit_intercept:
            diag = diag - _dot(U, W * basis.ones_proj[:, None]) / n
        return diag
    diag = 1.0 - diag
    if fit_intercept:
        diag = diag - (1.0 - _dot(U, W * basis.ones_proj[:, None])) / n
    return diag


def _centre_targets(Y: jax.Array, fit_intercept: bool) -> tuple[jax.Array, jax.Array]:
    mean = Y.mean(axis=0) if fit_intercept else jnp.zeros(Y.shape[1], Y.dtype)
    return Y - mean, mean


def _fitted(U: jax.Array, R: jax.Array, w: jax.Array, Yc: jax.Array, dual: bool):
    """Per-penalty kept coefficients and LOO numerators: (c, c) in dual form, (w R, Y - Z w R) in primal form."""
    B = w * R
    fit = _dot(U, B)
    if dual:
        return fit, fit
    return B, Yc - fit


def _apply(design, coef, y_mean):
    """Predictions ``design @ coef + mean`` when a test design is given, else the coefficients themselves."""
    return coef if design is None else _dot(design, coef) + y_mean


def _per_target_search(basis, diag, alphas, Y, design, dual, fit_intercept):
    """Best penalty per target: (index (T,), LOO mse (T,), coefficients or test predictions at it, target means)."""
    Yc, y_mean = _centre_targets(Y, fit_intercept)
    U = basis.vectors
    R = _dot(U, Yc, trans_a=True)
    W = _filters(basis.eigvals, alphas)
    T = Y.shape[1]
    coef_rows = U.shape[0] if dual else U.shape[1]

    def step(carry, i):
        best_mse, best_idx, best_coef = carry
        coef, numer = _fitted(U, R, W[:, i][:, None], Yc, dual)
        mse = jnp.mean((numer / diag[:, i][:, None]) ** 2, axis=0)
        better = mse < best_mse  # strict: ties keep the earlier alpha, as scikit-learn does
        return (
            jnp.where(better, mse, best_mse),
            jnp.where(better, i, best_idx),
            jnp.where(better[None, :], coef, best_coef),
        ), None

    init = (jnp.full((T,), jnp.inf, Y.dtype), jnp.zeros((T,), jnp.int32), jnp.zeros((coef_rows, T), Y.dtype))
    (best_mse, best_idx, best_coef), _ = jax.lax.scan(step, init, jnp.arange(alphas.shape[0], dtype=jnp.int32))
    return best_idx, best_mse, _apply(design, best_coef, y_mean), y_mean


def _sse_direct(basis, diag, alphas, Y, dual, fit_intercept):
    """Sum over samples and targets of squared LOO residuals for each penalty, (A,)."""
    Yc, _ = _centre_targets(Y, fit_intercept)
    U = basis.vectors
    R = _dot(U, Yc, trans_a=True)
    W = _filters(basis.eigvals, alphas)

    def one(i):
        _, numer = _fitted(U, R, W[:, i][:, None], Yc, dual)
        return jnp.sum((numer / diag[:, i][:, None]) ** 2)

    return jax.lax.map(one, jnp.arange(alphas.shape[0]))


class Moments(NamedTuple):
    """Target-summed second moments of the projected responses: S = R R^T, P = R Y^T, ||Y_i||^2 (R = U^T Y)."""

    S: jax.Array
    P: jax.Array
    y_sq: jax.Array


def _moments(basis, Y, dual, fit_intercept) -> Moments:
    Yc, _ = _centre_targets(Y, fit_intercept)
    R = _dot(basis.vectors, Yc, trans_a=True)
    if dual:  # the dual residual c = Q w R does not involve Y itself
        return Moments(_dot(R, R, trans_b=True), jnp.zeros((0, 0), Y.dtype), jnp.zeros((0,), Y.dtype))
    return Moments(_dot(R, R, trans_b=True), _dot(R, Yc, trans_b=True), jnp.sum(Yc * Yc, axis=1))


def _sse_from_moments(basis, diag, alphas, moments: Moments, dual):
    U = basis.vectors
    W = _filters(basis.eigvals, alphas)

    def one(i):
        M = U * W[:, i][None, :]
        quad = jnp.sum(_dot(M, moments.S) * M, axis=1)
        if dual:
            per_sample = quad
        else:
            per_sample = moments.y_sq - 2.0 * jnp.sum(M * moments.P.T, axis=1) + quad
        return jnp.sum(per_sample / diag[:, i] ** 2)

    return jax.lax.map(one, jnp.arange(alphas.shape[0]))


def _coefficients(basis, alpha, Y, design, dual, fit_intercept):
    """At one penalty: dual c (n, T) or primal w R (m, T), or test predictions from them; plus target means."""
    Yc, y_mean = _centre_targets(Y, fit_intercept)
    U = basis.vectors
    R = _dot(U, Yc, trans_a=True)
    w = 1.0 / (basis.eigvals + alpha)
    coef, _ = _fitted(U, R, w[:, None], Yc, dual)
    return _apply(design, coef, y_mean), y_mean


def _dual_problem(K, train_idx, test_idx, alphas, fit_intercept):
    """Index one split out of a full kernel, centre it, decompose: (basis, LOO denominators, centred cross block)."""
    K_train = K[train_idx][:, train_idx]
    K_cross = K[test_idx][:, train_idx]
    if fit_intercept:
        K_train, col_mean, grand_mean = centre_gram(K_train)
        K_cross = centre_cross_gram(K_cross, col_mean, grand_mean)
    basis = _dual_basis(K_train, fit_intercept)
    return basis, _loo_diagonals(basis, alphas, True, fit_intercept), K_cross


def _primal_split(X, train_idx, test_idx, fit_intercept):
    """Index one split out of the features and centre both parts with the train mean."""
    X_train = X[train_idx]
    X_test = X[test_idx]
    if fit_intercept:
        mean = X_train.mean(axis=0)
        X_train = X_train - mean
        X_test = X_test - mean
    return X_train, X_test


def _primal_problem(X_train, X_test, alphas, fit_intercept):
    """Decompose one centred split: (basis, LOO denominators, test design X_test V).

    Centring runs in a separate compiled call: fused into the product that follows, XLA:CPU fell back to a
    matmul several times slower than its library one.
    """
    basis, V = _primal_basis(X_train, fit_intercept)
    return basis, _loo_diagonals(basis, alphas, False, fit_intercept), _dot(X_test, V)


def _centre_columns(X, fit_intercept):
    x_mean = X.mean(axis=0) if fit_intercept else jnp.zeros(X.shape[1], X.dtype)
    return X - x_mean, x_mean


def _setup_features(Xc, alphas, fit_intercept):
    """One problem from centred features (RidgeCV.fit): basis (batch of 1), denominators, rotation V."""
    dual = Xc.shape[0] <= Xc.shape[1]
    if dual:
        basis, V = _dual_basis(_dot(Xc, Xc, trans_b=True), fit_intercept), None
    else:
        basis, V = _primal_basis(Xc, fit_intercept)
    diag = _loo_diagonals(basis, alphas, dual, fit_intercept)
    return jax.tree.map(lambda a: a[None], (basis, diag)), V


def _setup_gram(K, alphas, fit_intercept):
    """One problem from a training Gram matrix (RidgeCV.fit_gram)."""
    if fit_intercept:
        K, col_mean, grand_mean = centre_gram(K)
    else:
        col_mean, grand_mean = jnp.zeros(K.shape[0], K.dtype), jnp.zeros((), K.dtype)
    basis = _dual_basis(K, fit_intercept)
    diag = _loo_diagonals(basis, alphas, True, fit_intercept)
    return jax.tree.map(lambda a: a[None], (basis, diag)), col_mean, grand_mean


def _batch_over(fn, in_axes, static):
    """jit(vmap(fn)) with per-argument batching; ``static`` keyword names are compile-time constants."""

    def wrapper(*args, **static_kwargs):
        return jax.vmap(functools.partial(fn, **static_kwargs), in_axes=in_axes)(*args)

    return jax.jit(wrapper, static_argnames=static)


_DF = ("dual", "fit_intercept")
# The full kernel / feature matrix and the alpha grid are shared; split indices, bases and responses are batched.
_b_dual_problem = _batch_over(_dual_problem, (None, 0, 0, None), ("fit_intercept",))
_b_primal_split = _batch_over(_primal_split, (None, 0, 0), ("fit_intercept",))
_b_primal_problem = _batch_over(_primal_problem, (0, 0, None), ("fit_intercept",))
_b_per_target_search = _batch_over(_per_target_search, (0, 0, None, 0, 0), _DF)
_b_sse_direct = _batch_over(_sse_direct, (0, 0, None, 0), _DF)
_b_moments = _batch_over(_moments, (0, 0), _DF)
_b_sse_from_moments = _batch_over(_sse_from_moments, (0, 0, None, 0), ("dual",))
_b_coefficients = _batch_over(_coefficients, (0, 0, 0, 0), _DF)
_setup_features_jit = jax.jit(_setup_features, static_argnames=("fit_intercept",))
_setup_gram_jit = jax.jit(_setup_gram, static_argnames=("fit_intercept",))
_centre_columns_jit = jax.jit(_centre_columns, static_argnames=("fit_intercept",))
_gram_jit = jax.jit(lambda Xc: _dot(Xc, Xc, trans_b=True))
_transpose_product = jax.jit(lambda A, C: _dot(A, C, trans_a=True))
_plain_product = jax.jit(_dot)
_centre_cross_jit = jax.jit(centre_cross_gram)


# --------------------------------------------------------------------------------------------------------------
# Driver: penalty search over target chunks for a batch of problems sharing one shape.
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Solution:
    alpha_idx: np.ndarray  # (B, T) int, or (B,) when shared
    loo_mse: np.ndarray  # (B, T), or (B,) when shared


def _chunks(n_targets: int, n_samples: int, chunk: int | None) -> list[slice]:
    limit = chunk if chunk is not None else max(1, _CHUNK_ELEMENTS // max(n_samples, 1))
    n_chunks = max(1, math.ceil(n_targets / limit))
    size = math.ceil(n_targets / n_chunks)
    return [slice(i, min(i + size, n_targets)) for i in range(0, n_targets, size)]


def _pad_cols(Y: np.ndarray, width: int) -> np.ndarray:
    missing = width - Y.shape[-1]
    return Y if missing == 0 else np.pad(Y, [(0, 0)] * (Y.ndim - 1) + [(0, missing)])


def _search(basis, diag, dual, fit_intercept, alphas, get_chunk, n_targets, alpha_per_target, chunk, on_result,
            design=None):
    """Choose penalties; hand each target chunk's result to ``on_result(cols, out, y_mean)`` as numpy arrays.

    ``get_chunk(cols)`` returns the (B, n, len(cols)) training responses as a numpy array. ``out`` is the
    coefficients (B, n or m, k) or, when a test ``design`` (B, n_test, n or m) is given, the test predictions.
    """
    B, n, m = basis.vectors.shape
    pieces = _chunks(n_targets, n, chunk)
    width = pieces[0].stop - pieces[0].start

    def chunk_of(cols):
        return _pad_cols(get_chunk(cols), width)

    def emit(cols, out, y_mean):
        k = cols.stop - cols.start
        on_result(cols, np.asarray(out)[:, :, :k], np.asarray(y_mean)[:, :k])

    if alpha_per_target:
        idx = np.zeros((B, n_targets), np.int64)
        mse = np.zeros((B, n_targets))
        for cols in pieces:
            best_idx, best_mse, out, y_mean = _b_per_target_search(
                basis, diag, alphas, chunk_of(cols), design, dual=dual, fit_intercept=fit_intercept)
            k = cols.stop - cols.start
            idx[:, cols] = np.asarray(best_idx)[:, :k]
            mse[:, cols] = np.asarray(best_mse)[:, :k]
            emit(cols, out, y_mean)
        return _Solution(idx, mse)

    if n_targets > m:  # cheaper: work on the m x m second moments of U^T Y
        moments = None
        for cols in pieces:
            part = _b_moments(basis, chunk_of(cols), dual=dual, fit_intercept=fit_intercept)
            moments = part if moments is None else jax.tree.map(jnp.add, moments, part)
        sse = np.asarray(_b_sse_from_moments(basis, diag, alphas, moments, dual=dual))
    else:
        sse = sum(np.asarray(_b_sse_direct(basis, diag, alphas, chunk_of(cols), dual=dual,
                                           fit_intercept=fit_intercept)) for cols in pieces)
    best = np.argmin(sse, axis=1)  # first minimum on ties, as scikit-learn keeps the earlier alpha
    best_alpha = np.asarray(alphas)[best]
    for cols in pieces:
        out, y_mean = _b_coefficients(basis, best_alpha, chunk_of(cols), design, dual=dual,
                                      fit_intercept=fit_intercept)
        emit(cols, out, y_mean)
    return _Solution(best, sse[np.arange(B), best] / (n * n_targets))


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def _float_dtype(*arrays) -> np.dtype:
    """float64 only when every input is float64 and JAX 64-bit mode is on; float32 otherwise."""
    if jax.config.jax_enable_x64 and all(np.asarray(a).dtype == np.float64 for a in arrays):
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _check_alphas(alphas) -> np.ndarray:
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if alphas.ndim != 1 or alphas.size == 0:
        raise ValueError(f"alphas must be a non-empty 1-D sequence; got shape {alphas.shape}")
    if not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(f"alphas must be finite and positive; got {alphas.tolist()}")
    return alphas


def _check_matrix(name: str, a, ndim: int = 2) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric; got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _as_targets(Y) -> tuple[np.ndarray, bool]:
    Y = np.asarray(Y)
    if Y.ndim == 1:
        return Y[:, None], True
    if Y.ndim != 2:
        raise ValueError(f"y must be 1-D or 2-D (n_samples, n_targets); got shape {Y.shape}")
    return Y, False


class RidgeCV:
    """Ridge regression with the penalty chosen by exact leave-one-out, like ``sklearn.linear_model.RidgeCV``.

    Args:
      alphas: candidate penalties (default: the reference grid ``logspace(1, 7, 10)``).
      alpha_per_target: choose one penalty per target instead of one shared by all targets.
      fit_intercept: centre X and y on the training samples and fit an unpenalised intercept.
      target_chunk: targets processed at a time (default: bounded so samples x targets <= 2**23).

    Attributes after ``fit``: ``alpha_`` (float, or (n_targets,) array with ``alpha_per_target``), ``coef_``
    ((n_targets, n_features), or (n_features,) for 1-D y), ``intercept_``, ``best_score_`` (negative LOO mean
    squared error, as scikit-learn), ``loo_mse_``, ``n_features_in_``. Computation is float64 when the inputs are
    float64 and ``jax.config.jax_enable_x64`` is on, float32 otherwise.

    ``fit_gram(K, y)`` / ``predict_gram(K_cross)`` take an uncentred Gram matrix of the training samples and
    the (test, train) cross kernel instead of features; ``coef_`` is then not available (``dual_coef_`` is).
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, *, alpha_per_target: bool = False, fit_intercept: bool = True,
                 target_chunk: int | None = None):
        self.alphas = alphas
        self.alpha_per_target = alpha_per_target
        self.fit_intercept = fit_intercept
        self.target_chunk = target_chunk

    # -- shared tail -------------------------------------------------------------------------------------
    def _finish(self, alphas: np.ndarray, sol: _Solution, squeeze: bool, n_targets: int):
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
        self._squeeze = squeeze

    def fit(self, X, y):
        """Fit on features X (n_samples, n_features) and targets y (n_samples,) or (n_samples, n_targets)."""
        X = _check_matrix("X", X)
        Y, squeeze = _as_targets(_check_matrix("y", y, np.ndim(y)))
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but y has {Y.shape[0]}")
        if X.shape[0] < 2:
            raise ValueError("RidgeCV needs at least 2 samples for leave-one-out")
        dtype = _float_dtype(X, Y)
        alphas = _check_alphas(self.alphas)
        n, d = X.shape
        T = Y.shape[1]
        alphas_j = jnp.asarray(alphas.astype(dtype))
        Xc, x_mean = _centre_columns_jit(jnp.asarray(X.astype(dtype, copy=False)), fit_intercept=self.fit_intercept)
        (basis, diag), V = _setup_features_jit(Xc, alphas_j, fit_intercept=self.fit_intercept)
        dual = V is None
        coef = np.zeros((d, T), dtype)
        y_means = np.zeros(T, dtype)

        def on_result(cols, c, y_mean):
            # primal weights from the kept coefficients: X^T c (dual) or V (w R) (primal)
            coef[:, cols] = np.asarray(_transpose_product(Xc, c[0]) if dual else _plain_product(V, c[0]))
            y_means[cols] = y_mean[0]

        sol = _search(basis, diag, dual, self.fit_intercept, alphas_j, lambda cols: Y[None, :, cols].astype(dtype),
                      T, self.alpha_per_target, self.target_chunk, on_result)
        self._finish(alphas, sol, squeeze, T)
        intercept = y_means - np.asarray(x_mean) @ coef if self.fit_intercept else np.zeros(T, dtype)
        self.coef_ = coef.T[0] if squeeze else coef.T
        self.intercept_ = float(intercept[0]) if squeeze else intercept
        self.n_features_in_ = d
        self._gram_fit = None
        return self

    def predict(self, X):
        """Predictions (n_samples,) or (n_samples, n_targets) for features X."""
        if getattr(self, "coef_", None) is None:
            raise AttributeError("RidgeCV.predict needs fit(X, y) first (after fit_gram use predict_gram)")
        X = _check_matrix("X", X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features but the model was fitted on {self.n_features_in_}")
        coef = np.asarray(self.coef_)
        out = X.astype(coef.dtype) @ (coef.T if coef.ndim == 2 else coef) + self.intercept_
        return out

    def fit_gram(self, K, y):
        """Fit from the uncentred Gram matrix K = X X^T (n_samples, n_samples) of the training samples."""
        K = _check_matrix("K", K)
        if K.shape[0] != K.shape[1]:
            raise ValueError(f"K must be square (n_samples, n_samples); got shape {K.shape}")
        Y, squeeze = _as_targets(_check_matrix("y", y, np.ndim(y)))
        if K.shape[0] != Y.shape[0]:
            raise ValueError(f"K has {K.shape[0]} samples but y has {Y.shape[0]}")
        dtype = _float_dtype(K, Y)
        alphas = _check_alphas(self.alphas)
        n = K.shape[0]
        T = Y.shape[1]
        alphas_j = jnp.asarray(alphas.astype(dtype))
        (basis, diag), col_mean, grand_mean = _setup_gram_jit(jnp.asarray(K.astype(dtype, copy=False)), alphas_j,
                                                              fit_intercept=self.fit_intercept)
        dual_coef = np.zeros((n, T), dtype)
        y_means = np.zeros(T, dtype)

        def on_result(cols, c, y_mean):
            dual_coef[:, cols] = c[0]
            y_means[cols] = y_mean[0]

        sol = _search(basis, diag, True, self.fit_intercept, alphas_j, lambda cols: Y[None, :, cols].astype(dtype),
                      T, self.alpha_per_target, self.target_chunk, on_result)
        self._finish(alphas, sol, squeeze, T)
        self.dual_coef_ = dual_coef[:, 0] if squeeze else dual_coef
        self._gram_fit = (col_mean, grand_mean, y_means, n)
        self.coef_ = None
        self.intercept_ = None
        return self

    def predict_gram(self, K_cross):
        """Predictions from the uncentred cross kernel K_cross = X_test X_train^T (n_test, n_train)."""
        if getattr(self, "_gram_fit", None) is None:
            raise AttributeError("RidgeCV.predict_gram needs fit_gram(K, y) first")
        col_mean, grand_mean, y_means, n = self._gram_fit
        K_cross = _check_matrix("K_cross", K_cross)
        if K_cross.shape[1] != n:
            raise ValueError(f"K_cross must have one column per training sample ({n}); got shape {K_cross.shape}")
        dual_coef = np.asarray(self.dual_coef_)
        Kx = jnp.asarray(K_cross.astype(dual_coef.dtype, copy=False))
        if self.fit_intercept:
            Kx = _centre_cross_jit(Kx, col_mean, grand_mean)
        out = np.asarray(_plain_product(Kx, jnp.asarray(dual_coef.reshape(n, -1)))) + y_means
        return out[:, 0] if self._squeeze else out


class SplitFit(NamedTuple):
    """Result of one split: test predictions (n_test, T), the chosen alpha (float, or (T,) per target) and
    the leave-one-out mean squared error of the training part at that alpha (float, or (T,))."""

    predictions: np.ndarray
    alpha: float | np.ndarray
    loo_mse: float | np.ndarray


def _check_target_groups(target_groups, n_targets: int) -> list[np.ndarray]:
    """Column index arrays that partition the targets (one group of all targets when None)."""
    if target_groups is None:
        return [np.arange(n_targets)]
    groups = [np.asarray(g, dtype=np.int64).ravel() for g in target_groups]
    covered = np.sort(np.concatenate(groups)) if groups else np.zeros(0, np.int64)
    if not np.array_equal(covered, np.arange(n_targets)):
        raise ValueError(f"target_groups must partition the {n_targets} targets (each column exactly once)")
    return groups


def fit_predict_splits(data, Y, splits: Sequence[tuple[np.ndarray, np.ndarray]], alphas=DEFAULT_ALPHAS, *,
                       gram: bool, alpha_per_target: bool = False, fit_intercept: bool = True,
                       target_chunk: int | None = None, target_groups=None) -> list[SplitFit]:
    """Fit ridge on the train part of every split and predict its test part, from one kernel or feature matrix.

    Args:
      data: features X (N, D) when ``gram`` is False, or the uncentred Gram matrix K = X X^T (N, N) over all N
        stimuli when ``gram`` is True.
      Y: responses (N_y, T) indexed like ``data``; rows outside a split are never read.
      splits: (train_idx, test_idx) integer arrays into the N stimuli, e.g. 5 outer folds plus the final
        (train split, test split) fit.
      alphas: penalty grid; the alpha of each split is chosen by exact LOO on that split's train part.
      gram: whether ``data`` is a Gram matrix.
      alpha_per_target: one alpha per target instead of one shared alpha.
      fit_intercept: centre on each split's train part (kernel blocks are centred accordingly).
      target_chunk: targets processed at a time (default bounded by memory).
      target_groups: column index arrays partitioning the targets, e.g. the targets of each ROI; the alpha is
        shared within each group (or per target with ``alpha_per_target``) while one eigendecomposition per split
        serves all groups. ``SplitFit.alpha`` and ``loo_mse`` are then (T,) arrays, one value per target.

    Splits with equal (n_train, n_test) are solved together (vmapped). With features and every train part no
    larger than D, the N x N kernel is computed once and indexed, as with ``gram=True``.
    """
    data = _check_matrix("K" if gram else "X", data)
    Y = np.asarray(Y)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2:
        raise ValueError(f"Y must be (n_stimuli, n_targets); got shape {Y.shape}")
    N = data.shape[0]
    if gram and data.shape != (N, N):
        raise ValueError(f"with gram=True data must be a square Gram matrix; got shape {data.shape}")
    alphas_np = _check_alphas(alphas)
    norm_splits = []
    for k, (tr, te) in enumerate(splits):
        tr = np.asarray(tr, dtype=np.int64).ravel()
        te = np.asarray(te, dtype=np.int64).ravel()
        if tr.size and (tr.min() < 0 or tr.max() >= min(N, Y.shape[0])):
            raise ValueError(f"split {k}: train index out of range for {N} stimuli and {Y.shape[0]} rows of Y")
        if te.size and (te.min() < 0 or te.max() >= N):
            raise ValueError(f"split {k}: test index out of range for {N} stimuli")
        if tr.size < 2:
            raise ValueError(f"split {k}: needs at least 2 training samples; got {tr.size}")
        if not np.all(np.isfinite(Y[tr])):
            raise ValueError(f"split {k}: Y has NaN or inf in training rows")
        norm_splits.append((tr, te))
    dtype = _float_dtype(data, Y)
    alphas_j = jnp.asarray(alphas_np.astype(dtype))
    T = Y.shape[1]

    D = data.shape[1]
    use_dual = gram or all(tr.size <= D for tr, _ in norm_splits)
    source = jnp.asarray(data.astype(dtype, copy=False))
    if use_dual and not gram:
        # One kernel serves all splits; centring X by any constant leaves every split's centred kernel unchanged
        # and keeps float32 cancellation small.
        source = _gram_jit(_centre_columns_jit(source, fit_intercept=True)[0])

    groups_of_targets = _check_target_groups(target_groups, T)
    groups: dict[tuple[int, int], list[int]] = {}
    for k, (tr, te) in enumerate(norm_splits):
        groups.setdefault((tr.size, te.size), []).append(k)

    results: list[SplitFit | None] = [None] * len(norm_splits)
    for members in groups.values():
        tr_stack = np.stack([norm_splits[k][0] for k in members])
        te_stack = np.stack([norm_splits[k][1] for k in members])
        if use_dual:
            basis, diag, design = _b_dual_problem(source, tr_stack, te_stack, alphas_j, fit_intercept=fit_intercept)
        else:
            X_train, X_test = _b_primal_split(source, tr_stack, te_stack, fit_intercept=fit_intercept)
            basis, diag, design = _b_primal_problem(X_train, X_test, alphas_j, fit_intercept=fit_intercept)
        preds = np.zeros((len(members), te_stack.shape[1], T), dtype)
        alpha_idx = np.zeros((len(members), T), np.int64)
        loo_mse = np.zeros((len(members), T))
        for group in groups_of_targets:
            # one eigendecomposition per split serves every target group; each group gets its own alpha search

            def get_chunk(cols, tr_stack=tr_stack, group=group):
                return Y[:, group[cols]][tr_stack].astype(dtype, copy=False)

            def on_result(cols, pred, y_mean, preds=preds, group=group):
                preds[:, :, group[cols]] = pred

            sol = _search(basis, diag, use_dual, fit_intercept, alphas_j, get_chunk, group.size, alpha_per_target,
                          target_chunk, on_result, design=design)
            per_target = alpha_per_target
            alpha_idx[:, group] = sol.alpha_idx if per_target else sol.alpha_idx[:, None]
            loo_mse[:, group] = sol.loo_mse if per_target else sol.loo_mse[:, None]
        for j, k in enumerate(members):
            if alpha_per_target or target_groups is not None:
                results[k] = SplitFit(preds[j], alphas_np[alpha_idx[j]], loo_mse[j])
            else:
                results[k] = SplitFit(preds[j], float(alphas_np[alpha_idx[j, 0]]), float(loo_mse[j, 0]))
    return results
