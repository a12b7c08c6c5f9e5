"""Pure jitted kernels of ridge regression with exact leave-one-out (see docs/method.md, "Ridge estimator and
solvers").

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

Every function here is pure; the ``_b_*`` names are jit(vmap(...)) over a leading batch axis of problems of equal
shape (splits, folds or layers). Drivers live in :mod:`jaxbrain.ridge._solvers`.
"""

from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


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
    """One problem from a training Gram matrix (RidgeCV with kernel="precomputed")."""
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
