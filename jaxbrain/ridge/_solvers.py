"""Drivers over the kernels of :mod:`jaxbrain.ridge._core`: the penalty search over target chunks
(:func:`solve_ridge_loo`) and one kernel per layer serving every outer fold and the final fit
(:func:`fit_predict_splits`). Method: docs/method.md, "Ridge estimator and solvers".
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxbrain.ridge import _core
from jaxbrain.ridge._core import Basis

DEFAULT_ALPHAS = np.logspace(1, 7, 10)
"""The reference grid: 10 penalties from 1e1 to 1e7."""

_CHUNK_ELEMENTS = 2**23  # samples x targets per chunk (32 MiB in float32)


class LooProblem(NamedTuple):
    """B ridge problems of one shape, each decomposed once for the whole penalty grid of A alphas.

    ``basis``: eigenvalues (B, m), vectors U (B, n, m) and U^T 1 (B, m), with m = n in dual form (U = Q, the
    eigenvectors of the centred Gram) and m = d in primal form (U = X V); ``loo_diag``: leave-one-out denominators
    (B, n, A); ``dual``: which form; ``design``: None to get coefficients back, or a test design (B, n_test, m')
    (the centred cross kernel in dual form, X_test V in primal form) to get test predictions instead.
    """

    basis: Basis
    loo_diag: jax.Array
    dual: bool
    fit_intercept: bool
    design: jax.Array | None = None


@dataclasses.dataclass
class LooSolution:
    """Chosen penalty index and LOO mean squared error: (B, T) per target, or (B,) with one shared alpha."""

    alpha_idx: np.ndarray
    loo_mse: np.ndarray


def _chunks(n_targets: int, n_samples: int, chunk: int | None) -> list[slice]:
    limit = chunk if chunk is not None else max(1, _CHUNK_ELEMENTS // max(n_samples, 1))
    n_chunks = max(1, math.ceil(n_targets / limit))
    size = math.ceil(n_targets / n_chunks)
    return [slice(i, min(i + size, n_targets)) for i in range(0, n_targets, size)]


def _pad_cols(Y: np.ndarray, width: int) -> np.ndarray:
    missing = width - Y.shape[-1]
    return Y if missing == 0 else np.pad(Y, [(0, 0)] * (Y.ndim - 1) + [(0, missing)])


def solve_ridge_loo(problem: LooProblem, alphas: jax.Array, get_targets: Callable[[slice], np.ndarray],
                    n_targets: int, on_result: Callable[[slice, np.ndarray, np.ndarray], None], *,
                    alpha_per_target: bool = False, chunk: int | None = None) -> LooSolution:
    """Choose penalties by exact leave-one-out and hand back each target chunk's fit.

    Args:
      problem: the decomposed problems (shapes in :class:`LooProblem`).
      alphas: (A,) penalty grid, in the problem's dtype.
      get_targets: ``get_targets(cols)`` -> (B, n, len(cols)) training responses of the target columns ``cols``
        (a slice of range(n_targets)) as a numpy array; targets are streamed, so only one chunk is on the device.
      n_targets: T, the number of target columns.
      on_result: called once per chunk as ``on_result(cols, out, y_mean)`` with numpy arrays: ``out`` the
        coefficients (B, m, len(cols)) (dual c or primal w R) or, with a test design, predictions
        (B, n_test, len(cols)); ``y_mean`` (B, len(cols)) the target means (zeros without intercept).
      alpha_per_target: one alpha per target instead of one shared by the T targets of each problem.
      chunk: targets per chunk (default: samples x targets <= 2**23); the last chunk is zero-padded so every chunk
        reuses one compiled function.

    Returns the chosen alpha index and LOO mean squared error, (B, T) per target or (B,) when shared.
    """
    n = problem.basis.vectors.shape[1]
    pieces = _chunks(n_targets, n, chunk)
    width = pieces[0].stop - pieces[0].start

    def chunk_of(cols):
        return _pad_cols(get_targets(cols), width)

    def emit(cols, out, y_mean):
        k = cols.stop - cols.start
        on_result(cols, np.asarray(out)[:, :, :k], np.asarray(y_mean)[:, :k])

    search = _per_target_alphas if alpha_per_target else _shared_alpha
    return search(problem, alphas, pieces, chunk_of, emit)


def _per_target_alphas(problem: LooProblem, alphas, pieces, chunk_of, emit) -> LooSolution:
    B = problem.basis.vectors.shape[0]
    n_targets = pieces[-1].stop
    idx = np.zeros((B, n_targets), np.int64)
    mse = np.zeros((B, n_targets))
    for cols in pieces:
        best_idx, best_mse, out, y_mean = _core._b_per_target_search(
            problem.basis, problem.loo_diag, alphas, chunk_of(cols), problem.design, dual=problem.dual,
            fit_intercept=problem.fit_intercept)
        k = cols.stop - cols.start
        idx[:, cols] = np.asarray(best_idx)[:, :k]
        mse[:, cols] = np.asarray(best_mse)[:, :k]
        emit(cols, out, y_mean)
    return LooSolution(idx, mse)


def _shared_alpha(problem: LooProblem, alphas, pieces, chunk_of, emit) -> LooSolution:
    basis, diag, dual, fit_intercept = problem.basis, problem.loo_diag, problem.dual, problem.fit_intercept
    B, n, m = basis.vectors.shape
    n_targets = pieces[-1].stop
    if n_targets > m:  # cheaper: work on the m x m second moments of U^T Y
        moments = None
        for cols in pieces:
            part = _core._b_moments(basis, chunk_of(cols), dual=dual, fit_intercept=fit_intercept)
            moments = part if moments is None else jax.tree.map(jnp.add, moments, part)
        sse = np.asarray(_core._b_sse_from_moments(basis, diag, alphas, moments, dual=dual))
    else:
        sse = sum(np.asarray(_core._b_sse_direct(basis, diag, alphas, chunk_of(cols), dual=dual,
                                                 fit_intercept=fit_intercept)) for cols in pieces)
    best = np.argmin(sse, axis=1)  # first minimum on ties, as scikit-learn keeps the earlier alpha
    best_alpha = np.asarray(alphas)[best]
    for cols in pieces:
        out, y_mean = _core._b_coefficients(basis, best_alpha, chunk_of(cols), problem.design, dual=dual,
                                            fit_intercept=fit_intercept)
        emit(cols, out, y_mean)
    return LooSolution(best, sse[np.arange(B), best] / (n * n_targets))


# --------------------------------------------------------------------------------------------------------------
# Input checks shared with the estimator
# --------------------------------------------------------------------------------------------------------------


def float_dtype(*arrays) -> np.dtype:
    """float64 only when every input is float64 and JAX 64-bit mode is on; float32 otherwise."""
    if jax.config.jax_enable_x64 and all(np.asarray(a).dtype == np.float64 for a in arrays):
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def check_alphas(alphas) -> np.ndarray:
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if alphas.ndim != 1 or alphas.size == 0:
        raise ValueError(f"alphas must be a non-empty 1-D sequence; got shape {alphas.shape}")
    if not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(f"alphas must be finite and positive; got {alphas.tolist()}")
    return alphas


def check_matrix(name: str, a, ndim: int = 2) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric; got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


# --------------------------------------------------------------------------------------------------------------
# Many splits from one kernel or feature matrix
# --------------------------------------------------------------------------------------------------------------


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


def _validate_splits(data, Y, splits, gram: bool):
    """Checked (data, Y (N_y, T), [(train_idx, test_idx)] as int64 arrays); one-line errors name the split."""
    data = check_matrix("K" if gram else "X", data)
    Y = np.asarray(Y)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2:
        raise ValueError(f"Y must be (n_stimuli, n_targets); got shape {Y.shape}")
    N = data.shape[0]
    if gram and data.shape != (N, N):
        raise ValueError(f"with gram=True data must be a square Gram matrix; got shape {data.shape}")
    checked = []
    for k, (tr, te) in enumerate(splits):
        tr = np.asarray(tr, dtype=np.int64).ravel()
        te = np.asarray(te, dtype=np.int64).ravel()
        if tr.size and (tr.min() < 0 or tr.max() >= min(N, Y.shape[0])):
            raise ValueError(f"split {k}: train index out of range for {N} stimuli and {Y.shape[0]} rows of Y")
        if te.size and (te.min() < 0 or te.max() >= N):
            raise ValueError(f"split {k}: test index out of range for {N} stimuli")
        if tr.size < 2:
            raise ValueError(f"split {k}: needs at least 2 training samples; got {tr.size}")
        checked.append((tr, te))  # Y's training rows are checked for NaN/inf chunk by chunk, as they are read
    return data, Y, checked


def _column_block(Y: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Y[:, columns], as a view (no copy of every row) when the columns are one contiguous run."""
    if columns.size and np.array_equal(columns, np.arange(columns[0], columns[0] + columns.size)):
        return Y[:, columns[0]:columns[0] + columns.size]
    return Y[:, columns]


def _group_by_shape(splits) -> list[list[int]]:
    """Indices of the splits with equal (n_train, n_test), which are solved together (vmapped)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for k, (tr, te) in enumerate(splits):
        groups.setdefault((tr.size, te.size), []).append(k)
    return list(groups.values())


def _split_problems(source, tr_stack, te_stack, alphas, use_dual: bool, fit_intercept: bool) -> LooProblem:
    """Decompose the stacked splits of one shape; the test design makes the solver return predictions."""
    if use_dual:
        basis, diag, design = _core._b_dual_problem(source, tr_stack, te_stack, alphas, fit_intercept=fit_intercept)
    else:
        X_train, X_test = _core._b_primal_split(source, tr_stack, te_stack, fit_intercept=fit_intercept)
        basis, diag, design = _core._b_primal_problem(X_train, X_test, alphas, fit_intercept=fit_intercept)
    return LooProblem(basis, diag, use_dual, fit_intercept, design)


def _finite_targets(block: np.ndarray, split_ids: Sequence[int]) -> np.ndarray:
    """The (B, n, k) training responses of B splits, or a one-line error naming a split with NaN or inf."""
    if not np.isfinite(block).all():
        bad = next(k for k, rows in zip(split_ids, block) if not np.isfinite(rows).all())
        raise ValueError(f"split {bad}: Y has NaN or inf in training rows")
    return block


def _solve_shape_group(problem: LooProblem, Y, tr_stack, split_ids, te_size, alphas, target_groups, dtype, *,
                       alpha_per_target: bool, chunk: int | None):
    """Predictions (B, n_test, T), alpha index (B, T) and LOO mse (B, T) of one group of equal-shape splits."""
    B, T = tr_stack.shape[0], Y.shape[1]
    preds = np.zeros((B, te_size, T), dtype)
    alpha_idx = np.zeros((B, T), np.int64)
    loo_mse = np.zeros((B, T))
    for group in target_groups:
        # one eigendecomposition per split serves every target group; each group gets its own alpha search

        def get_targets(cols, group=group):
            return _finite_targets(_column_block(Y, group[cols])[tr_stack].astype(dtype, copy=False), split_ids)

        def on_result(cols, pred, y_mean, group=group):
            preds[:, :, group[cols]] = pred

        sol = solve_ridge_loo(problem, alphas, get_targets, group.size, on_result,
                              alpha_per_target=alpha_per_target, chunk=chunk)
        alpha_idx[:, group] = sol.alpha_idx if alpha_per_target else sol.alpha_idx[:, None]
        loo_mse[:, group] = sol.loo_mse if alpha_per_target else sol.loo_mse[:, None]
    return preds, alpha_idx, loo_mse


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
    larger than D, the N x N kernel is computed once and indexed, as with ``gram=True``. Computation is float64
    when data and Y are float64 and JAX 64-bit mode is on, float32 otherwise.
    """
    data, Y, checked = _validate_splits(data, Y, splits, gram)
    alphas_np = check_alphas(alphas)
    dtype = float_dtype(data, Y)
    alphas_j = jnp.asarray(alphas_np.astype(dtype))
    groups_of_targets = _check_target_groups(target_groups, Y.shape[1])
    use_dual = gram or all(tr.size <= data.shape[1] for tr, _ in checked)
    source = jnp.asarray(data.astype(dtype, copy=False))
    if use_dual and not gram:
        # One kernel serves all splits; centring X by any constant leaves every split's centred kernel unchanged
        # and keeps float32 cancellation small.
        source = _core._gram_jit(_core._centre_columns_jit(source, fit_intercept=True)[0])
    results: list[SplitFit | None] = [None] * len(checked)
    for members in _group_by_shape(checked):
        tr_stack = np.stack([checked[k][0] for k in members])
        te_stack = np.stack([checked[k][1] for k in members])
        problem = _split_problems(source, tr_stack, te_stack, alphas_j, use_dual, fit_intercept)
        preds, alpha_idx, loo_mse = _solve_shape_group(
            problem, Y, tr_stack, members, te_stack.shape[1], alphas_j, groups_of_targets, dtype,
            alpha_per_target=alpha_per_target, chunk=target_chunk)
        for j, k in enumerate(members):
            if alpha_per_target or target_groups is not None:
                results[k] = SplitFit(preds[j], alphas_np[alpha_idx[j]], loo_mse[j])
            else:
                results[k] = SplitFit(preds[j], float(alphas_np[alpha_idx[j, 0]]), float(loo_mse[j, 0]))
    return results
